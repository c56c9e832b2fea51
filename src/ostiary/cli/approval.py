"""``ostiary cert request --provisioner NAME`` for an ``approval`` provisioner.

Nothing is written until the CA has accepted the request: a refused submission (400, 403,
429, the network) leaves no file behind, and a KEY that existed before is untouched. Once
accepted, the key (0600) and ``CRT.request`` are written: the request id and the SHA-256 of
the key file as written, so that running the same command again resumes that request instead
of sending another. A resumed request that an officer approved is collected, with or without
``--wait``; one rejected or expired is forgotten: ``CRT.request`` and the key made for it are
removed (the key only if the file is still the one written for it), the command fails once
with the officer's reason, and the same command again starts a new request with a new key.
The one-time code (if the provisioner wants one) is printed for the requester to tell the
officer; it is printed once and kept nowhere.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ostiary.cli.console import note
from ostiary.cli.files import check_writable, write_file
from ostiary.client.api import IssuedCertificate, OstiaryClient
from ostiary.client.approval import (
    RequestExpired,
    RequestRejected,
    SubmittedRequest,
    check_decision,
    submit_for_approval,
    wait_for_decision,
)
from ostiary.core.errors import BadRequest, Conflict, PolicyDenied
from ostiary.core.keys import KeyType, generate_private_key

_SIGNING_KEYS = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)
_KEY_HASH = "key-sha256 "


def pending_file(crt: Path) -> Path:
    return crt.with_name(crt.name + ".request")


@dataclass(frozen=True)
class PendingRequest:
    """What ``CRT.request`` holds: the request id and, when a key was made for the request,
    the SHA-256 of the key file as written (None for ``--csr``, whose key is elsewhere).
    """

    request_id: str
    key_sha256: str | None = None

    @classmethod
    def read(cls, crt: Path) -> PendingRequest:
        marker = pending_file(crt)
        lines = marker.read_text(encoding="ascii", errors="replace").splitlines()
        request_id = lines[0].strip() if lines else ""
        if not re.fullmatch(r"[0-9a-f]{32}", request_id):
            raise BadRequest(f"{marker} holds no request id: remove it, or start anew with --force")
        hashes = [line[len(_KEY_HASH) :].strip() for line in lines if line.startswith(_KEY_HASH)]
        return cls(request_id, hashes[0] if hashes else None)

    def write(self, crt: Path) -> None:
        text = f"{self.request_id}\n"
        if self.key_sha256 is not None:
            text += f"{_KEY_HASH}{self.key_sha256}\n"
        write_file(pending_file(crt), text.encode("ascii"))


def save_accepted(
    crt: Path, submitted: SubmittedRequest, key_file: Path | None, key_pem: bytes | None
) -> PendingRequest:
    """The CA accepted the request: write the key made for it (0600), then ``CRT.request``,
    and tell the requester what to do next.
    """
    key_sha256 = None
    if key_file is not None and key_pem is not None:
        write_file(key_file, key_pem, private=True)
        key_sha256 = hashlib.sha256(key_pem).hexdigest()
    pending = PendingRequest(submitted.request_id, key_sha256)
    pending.write(crt)
    note(f"Request {submitted.request_id} is waiting for an officer")
    note(f"  expires: {submitted.expires_at}")
    if submitted.code is not None:
        note(f"  tell the officer this code: {submitted.code}")
    written = f"key {key_file} and " if key_file is not None else ""
    note(f"  wrote {written}{pending_file(crt)}")
    return pending


def collect(
    client: OstiaryClient,
    crt: Path,
    key_file: Path | None,
    pending: PendingRequest,
    key: CertificateIssuerPrivateKeyTypes | x509.CertificateSigningRequest,
    *,
    wait: bool,
    timeout: float,
    resumed: bool,
) -> IssuedCertificate | None:
    """The certificate if an officer approved (waiting for it with ``wait``), else None
    while the request waits. A request that will never be issued is forgotten (see the
    module docstring) and raised once, with what was removed.
    """
    try:
        if wait:
            return wait_for_decision(client, pending.request_id, key, timeout=timeout)
        issued = check_decision(client, pending.request_id, key) if resumed else None
    except RequestRejected as exc:
        raise PolicyDenied(f"{exc}; {_forget(crt, key_file, pending)}") from None
    except RequestExpired as exc:
        raise Conflict(f"{exc}; {_forget(crt, key_file, pending)}") from None
    if issued is None:
        if resumed:
            note(f"Request {pending.request_id} is still waiting for an officer")
        note("Run the same command again to collect the certificate (--wait waits for it)")
    return issued


def _forget(crt: Path, key_file: Path | None, pending: PendingRequest) -> str:
    """Remove ``CRT.request`` and the key file written for the request (only if it still is
    that file: never one we did not write); what was done, for the error line.
    """
    marker = pending_file(crt)
    marker.unlink(missing_ok=True)
    removed = [str(marker)]
    kept = ""
    if key_file is not None and key_file.is_file():
        if pending.key_sha256 is not None and _sha256(key_file) == pending.key_sha256:
            key_file.unlink()
            removed.append(f"the key made for it, {key_file}")
        else:
            kept = f"; kept {key_file}, which is not the key written for this request"
    fresh = "a new request with a new key" if key_file is not None else "a new request"
    return f"removed {' and '.join(removed)}{kept}: run the same command again to start {fresh}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def request_by_approval(
    connect: Callable[[], OstiaryClient],
    subject: x509.Name,
    sans: Sequence[x509.GeneralName],
    crt: Path,
    key_file: Path,
    *,
    provisioner: str,
    request_note: str | None,
    wait: bool,
    timeout: float,
    key_type: KeyType,
    force: bool,
) -> None:
    """Submit (or resume) an approval request; the certificate once an officer approved."""
    marker = pending_file(crt)
    with connect() as client:
        resumed = marker.exists() and key_file.exists() and not force
        if resumed:
            pending = PendingRequest.read(crt)
            private_key = serialization.load_pem_private_key(key_file.read_bytes(), None)
            note(f"Resuming request {pending.request_id}")
        else:
            check_writable(crt, key_file, force=force)
            private_key = generate_private_key(key_type)
            submitted = submit_for_approval(
                client, subject, sans, private_key, provisioner=provisioner, note=request_note
            )
            key_pem = private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            pending = save_accepted(crt, submitted, key_file, key_pem)
        if not isinstance(private_key, _SIGNING_KEYS):
            raise BadRequest(f"{key_file} holds no usable private key")
        issued = collect(
            client, crt, key_file, pending, private_key, wait=wait, timeout=timeout, resumed=resumed
        )
    if issued is None:
        return
    write_file(crt, issued.dump_pem())
    marker.unlink(missing_ok=True)
    note(f"Issued serial {issued.serial_number:x} to {subject.rfc4514_string()}")
    note(f"Wrote {crt} and key {key_file}")
