"""Signing keys for remote signing: a named key, its versions, its audiences and callers.

A :class:`SigningKeyRecord` is the policy (which audiences an assertion may name, which
callers may use the key) and points at its current version. Each
:class:`SigningKeyVersion` is one key pair: where the private key lives (``backend`` and
``key_ref``: a file under the CA folder today, a PKCS#11 object later) and the certificate
our CA issued for it (the one uploaded to the identity provider). Rotation adds a version and
moves ``current_version``; old versions stay listed (their certificates may still be
registered) but are no longer used to sign.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ostiary.core.encoding import serial_hex
from ostiary.core.errors import Conflict, NotFound
from ostiary.store._unique import insert_unless_duplicate
from ostiary.store.models import NAME_LENGTH, SERIAL_LENGTH, Base
from ostiary.store.types import BigIntegerPrimaryKey

#: Longest reference to a key in its backend (a relative file path, a PKCS#11 URI).
KEY_REF_LENGTH = 512


class SigningKeyRecord(Base):
    """A named signing key: its policy and which version signs."""

    __tablename__ = "signing_keys"

    id: Mapped[int] = mapped_column(BigIntegerPrimaryKey, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    #: ``rsa-2048``, ``rsa-3072``, ``p256``.
    key_type: Mapped[str] = mapped_column(String(32))
    #: Exact ``aud`` values an assertion may carry.
    audiences: Mapped[list[str]]
    #: Glob patterns over caller identities (see :mod:`ostiary.authority.remote_signing`).
    callers: Mapped[list[str]]
    current_version: Mapped[int] = mapped_column(Integer)
    #: Whether bare digests may be signed (``sign``); off by default, since a bare signature
    #: can be an assertion for any audience and so bypasses the allowlist.
    allow_digest_signing: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SigningKeyVersion(Base):
    """One key pair of a signing key, with the certificate our CA issued for it."""

    __tablename__ = "signing_key_versions"
    __table_args__ = (UniqueConstraint("key_id", "version"),)

    id: Mapped[int] = mapped_column(BigIntegerPrimaryKey, primary_key=True)
    key_id: Mapped[int] = mapped_column(
        BigIntegerPrimaryKey, ForeignKey("signing_keys.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    #: ``file`` (encrypted PKCS#8 under the CA folder) or ``pkcs11``.
    backend: Mapped[str] = mapped_column(String(32))
    key_ref: Mapped[str] = mapped_column(String(KEY_REF_LENGTH))
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    serial: Mapped[str] = mapped_column(String(SERIAL_LENGTH))
    fingerprint_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate_der)


def kid_of(name: str, version: int) -> str:
    """The ``kid`` of a key version: ``NAME.vN``."""
    return f"{name}.v{version}"


class SigningKeyRepository:
    """Signing keys and their versions, within the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(
        self,
        name: str,
        *,
        key_type: str,
        audiences: list[str],
        callers: list[str],
        now: datetime,
        allow_digest_signing: bool = False,
    ) -> SigningKeyRecord:
        """Record a new key (version 0: no version yet); :class:`Conflict` if the name exists."""
        record = SigningKeyRecord(
            name=name,
            key_type=key_type,
            audiences=audiences,
            callers=callers,
            current_version=0,
            allow_digest_signing=allow_digest_signing,
            created_at=now,
            updated_at=now,
        )
        if not insert_unless_duplicate(self._session, record):
            raise Conflict(f"signing key {name!r} exists already", key=name)
        return record

    def get(self, name: str, *, for_update: bool = False) -> SigningKeyRecord:
        query = select(SigningKeyRecord).where(SigningKeyRecord.name == name)
        if for_update:
            query = query.with_for_update()
        record = self._session.scalars(query).one_or_none()
        if record is None:
            raise NotFound(f"no signing key named {name!r}", key=name)
        return record

    def all(self) -> list[SigningKeyRecord]:
        return list(self._session.scalars(select(SigningKeyRecord).order_by(SigningKeyRecord.name)))

    def add_version(
        self,
        record: SigningKeyRecord,
        *,
        backend: str,
        key_ref: str,
        certificate: x509.Certificate,
        now: datetime,
    ) -> SigningKeyVersion:
        """Record the next version of ``record`` and make it current."""
        version = SigningKeyVersion(
            key_id=record.id,
            version=record.current_version + 1,
            backend=backend,
            key_ref=key_ref,
            certificate_der=certificate.public_bytes(Encoding.DER),
            serial=serial_hex(certificate.serial_number),
            fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
            created_at=now,
        )
        if not insert_unless_duplicate(self._session, version):
            raise Conflict(f"signing key {record.name!r} was rotated meanwhile", key=record.name)
        record.current_version = version.version
        record.updated_at = now
        return version

    def version(self, record: SigningKeyRecord, number: int | None = None) -> SigningKeyVersion:
        """A version of ``record`` (its current one by default)."""
        wanted = record.current_version if number is None else number
        found = self._session.scalars(
            select(SigningKeyVersion).where(
                SigningKeyVersion.key_id == record.id, SigningKeyVersion.version == wanted
            )
        ).one_or_none()
        if found is None:
            raise NotFound(f"signing key {record.name!r} has no version {wanted}", key=record.name)
        return found

    def versions(self, record: SigningKeyRecord) -> list[SigningKeyVersion]:
        return list(
            self._session.scalars(
                select(SigningKeyVersion)
                .where(SigningKeyVersion.key_id == record.id)
                .order_by(SigningKeyVersion.version)
            )
        )


__all__ = [
    "KEY_REF_LENGTH",
    "SigningKeyRecord",
    "SigningKeyRepository",
    "SigningKeyVersion",
    "kid_of",
]
