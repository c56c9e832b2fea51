"""One CA replica: the HTTPS and plain-HTTP listeners in one process and one event loop.

- HTTPS (``address``): the whole API. The server certificate (profile ``server``, 24 h) is
  issued by this CA through the Authority at start and renewed at two thirds of its lifetime;
  the new chain is loaded into the live :class:`ssl.SSLContext`, so new handshakes get it
  without a restart. TLS asks for a client certificate *optionally* (trusting our root), so
  that renewal and revocation by mTLS work on the same port; the handshake leaves validity
  checks to the app (see :mod:`ostiary.tls`), and the certificate reaches the app through the
  ASGI TLS extension (:mod:`ostiary.server.tls_scope`). ``POST /sign`` is answered by the
  listener's protocol itself (:mod:`ostiary.server.api_http`), without the ASGI stack.
- Plain HTTP (``http_address``): only what relying parties fetch without TLS (CRLs, OCSP, CA
  certificates, health). It always runs: certificates point their CDP and AIA at it. It is
  not uvicorn but the lean :class:`~ostiary.server.public_http.PublicServer` (OCSP answers
  from memory, see :mod:`ostiary.authority.ocsp_service`), started with the OCSP cache's
  revocation watch.

Sockets are bound before anything is issued, so that a port 0 (tests) is known in time to
put the real URL in certificates (:func:`public_url`). :meth:`CAServer.serve` runs both
servers; SIGTERM and SIGINT (when running in the main thread) or
:meth:`CAServer.request_stop` stop both, letting requests in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import uvicorn
from cryptography import x509
from sqlalchemy.exc import DBAPIError

from ostiary.authority.authority import Authority
from ostiary.authority.self_issued import RenewingCertificate, SelfIssued, SelfIssuedSpec
from ostiary.config import CAConfig, parse_address
from ostiary.core.errors import BadRequest, OstiaryError
from ostiary.server.api_http import ApiHttpProtocol
from ostiary.server.app import create_app, direct_endpoints, direct_family
from ostiary.server.context import ServerContext
from ostiary.server.public_http import PublicServer
from ostiary.server.tls_scope import MAX_CONNECTIONS
from ostiary.tls import TLSIdentity, load_identity, server_context
from ostiary.tls_accept import TLSListener

#: Lifetime of the server's own TLS certificate.
SERVER_CERTIFICATE_LIFETIME = timedelta(hours=24)
#: Default plain-HTTP port when ``http_address`` is not set.
#: The longest the renewal task sleeps between checks (the clock may jump, e.g. on resume).
_RENEWAL_POLL = 60.0
#: Connections the kernel queues before they are accepted.
_BACKLOG = 2048
#: How long requests in flight may take to finish when stopping.
_GRACE_SECONDS = 10
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})

logger = logging.getLogger("ostiary.server")


def bind(address: str) -> socket.socket:
    """A listening TCP socket on ``HOST:PORT`` (port 0: any free port).

    The socket is made with ``IPPROTO_TCP`` explicitly: asyncio only sets ``TCP_NODELAY`` on
    accepted connections of such sockets, and without it a response written in two parts
    (headers, body) waits for the client's delayed ACK, some 40 ms per request.
    """
    return bind_each(address, 1)[0]


def bind_each(address: str, count: int) -> list[socket.socket]:
    """``count`` listening sockets on ``HOST:PORT``, one per worker process (see :func:`bind`).

    Forked workers sharing one listening socket do not share its connections: every waiting
    worker is woken for a new connection and the first awake takes all that are queued, so
    one worker took every keep-alive connection of a burst (measured: all 8 and all 32 of
    the bench's clients, the other worker idle). Several sockets make one ``SO_REUSEPORT``
    group instead: the kernel hands each new connection to one of them by a hash of its
    addresses, and each worker accepts from its own. The first socket picks the port
    (port 0: any free one), the others join it. A lone socket does not set
    ``SO_REUSEPORT``, so that a second server on a port in use is refused.
    """
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    listeners: list[socket.socket] = []
    try:
        for _ in range(count):
            listeners.append(_listen(address, host, port, reuse_port=count > 1))
            port = listeners[0].getsockname()[1]
    except BadRequest:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _listen(address: str, host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
        listener.listen(_BACKLOG)
    except OSError as exc:
        listener.close()
        raise BadRequest(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return listener


def public_url(config: CAConfig, http_socket: socket.socket) -> str:
    """The base URL certificates name: ``url`` if configured, else the plain-HTTP listener.

    A wildcard listener (``0.0.0.0``, ``::``) is named by the first of the CA's ``dns``
    names, else by this machine's name.
    """
    if config.url:
        return config.url
    host, port = http_socket.getsockname()[:2]
    if host in _WILDCARDS:
        host = config.dns[0] if config.dns else socket.getfqdn()
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def with_url(authority: Authority, url: str) -> Authority:
    """The same authority, its certificates pointing at ``url`` (CDP, AIA)."""
    if authority.ca.config.url == url:
        return authority
    config = authority.ca.config.model_copy(update={"url": url})
    return Authority(replace(authority.ca, config=config), authority.store, clock=authority.clock)


def server_certificate_spec(config: CAConfig, https_socket: socket.socket) -> SelfIssuedSpec:
    """The server certificate: the CA's ``dns`` names, the listening host, localhost."""
    host = str(https_socket.getsockname()[0])
    texts: list[str] = [*config.dns]
    if host not in _WILDCARDS:
        texts.append(host)
    texts += ["localhost", "127.0.0.1"]
    names: list[x509.GeneralName] = []
    for text in dict.fromkeys(t.lower() for t in texts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            names.append(x509.DNSName(text))
    dns_names = [n.value for n in names if isinstance(n, x509.DNSName)]
    common = dns_names[0] if dns_names else f"{config.name} CA server"
    return SelfIssuedSpec(
        purpose="tls-server",
        subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common)]),
        names=tuple(names),
        profile="server",
        lifetime=SERVER_CERTIFICATE_LIFETIME,
    )


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to :class:`CAServer` (two servers, one loop), and
    accepts its TLS connections through :class:`~ostiary.server.tls_accept.TLSListener`
    (handshakes bounded in time and counted toward ``max_connections``).
    """

    def __init__(self, config: uvicorn.Config, *, max_connections: int | None = None) -> None:
        super().__init__(config)
        self.max_connections = max_connections

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        if sockets is None or config.ssl is None:
            await super().startup(sockets=sockets)
            return
        await self.lifespan.startup()  # "off": nothing to start; kept as uvicorn does

        def create_protocol() -> asyncio.Protocol:
            protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            return protocol

        listeners = []
        for sock in sockets:
            listener = TLSListener(
                sock,
                create_protocol,
                config.ssl,
                established=lambda: len(self.server_state.connections),
                max_connections=self.max_connections,
            )
            listener.start()
            listeners.append(listener)
        # uvicorn's shutdown only calls close() and wait_closed() on what it keeps here.
        self.servers = listeners  # type: ignore[assignment]
        self.started = True


class CAServer:
    """Both listeners of one replica, and the renewal of its TLS certificate."""

    def __init__(
        self,
        context: ServerContext,
        *,
        https_socket: socket.socket,
        http_socket: socket.socket,
        access_log: bool = True,
        log_config: dict[str, Any] | str | None = uvicorn.config.LOGGING_CONFIG,
        renewal_poll: float = _RENEWAL_POLL,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        """``max_connections``: open connections per listener, past which a new one is
        closed at once.
        """
        self.context = context
        self._renewal_poll = renewal_poll
        authority = context.authority
        self._https_socket = https_socket
        self._http_socket = http_socket
        self.tls_certificate = RenewingCertificate(
            authority, server_certificate_spec(authority.ca.config, https_socket)
        )
        self._loaded: SelfIssued = self.tls_certificate.current()
        # Issue the OCSP responder certificate and build a first CRL now, not at the first
        # request: a problem with the key or the database shows at start.
        context.ocsp.responder_certificate  # noqa: B018
        context.ocsp.watch.poll()
        context.crl.current()
        context.feed  # noqa: B018 - subscribes to this process's revocations from the start
        self.ssl_context = server_context(
            _identity(self._loaded),
            client_certificates="optional",
            client_trust=(*authority.ca.roots, authority.ca.intermediate),
            check_client_time=False,
        )
        app = create_app(context)
        self._servers: tuple[_Server, ...] = (
            _Server(
                uvicorn.Config(
                    app,
                    http=ApiHttpProtocol.serving(
                        direct_endpoints(context),
                        family=direct_family(app),
                        max_connections=max_connections,
                    ),
                    ssl_context_factory=self._ssl_context_factory,
                    lifespan="off",
                    access_log=access_log,
                    log_config=log_config,
                    server_header=False,
                    timeout_graceful_shutdown=_GRACE_SECONDS,
                ),
                max_connections=max_connections,
            ),
        )
        self._public = PublicServer(
            context, grace_seconds=_GRACE_SECONDS, max_connections=max_connections
        )

    def use_listeners(self, https_socket: socket.socket, http_socket: socket.socket) -> None:
        """Serve on these sockets instead, of the same addresses: a worker's own
        (:func:`bind_each`). Call it before :meth:`serve`.
        """
        self._https_socket = https_socket
        self._http_socket = http_socket

    @property
    def https_port(self) -> int:
        return int(self._https_socket.getsockname()[1])

    @property
    def http_port(self) -> int:
        return int(self._http_socket.getsockname()[1])

    @property
    def https_url(self) -> str:
        return _url("https", self._https_socket)

    @property
    def http_url(self) -> str:
        return _url("http", self._http_socket)

    @property
    def started(self) -> bool:
        return self._public.started and all(server.started for server in self._servers)

    def request_stop(self) -> None:
        """Ask both servers to stop (from any thread or a signal handler)."""
        for server in self._servers:
            server.should_exit = True
        self._public.request_stop()

    async def serve(self) -> None:
        """Serve until asked to stop."""
        loop = asyncio.get_running_loop()
        handled = _install_signal_handlers(loop, self.request_stop)
        renewal = asyncio.create_task(self._keep_tls_certificate_current())
        self.context.ocsp.watch.start()
        try:
            await asyncio.gather(
                self._servers[0].serve(sockets=[self._https_socket]),
                self._public.serve(self._http_socket),
            )
        finally:
            self.context.ocsp.watch.stop()
            await asyncio.to_thread(self.context.crl.close)
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            for sig in handled:
                loop.remove_signal_handler(sig)

    def _install(self, issued: SelfIssued) -> bool:
        """Load ``issued`` into the live context unless it is loaded already.

        Call it in the event loop's thread, where the handshakes run: loading a chain and a
        key is two steps, and a handshake in between would see a mismatched pair.
        """
        if issued is self._loaded:
            return False
        load_identity(self.ssl_context, _identity(issued))
        self._loaded = issued
        logger.info(
            "server certificate renewed: serial %x, not_after %s",
            issued.certificate.serial_number,
            issued.certificate.not_valid_after_utc.isoformat(),
        )
        return True

    def _ssl_context_factory(self, _config: uvicorn.Config, _default: object) -> ssl.SSLContext:
        return self.ssl_context

    async def _keep_tls_certificate_current(self) -> None:
        while True:
            due_in = self.tls_certificate.due_in().total_seconds()
            await asyncio.sleep(min(due_in, self._renewal_poll))
            try:
                issued = await asyncio.to_thread(self.tls_certificate.current)
                self._install(issued)  # in the loop's thread: no handshake runs meanwhile
            except (OstiaryError, DBAPIError, OSError, ssl.SSLError):
                logger.error("renewing the server certificate failed; will retry", exc_info=True)
                await asyncio.sleep(self._renewal_poll)


def _url(scheme: str, listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def _identity(issued: SelfIssued) -> TLSIdentity:
    return TLSIdentity(chain=issued.chain, private_key=issued.private_key)


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, stop: Callable[[], None]
) -> tuple[signal.Signals, ...]:
    if threading.current_thread() is not threading.main_thread():
        return ()
    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, stop)
    return handled


__all__ = [
    "SERVER_CERTIFICATE_LIFETIME",
    "CAServer",
    "bind",
    "bind_each",
    "public_url",
    "server_certificate_spec",
    "with_url",
]
