"""Accepting TLS connections with bounded cost: every handshake bounded in time, no TLS
state for a client that has sent nothing, and (for ``ca serve``'s HTTPS listener) every
connection counted toward the cap from the moment it is accepted.

uvicorn hands its listening socket to ``loop.create_server(ssl=...)``. The TLS handshake then
runs before the HTTP protocol hears of the connection (``connection_made``), with the event
loop's default handshake timeout (60 s, in asyncio and uvloop alike), and a connection still
in its handshake is in no count: a client that connects and sends nothing, or half a
ClientHello, held its connection (a descriptor and some 50 kB of TLS state) for a minute,
outside ``--max-connections``.

:class:`TLSListener` accepts the connections itself, as the gateway does
(:mod:`ostiary.gateway.server`): a connection that would pass the cap (the connections open
plus those not past their handshake) is closed at once, before any TLS. Both hand each
accepted socket to :func:`accept_tls`: it waits for the client's first byte without TLS
state (a socket and a timer), then runs the handshake; the whole must end within the
handshake timeout (:data:`HANDSHAKE_TIMEOUT` for ``ca serve``, ``handshake_timeout_seconds``
for the gateway), else the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Seconds a client has, from its connection on, to complete the TLS handshake.
HANDSHAKE_TIMEOUT = 10.0


async def accept_tls(
    sock: socket.socket,
    protocol_factory: Callable[[], asyncio.Protocol],
    context: ssl.SSLContext,
    *,
    timeout: float,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """TLS on an accepted ``sock``: its transport and protocol once the handshake is done.

    :class:`TimeoutError` when the client has not completed it ``timeout`` seconds from now;
    :class:`OSError` when it fails. The caller closes ``sock`` then.
    """
    left = await first_byte(sock, timeout)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_accepted_socket(
        protocol_factory, sock, ssl=context, ssl_handshake_timeout=left
    )
    return transport, protocol


async def first_byte(sock: socket.socket, timeout: float) -> float:
    """Wait, holding no TLS state, until the client on ``sock`` has sent something: the
    seconds left of ``timeout`` then. :class:`TimeoutError` when nothing came in time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    readable: asyncio.Future[None] = loop.create_future()

    def _ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(sock.fileno(), _ready)
    try:
        await asyncio.wait_for(readable, timeout)
    finally:
        loop.remove_reader(sock.fileno())
    left = deadline - loop.time()
    if left <= 0:
        raise TimeoutError("no TLS handshake within the handshake timeout")
    return left


class TLSListener:
    """Accepts on ``sock``; a connection runs ``protocol_factory``'s protocol once its TLS
    handshake is complete.

    ``established`` counts the connections open past their handshake (uvicorn's
    ``server_state.connections``); with ``max_connections``, a new connection is closed at
    once while that count plus the handshakes under way has reached it. It stands in for the
    :class:`asyncio.Server` uvicorn keeps (``close``, ``wait_closed``).
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        *,
        established: Callable[[], int],
        max_connections: int | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._sock = sock
        self._factory = protocol_factory
        self._context = context
        self._established = established
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        #: Connections accepted whose handshake has not ended yet.
        self.handshaking = 0
        self._handshakes: set[asyncio.Task[None]] = set()
        self._accepting: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start accepting (in the running event loop)."""
        self._sock.setblocking(False)  # the loop's sock_accept waits for it to be readable
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    def close(self) -> None:
        """Stop accepting and drop the handshakes under way (no request has begun on them)."""
        if self._accepting is not None:
            self._accepting.cancel()
        for task in self._handshakes:
            task.cancel()

    async def wait_closed(self) -> None:
        tasks = [*self._handshakes, *([self._accepting] if self._accepting else [])]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    def is_full(self) -> bool:
        limit = self.max_connections
        return limit is not None and self._established() + self.handshaking >= limit

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(self._sock)
            except OSError as exc:  # out of file descriptors, say: retry shortly
                log.warning("accept failed: %s", exc.strerror)
                await asyncio.sleep(0.1)
                continue
            if self.is_full():
                sock.close()  # before any TLS: no answer to wait for, no handshake to pay
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.handshaking += 1
            task = loop.create_task(self._handshake(sock))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, sock: socket.socket) -> None:
        try:
            await accept_tls(sock, self._factory, self._context, timeout=self.handshake_timeout)
        except (OSError, TimeoutError):  # too slow, not TLS, closed by the client
            sock.close()
        except asyncio.CancelledError:
            sock.close()
            raise
        finally:
            self.handshaking -= 1


__all__ = ["HANDSHAKE_TIMEOUT", "TLSListener", "accept_tls", "first_byte"]
