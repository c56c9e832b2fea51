"""``ostiary gateway ...``: the mTLS front door, and configuration for nginx, Caddy and
Mosquitto; ``ostiary ca crl-watch``: a CRL file kept fresh for them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ostiary.cli.console import note, out
from ostiary.cli.options import CADir, PasswordFile
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest, NotFound, OstiaryError
from ostiary.gateway.config import Mode, RevocationMethod, load_gateway_config

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
    }
    config = load_gateway_config(config_file, overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from ostiary.gateway.server import Gateway

    gateway = Gateway(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, gateway.request_stop)
        await gateway.serve()

    try:
        asyncio.run(main())
    except OSError as exc:
        raise BadRequest(f"cannot listen on {config.listen}: {exc.strerror}") from None


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
    directory: CADir = None,
    password_file: PasswordFile = None,
) -> None:
    """Keep a CRL file fresh for nginx/Mosquitto and run a reload command after each change."""
    from contextlib import ExitStack

    from ostiary.gateway.crl_file import (
        crl_pem,
        folder_source,
        remote_source,
        run_reload,
        write_if_changed,
    )

    trusted = load_certificate_chain(trust.read_bytes()) if trust is not None else []
    if not out_file.parent.is_dir():
        raise NotFound(f"--out {out_file}: the folder {out_file.parent} does not exist")
    with ExitStack() as stack:
        if ca_url is not None:
            source = remote_source(ca_url, include_root=root)
        else:
            from ostiary.cli.unlock import unlock_ca

            unlocked = stack.enter_context(unlock_ca(directory, password_file))
            source = folder_source(unlocked.authority, include_root=root)
            trusted = trusted or [unlocked.material.root, unlocked.material.intermediate]
        while True:
            try:
                data = crl_pem(source(), trusted, now=datetime.now(UTC))
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
            time.sleep(interval)
