"""The root's CRL: signed with the root key, which stays offline, and kept in the CA folder.

The intermediate's CRL distribution point names ``/root.crl`` (RFC 5280 section 4.2.1.13), so
relying parties that check the whole chain fetch it. The root key must not sit in a running
server, so this CRL is made when the key is at hand, with a long validity
(:data:`ROOT_CRL_LIFETIME`), and written to ``certs/root.crl``; the server only reads the file
(:class:`RootCrlFile`) and picks up a new one without restarting.

When it is made: ``ostiary ca serve`` makes one at start if the file is missing or past half
its validity, unlocking the root key with the CA password for that moment only (the CA's keys
share one password) and dropping it right after; an offline ``ca crl --root`` can do the same
with :func:`publish_root_crl`. Revoked intermediates (recorded under the root's key
identifier) are listed; CRL numbers come from the same growing counter as every CRL. With
each root CRL, an OCSP response signed by the root about every recorded intermediate (good
or revoked) is kept in the database, valid as long as the CRL, and the server's OCSP
responder hands it out for requests about an intermediate.
"""

from __future__ import annotations

import os
import tempfile
import threading
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from sqlalchemy.orm import Session

from ostiary.authority.folder import CAMaterial
from ostiary.core.ca import key_id_hex
from ostiary.core.crl import RevokedEntry, build_crl
from ostiary.core.encoding import serial_hex
from ostiary.core.ocsp import CertStatus, OcspResponder
from ostiary.signers.base import Signer
from ostiary.store import (
    AuditLog,
    CertificateRepository,
    LatestCrl,
    Store,
    issuer_records,
    latest_crl,
    next_crl_number,
    revoked_issuer_entries,
    save_latest_crl,
)
from ostiary.store.issuers import set_root_ocsp

#: thisUpdate to nextUpdate of a root CRL. CA/Browser Forum rules allow up to 12 months for
#: CRLs about CA certificates; half a year keeps a margin for a forgotten refresh.
ROOT_CRL_LIFETIME = timedelta(days=180)
#: Make a new one once this share of the validity has passed.
REFRESH_AFTER = 0.5


def publish_root_crl(
    material: CAMaterial,
    store: Store,
    root_signer: Signer,
    *,
    now: datetime,
    actor: str | None,
    lifetime: timedelta = ROOT_CRL_LIFETIME,
    root: x509.Certificate | None = None,
) -> bytes:
    """Build the root's CRL, write it to ``certs/root.crl`` (atomically) and audit it.

    ``root``: a root made by ``ca root rotate`` instead; its CRL goes to
    ``certs/roots/KEYID.crl`` and is served at ``/crl/KEYID``.
    """
    root = root or material.root
    if root_signer.public_key() != root.public_key():
        raise ValueError("the signer given is not the root's key")
    this_update = now.replace(microsecond=0)
    root_key_id = key_id_hex(root)
    with store.transaction() as session:
        number = next_crl_number(session, root_key_id)
        revoked = [
            *CertificateRepository(session).revoked_entries(root_key_id),
            *revoked_issuer_entries(session, root_key_id),  # ca revoke --intermediate
        ]
        entries = [
            RevokedEntry(serial, revoked_at, x509.ReasonFlags(reason))
            for serial, revoked_at, reason in sorted(set(revoked))
        ]
        der = build_crl(
            root,
            root_signer.private_key,
            entries,
            crl_number=number,
            this_update=this_update,
            next_update=this_update + lifetime,
        )
        # Every replica serves the newest root CRL from here, whatever its folder holds.
        save_latest_crl(
            session,
            LatestCrl(
                issuer_key_id=root_key_id,
                number=number,
                generation=len(entries),
                this_update=this_update,
                next_update=this_update + lifetime,
                der=der,
            ),
        )
        _sign_root_ocsp(session, root, root_signer, root_key_id, now=this_update, lifetime=lifetime)
        AuditLog(session).append(
            "crl.root_published",
            actor=actor,
            target=root.subject.rfc4514_string(),
            details={
                "crl_number": serial_hex(number),
                "entries": len(entries),
                "root_key_id": root_key_id,
            },
            at=now,
        )
    _write_atomically(material.paths.root_crl_of(root_key_id, material.root), der)
    return der


def _sign_root_ocsp(
    session: Session,
    root: x509.Certificate,
    root_signer: Signer,
    root_key_id: str,
    *,
    now: datetime,
    lifetime: timedelta,
) -> None:
    """An OCSP response signed by the root about each recorded intermediate (good, or
    revoked), valid as long as this root CRL: the server serves them, never holding the key.
    """
    responder = OcspResponder(
        issuer=root,
        responder_certificate=root,
        responder_key=root_signer.private_key,
        validity=lifetime,
    )
    for record in issuer_records(session, "intermediate"):
        if record.issuer_key_id != root_key_id:
            continue
        if record.state == "revoked" and record.revoked_at is not None:
            reason = record.revocation_reason
            status = CertStatus.revoked(
                record.revoked_at, x509.ReasonFlags(reason) if reason else None
            )
        else:
            status = CertStatus.good()
        response = responder.response_for(int(record.serial, 16), status, now=now)
        set_root_ocsp(session, record.fingerprint_sha256, response)


def root_crl_due(path: Path, now: datetime) -> bool:
    """Whether the root CRL at ``path`` is missing, unreadable or past half its validity."""
    try:
        crl = x509.load_der_x509_crl(path.read_bytes())
    except (OSError, ValueError):
        return True
    next_update = crl.next_update_utc
    if next_update is None:
        return True
    this_update = crl.last_update_utc
    return now >= this_update + (next_update - this_update) * REFRESH_AFTER


class RootCrlFile:
    """Serves ``certs/root.crl``, re-reading it when the file changes (thread-safe); with a
    store, the newest root CRL any replica published when it is newer than the file.
    """

    def __init__(self, path: Path, store: Store | None = None, root_key_id: str = "") -> None:
        self._store = store
        self._root_key_id = root_key_id
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._der: bytes | None = None

    def current(self) -> bytes | None:
        """The DER CRL, or None if there is none."""
        from_file = self._from_file()
        if self._store is None:
            return from_file
        with self._store.transaction(read_only=True) as session:
            kept = latest_crl(session, self._root_key_id, with_der=False)
            if kept is None:
                return from_file
            if from_file is not None and _number(from_file) >= kept.number:
                return from_file
            newer = latest_crl(session, self._root_key_id)
            return newer.der if newer is not None else from_file

    def _from_file(self) -> bytes | None:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._der = self._path.read_bytes()
                self._stamp = stamp
            return self._der


def _number(der: bytes) -> int:
    try:
        crl = x509.load_der_x509_crl(der)
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except (ValueError, x509.ExtensionNotFound):
        return -1


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".root.crl.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


__all__ = [
    "REFRESH_AFTER",
    "ROOT_CRL_LIFETIME",
    "RootCrlFile",
    "publish_root_crl",
    "root_crl_due",
]
