"""``ostiary gateway ...``: the mTLS front door, and configuration for nginx, Caddy and
Mosquitto; ``ostiary ca crl-watch``: a CRL file kept fresh for them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509

from ostiary.cli.console import note, out
from ostiary.cli.options import CADir, PasswordFile
from ostiary.core.ca import issued_by
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest, NotFound, OstiaryError
from ostiary.gateway.config import GatewayConfig, Mode, RevocationMethod, load_gateway_config

app = typer.Typer(
    help="The mTLS gateway, and configuration for nginx, Caddy and Mosquitto.",
    no_args_is_help=True,
)
config_app = typer.Typer(
    help="Print a working mTLS snippet for a relying party.", no_args_is_help=True
)
app.add_typer(config_app, name="config")

CARoot = Annotated[
    Path,
    typer.Option("--ca-root", help="PEM file with the CA root (and intermediate) to trust."),
]
Cert = Annotated[Path, typer.Option("--cert", help="The server's certificate chain (PEM).")]
Key = Annotated[Path, typer.Option("--key", help="The server's private key (PEM).")]


@app.command()
def run(
    config_file: Annotated[
        Path | None, typer.Option("--config", help="gateway.toml; flags given override it.")
    ] = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT to accept TLS on.")] = None,
    upstream: Annotated[
        str | None, typer.Option(help="http://HOST:PORT, or tcp://HOST:PORT in TCP mode.")
    ] = None,
    ca_root: Annotated[
        list[Path] | None,
        typer.Option("--ca-root", help="PEM file of CA certificates to trust (repeatable)."),
    ] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="Certificate chain (PEM).")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="Private key (PEM).")] = None,
    mode: Annotated[Mode | None, typer.Option(help="http (reverse proxy) or tcp (tunnel).")] = None,
    issuer_thumbprint: Annotated[
        list[str] | None,
        typer.Option("--issuer-thumbprint", help="Only accept issuing CAs with this SHA-256."),
    ] = None,
    revocation: Annotated[
        RevocationMethod | None, typer.Option(help="auto, ocsp, crl or off.")
    ] = None,
    revocation_cache: Annotated[
        float | None, typer.Option("--revocation-cache", help="Seconds a status is reused.")
    ] = None,
    revocation_grace: Annotated[
        float | None,
        typer.Option(
            "--revocation-grace",
            help="Seconds a stale status is trusted when the "
            "CA is unreachable; then connections are refused.",
        ),
    ] = None,
    metrics_listen: Annotated[
        str | None, typer.Option("--metrics-listen", help="Loopback HOST:PORT for /metrics.")
    ] = None,
    upstream_ca: Annotated[
        Path | None,
        typer.Option("--upstream-ca", help="PEM roots that verify an https:// upstream."),
    ] = None,
    upstream_cert: Annotated[
        Path | None,
        typer.Option("--upstream-cert", help="Client certificate for an https:// upstream."),
    ] = None,
    upstream_key: Annotated[
        Path | None, typer.Option("--upstream-key", help="Its private key (PEM).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes sharing the port (SO_REUSEPORT); default 1."),
    ] = None,
    renew: Annotated[
        bool | None,
        typer.Option(
            "--renew/--no-renew",
            help="Keep the gateway's own certificate renewed from our CA.",
            show_default=False,
        ),
    ] = None,
    renew_ca_url: Annotated[
        str | None,
        typer.Option("--renew-ca-url", help="The CA's URL (default: saved by bootstrap)."),
    ] = None,
    renew_root: Annotated[
        Path | None,
        typer.Option("--renew-root", help="Root that verifies the CA (default: saved)."),
    ] = None,
    renew_expires_in: Annotated[
        str | None,
        typer.Option("--renew-expires-in", help="Renew when less than this is left (8h, 33%)."),
    ] = None,
) -> None:
    """Run the gateway until SIGTERM or Ctrl-C; SIGHUP reloads certificate, key and trust."""
    overrides: dict[str, Any] = {
        "listen": listen,
        "upstream": upstream,
        "ca_roots": tuple(ca_root) if ca_root else None,
        "cert": cert,
        "key": key,
        "mode": mode,
        "issuer_thumbprints": tuple(issuer_thumbprint) if issuer_thumbprint else None,
        "revocation": revocation,
        "revocation_cache_seconds": revocation_cache,
        "revocation_grace_seconds": revocation_grace,
        "metrics_listen": metrics_listen,
        "upstream_ca": upstream_ca,
        "upstream_cert": upstream_cert,
        "upstream_key": upstream_key,
        "workers": workers,
        "renew": renew,
        "renew_ca_url": renew_ca_url,
        "renew_root": renew_root,
        "renew_expires_in": renew_expires_in,
    }
    config = load_gateway_config(config_file, overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from ostiary.gateway.server import run_gateway

    stop_renewal = _start_renewal(config) if config.renew else None
    try:
        status = run_gateway(config)
    except OSError as exc:
        raise BadRequest(f"cannot listen on {config.listen}: {exc.strerror}") from None
    finally:
        if stop_renewal is not None:
            stop_renewal()
    if status:
        raise typer.Exit(status)


def _start_renewal(config: GatewayConfig) -> Callable[[], None]:
    """Renew the gateway's certificate file in a thread (the client's renewal daemon, with a
    holder token signed by the key, since a server certificate cannot do client mTLS); the
    gateway notices the new file and reloads it: new handshakes present it, open connections
    keep going. Returns how to stop it. Errors in the setup fail the command at start.
    """
    from ostiary.cli.client import ca_connector
    from ostiary.cli.holder import FileRenewer, HolderFiles, log_line
    from ostiary.client.renewal import RenewalDaemon, Waker, parse_renewal_policy

    policy = parse_renewal_policy(config.renew_expires_in, None)
    files = HolderFiles(config.cert, config.key)
    files.load()
    renewer = FileRenewer(
        files,
        ca_connector(config.renew_ca_url, config.renew_root),
        log=lambda message: log_line(f"renewal: {message}"),
        via="token",
    )
    waker = Waker()
    daemon = RenewalDaemon(
        current=files.load_certificate,
        renew=renewer.renew,
        policy=policy,
        log=renewer.log,
        waker=waker,
    )
    thread = threading.Thread(target=daemon.run, name="ostiary-renewal", daemon=True)
    thread.start()

    def stop() -> None:
        waker.request_stop()
        thread.join(10)
        waker.close()

    return stop


def _snippet_input(
    ca_root: Path,
    cert: Path,
    key: Path,
    listen: str,
    server_name: str,
    upstream: str | None,
    crl_file: Path | None,
    hide_ca_names: bool = False,
) -> Any:
    from ostiary.gateway.snippets import SnippetInput

    for path, what in ((ca_root, "--ca-root"), (cert, "--cert"), (key, "--key")):
        if not path.exists():
            raise NotFound(f"{what} {path}: no such file")
    return SnippetInput(
        ca_root=ca_root.resolve(),
        cert=cert.resolve(),
        key=key.resolve(),
        listen=listen,
        server_name=server_name,
        upstream=upstream,
        crl_file=crl_file.resolve() if crl_file else None,
        hide_ca_names=hide_ca_names,
    )


Listen = Annotated[str, typer.Option(help="HOST:PORT (or PORT) to listen on.")]
Upstream = Annotated[str | None, typer.Option(help="The application, e.g. http://127.0.0.1:8080.")]
CrlFile = Annotated[
    Path | None,
    typer.Option("--crl-file", help="CRL file kept fresh by 'ostiary ca crl-watch'."),
]


@config_app.command("nginx")
def config_nginx(
    ca_root: CARoot,
    cert: Cert,
    key: Key,
    listen: Listen = "443",
    server_name: Annotated[str, typer.Option(help="server_name.")] = "_",
    upstream: Upstream = None,
    crl_file: CrlFile = None,
    hide_ca_names: Annotated[
        bool,
        typer.Option(help="Use ssl_trusted_certificate: do not send the CA names to clients."),
    ] = False,
) -> None:
    """A server block with ssl_verify_client, ssl_client_certificate and ssl_crl."""
    from ostiary.gateway.snippets import nginx_snippet

    given = _snippet_input(
        ca_root, cert, key, listen, server_name, upstream, crl_file, hide_ca_names
    )
    out.print(nginx_snippet(given), end="", markup=False)


@config_app.command("caddy")
def config_caddy(
    ca_root: CARoot,
    cert: Cert,
    key: Key,
    listen: Listen = "0.0.0.0:443",
    server_name: Annotated[str, typer.Option(help="The site's DNS name (SNI).")] = "_",
    upstream: Upstream = None,
    trust_pool: Annotated[
        bool, typer.Option("--trust-pool", help="Caddy 2.8+ syntax (trust_pool).")
    ] = False,
) -> None:
    """A Caddyfile site with client_auth. Caddy does not check revocation: see the output."""
    from ostiary.gateway.snippets import CADDY_REVOCATION_WARNING, caddy_snippet

    given = _snippet_input(ca_root, cert, key, listen, server_name, upstream, None)
    out.print(caddy_snippet(given, trust_pool=trust_pool), end="", markup=False)
    note(f"warning: {CADDY_REVOCATION_WARNING}")


@config_app.command("mosquitto")
def config_mosquitto(
    ca_root: CARoot,
    cert: Cert,
    key: Key,
    listen: Listen = "0.0.0.0:8883",
    crl_file: CrlFile = None,
) -> None:
    """A Mosquitto listener: require_certificate, use_identity_as_username, crlfile."""
    from ostiary.gateway.snippets import mosquitto_snippet

    given = _snippet_input(ca_root, cert, key, listen, "_", None, crl_file)
    out.print(mosquitto_snippet(given), end="", markup=False)


def crl_watch(
    out_file: Annotated[Path, typer.Option("--out", help="The CRL file to keep fresh (PEM).")],
    ca_url: Annotated[
        str | None,
        typer.Option("--ca-url", help="A CA server's plain-HTTP URL (else the CA folder)."),
    ] = None,
    root: Annotated[
        bool, typer.Option("--root", help="Append the root's CRL (nginx needs every level).")
    ] = False,
    trust: Annotated[
        Path | None,
        typer.Option("--ca-root", help="Check each CRL's signature against these CA certs."),
    ] = None,
    exec_command: Annotated[
        str | None, typer.Option("--exec", help="Command run (sh -c) after each change.")
    ] = None,
    interval: Annotated[
        float, typer.Option(help="Seconds between checks.", min=0.2, max=86400)
    ] = 60.0,
    watch: Annotated[
        bool, typer.Option("--watch/--once", help="Keep checking, or write once and exit.")
    ] = True,
    feed: Annotated[
        bool,
        typer.Option(
            "--feed/--no-feed",
            help="With --ca-url: follow the CA's revocation feed and refresh within a second "
            "of a revocation (else only every --interval).",
        ),
    ] = True,
    bundle_out: Annotated[
        Path | None,
        typer.Option(
            "--bundle-out",
            help="Also keep this trust bundle fresh (PEM: the roots of --ca-root, then every "
            "live intermediate): nginx's ssl_client_certificate, Mosquitto's cafile.",
        ),
    ] = None,
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Keep a CRL file fresh for nginx/Mosquitto and run a reload command after each change."""
    from contextlib import ExitStack

    from ostiary.gateway.crl_file import (
        FeedWaiter,
        crl_pem,
        folder_source,
        remote_source,
        run_reload,
        trust_bundle,
        write_if_changed,
    )

    trusted = load_certificate_chain(trust.read_bytes()) if trust is not None else []
    for path, what in ((out_file, "--out"), (bundle_out, "--bundle-out")):
        if path is not None and not path.parent.is_dir():
            raise NotFound(f"{what} {path}: the folder {path.parent} does not exist")
    if bundle_out is not None and ca_url is not None and trust is None:
        raise BadRequest("--bundle-out with --ca-url needs --ca-root: the root to check against")
    live: list[x509.Certificate] = []
    adopted: list[x509.Certificate] = []  # roots of 'ca root rotate', through cross-certificates
    with ExitStack() as stack:
        if ca_url is not None:
            source = remote_source(
                ca_url,
                include_root=root,
                intermediates=live,
                trusted_roots=[c for c in trusted if c.subject == c.issuer],
                next_roots=adopted,
            )
        else:
            from ostiary.cli.unlock import unlock_ca

            unlocked = stack.enter_context(unlock_ca(directory, password_file))
            source = folder_source(unlocked.authority, include_root=root, intermediates=live)
            trusted = trusted or [
                unlocked.material.root,
                *(i.certificate for i in unlocked.material.issuers),
            ]
        waiter = None
        if ca_url is not None and feed and watch:
            waiter = FeedWaiter(ca_url, trusted)
            stack.callback(waiter.close)
        while True:
            try:
                ders = source()
                # The intermediates listed over plain HTTP count only once a trusted root
                # signed them (trust_bundle refuses any other).
                roots = [c for c in trusted if c.subject == c.issuer] + adopted
                vouched = [c for c in live if issued_by(c, roots)]
                data = crl_pem(ders, [*trusted, *adopted, *vouched], now=datetime.now(UTC))
                if bundle_out is not None:
                    if write_if_changed(bundle_out, trust_bundle(roots, live)):
                        note(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} wrote {bundle_out}")
            except OstiaryError as exc:
                if not watch:
                    raise
                note(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} CRL not refreshed: {exc.detail}")
            else:
                if write_if_changed(out_file, data):
                    note(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} wrote {out_file}")
                    if exec_command:
                        status = run_reload(exec_command)
                        if status != 0:
                            note(f"reload command exited with status {status}")
            if not watch:
                return
            if waiter is not None:
                waiter.wait(interval)
            else:
                time.sleep(interval)
