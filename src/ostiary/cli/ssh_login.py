"""``ostiary ssh login`` and ``ostiary ssh renew``: a person's day, a host's renewal.

- ``login``: a fresh Ed25519 key made here, its user certificate from an OIDC sign-in
  (``--provisioner``), a token (``--token``) or an X.509 client certificate of this CA
  (``--x509-cert``/``--x509-key``, over mTLS); then either into ssh-agent with
  ``ssh-add -t`` set to the certificate's remaining life (the agent drops both when it
  ends), or written as ``KEY``, ``KEY.pub`` and ``KEY-cert.pub``. With ``--key-store tpm``
  the key is the one in a PKCS#11 token (tpm2-pkcs11: it never leaves the TPM): only
  ``KEY.pub`` and ``KEY-cert.pub`` are written, for ssh's ``PKCS11Provider``.
- ``renew``: a host's current host certificate renewed by signing the CA's challenge with
  the host key; ``--daemon`` keeps doing so once two thirds of its life have passed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ostiary.cli.connect import CAUrl, RootFile
from ostiary.cli.console import note
from ostiary.cli.files import check_writable, read_input, write_file
from ostiary.client.ssh import SSHClient
from ostiary.core.errors import BadRequest, OstiaryError, Unavailable
from ostiary.ssh import ssh_signature


class KeyStore(StrEnum):
    agent = "agent"
    file = "file"
    tpm = "tpm"


#: Debian's tpm2-pkcs11 module (package libtpm2-pkcs11-1).
TPM2_PKCS11 = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"


def login(
    provisioner: Annotated[
        str | None, typer.Option("--provisioner", help="An oidc provisioner: sign in.")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="An SSH token instead of a sign-in.")
    ] = None,
    x509_cert: Annotated[
        Path | None,
        typer.Option("--x509-cert", help="Exchange this X.509 client certificate (mTLS)."),
    ] = None,
    x509_key: Annotated[
        Path | None, typer.Option("--x509-key", help="The key of --x509-cert (PEM).")
    ] = None,
    principal: Annotated[
        list[str] | None,
        typer.Option("--principal", help="Only these of your principals (repeatable)."),
    ] = None,
    key_store: Annotated[
        KeyStore,
        typer.Option("--key-store", help="agent (ssh-add -t), file, or tpm (a PKCS#11 key)."),
    ] = KeyStore.agent,
    out_file: Annotated[
        Path,
        typer.Option("--out", help="--key-store file/tpm: the key file (KEY.pub, KEY-cert.pub)."),
    ] = Path("~/.ssh/id_ostiary"),
    pkcs11_module: Annotated[
        str, typer.Option("--pkcs11-module", help="--key-store tpm: the PKCS#11 module.")
    ] = TPM2_PKCS11,
    lifetime: Annotated[
        str | None, typer.Option("--lifetime", help="Shorter than the policy's, e.g. 8h.")
    ] = None,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the sign-in address instead.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out.")] = False,
    ca_url: CAUrl = None,
    root: RootFile = None,
) -> None:
    """A fresh SSH key and its user certificate, into ssh-agent or files."""
    from ostiary.cli.ssh import ssh_client

    chosen = [provisioner is not None, token is not None, x509_cert is not None]
    if sum(chosen) != 1:
        raise BadRequest("give one of --provisioner (sign in), --token or --x509-cert")
    if (x509_cert is None) != (x509_key is None):
        raise BadRequest("--x509-cert and --x509-key go together")
    if token is not None and principal:
        raise BadRequest("a token names its principals itself: leave out --principal")
    target = out_file.expanduser()
    cert_file = target.with_name(target.name + "-cert.pub")
    if key_store is not KeyStore.agent:
        check_writable(target.with_name(target.name + ".pub"), cert_file, force=force)
    if key_store is KeyStore.file:
        check_writable(target, force=force)
    elif key_store is KeyStore.agent and not os.environ.get("SSH_AUTH_SOCK"):
        raise Unavailable("no ssh-agent (SSH_AUTH_SOCK is not set): start one, or --key-store file")
    key = ed25519.Ed25519PrivateKey.generate() if key_store is not KeyStore.tpm else None
    if key is not None:
        public_line = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode("ascii")
        )
    else:
        public_line = _token_public_key(pkcs11_module)
    with ssh_client(ca_url, root) as client:
        answer = _certificate(
            client, public_line, provisioner, token, x509_cert, x509_key,
            principals=principal, lifetime=lifetime, no_browser=no_browser,
        )  # fmt: skip
    not_after = datetime.fromisoformat(answer["not_after"])
    certificate = (answer["certificate"] + "\n").encode("ascii")
    done = f"serial {answer['serial']}, not_after {answer['not_after']}"
    if key is None:
        write_file(target.with_name(target.name + ".pub"), (public_line + "\n").encode())
        write_file(cert_file, certificate)
        note(f"Wrote {cert_file} ({done}) for the key in {pkcs11_module}; log in with:")
        public_file = target.with_name(target.name + ".pub")
        typer.echo(
            f"ssh -o PKCS11Provider={pkcs11_module} -i {public_file} "
            f"-o CertificateFile={cert_file} HOST"
        )
        return
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    if key_store is KeyStore.file:
        write_file(target, private_pem, private=True)
        write_file(target.with_name(target.name + ".pub"), (public_line + "\n").encode())
        write_file(cert_file, certificate)
        note(f"Wrote {target} and {cert_file.name} ({done})")
        return
    seconds = int((not_after - datetime.now(UTC)).total_seconds())
    _add_to_agent(private_pem, certificate, max(seconds, 1))
    note(f"Added the key and certificate to ssh-agent for {seconds} s ({done})")


def _token_public_key(module: str) -> str:
    """The public key of the (one) key in a PKCS#11 token, as ``ssh-keygen -D`` lists it
    (no PIN needed: public objects).
    """
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise Unavailable("ssh-keygen is not installed (OpenSSH client)")
    if not Path(module).is_file():
        raise Unavailable(f"no PKCS#11 module at {module} (Debian: libtpm2-pkcs11-1)")
    listed = subprocess.run(
        [keygen, "-D", module], capture_output=True, text=True, check=False, timeout=60
    )
    keys = [line for line in listed.stdout.splitlines() if line.startswith(("ecdsa-", "ssh-"))]
    if listed.returncode != 0 or not keys:
        reason = (listed.stderr.strip().splitlines() or ["no key in the token"])[-1]
        raise Unavailable(f"no SSH key in the PKCS#11 token ({module}): {reason[:200]}")
    if len(keys) > 1:
        raise BadRequest(f"the token holds {len(keys)} keys: keep one for SSH")
    return " ".join(keys[0].split()[:2])


def _certificate(
    client: SSHClient,
    public_line: str,
    provisioner: str | None,
    token: str | None,
    x509_cert: Path | None,
    x509_key: Path | None,
    *,
    principals: list[str] | None,
    lifetime: str | None,
    no_browser: bool,
) -> dict[str, Any]:
    if token is not None:
        return client.ssh_certificate(public_line, token, cert_type="user", lifetime=lifetime)
    if x509_cert is not None and x509_key is not None:
        from ostiary.cli.cert import load_private_key_file
        from ostiary.core.encoding import load_certificate_chain

        certificate = load_certificate_chain(read_input(x509_cert, "certificate"))[0]
        private_key = load_private_key_file(x509_key)
        return client.ssh_exchange(
            public_line, certificate, private_key, principals=principals, lifetime=lifetime
        )
    assert provisioner is not None  # checked by the caller
    from ostiary.cli.oidc import sign_in_for

    id_token = sign_in_for(provisioner, no_browser=no_browser).id_token_for_key(
        client, serialization.load_ssh_public_key(public_line.encode("ascii"))
    )
    return client.ssh_sign_in_certificate(
        public_line, provisioner, id_token, principals=principals, lifetime=lifetime
    )


def _add_to_agent(private_pem: bytes, certificate: bytes, seconds: int) -> None:
    """``ssh-add -t SECONDS`` the key with its certificate, from a private folder that is
    removed at once (ssh-add reads ``KEY-cert.pub`` beside ``KEY`` by itself).
    """
    ssh_add = shutil.which("ssh-add")
    if ssh_add is None:
        raise Unavailable("ssh-add is not installed (OpenSSH client): use --key-store file")
    folder = Path(tempfile.mkdtemp(prefix="ostiary-ssh-"))
    try:
        key_file = folder / "id_ed25519"
        write_file(key_file, private_pem, private=True)
        write_file(folder / "id_ed25519-cert.pub", certificate)
        added = subprocess.run(
            [ssh_add, "-t", str(seconds), str(key_file)],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if added.returncode != 0 or "Certificate added" not in added.stderr:
        reason = (added.stderr.strip().splitlines() or ["no answer"])[-1]
        raise Unavailable(f"ssh-add could not add the key to the agent: {reason[:200]}")


def renew(
    host_key: Annotated[
        Path, typer.Option("--host-key", help="The host's private key, e.g. ssh_host_ed25519_key.")
    ],
    cert_file: Annotated[
        Path, typer.Option("--cert", help="Its current host certificate (rewritten).")
    ],
    daemon: Annotated[
        bool, typer.Option("--daemon", help="Keep renewing after 2/3 of each lifetime.")
    ] = False,
    check_interval: Annotated[
        float, typer.Option(help="--daemon: longest sleep between checks, seconds.", min=0.2)
    ] = 3600.0,
    exec_command: Annotated[
        str | None, typer.Option("--exec", help="Command run (sh -c) after each renewal.")
    ] = None,
    ca_url: CAUrl = None,
    root: RootFile = None,
) -> None:
    """Renew a host certificate over the current one: the host key signs the CA's challenge."""
    from ostiary.cli.ssh import ssh_client

    try:
        private_key = serialization.load_ssh_private_key(read_input(host_key, "host key"), None)
    except (ValueError, TypeError):
        raise BadRequest(f"{host_key}: not an unencrypted OpenSSH private key") from None
    if not isinstance(
        private_key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        raise BadRequest(f"{host_key}: SSH host keys here are Ed25519, ECDSA or RSA")

    def sign(message: bytes) -> bytes:
        return ssh_signature(private_key, message)

    with ssh_client(ca_url, root) as client:
        while True:
            line = read_input(cert_file, "host certificate").decode("ascii", "replace").strip()
            wait = _until_due(line)
            if wait <= 0 or not daemon:
                try:
                    answer = client.ssh_renew(line, sign)
                except OstiaryError as exc:
                    if not daemon:
                        raise
                    note(f"{_now()} host certificate not renewed: {exc.detail}")
                    time.sleep(min(check_interval, 60.0))
                    continue
                write_file(cert_file, (answer["certificate"] + "\n").encode("ascii"))
                note(f"{_now()} renewed {cert_file} (serial {answer['serial']}, "
                     f"not_after {answer['not_after']})")  # fmt: skip
                if exec_command:
                    status = subprocess.run(["/bin/sh", "-c", exec_command], check=False)
                    if status.returncode != 0:
                        note(f"--exec command exited with status {status.returncode}")
                if not daemon:
                    return
                continue
            time.sleep(min(wait, check_interval))


def _until_due(line: str) -> float:
    """Seconds until two thirds of the certificate's life have passed (<= 0: renew now)."""
    try:
        certificate = serialization.load_ssh_public_identity(line.encode("ascii"))
    except (ValueError, UnicodeError):
        raise BadRequest("the --cert file is not an OpenSSH certificate") from None
    if not isinstance(certificate, serialization.SSHCertificate):
        raise BadRequest("the --cert file is a plain public key, not a certificate")
    start, end = certificate.valid_after, certificate.valid_before
    due = start + (end - start) * 2 / 3
    return due - time.time()


def _now() -> str:
    return f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"
