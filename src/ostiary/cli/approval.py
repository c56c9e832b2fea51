"""``ostiary cert request --provisioner NAME`` for an ``approval`` provisioner.

The key is written first (0600) with a ``CRT.request`` file holding the request id, so that
running the same command again resumes waiting for that request instead of sending another.
The one-time code (if the provisioner wants one) is printed for the requester to tell the
officer; it is printed once and kept nowhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ostiary.cli.console import note
from ostiary.cli.files import check_writable, write_file
from ostiary.client.api import OstiaryClient
from ostiary.client.approval import submit_for_approval, wait_for_decision
from ostiary.core.errors import BadRequest
from ostiary.core.keys import KeyType, generate_private_key

_SIGNING_KEYS = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)


def pending_file(crt: Path) -> Path:
    return crt.with_name(crt.name + ".request")


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
    """Submit (or resume) an approval request; with ``wait``, write the certificate."""
    marker = pending_file(crt)
    with connect() as client:
        if marker.exists() and key_file.exists() and not force:
            request_id = marker.read_text(encoding="ascii").strip()
            private_key = serialization.load_pem_private_key(key_file.read_bytes(), None)
            note(f"Resuming request {request_id}")
        else:
            check_writable(crt, key_file, force=force)
            private_key = generate_private_key(key_type)
            write_file(
                key_file,
                private_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                private=True,
            )
            submitted = submit_for_approval(
                client, subject, sans, private_key, provisioner=provisioner, note=request_note
            )
            request_id = submitted.request_id
            write_file(marker, f"{request_id}\n".encode("ascii"))
            note(f"Request {request_id} is waiting for an officer")
            note(f"  expires: {submitted.expires_at}")
            if submitted.code is not None:
                note(f"  tell the officer this code: {submitted.code}")
        if not wait:
            note(f"Wrote key {key_file}; run the same command with --wait to collect it")
            return
        if not isinstance(private_key, _SIGNING_KEYS):
            raise BadRequest(f"{key_file} holds no usable private key")
        issued = wait_for_decision(client, request_id, private_key, timeout=timeout)
    write_file(crt, issued.dump_pem())
    marker.unlink(missing_ok=True)
    note(f"Issued serial {issued.serial_number:x} to {subject.rfc4514_string()}")
    note(f"Wrote {crt} and key {key_file}")
