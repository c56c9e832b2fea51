"""``ostiary ssh ...``: SSH certificates on a device or a host (docs/ssh.md).

- ``certificate KEY.pub --token T``: writes ``KEY-cert.pub``;
- ``krl-watch --out F [--exec CMD]``: keeps sshd's ``RevokedKeys`` file fresh;
- ``principals-command USER SERIAL``: for sshd's ``AuthorizedPrincipalsCommand``, asks the
  CA live, so a revoked certificate stops at the next login;
- ``config server`` / ``config client``: the sshd_config lines, the known_hosts line.

These need only the client side of the package (no server extra).
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ostiary.cli.connect import CAUrl, RootFile, ca_settings
from ostiary.cli.console import note
from ostiary.cli.files import check_writable, read_input, write_file
from ostiary.cli.ssh_principals import principal_for
from ostiary.client.config import ROOT_FILE, client_config_dir
from ostiary.client.ssh import SSHClient
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest, OstiaryError

app = typer.Typer(
    help="SSH certificates: get one, follow the KRL, configure sshd (docs/ssh.md).",
    no_args_is_help=True,
)
#: How long krl-watch asks the CA to hold a request while nothing is revoked (seconds).
KRL_HOLD = 25.0
config_app = typer.Typer(help="Print sshd or ssh configuration for this CA.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def ssh_client(ca_url: str | None, root: Path | None, *, timeout: float = 30.0) -> SSHClient:
    """A client for the CA named by the options, the rest from 'ostiary bootstrap'."""
    url, roots = ca_settings(ca_url, root)
    return SSHClient(url, roots, timeout=timeout)


@app.command()
def certificate(
    public_key: Annotated[Path, typer.Argument(metavar="KEY.pub", help="The public key file.")],
    token: Annotated[str, typer.Option("--token", help="From 'ostiary ca token --ssh'.")],
    ca_url: CAUrl = None,
    root: RootFile = None,
    host: Annotated[bool, typer.Option("--host", help="Ask for a host certificate.")] = False,
    lifetime: Annotated[
        str | None, typer.Option("--lifetime", help="Shorter than the policy's, e.g. 8h.")
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Default: KEY-cert.pub beside the key.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out.")] = False,
) -> None:
    """Get an SSH certificate for KEY.pub; the token names its principals."""
    target = out_file or public_key.with_name(public_key.name.removesuffix(".pub") + "-cert.pub")
    check_writable(target, force=True if out_file is None else force)
    line = read_input(public_key, "public key").decode("utf-8", "replace").strip()
    with ssh_client(ca_url, root) as client:
        answer = client.ssh_certificate(
            line, token, cert_type="host" if host else "user", lifetime=lifetime
        )
    write_file(target, (answer["certificate"] + "\n").encode("ascii"))
    note(f"Wrote {target} (serial {answer['serial']}, not_after {answer['not_after']})")


@app.command("krl-watch")
def krl_watch(
    out_file: Annotated[Path, typer.Option("--out", help="The KRL file (sshd's RevokedKeys).")],
    exec_command: Annotated[
        str | None, typer.Option("--exec", help="Command run (sh -c) after each change.")
    ] = None,
    interval: Annotated[
        float,
        typer.Option(
            help="Seconds to wait after an error before asking again.", min=0.2, max=86400
        ),
    ] = 60.0,
    watch: Annotated[
        bool, typer.Option("--watch/--once", help="Keep checking, or write once and exit.")
    ] = True,
    ca_url: CAUrl = None,
    root: RootFile = None,
) -> None:
    """Keep sshd's KRL file fresh; sshd rereads it at every login, no reload needed.

    It asks the CA to hold each request until a revocation changes the KRL (a long poll),
    so the file is rewritten within a second of a revocation; ``--interval`` is the pause
    after an error (or between checks with a CA that cannot hold requests).
    """
    if not out_file.parent.is_dir():
        raise BadRequest(f"--out {out_file}: the folder {out_file.parent} does not exist")
    version: int | None = None
    with ssh_client(ca_url, root, timeout=KRL_HOLD + 30) as client:
        while True:
            try:
                krl, version = client.ssh_krl_after(version, wait=KRL_HOLD if watch else 0)
            except OstiaryError as exc:
                if not watch:
                    raise
                note(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} KRL not refreshed: {exc.detail}")
                version = None
                time.sleep(interval)
                continue
            if not out_file.exists() or out_file.read_bytes() != krl:
                write_file(out_file, krl)
                note(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} wrote {out_file}")
                if exec_command:
                    status = subprocess.run(["/bin/sh", "-c", exec_command], check=False)
                    if status.returncode != 0:
                        note(f"--exec command exited with status {status.returncode}")
            if not watch:
                return
            if version is None:
                time.sleep(interval)


@app.command("principals-command")
def principals_command(
    user: Annotated[str, typer.Argument(help="sshd's %u: the account logged in to.")],
    serial: Annotated[str, typer.Argument(help="sshd's %s: the certificate's serial.")],
    ca_url: CAUrl = None,
    root: RootFile = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the CA.", min=0.1)] = 5.0,
) -> None:
    """Print USER if the CA says the certificate is valid now and names USER; else nothing.

    A revoked, expired or unknown certificate, or an unreachable CA, prints nothing (sshd
    then refuses) and says why on stderr (sshd logs it). For sshd_config, the faster
    'python -m ostiary.cli.ssh_principals' that 'ostiary ssh config server' prints does
    the same without loading this command.
    """
    url, _ = ca_settings(ca_url, root)
    root_file = root or client_config_dir() / ROOT_FILE
    line, reason = principal_for(
        user, serial, ca_url=url, root_file=str(root_file), timeout=timeout
    )
    if line is None:
        print(f"ostiary: {reason}", file=sys.stderr)
    else:
        typer.echo(line)


@config_app.command("server")
def config_server(
    user_ca_file: Annotated[
        Path, typer.Option("--user-ca-file", help="Where sshd reads the user CA key.")
    ] = Path("/etc/ssh/ostiary_user_ca.pub"),
    krl_file: Annotated[
        Path, typer.Option("--krl-file", help="The KRL file krl-watch keeps fresh.")
    ] = Path("/etc/ssh/ostiary.krl"),
    host_certificate: Annotated[
        Path | None, typer.Option("--host-certificate", help="This host's certificate file.")
    ] = None,
    principals_file: Annotated[
        str | None,
        typer.Option(
            "--principals-file",
            help="AuthorizedPrincipalsFile, e.g. "
            "/etc/ssh/principals/%u (instead of the live command).",
        ),
    ] = None,
    python: Annotated[
        str,
        typer.Option("--python", help="The Python that has ostiary installed (default: this one)."),
    ] = sys.executable,
    write_ca: Annotated[
        bool, typer.Option("--write-ca", help="Also fetch the user CA key into --user-ca-file.")
    ] = False,
    ca_url: CAUrl = None,
    root: RootFile = None,
) -> None:
    """Print the sshd_config lines that trust this CA's user certificates."""
    if write_ca:
        with ssh_client(ca_url, root) as client:
            write_file(user_ca_file, (client.ssh_ca()["user_ca"] + "\n").encode("ascii"))
    typer.echo(f"TrustedUserCAKeys {user_ca_file}")
    typer.echo(f"RevokedKeys {krl_file}")
    if principals_file:
        typer.echo(f"AuthorizedPrincipalsFile {principals_file}")
    else:
        url, _ = ca_settings(ca_url, root)
        root_file = (root or client_config_dir() / ROOT_FILE).resolve()
        typer.echo(
            f"AuthorizedPrincipalsCommand {python} -m ostiary.cli.ssh_principals "
            f"--ca-url {url} --root {root_file} %u %s"
        )
        typer.echo("AuthorizedPrincipalsCommandUser nobody")
    if host_certificate is not None:
        typer.echo(f"HostCertificate {host_certificate}")


@config_app.command("client")
def config_client(
    hosts: Annotated[
        str, typer.Option("--hosts", help="known_hosts patterns the host CA vouches for.")
    ] = "*",
    identity: Annotated[
        Path | None, typer.Option("--identity", help="The key whose -cert.pub ssh should use.")
    ] = None,
    ca_url: CAUrl = None,
    root: RootFile = None,
) -> None:
    """Print the @cert-authority known_hosts line and a Host block for ~/.ssh/config."""
    with ssh_client(ca_url, root) as client:
        host_ca = client.ssh_ca()["host_ca"]
    typer.echo("# ~/.ssh/known_hosts")
    typer.echo(f"@cert-authority {hosts} {host_ca}")
    typer.echo("# ~/.ssh/config")
    typer.echo(f"Host {hosts.replace(',', ' ')}")
    typer.echo("    StrictHostKeyChecking yes")
    if identity is not None:
        key = identity.with_suffix("") if identity.suffix == ".pub" else identity
        typer.echo(f"    IdentityFile {key}")
        typer.echo(f"    CertificateFile {key}-cert.pub")


def ssh_pubkey(
    cert_file: Annotated[Path, typer.Argument(metavar="CRT", help="An X.509 certificate.")],
) -> None:
    """Print the authorized_keys line of the certificate's key (as 'ssh-keygen -i -m PKCS8').

    For PuTTY-CAC and other clients that sign SSH logins with a certificate's key: the
    line goes into the account's authorized_keys.
    """
    certificate = load_certificate_chain(read_input(cert_file, "certificate"))[0]
    key = certificate.public_key()
    try:
        line = key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    except ValueError:
        raise BadRequest(f"{cert_file}: SSH has no form for this key type") from None
    typer.echo(line.decode("ascii"))


def _register() -> None:
    from ostiary.cli import ssh_login, ssh_request

    app.command("login")(ssh_login.login)
    app.command("renew")(ssh_login.renew)
    app.command("request")(ssh_request.request)


_register()
