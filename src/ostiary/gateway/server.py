"""The gateway process: accept TCP, hand the socket to TLS with the *current* context (so a
reload takes effect for the next connection without dropping open ones), check the client,
then proxy HTTP or tunnel TCP.

A connection is refused, and counted under its reason, when:

- ``handshake``: TLS failed (no client certificate, a foreign CA, an expired certificate,
  a protocol error); OpenSSL verifies the chain against the pinned roots only.
- ``invalid-certificate`` / ``issuer-unknown`` / ``issuer-not-allowed``: the path rebuilt
  after the handshake does not verify, or its issuing CA is not allowed.
- ``revoked``: OCSP or the CRL says so.
- ``revocation-unknown``: the status could not be learned and the grace is over (fail closed).
- ``subject-not-allowed`` / ``san-not-allowed`` / ``policy-missing`` / ``no-route``: the route
  rules (per request in HTTP mode, for ``/`` at connect time in TCP mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import urlsplit

import h11
from cryptography import x509

from ostiary.core.errors import InvalidCertificate, OstiaryError
from ostiary.gateway.config import GatewayConfig, parse_host_port
from ostiary.gateway.identity import ClientIdentity, route_for, route_refusal
from ostiary.gateway.proxy import Exchange, HTTPProxy, access_log, splice
from ostiary.gateway.revocation import RevocationChecker, RevocationUnknown
from ostiary.gateway.trust import Loaded, files_stamp, load

log = logging.getLogger("ostiary.gateway")


class Metrics:
    """Counters, rendered in the Prometheus text format (version 0.0.4)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.requests: Counter[int] = Counter()
        self.reloads: Counter[str] = Counter()

    def render(self) -> str:
        lines = [
            "# HELP ostiary_gateway_connections_accepted_total Client connections let through.",
            "# TYPE ostiary_gateway_connections_accepted_total counter",
            f"ostiary_gateway_connections_accepted_total {self.accepted}",
            "# HELP ostiary_gateway_connections_refused_total Connections refused, by reason.",
            "# TYPE ostiary_gateway_connections_refused_total counter",
        ]
        lines += [
            f'ostiary_gateway_connections_refused_total{{reason="{r}"}} {n}'
            for r, n in sorted(self.refused.items())
        ]
        lines += [
            "# HELP ostiary_gateway_requests_total Proxied HTTP requests, by status.",
            "# TYPE ostiary_gateway_requests_total counter",
        ]
        lines += [
            f'ostiary_gateway_requests_total{{status="{s}"}} {n}'
            for s, n in sorted(self.requests.items())
        ]
        lines += [
            "# HELP ostiary_gateway_reloads_total Reloads of certificate, key and trust.",
            "# TYPE ostiary_gateway_reloads_total counter",
        ]
        lines += [
            f'ostiary_gateway_reloads_total{{result="{r}"}} {n}'
            for r, n in sorted(self.reloads.items())
        ]
        return "\n".join(lines) + "\n"


class Gateway:
    """One gateway: ``await serve()`` runs it until :meth:`request_stop`."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.loaded: Loaded = load(config)
        self.metrics = Metrics()
        self.revocation = RevocationChecker(
            config.revocation,
            cache_seconds=config.revocation_cache_seconds,
            grace_seconds=config.revocation_grace_seconds,
            timeout_seconds=config.revocation_timeout_seconds,
        )
        upstream = urlsplit(config.upstream)
        self._upstream = (upstream.hostname or "", upstream.port or 0)
        self._http = HTTPProxy(
            self._upstream,
            config.routes,
            idle=config.idle_timeout_seconds,
            on_request=self._logged,
        )
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
        server = await asyncio.start_server(self._accept, host, port, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        metrics_server = None
        if self.config.metrics_listen:
            m_host, m_port = parse_host_port(self.config.metrics_listen)
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
            server.close()
            if metrics_server is not None:
                metrics_server.close()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.remove_signal_handler(signal.SIGHUP)
            await self.revocation.aclose()

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
        self.metrics.reloads["ok"] += 1
        log.info("reloaded certificate, key and trust")

    async def _watch_files(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval_seconds)
            if files_stamp(self.config) != self.loaded.stamp:
                self.reload()

    # ------------------------------------------------------------------ connections
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if peername else "-"
        try:
            await self._handle(peer, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _handle(
        self, peer: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loaded = self.loaded
        try:
            await writer.start_tls(
                loaded.context, ssl_handshake_timeout=self.config.handshake_timeout_seconds
            )
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            self._refuse(peer, "handshake", getattr(exc, "reason", None) or type(exc).__name__)
            return
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            self._refuse(peer, "handshake", "no client certificate")
            return
        leaf = x509.load_der_x509_certificate(der)
        identity, reason = await self._check(leaf, loaded)
        if identity is None:
            self._refuse(peer, reason, leaf.subject.rfc4514_string())
            return
        if self.config.mode == "tcp":
            route = route_for("/", self.config.routes)
            refusal = "no-route" if route is None else route_refusal(identity, route)
            if refusal is not None:
                self._refuse(peer, refusal, identity.subject)
                return
            await self._tunnel(identity, peer, reader, writer)
            return
        self.metrics.accepted += 1
        await self._http.serve(identity, peer, reader, writer)

    async def _check(
        self, leaf: x509.Certificate, loaded: Loaded
    ) -> tuple[ClientIdentity | None, str]:
        try:
            issuer = loaded.trust.verify(leaf, now=datetime.now(UTC))
        except InvalidCertificate as exc:
            return None, str(exc.data.get("reason", "invalid-certificate"))
        try:
            revoked = await self.revocation.is_revoked(leaf, issuer)
        except RevocationUnknown as exc:
            log.warning("revocation status unknown for %s: %s", leaf.serial_number, exc)
            return None, "revocation-unknown"
        if revoked:
            return None, "revoked"
        return ClientIdentity(leaf, issuer), ""

    async def _tunnel(
        self,
        identity: ClientIdentity,
        peer: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self._upstream), self.config.handshake_timeout_seconds
            )
        except (OSError, TimeoutError):
            self._refuse(peer, "upstream-unreachable", identity.subject)
            return
        self.metrics.accepted += 1
        if self.config.access_log:
            access_log.info("%s %s tunnel open", peer, identity.log_text())
        try:
            await splice(
                reader, writer, up_reader, up_writer, idle=self.config.idle_timeout_seconds
            )
        finally:
            up_writer.close()

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
