"""``ostiary ca serve``: run the CA server (HTTPS API + plain-HTTP CRL/OCSP/CA certificates).

At start: the database is migrated (safe with several replicas starting together), both
listeners are bound, the certificates' base URL is fixed (``url``, else the plain-HTTP
listener's), the root's CRL is made if missing or past half its validity (the root key is
unlocked for that moment with the same CA password, then dropped), and the server's TLS and
OCSP responder certificates and a first CRL are issued. Then it prints where it listens and
the root fingerprint, and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAMaterial
from ostiary.authority.remote_signing import open_remote_signing
from ostiary.authority.rollover import reload_issuers
from ostiary.authority.root_crl import publish_root_crl, root_crl_due
from ostiary.authority.ssh import SSHAuthority
from ostiary.cli.console import note, out
from ostiary.cli.listen import check_url_matches_listener
from ostiary.cli.options import CADir, PasswordFile
from ostiary.cli.unlock import unlock_ca
from ostiary.core.ca import fingerprint_sha256, key_id_hex
from ostiary.core.errors import BadRequest, NotFound, WrongPassword
from ostiary.signers.files import FileSigner

if TYPE_CHECKING:
    from ostiary.server.metrics import MetricsListener, ServerMetrics

logger = logging.getLogger("ostiary.server")


def serve(
    directory: CADir = None,
    password_file: PasswordFile = None,
    address: Annotated[
        str | None,
        typer.Option(help="HOST:PORT for HTTPS (default: 'address' in ostiary.toml)."),
    ] = None,
    http_address: Annotated[
        str | None,
        typer.Option(
            "--http-address",
            help="HOST:PORT for plain-HTTP CRL/OCSP/CA certificates "
            "(default: 'http_address' in ostiary.toml, else the HTTPS host, port 8080).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Server processes sharing the ports; one per core for the most throughput.",
        ),
    ] = 1,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections",
            min=1,
            help="Open connections each listener keeps per process; one past it is closed at "
            "once (raise the open-files limit, ulimit -n, to match).",
        ),
    ] = 4096,
    acme_http_port: Annotated[
        int,
        typer.Option(
            "--acme-http-port", min=1, max=65535, help="Port ACME http-01 validation fetches."
        ),
    ] = 80,
    acme_tls_port: Annotated[
        int,
        typer.Option(
            "--acme-tls-port", min=1, max=65535, help="Port ACME tls-alpn-01 validation dials."
        ),
    ] = 443,
    acme_challenge_wait: Annotated[
        float,
        typer.Option(
            "--acme-challenge-wait",
            min=0,
            max=10,
            help="Seconds a challenge POST waits for its validation to answer 'valid' or "
            "'invalid' at once; a slower one is answered 'processing' with Retry-After.",
        ),
    ] = 1.0,
    acme_dns_resolver: Annotated[
        str | None,
        typer.Option(
            "--acme-dns-resolver",
            help="HOST:PORT of the DNS server ACME validation asks (default: the system's).",
            show_default=False,
        ),
    ] = None,
    metrics_address: Annotated[
        str | None,
        typer.Option(
            "--metrics-address",
            help="HOST:PORT for Prometheus GET /metrics (loopback only; docs/operations.md).",
            show_default=False,
        ),
    ] = None,
    metrics_allow_remote: Annotated[
        bool,
        typer.Option(
            "--metrics-allow-remote",
            help="Allow a --metrics-address that is not loopback (it has no TLS and no "
            "authentication: firewall it).",
        ),
    ] = False,
) -> None:
    """Run the CA server until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # The web stack is imported here, not at module level, so that the other commands
    # (on devices, in scripts) start without it.
    import uvloop

    from ostiary.acme.validation import ValidationSettings
    from ostiary.config import default_http_address
    from ostiary.scep import ScepResponder
    from ostiary.server.context import ServerContext
    from ostiary.server.heartbeat import HealthWatch
    from ostiary.server.metrics import check_metrics_address
    from ostiary.server.runner import (
        CAServer,
        bind,
        bind_each,
        public_url,
        with_url,
    )
    from ostiary.server.workers import run_workers
    from ostiary.signers.sealing import Sealer

    if metrics_address is not None:
        check_metrics_address(metrics_address, allow_remote=metrics_allow_remote)

    validation = ValidationSettings(
        http_port=acme_http_port,
        tls_port=acme_tls_port,
        dns_resolver=_host_port(acme_dns_resolver) if acme_dns_resolver else None,
        answer_wait=acme_challenge_wait,
    )
    with unlock_ca(directory, password_file) as ca, contextlib.ExitStack() as stack:
        if workers > 1 and not ca.authority.signs_in_process:
            raise BadRequest(
                "--workers needs the issuing key in this process: "
                "a PKCS#11 token session does not survive fork"
            )
        material = ca.material
        https_address = address or material.config.address
        plain_address = (
            http_address or material.config.http_address or default_http_address(https_address)
        )
        check_url_matches_listener(material.config.url, plain_address)
        https_sockets = bind_each(https_address, workers)
        http_sockets = bind_each(plain_address, workers)
        metrics_socket = bind(metrics_address) if metrics_address is not None else None
        https_socket, http_socket = https_sockets[0], http_sockets[0]
        authority = with_url(ca.authority, public_url(material.config, http_socket))
        _refresh_root_crl(authority, ca.password)
        _refresh_rotated_root_crls(authority, ca.password)
        metrics = (
            observed_metrics(authority, stack, processes=workers)
            if metrics_socket is not None
            else None
        )
        context = replace(ServerContext.for_authority(authority), metrics=metrics)
        # Remote signing (docs/remote-signing.md): key files sealed with the CA password.
        context = replace(
            context,
            acme_validation=validation,
            signing=open_remote_signing(
                authority, ca.password, webhook_url=os.environ.get("OSTIARY_SIGNING_ALERT_WEBHOOK")
            ),
            ssh=open_ssh_authority(authority, ca.password),
            # SCEP (docs/mdm.md): the RA keys are sealed with the CA password too.
            scep=ScepResponder(authority, context.ca, ca.password),
            # ACME External Account Binding keys are sealed with it as well.
            sealer=Sealer(ca.password),
        )
        if metrics is not None and context.ssh is not None:
            metrics.attach_ssh(context.ssh)

        # A rotation made anywhere (the audit log shows it): issue with the new intermediate.
        password = ca.password
        context.follow_rotations(lambda: reload_issuers(authority.ca, password))
        server = CAServer(
            context,
            https_socket=https_socket,
            http_socket=http_socket,
            max_connections=max_connections,
        )
        _announce(server.https_url, server.http_url, material, authority)
        watch = HealthWatch(authority)
        http_url = server.http_url  # the parent closes its listening sockets once forked

        def start_watching() -> None:
            """The parent's threads: the heartbeat and, if asked for, the metrics listener."""
            watch.start()
            stack.callback(watch.stop)
            if metrics is not None and metrics_socket is not None:
                listener = metrics_listener(metrics_socket, authority, metrics, http_url)
                listener.start()
                stack.callback(listener.stop)
                note(f"Prometheus metrics:                      {listener.url}")

        def run(index: int = 0) -> None:
            server.use_listeners(https_sockets[index], http_sockets[index])
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(server.serve())

        # What start-up made (modules, the app, the schema) lives as long as the process:
        # moved out of the collector's sight, it is not walked again by every full collection
        # (and workers share those pages with the parent instead of copying them).
        gc.collect()
        gc.freeze()
        if workers == 1:
            start_watching()
            run()
        else:
            # A CRL encoding child started at start-up (big CRL) belongs to this process: its
            # pool's threads do not survive fork, so each worker starts its own when needed.
            server.context.crl.close()
            listeners = list(zip(https_sockets, http_sockets, strict=True))
            if run_workers(
                workers,
                run,
                engine=authority.store.engine,
                listeners=listeners,
                on_started=start_watching,
            ):
                raise typer.Exit(1)
    note("Stopped.")


def observed_metrics(
    authority: Authority, stack: contextlib.ExitStack, *, processes: int
) -> ServerMetrics:
    """Metrics for ``--metrics-address``. With several processes they are kept in a private
    folder (prometheus_client's multiprocess mode: the workers write, the parent sums on a
    scrape), removed when the server stops; one process keeps them in memory (no shared
    file to lock and write per request).
    """
    from ostiary.server.metrics import ServerMetrics, enable_multiprocess

    if processes > 1:
        folder = Path(tempfile.mkdtemp(prefix="ostiary-metrics-"))  # 0700
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        enable_multiprocess(folder)
    metrics = ServerMetrics()
    metrics.attach(authority)
    return metrics


def metrics_listener(
    listener: socket.socket, authority: Authority, metrics: ServerMetrics, http_url: str
) -> MetricsListener:
    """``GET /metrics`` on ``listener``; CRL ages read from this server's plain-HTTP URL."""
    from ostiary.server.metrics import MetricsListener, scrape_registry

    return MetricsListener(listener, scrape_registry(authority, _loopback(http_url), metrics))


def _loopback(url: str) -> str:
    """``url`` with a wildcard host (0.0.0.0, ::) replaced by loopback: asked from here."""
    for wildcard, loopback in (("//0.0.0.0:", "//127.0.0.1:"), ("//[::]:", "//[::1]:")):
        url = url.replace(wildcard, loopback)
    return url


def open_ssh_authority(authority: Authority, password: bytes) -> SSHAuthority | None:
    """SSH certificates (docs/ssh.md), when 'ca ssh init' made the SSH CA keys."""
    from ostiary.authority.ssh_keys import load_ssh_ca

    keys = load_ssh_ca(authority.ca, password)
    return SSHAuthority(keys, authority.store, clock=authority.clock) if keys else None


def _host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) as a pair; :class:`BadRequest` otherwise."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest(f"--acme-dns-resolver must be HOST:PORT, not {text[:64]!r}")
    return host, int(port)


def _refresh_root_crl(authority: Authority, password: bytes) -> None:
    material = authority.ca
    now = authority.clock()
    if not root_crl_due(material.paths.root_crl, now):
        return
    try:
        root_signer = material.load_root_signer(password)
    except WrongPassword:
        logger.warning("the root key does not open with this password: /root.crl not refreshed")
        return
    except NotFound:
        logger.warning(
            "the root key is not in the CA folder (kept offline?): /root.crl not refreshed"
        )
        return
    try:
        publish_root_crl(material, authority.store, root_signer, now=now, actor="ca-server")
    finally:
        root_signer.close()
    note(f"Wrote the root CRL to {material.paths.root_crl}")


def _refresh_rotated_root_crls(authority: Authority, password: bytes) -> None:
    """The CRLs of the roots made by ``ca root rotate`` (``/crl/KEYID``), when due and their
    key opens here.
    """
    material, now = authority.ca, authority.clock()
    for root in material.paths.rotated_roots():
        key_id = key_id_hex(root)
        path = material.paths.root_crl_of(key_id, material.root)
        if not root_crl_due(path, now):
            continue
        try:
            signer = FileSigner.load(material.paths.rotated_root_key(key_id), password)
        except (WrongPassword, NotFound):
            logger.warning("the key of root %s does not open here: its CRL not refreshed", key_id)
            continue
        try:
            publish_root_crl(
                material, authority.store, signer, now=now, actor="ca-server", root=root
            )
        finally:
            signer.close()
        note(f"Wrote the CRL of root {key_id[:16]} to {path}")


def _announce(https_url: str, http_url: str, material: CAMaterial, authority: Authority) -> None:
    note(f"HTTPS (API, mTLS optional):              {https_url}")
    note(f"Plain HTTP (CRL, OCSP, CA certificates): {http_url}")
    note(f"Certificates point at {authority.ca.config.url}")
    note("Root fingerprint (SHA-256):")
    out.print(fingerprint_sha256(material.root))


__all__ = ["serve"]
