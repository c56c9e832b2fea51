"""The CA server's Prometheus metrics: ``ca serve --metrics-address 127.0.0.1:PORT``.

What is counted where it happens (in each server process):

- ``ostiary_certificates_issued_total{provisioner,event}``: issuances and renewals that
  committed (:attr:`Authority.issuance_listeners
  <ostiary.authority.authority.Authority.issuance_listeners>`), SSH certificates too
  (``ssh_certificate.issued``);
- ``ostiary_certificates_denied_total{provisioner,reason}``: refusals by the pipeline (the
  error code: ``name-not-authorized``, ``token-reused``...), and refused tokens of
  ``POST /sign`` (provisioner ``-``: a token that did not verify names no provisioner we
  may trust; labels only ever come from the database or our own error codes, never from
  what a caller sent, so a caller cannot make series);
- ``ostiary_http_request_duration_seconds{method,route}`` and
  ``ostiary_http_responses_total{method,route,status}`` on the HTTPS API, by route template
  (``/acme/{provisioner}/order/{order_id}``, never the raw path; a path no route matches is
  ``(unmatched)``); the plain-HTTP listener (OCSP, CRLs) is not timed per request;
- ``ostiary_group_commit_batch_size``: units per committed write transaction;
- ``ostiary_rate_limit_refusals_total{limit}``: per-address limits refused (429).

What is read when scraped, in the process that answers the scrape
(:class:`HealthCollector`), for the root and every live intermediate (active and retiring:
:func:`~ostiary.authority.health.watched_certificates`, read from the folder and the
database at each scrape, so a rotation shows at the next one): seconds until each one's
``not_after`` (``ostiary_ca_certificate_seconds_left{role,state,...}``), and its CRL's age
and seconds to its ``nextUpdate`` (labels ``issuer`` and ``key_id``; the root's from its
file, an intermediate's fetched from this server's own plain-HTTP listener at ``/crl`` or
``/crl/KEYID``, as relying parties get it).

Several processes (``--workers N``): prometheus_client's multiprocess mode. ``ca serve``
makes a private folder (0700) and :func:`enable_multiprocess` points prometheus_client at it
before any metric exists; every worker writes its counters there (memory-mapped files, one
per process), and the supervising parent answers scrapes by summing them
(:class:`~prometheus_client.multiprocess.MultiProcessCollector`). Counters of a worker that
died stay counted. One listener for the whole replica, figures for the whole replica.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from socket import socket
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ostiary.authority.authority import Authority
from ostiary.authority.health import CrlFetcher, fetch_crl, read_ca_crl, watched_certificates
from ostiary.authority.ssh import SSHAuthority
from ostiary.config import parse_address
from ostiary.core.errors import BadRequest

#: The environment variable prometheus_client's multiprocess mode reads.
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: Label of a refusal whose provisioner is not known (the token did not verify).
UNKNOWN = "-"
#: Label of a request no route matched.
UNMATCHED = "(unmatched)"
#: Request latency buckets, seconds (a token issuance takes about a millisecond).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

logger = logging.getLogger("ostiary.metrics")


def check_metrics_address(address: str, *, allow_remote: bool) -> None:
    """Refuse a metrics address other than loopback unless ``allow_remote``.

    The listener has no TLS and no authentication, and what it shows (provisioner names,
    issuance and refusal rates, the CA's subjects) helps whoever probes the CA: on loopback
    only a local Prometheus (or an SSH tunnel, or a node exporter's proxy) reads it. An
    operator who firewalls the port themselves says so with ``--metrics-allow-remote``.
    """
    try:
        host, _port = parse_address(address)
    except ValueError as exc:
        raise BadRequest(f"--metrics-address: {exc}") from None
    if allow_remote or host.lower() == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise BadRequest(
            f"--metrics-address {address} is not a loopback address: the metrics listener "
            "has no TLS and no authentication. Use 127.0.0.1:PORT (scrape locally or through "
            "a tunnel), or add --metrics-allow-remote if a firewall guards that port"
        )


def enable_multiprocess(directory: Path) -> None:
    """Keep every metric made from now on in ``directory`` (one file set per process).

    Call it before the first metric is made. prometheus_client picks its value class when
    it is first imported; it is picked again here, so that an earlier import does not matter.
    """
    os.environ[MULTIPROCESS_VARIABLE] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


class ServerMetrics:
    """The counters and histograms the server processes write (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.issued = Counter(
            "ostiary_certificates_issued",
            "Certificates issued or renewed, by provisioner and audit event.",
            ["provisioner", "event"],
            registry=self.registry,
        )
        self.denied = Counter(
            "ostiary_certificates_denied",
            "Certificate requests refused, by provisioner and reason (error code).",
            ["provisioner", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ostiary_http_request_duration_seconds",
            "HTTPS API request latency, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.responses = Counter(
            "ostiary_http_responses",
            "HTTPS API responses, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "ostiary_group_commit_batch_size",
            "Units (issuances) per committed group-commit transaction.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "ostiary_rate_limit_refusals",
            "Requests refused by a per-address rate limit, by limit.",
            ["limit"],
            registry=self.registry,
        )

    def attach(self, authority: Authority) -> None:
        """Count the authority's decisions and its store's group-commit batches."""
        authority.issuance_listeners.append(self._issued)
        authority.denial_listeners.append(self.count_denial)
        authority.store.batch_listeners.append(self._batch)

    def attach_ssh(self, ssh: SSHAuthority) -> None:
        """Count SSH certificates too (``event`` ``ssh_certificate.issued``)."""
        ssh.issuance_listeners.append(self._issued)
        ssh.denial_listeners.append(self.count_denial)

    def _issued(self, provisioner: str | None, event: str) -> None:
        self.issued.labels(provisioner or UNKNOWN, event).inc()

    def count_denial(self, provisioner: str | None, reason: str) -> None:
        self.denied.labels(provisioner or UNKNOWN, reason).inc()

    def _batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def count_rate_limited(self, limit: str) -> None:
        self.rate_limited.labels(limit).inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route).observe(seconds)
        self.responses.labels(method, route, str(status)).inc()

    def direct_observer(self, method: str, route: str) -> Callable[[int, float], None]:
        """What a route answered outside the app reports through (``POST /sign``)."""

        def observe(status: int, seconds: float) -> None:
            self.observe_request(method, route, status, seconds)

        return observe


class RouteTiming:
    """ASGI middleware: each request's latency and status, by its route's template.

    The template is read after the app answered, from the route FastAPI matched
    (``scope["route"]``); ``direct`` names the (method, path) pairs served ahead of routing
    (``POST /sign``), which are their own template.
    """

    def __init__(
        self, app: ASGIApp, *, metrics: ServerMetrics, direct: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.direct = frozenset(direct)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = str(scope["method"])
            self.metrics.observe_request(
                method if method in _METHODS else "OTHER",
                self._template(scope, method),
                status,
                time.perf_counter() - started,
            )

    def _template(self, scope: Scope, method: str) -> str:
        route = scope.get("route")
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        if isinstance(template, str):
            return template
        if (method, scope["path"]) in self.direct:
            return str(scope["path"])
        return UNMATCHED


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class HealthCollector(Collector):
    """Figures read when scraped: CA certificates' time left, CRL ages (module docstring)."""

    def __init__(
        self,
        authority: Authority,
        crl_url: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        fetch: CrlFetcher = fetch_crl,
    ) -> None:
        self._authority = authority
        self._crl_url = crl_url.rstrip("/")
        self._clock = clock
        self._fetch = fetch

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        paths = self._authority.ca.paths
        try:
            certificates = watched_certificates(paths, self._authority.store, now=now)
        except DBAPIError:  # the intermediates' states are in the database: no gauges now
            logger.warning("the CA certificates could not be read for /metrics", exc_info=True)
            return
        left = GaugeMetricFamily(
            "ostiary_ca_certificate_seconds_left",
            "Seconds until each watched CA certificate's not_after (negative once expired): "
            "the root, the active and the retiring intermediates.",
            labels=["role", "state", "subject", "fingerprint_sha256"],
        )
        for ca in certificates:
            left.add_metric(
                [ca.role, ca.state or "", ca.subject, ca.fingerprint],
                (ca.not_after - now).total_seconds(),
            )
        yield left
        age = GaugeMetricFamily(
            "ostiary_crl_age_seconds",
            "Seconds since the thisUpdate of each issuer's published CRL.",
            labels=["issuer", "key_id"],
        )
        next_update = GaugeMetricFamily(
            "ostiary_crl_next_update_seconds",
            "Seconds until each issuer's published CRL's nextUpdate (negative: stale).",
            labels=["issuer", "key_id"],
        )
        for ca in certificates:
            state = read_ca_crl(ca, paths, self._crl_url, fetch=self._fetch)
            labels = [ca.role, ca.key_id]
            if state.this_update is not None:
                age.add_metric(labels, (now - state.this_update).total_seconds())
            if state.next_update is not None:
                next_update.add_metric(labels, (state.next_update - now).total_seconds())
        yield age
        yield next_update


def scrape_registry(
    authority: Authority, crl_url: str, metrics: ServerMetrics
) -> CollectorRegistry:
    """What a scrape answers: the processes' metrics (multiprocess files, or this process's
    own when not in multiprocess mode) and :class:`HealthCollector`.
    """
    directory = os.environ.get(MULTIPROCESS_VARIABLE)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry = metrics.registry
    registry.register(HealthCollector(authority, crl_url))
    return registry


class MetricsListener:
    """``GET /metrics`` on its own socket, answered by a thread (of the supervising process,
    with workers). Anything else is 404.
    """

    def __init__(self, listener: socket, registry: CollectorRegistry) -> None:
        handler = _handler_for(registry)
        self._server = HTTPServer(listener.getsockname()[:2], handler, bind_and_activate=False)
        self._server.socket.close()
        self._server.socket = listener
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/metrics"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ostiary-metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def _handler_for(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._reply(404, b"not found: the metrics are at /metrics\n", "text/plain")
                return
            self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the log

    return _Handler


__all__ = [
    "MULTIPROCESS_VARIABLE",
    "HealthCollector",
    "MetricsListener",
    "RouteTiming",
    "ServerMetrics",
    "check_metrics_address",
    "enable_multiprocess",
    "scrape_registry",
]
