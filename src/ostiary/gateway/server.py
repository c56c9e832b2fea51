"""The gateway process: accept TCP, hand the socket to TLS with the *current* context (so a
reload takes effect for the next connection without dropping open ones), check the client,
then proxy HTTP (:mod:`ostiary.gateway.http`) or tunnel TCP (:mod:`ostiary.gateway.pipe`).
Everything after ``accept`` is asyncio Protocols (no streams); run under uvloop by the CLI.

A connection is refused, and counted under its reason, when:

- ``handshake``: TLS failed (no client certificate, a foreign CA, an expired certificate,
  a protocol error); OpenSSL verifies the chain against the ``ca_roots`` files only (it
  may end at an intermediate there: the link to the root is checked by the path below).
- ``invalid-certificate`` / ``issuer-unknown`` / ``issuer-not-allowed``: the path rebuilt
  after the handshake does not verify, or its issuing CA is not allowed. The path is built
  from the ``ca_roots`` files, the chain the client sent and an issuing CA
  fetched once from the leaf's caIssuers URL (:mod:`ostiary.gateway.issuers`); when a link
  is still missing, the log names it (``issuer-unknown: CN=...``).
- ``revoked``: OCSP or the CRL says so.
- ``issuer-revoked``: a CA certificate in the path is revoked (the root's CRL, or OCSP, as
  named in that CA certificate).
- ``revocation-unknown``: the status could not be learned and the grace is over (fail closed).
- ``subject-not-allowed`` / ``san-not-allowed`` / ``policy-missing`` / ``no-route``: the route
  rules (per request in HTTP mode, for ``/`` at connect time in TCP mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import h11
from cryptography import x509

from ostiary.core.encoding import serial_hex
from ostiary.core.errors import InvalidCertificate, OstiaryError
from ostiary.gateway.config import GatewayConfig, parse_host_port
from ostiary.gateway.exchange import Exchange
from ostiary.gateway.feed import FeedFollowers
from ostiary.gateway.http import HTTPDownstream, access_log
from ostiary.gateway.identity import ClientIdentity, route_for, route_refusal
from ostiary.gateway.issuers import IssuerFetcher, ca_issuers_urls
from ostiary.gateway.metrics import Metrics
from ostiary.gateway.pipe import End, link
from ostiary.gateway.revocation import RevocationChecker, RevocationUnknown
from ostiary.gateway.tls_transport import TLSTransport, accept_tls
from ostiary.gateway.trust import IssuerUnknown, Loaded, files_stamp, load
from ostiary.gateway.upstream import UpstreamPool

log = logging.getLogger("ostiary.gateway")
_IDENTITY_CACHE = 10_000


class Gateway:
    """One gateway: ``await serve()`` runs it until :meth:`request_stop`."""

    def __init__(self, config: GatewayConfig, *, worker: int = 0) -> None:
        self.config = config
        self.worker = worker
        self.loaded: Loaded = load(config)
        self.metrics = Metrics()
        self.revocation = RevocationChecker(
            config.revocation,
            cache_seconds=config.revocation_cache_seconds,
            grace_seconds=config.revocation_grace_seconds,
            timeout_seconds=config.revocation_timeout_seconds,
        )
        self.issuers = IssuerFetcher(timeout_seconds=config.revocation_timeout_seconds)
        # One subscription per worker process and issuing CA: the gateway keeps no shared state.
        self.feeds = FeedFollowers(
            "off" if config.revocation == "off" else config.revocation_feed,
            grace_seconds=config.revocation_grace_seconds,
            timeout_seconds=config.revocation_timeout_seconds,
        )
        upstream = urlsplit(config.upstream)
        self._upstream = (upstream.hostname or "", upstream.port or 0)
        self._pool = UpstreamPool(
            self._upstream,
            context=self.loaded.upstream_context,
            timeout=config.handshake_timeout_seconds,
            idle=config.idle_timeout_seconds,
        )
        self._identities: dict[bytes, ClientIdentity] = {}
        self._warned: dict[str, float] = {}  # missing issuer -> when last logged
        self._handshakes: set[asyncio.Task[None]] = set()
        #: Client connections past their handshake and not yet closed (``max_connections``
        #: counts them with the handshakes under way).
        self.open_connections = 0
        self._handshaking = 0
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self.metrics_port = 0
        self.started = False

    # ------------------------------------------------------------------ lifecycle
    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        host, port = parse_host_port(self.config.listen)
        listener = socket.create_server(
            (host, port),
            family=socket.AF_INET6 if ":" in host else socket.AF_INET,
            backlog=1024,
            reuse_port=self.config.workers > 1,
        )
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        accepting = asyncio.create_task(self._accept(listener))
        metrics_server = None
        if self.config.metrics_listen:
            m_host, m_port = parse_host_port(self.config.metrics_listen)
            if m_port:
                m_port += self.worker  # one port per worker: each serves its own counters
            metrics_server = await asyncio.start_server(self._serve_metrics, m_host, m_port)
            self.metrics_port = metrics_server.sockets[0].getsockname()[1]
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            self._loop.add_signal_handler(signal.SIGHUP, self.reload)
        watcher = asyncio.create_task(self._watch_files())
        log.info("gateway listening on %s:%d (%s mode)", host, self.port, self.config.mode)
        self.started = True
        try:
            await self._stop.wait()
        finally:
            watcher.cancel()
            accepting.cancel()
            listener.close()
            self._pool.close()
            if metrics_server is not None:
                metrics_server.close()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.remove_signal_handler(signal.SIGHUP)
            await self.revocation.aclose()
            self.issuers.close()
            await self.feeds.aclose()
            # Transports closed just now (idle upstreams, a failed upstream handshake) finish
            # closing in callbacks of the next loop iterations: let them run before the loop
            # ends, or their sockets are only released by the garbage collector.
            for _ in range(3):
                await asyncio.sleep(0)

    def request_stop(self) -> None:
        """Stop accepting; safe to call from another thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def reload(self) -> None:
        """Read certificate, key and trust again; keep the old ones if the new are broken."""
        try:
            self.loaded = load(self.config)
        except OstiaryError as exc:
            self.metrics.reloads["failed"] += 1
            log.error("reload failed, keeping the previous files: %s", exc.detail)
            return
        self._pool.context = self.loaded.upstream_context
        self._identities.clear()
        self.metrics.reloads["ok"] += 1
        log.info("reloaded certificate, key and trust")

    async def _watch_files(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval_seconds)
            if files_stamp(self.config) != self.loaded.stamp:
                self.reload()

    # ------------------------------------------------------------------ connections
    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors, say: retry shortly
                log.warning("accept failed: %s", exc.strerror)
                await asyncio.sleep(0.1)
                continue
            if self._handshaking + self.open_connections >= self.config.max_connections:
                # Closed before any TLS: no handshake to pay for, no answer to wait for.
                self.metrics.refused["max-connections"] += 1
                sock.close()
                continue
            # Small writes (a response head, then its body) go out at once, not after the
            # client's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._handshaking += 1
            task = loop.create_task(self._handshake(sock, str(address[0])))
            self._handshakes.add(task)
            task.add_done_callback(self._handshake_done)

    def _count_open(self, change: int) -> None:
        self.open_connections += change

    def _handshake_done(self, task: asyncio.Task[None]) -> None:
        self._handshakes.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.metrics.refused["internal-error"] += 1
            log.error("connection failed", exc_info=exc)

    async def _handshake(self, sock: socket.socket, peer: str) -> None:
        """TLS with the context current *now*, then the checks, then HTTP or the tunnel."""
        loaded = self.loaded
        config = self.config
        protocol: End
        if config.mode == "tcp":
            protocol = End(config.idle_timeout_seconds)
        else:
            protocol = HTTPDownstream(
                self._pool, config.routes, self._logged, idle=config.idle_timeout_seconds
            )
        protocol.counted = self._count_open
        try:
            # No TLS state before the client's first byte; all within the handshake timeout.
            transport = await accept_tls(
                sock, protocol, loaded.context, timeout=config.handshake_timeout_seconds
            )
        except (OSError, TimeoutError) as exc:
            self._refuse(peer, "handshake", getattr(exc, "reason", None) or type(exc).__name__)
            sock.close()
            return
        finally:
            self._handshaking -= 1
        protocol.transport = transport
        der = transport.peer_certificate_der()
        if not der:
            self._refuse(peer, "handshake", "no client certificate")
            transport.close()
            return
        identity, reason = await self._check(der, loaded, transport)
        if identity is None:
            about = x509.load_der_x509_certificate(der).subject.rfc4514_string()
            reason, _, missing = reason.partition(": ")
            self._refuse(peer, reason, f'{about}" missing="{missing}' if missing else about)
            transport.close()
            return
        if isinstance(protocol, HTTPDownstream):
            self.metrics.accepted += 1
            protocol.begin(transport, identity, peer)
            return
        route = route_for("/", config.routes)
        refusal = "no-route" if route is None else route_refusal(identity, route)
        if refusal is not None:
            self._refuse(peer, refusal, identity.subject)
            transport.close()
            return
        await self._tunnel(identity, peer, protocol)

    async def _leaf_revoked(self, leaf: x509.Certificate, issuer: x509.Certificate) -> bool:
        """From the revocation feed when it is current (a set lookup); else OCSP/CRL, and
        when those cannot answer either, the feed's set while within the grace.
        """
        follower = self.feeds.follower_for(leaf, issuer)
        verdict = follower.verdict(leaf.serial_number) if follower is not None else None
        if verdict is not None:
            self.metrics.feed_decided += 1
            return verdict
        try:
            return await self.revocation.is_revoked(leaf, issuer)
        except RevocationUnknown:
            if follower is None or not follower.within_grace():
                raise
            return False

    async def _check(
        self, der: bytes, loaded: Loaded, tls: TLSTransport
    ) -> tuple[ClientIdentity | None, str]:
        """The identity, or None and the refusal reason (``issuer-unknown: <issuer>`` names
        the missing link).
        """
        known = self._identities.get(der)
        leaf = known.certificate if known is not None else x509.load_der_x509_certificate(der)
        try:
            path = await self._path(leaf, der, loaded, tls)
        except IssuerUnknown as exc:
            return None, exc.detail
        except InvalidCertificate as exc:
            return None, str(exc.data.get("reason", "invalid-certificate"))
        issuer = path[1] if len(path) > 1 else path[0]
        try:
            if await self._leaf_revoked(leaf, issuer):
                return None, "revoked"
            for ca, ca_issuer in itertools.pairwise(path[1:]):  # CA certificates, root excluded
                if await self.revocation.is_revoked(ca, ca_issuer, unless_unnamed=True):
                    return None, "issuer-revoked"
        except RevocationUnknown as exc:
            log.warning(
                "revocation status unknown for serial %s: %s", serial_hex(leaf.serial_number), exc
            )
            return None, "revocation-unknown"
        if known is None or known.issuer != issuer:
            if len(self._identities) >= _IDENTITY_CACHE:
                self._identities.clear()
            known = self._identities[der] = ClientIdentity(leaf, issuer)
        return known, ""

    async def _path(
        self, leaf: x509.Certificate, der: bytes, loaded: Loaded, tls: TLSTransport
    ) -> tuple[x509.Certificate, ...]:
        """The verified path; cached per leaf by the trust, so what follows the first
        ``verify`` runs only for a leaf not seen yet whose issuer is not in the files.
        """
        now = datetime.now(UTC)
        try:
            return loaded.trust.verify(leaf, now=now, der=der)
        except IssuerUnknown as missing:
            link = missing
        extra = tls.sent_chain(der)  # the certificates the client sent after its leaf
        for _ in range(4):  # leaf -> issuing CA -> ... -> root: a few links at most
            try:
                return loaded.trust.verify(leaf, now=now, der=der, extra=extra)
            except IssuerUnknown as exc:
                link = exc
            issuer = await self.issuers.issuer_of(link.certificate)
            if issuer is None or issuer in extra:
                break
            extra.append(issuer)
        issuer_name = str(link.data["issuer"])
        warned = self._warned.get(issuer_name)
        if warned is None or time.monotonic() - warned > 60:  # once a minute per issuer
            if len(self._warned) >= _IDENTITY_CACHE:
                self._warned.clear()
            self._warned[issuer_name] = time.monotonic()
            log.warning(
                "issuer-unknown: %s: clients it issued are refused; it is not in the ca_roots "
                "files, the client did not send it, and its caIssuers URL (%s) gave nothing; "
                "add it to the ca_roots files",
                issuer_name,
                ", ".join(ca_issuers_urls(link.certificate)) or "none usable",
            )
        raise link

    async def _tunnel(self, identity: ClientIdentity, peer: str, down: End) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await asyncio.wait_for(
                loop.create_connection(
                    lambda: End(self.config.idle_timeout_seconds), *self._upstream
                ),
                self.config.handshake_timeout_seconds,
            )
        except (OSError, TimeoutError):
            self._refuse(peer, "upstream-unreachable", identity.subject)
            if down.transport is not None:
                down.transport.close()
            return
        if down.transport is None or down.transport.is_closing():
            if up.transport is not None:
                up.transport.close()
            return
        self.metrics.accepted += 1
        if self.config.access_log:
            access_log.info("%s %s tunnel open", peer, identity.log_text())
        link(down, up)
        down.watch_idle()

    def _refuse(self, peer: str, reason: str, about: str) -> None:
        self.metrics.refused[reason] += 1
        if self.config.access_log:
            access_log.info('%s refused reason=%s about="%s"', peer, reason, about)

    def _logged(self, exchange: Exchange, identity: ClientIdentity, seconds: float) -> None:
        self.metrics.requests[exchange.status] += 1
        if exchange.refusal:
            self.metrics.refused[exchange.refusal] += 1
        if self.config.access_log:
            access_log.info(
                '%s "%s %s" %d %d %.3fs%s',
                identity.log_text(),
                exchange.method,
                exchange.target,
                exchange.status,
                exchange.sent,
                seconds,
                f" refused={exchange.refusal}" if exchange.refusal else "",
            )

    # ------------------------------------------------------------------ metrics
    async def _serve_metrics(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection = h11.Connection(h11.SERVER)
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await asyncio.wait_for(reader.read(4096), 10))
                    continue
                break
            if isinstance(event, h11.Request) and event.target.split(b"?")[0] == b"/metrics":
                status, body = 200, self.metrics.render().encode("ascii")
            else:
                status, body = 404, b"not found\n"
            headers = [
                (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"connection", b"close"),
            ]
            writer.write(connection.send(h11.Response(status_code=status, headers=headers)) or b"")
            writer.write(connection.send(h11.Data(data=body)) or b"")
            writer.write(connection.send(h11.EndOfMessage()) or b"")
            await writer.drain()
        except (h11.ProtocolError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()


def run_gateway(config: GatewayConfig) -> int:
    """Run until SIGTERM or SIGINT, on uvloop: in this process, or in ``config.workers``
    worker processes that share the listening port (``SO_REUSEPORT``: the kernel spreads
    connections over them). SIGHUP reaches every worker. Returns the exit status.
    """
    if config.workers == 1:
        _run_worker(config, 0)
        return 0
    context = multiprocessing.get_context("spawn")  # no fork of a threaded process
    workers = [
        context.Process(target=_worker_main, args=(config, i)) for i in range(config.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    running = list(workers)
    while running:
        multiprocessing.connection.wait([worker.sentinel for worker in running])
        for worker in [w for w in running if not w.is_alive()]:
            running.remove(worker)
            if worker.exitcode:  # a worker that failed (its port taken): no half a gateway
                forward(signal.SIGTERM, None)
    return max(worker.exitcode or 0 for worker in workers)


def _worker_main(config: GatewayConfig, worker: int) -> None:
    """A worker process's entry point (spawned: logging is set up again here)."""
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(name)s[worker {worker}]: %(message)s"
    )
    try:
        _run_worker(config, worker)
    except OSError as exc:
        log.error("worker %d cannot listen: %s", worker, exc.strerror or exc)
        raise SystemExit(1) from None


def _run_worker(config: GatewayConfig, worker: int) -> None:
    import uvloop

    gateway = Gateway(config, worker=worker)
    # What start-up made (modules, contexts, caches) lives as long as the process: moved out
    # of the collector's sight, it is not walked again by every full collection (a profile of
    # full handshakes: 4.0 % of the CPU in the collector before, 2.4 % after).
    gc.collect()
    gc.freeze()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, gateway.request_stop)
        await gateway.serve()

    uvloop.run(main())
