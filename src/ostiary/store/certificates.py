"""Issued certificates: record, find, search, revoke, and feed CRLs and OCSP.

A certificate is recorded from the certificate itself (the DER and what pyca/cryptography
reads from it), so the row cannot disagree with what the client holds. A certificate is
identified by its issuer's key identifier and its serial number (RFC 5280, section 4.1.2.2:
unique per issuer); serials are ``int`` here and lower-case hex in the table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Connection, String, bindparam, cast, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from ostiary.core.errors import AlreadyRevoked, BadRequest, Conflict, MalformedInput, NotFound
from ostiary.store._prepared import Prepared
from ostiary.store._unique import insert_unless_duplicate
from ostiary.store.group_commit import Batch
from ostiary.store.models import CertificateRecord, CertificateStatus, CompromisedKey
from ostiary.store.sans import subject_alt_names

#: Revocation reasons we record (:class:`x509.ReasonFlags` values). ``removeFromCRL`` only
#: has a meaning in delta CRLs (RFC 5280, section 5.3.1), which we do not issue.
REVOCATION_REASONS: frozenset[str] = frozenset(
    flag.value for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl
)
#: Rows fetched per round trip when streaming revoked entries.
_STREAM_BATCH = 2000


@dataclass(frozen=True, slots=True)
class RevocationStatus:
    """What an OCSP responder needs to know about one known certificate."""

    status: CertificateStatus
    not_after: datetime
    revoked_at: datetime | None
    revocation_reason: str | None


class CertificateRepository:
    """The certificates table, seen through the questions the CA asks of it."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(
        self,
        certificate: x509.Certificate,
        *,
        profile: str,
        provisioner: str | None,
        now: datetime | None = None,
    ) -> CertificateRecord:
        """Record a newly issued certificate; :class:`Conflict` if its serial is taken.

        The serial must be unique per issuer; the database's unique key decides, so this
        holds across replicas. ``created_at`` is ``now``, by default the clock.
        """
        record = CertificateRecord(
            **certificate_values(certificate, profile=profile, provisioner=provisioner, now=now)
        )
        if not insert_unless_duplicate(self._session, record):
            raise _serial_taken(record.serial, record.issuer_key_id)
        return record

    def get(self, serial: int, issuer_key_id: str | None = None) -> CertificateRecord:
        """Find the certificate with ``serial``; :class:`NotFound` if none.

        Without ``issuer_key_id`` the serial must name one certificate across all issuers,
        else :class:`Conflict` (say which issuer).
        """
        return self._one(serial, issuer_key_id, lock=False)

    def by_fingerprint(self, fingerprint_sha256: str) -> CertificateRecord:
        """Find a certificate by its SHA-256 fingerprint (hex, colons allowed)."""
        fingerprint = fingerprint_sha256.strip().lower().replace(":", "")
        record = self._session.scalars(
            select(CertificateRecord).where(CertificateRecord.fingerprint_sha256 == fingerprint)
        ).one_or_none()
        if record is None:
            raise NotFound(
                f"no certificate with SHA-256 fingerprint {fingerprint}", fingerprint=fingerprint
            )
        return record

    def successor_of(self, record: CertificateRecord) -> CertificateRecord | None:
        """The certificate that renewed ``record`` (by any issuer), if any: at most one."""
        return self._session.scalars(
            select(CertificateRecord).where(CertificateRecord.renewed_from == record.serial)
        ).one_or_none()

    def valid_with_key(self, spki_sha256: str) -> list[CertificateRecord]:
        """The unrevoked certificates (any issuer) of the key whose SPKI hashes to this."""
        return list(
            self._session.scalars(
                select(CertificateRecord)
                .where(
                    CertificateRecord.spki_sha256 == spki_sha256,
                    CertificateRecord.status == CertificateStatus.VALID.value,
                )
                .order_by(CertificateRecord.id)
            )
        )

    def search(
        self,
        text: str | None = None,
        *,
        status: CertificateStatus | None = None,
        profile: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[CertificateRecord]:
        """Find certificates, newest first.

        ``text`` matches subject and SANs (case-insensitively), or is a serial number or a
        SHA-256 fingerprint in hex.
        """
        query = select(CertificateRecord)
        if text:
            needle = text.strip()
            hex_form = needle.lower().removeprefix("0x").replace(":", "")
            conditions = [
                CertificateRecord.subject.icontains(needle, autoescape=True),
                cast(CertificateRecord.sans, String).icontains(needle, autoescape=True),
                CertificateRecord.fingerprint_sha256 == hex_form,
            ]
            if _is_hex(hex_form):
                conditions.append(CertificateRecord.serial == f"{int(hex_form, 16):x}")
            query = query.where(or_(*conditions))
        if status is not None:
            query = query.where(CertificateRecord.status == CertificateStatus(status).value)
        if profile is not None:
            query = query.where(CertificateRecord.profile == profile)
        query = query.order_by(CertificateRecord.created_at.desc(), CertificateRecord.id.desc())
        return list(self._session.scalars(query.limit(limit).offset(offset)))

    def listed(
        self,
        *,
        now: datetime,
        state: str | None = None,
        containing: str | None = None,
        limit: int | None = None,
    ) -> list[CertificateRecord]:
        """Certificates newest first, for people looking for one (``ca certs list``).

        ``state`` is ``valid`` (not revoked, not expired at ``now``), ``expired`` (not
        revoked, past ``not_after``) or ``revoked``. ``containing``: the subject or the SANs
        hold this text (case-insensitively); the caller narrows further.
        """
        query = select(CertificateRecord)
        if state == "revoked":
            query = query.where(CertificateRecord.status == CertificateStatus.REVOKED.value)
        elif state in ("valid", "expired"):
            query = query.where(CertificateRecord.status == CertificateStatus.VALID.value)
            if state == "valid":
                query = query.where(CertificateRecord.not_after >= now)
            else:
                query = query.where(CertificateRecord.not_after < now)
        elif state is not None:
            raise BadRequest(f"unknown certificate state {state!r}: use valid, revoked or expired")
        if containing:
            query = query.where(
                or_(
                    CertificateRecord.subject.icontains(containing, autoescape=True),
                    cast(CertificateRecord.sans, String).icontains(containing, autoescape=True),
                )
            )
        query = query.order_by(CertificateRecord.created_at.desc(), CertificateRecord.id.desc())
        return list(self._session.scalars(query.limit(limit)))

    def expiring(
        self, before: datetime, *, after: datetime | None = None, limit: int | None = None
    ) -> list[CertificateRecord]:
        """List valid certificates whose ``not_after`` is before ``before``, soonest first.

        With ``after``, those whose ``not_after`` is before it (already expired) are left out.
        """
        query = select(CertificateRecord).where(
            CertificateRecord.status == CertificateStatus.VALID.value,
            CertificateRecord.not_after < before,
        )
        if after is not None:
            query = query.where(CertificateRecord.not_after >= after)
        query = query.order_by(CertificateRecord.not_after, CertificateRecord.id).limit(limit)
        return list(self._session.scalars(query))

    def count_expiring(self, before: datetime, *, after: datetime) -> int:
        """How many valid certificates end between ``after`` and ``before`` and were not
        renewed, leaving out the CA server's own (no provisioner: it renews them itself).
        """
        successor = aliased(CertificateRecord)
        query = select(func.count()).where(
            CertificateRecord.status == CertificateStatus.VALID.value,
            CertificateRecord.not_after < before,
            CertificateRecord.not_after >= after,
            CertificateRecord.provisioner.is_not(None),
            ~exists().where(successor.renewed_from == CertificateRecord.serial),
        )
        return int(self._session.scalar(query) or 0)

    def revoke(
        self, serial: int, *, reason: str, at: datetime, issuer_key_id: str | None = None
    ) -> CertificateRecord:
        """Mark a certificate revoked from ``at`` for ``reason`` (a ReasonFlags value).

        Raises :class:`AlreadyRevoked` if it was (the first revocation stands: its time and
        reason are what CRLs and OCSP already said), :class:`NotFound` if unknown. The row is
        locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite writers are serialized) so two
        replicas cannot both revoke.
        """
        if reason not in REVOCATION_REASONS:
            allowed = ", ".join(sorted(REVOCATION_REASONS))
            raise BadRequest(
                f"unknown revocation reason {reason!r}: use one of {allowed}", reason=reason
            )
        record = self._one(serial, issuer_key_id, lock=True)
        if record.status == CertificateStatus.REVOKED:
            raise AlreadyRevoked(
                f"certificate {record.serial} was already revoked at "
                f"{record.revoked_at.isoformat() if record.revoked_at else '?'} "
                f"({record.revocation_reason})",
                serial=record.serial,
                issuer_key_id=record.issuer_key_id,
            )
        record.status = CertificateStatus.REVOKED.value
        record.revocation_reason = reason
        record.revoked_at = at
        self._session.flush()
        return record

    def revoked_entries(
        self, issuer_key_id: str, *, unexpired_at: datetime | None = None
    ) -> Iterator[tuple[int, datetime, str]]:
        """Stream ``(serial, revoked_at, reason)`` of every certificate the issuer revoked.

        Rows arrive in batches (a server-side cursor on PostgreSQL), so a CRL of a million
        entries never sits in memory as ORM objects. With ``unexpired_at``, certificates that
        expired before then are left out (RFC 5280, section 3.3 allows dropping them).
        Consume the iterator inside the transaction.
        """
        query = select(
            CertificateRecord.serial,
            CertificateRecord.revoked_at,
            CertificateRecord.revocation_reason,
        ).where(
            CertificateRecord.status == CertificateStatus.REVOKED.value,
            CertificateRecord.issuer_key_id == _key_id(issuer_key_id),
        )
        if unexpired_at is not None:
            query = query.where(CertificateRecord.not_after >= unexpired_at)
        rows = self._session.execute(query.execution_options(yield_per=_STREAM_BATCH))
        for serial, revoked_at, reason in rows:
            if revoked_at is None or reason is None:  # excluded by a CHECK constraint
                raise RuntimeError(f"revoked certificate {serial} has no time or reason")
            yield int(serial, 16), revoked_at, reason

    def status_of(self, serial: int, issuer_key_id: str) -> RevocationStatus | None:
        """Look up one certificate's status for OCSP; None if the CA never issued it."""
        row = self._session.execute(
            select(
                CertificateRecord.status,
                CertificateRecord.not_after,
                CertificateRecord.revoked_at,
                CertificateRecord.revocation_reason,
            ).where(
                CertificateRecord.issuer_key_id == _key_id(issuer_key_id),
                CertificateRecord.serial == f"{serial:x}",
            )
        ).one_or_none()
        if row is None:
            return None
        return RevocationStatus(CertificateStatus(row.status), *row[1:])

    def count_by_status(self) -> dict[CertificateStatus, int]:
        """Count valid and revoked certificates (zero included)."""
        counts = dict.fromkeys(CertificateStatus, 0)
        rows = self._session.execute(
            select(CertificateRecord.status, func.count()).group_by(CertificateRecord.status)
        )
        for status, count in rows:
            counts[CertificateStatus(status)] = count
        return counts

    def _one(self, serial: int, issuer_key_id: str | None, *, lock: bool) -> CertificateRecord:
        serial_hex = f"{serial:x}"
        query = select(CertificateRecord).where(CertificateRecord.serial == serial_hex)
        if issuer_key_id is not None:
            query = query.where(CertificateRecord.issuer_key_id == _key_id(issuer_key_id))
        if lock:
            query = query.with_for_update().execution_options(populate_existing=True)
        records = list(self._session.scalars(query.limit(2)))
        if not records:
            raise NotFound(f"no certificate with serial {serial_hex}", serial=serial_hex)
        if len(records) > 1:
            raise Conflict(
                f"serial {serial_hex} was issued by more than one CA: name the issuer",
                serial=serial_hex,
            )
        return records[0]


def record_certificate(
    batch: Batch, values: dict[str, Any], *, duplicate: Callable[[], Exception] | None = None
) -> None:
    """:meth:`CertificateRepository.add` on the group-commit write path.

    Queues the row made by :func:`certificate_values` for the batch's one insert of
    certificates; :class:`Conflict` if its serial is taken (the batch then runs this unit
    alone: see :mod:`ostiary.store.group_commit`), or ``duplicate()`` when given (a renewal:
    its predecessor already has a successor).
    """
    batch.insert(
        CertificateRecord,
        values,
        duplicate=duplicate or (lambda: _serial_taken(values["serial"], values["issuer_key_id"])),
    )


_COMPROMISED = Prepared(
    select(CompromisedKey.spki_sha256).where(CompromisedKey.spki_sha256 == bindparam("spki_sha256"))
)


def key_is_compromised(connection: Connection, spki_sha256: str) -> bool:
    """Whether a certificate of this key was revoked for keyCompromise (one indexed read,
    in the write transaction of the issuance: see :class:`~ostiary.authority.Authority`).
    """
    return bool(_COMPROMISED.execute(connection, {"spki_sha256": spki_sha256}))


def mark_key_compromised(session: Session, record: CertificateRecord, *, at: datetime) -> None:
    """Record the key of ``record`` as compromised (once: a second report changes nothing)."""
    if record.spki_sha256 is None:
        raise RuntimeError(f"certificate {record.serial} has no key hash")
    insert_unless_duplicate(
        session,
        CompromisedKey(
            spki_sha256=record.spki_sha256,
            serial=record.serial,
            issuer_key_id=record.issuer_key_id,
            reported_at=at,
        ),
    )


def spki_sha256_of(public_key: CertificatePublicKeyTypes) -> str:
    """Hex SHA-256 of a public key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def certificate_values(
    certificate: x509.Certificate,
    *,
    profile: str,
    provisioner: str | None,
    now: datetime | None = None,
    renewed_from: int | None = None,
) -> dict[str, Any]:
    """The row of a newly issued certificate, read from the certificate itself.

    ``renewed_from`` is the serial of the certificate this one renews.

    pyca/cryptography encodes the certificate anew for each ``public_bytes`` and
    ``fingerprint`` call: the DER is made once and hashed here.
    """
    der = certificate.public_bytes(Encoding.DER)
    return {
        "issuer_key_id": issuer_key_id_of(certificate),
        "serial": f"{certificate.serial_number:x}",
        "subject": certificate.subject.rfc4514_string(),
        "sans": subject_alt_names(certificate),
        "not_before": certificate.not_valid_before_utc,
        "not_after": certificate.not_valid_after_utc,
        "profile": profile,
        "provisioner": provisioner,
        "status": CertificateStatus.VALID.value,
        "der": der,
        "created_at": now or datetime.now(UTC),
        "fingerprint_sha256": hashlib.sha256(der).hexdigest(),
        "spki_sha256": spki_sha256_of(certificate.public_key()),
        "renewed_from": None if renewed_from is None else f"{renewed_from:x}",
    }


def _serial_taken(serial: str, issuer_key_id: str) -> Conflict:
    return Conflict(
        f"a certificate with serial {serial} from issuer {issuer_key_id} is already recorded",
        serial=serial,
        issuer_key_id=issuer_key_id,
    )


def issuer_key_id_of(certificate: x509.Certificate) -> str:
    """Hex of the authority key identifier's keyIdentifier (RFC 5280, section 4.2.1.1)."""
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        aki = None
    if aki is None or aki.key_identifier is None:
        raise MalformedInput(
            "certificate has no authority key identifier: the store files certificates "
            "by their issuer's key identifier"
        )
    return aki.key_identifier.hex()


def _key_id(value: str) -> str:
    """A key identifier as stored: lower-case hex without separators."""
    return value.strip().lower().replace(":", "")


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)
