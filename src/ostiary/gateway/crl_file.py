"""A CRL file kept fresh for relying parties that read CRLs from disk (nginx ``ssl_crl``,
Mosquitto ``crlfile``), and the command to run after each change.

The file is PEM: the issuing CA's CRL, then (with ``include_root``) the root's CRL, since
nginx checks every level of the chain and refuses a client whose intermediate has no CRL.
It is replaced atomically (write to a temporary file, rename) and only when its content
changes, so the reload command runs exactly after each new CRL.

Sources: a running CA server (``--ca-url``: ``/crl`` and ``/root.crl`` over plain HTTP) or a
CA folder on this machine (the issuing CRL built by the same publisher as the server's,
rebuilt only when a revocation is recorded or half its life has passed; the root CRL read
from ``certs/root.crl``).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CRL_PATH, ROOT_CRL_PATH
from ostiary.authority.publisher import CrlPublisher
from ostiary.core.errors import BadRequest, InvalidCertificate, Unavailable

#: Returns the DER CRLs to write, issuing CA first.
CrlSource = Callable[[], list[bytes]]


def remote_source(base_url: str, *, include_root: bool, timeout: float = 10.0) -> CrlSource:
    """CRLs fetched from a CA server's plain-HTTP publishing endpoints."""
    base = base_url.rstrip("/")
    paths = [CRL_PATH, ROOT_CRL_PATH] if include_root else [CRL_PATH]

    def fetch() -> list[bytes]:
        found = []
        with httpx.Client(timeout=timeout) as client:
            for path in paths:
                try:
                    answer = client.get(base + path)
                except httpx.HTTPError as exc:
                    raise Unavailable(f"{base + path}: {type(exc).__name__}") from None
                if answer.status_code != 200:
                    raise Unavailable(f"{base + path}: HTTP {answer.status_code}")
                found.append(answer.content)
        return found

    return fetch


def folder_source(authority: Authority, *, include_root: bool) -> CrlSource:
    """CRLs from a CA folder whose key is unlocked."""
    publisher = CrlPublisher(authority)

    def build() -> list[bytes]:
        found = [publisher.current().der]
        if include_root:
            try:
                found.append(authority.ca.paths.root_crl.read_bytes())
            except FileNotFoundError:
                raise BadRequest(
                    f"no root CRL at {authority.ca.paths.root_crl}: run 'ostiary ca serve' once "
                    "(it makes it) or leave out --root"
                ) from None
        return found

    return build


def crl_pem(ders: Sequence[bytes], trusted: Sequence[x509.Certificate], *, now: datetime) -> bytes:
    """The CRLs as one PEM file; each must verify against ``trusted`` (if given) and be current."""
    out = []
    for der in ders:
        try:
            crl = (
                x509.load_pem_x509_crl(der)
                if der.lstrip().startswith(b"-----BEGIN")
                else x509.load_der_x509_crl(der)
            )
        except ValueError:
            raise InvalidCertificate("the CA handed out something that is not a CRL") from None
        if trusted:
            issuers = [c for c in trusted if c.subject == crl.issuer]
            if not any(_signed_by(crl, c) for c in issuers):
                raise InvalidCertificate(
                    f"the CRL of {crl.issuer.rfc4514_string()} is not signed by a trusted CA"
                )
        next_update = crl.next_update_utc
        if next_update is not None and next_update < now:
            raise InvalidCertificate(f"the CRL of {crl.issuer.rfc4514_string()} is out of date")
        out.append(crl.public_bytes(serialization.Encoding.PEM))
    return b"".join(out)


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def write_if_changed(path: Path, data: bytes) -> bool:
    """Replace ``path`` atomically with ``data`` (mode 0644); False if it already held it."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    descriptor, temporary = tempfile.mkstemp(prefix=".crl-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def run_reload(command: str) -> int:
    """Run the reload command through ``sh -c``; its exit status."""
    return subprocess.run(["/bin/sh", "-c", command], check=False).returncode
