"""A certificate and its key on disk, renewed in place: the files side of renewal.

:class:`FileRenewer` renews one ``CRT``/``KEY`` pair through the CA, replaces ``CRT``
atomically (and ``KEY`` with ``--rekey``), refreshes a ``.p12`` beside it and runs the
``--exec`` hook, logging each step. A hook that fails is logged, never fatal: the new
certificate is already in place.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ostiary.cli.cert import dump_private_key, load_private_key_file
from ostiary.cli.console import note
from ostiary.cli.files import read_input, write_file
from ostiary.client.api import OstiaryClient, Via
from ostiary.client.enrollment import rekey_csr
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import BadRequest
from ostiary.core.keys import KeyType, generate_private_key, key_type_of

Log = Callable[[str], None]

#: How long an ``--exec`` hook may run before it is given up on.
HOOK_TIMEOUT = 300.0


def log_line(message: str) -> None:
    """One timestamped line on stderr: ``2026-11-23T12:00:00Z message``."""
    note(f"{timestamp(datetime.now(UTC))} {message}")


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class HolderFiles:
    """A certificate file (leaf first, then its chain) and the key file beside it."""

    certificate: Path
    key: Path
    #: For a TPM key (``--key-store tpm``): how to reach the TPM and the PIN's file.
    tcti: str | None = None
    pin_file: Path | None = None
    #: The command's option for that PIN, named when the key needs one and none is given.
    pin_option: str | None = "--pin-file"

    def load_chain(self) -> list[x509.Certificate]:
        return load_certificate_chain(read_input(self.certificate, "certificate"))

    def load_certificate(self) -> x509.Certificate:
        return self.load_chain()[0]

    def load(self) -> tuple[list[x509.Certificate], Any]:
        """The chain and the private key, checked to belong together."""
        chain = self.load_chain()
        key = load_private_key_file(
            self.key, tcti=self.tcti, pin_file=self.pin_file, pin_option=self.pin_option
        )
        if key.public_key() != chain[0].public_key():
            raise BadRequest(f"{self.key} is not the key of the certificate in {self.certificate}")
        return chain, key


@dataclass(frozen=True)
class PKCS12Output:
    """A ``.p12`` kept in step with a certificate (no password unless one is given)."""

    path: Path
    password: bytes | None = None
    compat: bool = False

    def is_stale(self, certificate_file: Path) -> bool:
        """Missing, or older than the certificate file."""
        try:
            return self.path.stat().st_mtime < certificate_file.stat().st_mtime
        except FileNotFoundError:
            return True

    def write(self, chain: list[x509.Certificate], key: Any) -> None:
        from ostiary.core.pkcs12 import export_pkcs12

        if not isinstance(
            key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        ):
            raise BadRequest("this key type cannot go into a .p12")
        data = export_pkcs12(
            chain[0], key, ca_certificates=chain[1:], password=self.password, compat=self.compat
        )
        write_file(self.path, data, private=True)


@dataclass(frozen=True)
class FileRenewer:
    """Renews one pair of files through the CA; see the module docstring."""

    files: HolderFiles
    connect: Callable[[], OstiaryClient]
    log: Log
    via: Via = "mtls"
    rekey: bool = False
    p12: PKCS12Output | None = None
    hook: str | None = None

    def renew(self) -> x509.Certificate:
        """Renew now; return the new certificate once every file is in place."""
        from ostiary.core.held_keys import HeldECPrivateKey

        chain, key = self.files.load()
        via = self.via
        if isinstance(key, HeldECPrivateKey):
            # Same key: the TPM attested it and it cannot leave; a new key would need a new
            # attestation. Python's TLS cannot use a TPM key, so a holder token proves it.
            if self.rekey:
                raise BadRequest(
                    f"{self.files.key} is a TPM key: renew it without --rekey (a new key needs "
                    "a new attestation: request a new certificate)"
                )
            via = "token"
        new_key = generate_private_key(key_type_of(key) or KeyType.P256) if self.rekey else None
        csr = rekey_csr(chain[0], new_key) if new_key is not None else None
        self.log(f"renewing serial {chain[0].serial_number:x} (via {via})")
        with self.connect() as client:
            issued = client.renew(chain[0], key, csr, via, chain=chain[1:])
        if new_key is not None:
            write_file(self.files.key, dump_private_key(new_key, None), private=True)
            key = new_key
        write_file(self.files.certificate, issued.dump_pem())
        self.log(
            f"wrote {self.files.certificate}: serial {issued.serial_number:x}, "
            f"not_after {timestamp(issued.not_after)}"
            + (f", new key in {self.files.key}" if new_key is not None else "")
        )
        self.refresh_p12(force=True)
        if self.hook:
            run_hook(self.hook, self.files, issued.certificate, log=self.log)
        return issued.certificate

    def refresh_p12(self, *, force: bool = False) -> None:
        """Rewrite the ``.p12`` if there is one to keep and it is stale (or ``force``)."""
        if self.p12 is None or not (force or self.p12.is_stale(self.files.certificate)):
            return
        chain, key = self.files.load()
        self.p12.write(chain, key)
        self.log(f"wrote {self.p12.path}")


def run_hook(command: str, files: HolderFiles, certificate: x509.Certificate, *, log: Log) -> None:
    """Run ``command`` through the shell, with the files in ``OSTIARY_CRT``/``OSTIARY_KEY``.

    Its failure is logged and otherwise ignored.
    """
    env = {
        **os.environ,
        "OSTIARY_CRT": str(files.certificate),
        "OSTIARY_KEY": str(files.key),
        "OSTIARY_SERIAL": f"{certificate.serial_number:x}",
        "OSTIARY_NOT_AFTER": timestamp(certificate.not_valid_after_utc),
    }
    try:
        result = subprocess.run(
            command,
            shell=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=HOOK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log(f"--exec command did not finish within {HOOK_TIMEOUT:.0f}s")
        return
    except OSError as exc:
        log(f"--exec command could not start: {exc.strerror}")
        return
    if result.returncode == 0:
        log("--exec command succeeded")
    else:
        log(f"--exec command failed with exit status {result.returncode}")


def find_holder_files(
    folder: Path, *, log: Log, pin_file: Path | None = None, pin_option: str = "--pin-file"
) -> list[HolderFiles]:
    """Every ``name.crt`` in ``folder`` with a ``name.key`` beside it, by name.

    A ``.crt`` without a key (a CA certificate, say) is logged and left out. TPM keys among
    them are unlocked with the PIN in ``pin_file`` (else ``$OSTIARY_TPM_PIN``).
    """
    if not folder.is_dir():
        raise BadRequest(f"{folder} is not a folder")
    found = []
    for certificate in sorted(folder.glob("*.crt")):
        key = certificate.with_suffix(".key")
        if key.is_file():
            found.append(HolderFiles(certificate, key, pin_file=pin_file, pin_option=pin_option))
        else:
            log(f"{certificate.name}: skipped, no {key.name} beside it")
    return found
