"""The tables Ostiary keeps: certificates, used token ids, provisioners, CRL numbers, audit.

Every datetime column is :class:`~ostiary.store.types.UTCDateTime` (aware UTC in and out).
Serial numbers and key identifiers are lower-case hex strings: a serial may be 20 octets,
too large for ``BIGINT``. The Alembic migrations in ``ostiary.store.migrations`` create exactly
these tables; a test compares the two.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from cryptography import x509
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ostiary.store.types import BigIntegerPrimaryKey, UTCDateTime

#: Constraint names are part of the schema (migrations refer to them): name them predictably.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Hex of a key identifier: 20 octets usually (SHA-1), up to 64 octets allowed.
KEY_ID_LENGTH = 128
#: Hex of a serial number: at most 20 octets (RFC 5280, section 4.1.2.2).
SERIAL_LENGTH = 40
NAME_LENGTH = 128
#: Longest one-time token id (``jti``) we record.
TOKEN_ID_LENGTH = 255


class CertificateStatus(enum.StrEnum):
    VALID = "valid"
    REVOKED = "revoked"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


class CertificateRecord(Base):
    """One issued certificate, as issued (``der``) plus the fields we search and revoke by."""

    __tablename__ = "certificates"
    __table_args__ = (
        UniqueConstraint("issuer_key_id", "serial"),
        CheckConstraint("status IN ('valid', 'revoked')", name="status"),
        CheckConstraint(
            "(status = 'valid' AND revoked_at IS NULL AND revocation_reason IS NULL)"
            " OR (status = 'revoked' AND revoked_at IS NOT NULL"
            " AND revocation_reason IS NOT NULL)",
            name="revocation",
        ),
        # Serves "count by status" and "the revoked certificates of this issuer" (CRLs).
        Index(None, "status", "issuer_key_id"),
        # A certificate has at most one successor, whichever replica (or, after a CA key
        # rotation, whichever issuer) renews it. Serials carry 159 random bits: unique alone.
        UniqueConstraint("renewed_from"),
    )

    id: Mapped[int] = mapped_column(BigIntegerPrimaryKey, primary_key=True)
    #: Hex of the issuer's subject key identifier (this certificate's AKI keyIdentifier).
    issuer_key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH))
    #: Lower-case hex, no leading zeros (``f"{n:x}"``).
    serial: Mapped[str] = mapped_column(String(SERIAL_LENGTH))
    #: RFC 4514 string.
    subject: Mapped[str] = mapped_column(Text)
    #: ``"dns:example.com"``, ``"email:a@b"``, ``"ip:10.0.0.1"``, ``"uri:..."``, ``"upn:..."``.
    sans: Mapped[list[str]]
    not_before: Mapped[datetime]
    not_after: Mapped[datetime] = mapped_column(index=True)
    profile: Mapped[str] = mapped_column(String(NAME_LENGTH))
    provisioner: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    status: Mapped[str] = mapped_column(String(16), default=CertificateStatus.VALID.value)
    #: A :class:`cryptography.x509.ReasonFlags` value, e.g. ``"keyCompromise"``.
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    revoked_at: Mapped[datetime | None]
    der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    #: Hex SHA-256 of the certificate's SubjectPublicKeyInfo: every certificate of one key.
    spki_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    #: Serial (hex) of the certificate that this one renewed.
    renewed_from: Mapped[str | None] = mapped_column(String(SERIAL_LENGTH))

    @property
    def serial_number(self) -> int:
        return int(self.serial, 16)

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)


class CompromisedKey(Base):
    """A key reported compromised (a revocation for keyCompromise): never certified again."""

    __tablename__ = "compromised_keys"

    #: Hex SHA-256 of the key's SubjectPublicKeyInfo.
    spki_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The certificate whose revocation reported it, and its issuer.
    serial: Mapped[str] = mapped_column(String(SERIAL_LENGTH))
    issuer_key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH))
    reported_at: Mapped[datetime]


class UsedToken(Base):
    """A one-time token id (``jti``) that has been spent; the unique key refuses a replay."""

    __tablename__ = "used_tokens"
    __table_args__ = (UniqueConstraint("provisioner", "token_id"),)

    id: Mapped[int] = mapped_column(BigIntegerPrimaryKey, primary_key=True)
    provisioner: Mapped[str] = mapped_column(String(NAME_LENGTH))
    token_id: Mapped[str] = mapped_column(String(TOKEN_ID_LENGTH))
    used_at: Mapped[datetime]
    #: The token's own expiry: past it the token is refused anyway, so the row may go.
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ProvisionerRecord(Base):
    """A configured provisioner; ``config`` is its type-specific settings (no secrets)."""

    __tablename__ = "provisioners"

    id: Mapped[int] = mapped_column(BigIntegerPrimaryKey, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CrlNumber(Base):
    """The last CRL number handed out per issuer (RFC 5280, section 5.2.3: it only grows)."""

    __tablename__ = "crl_numbers"

    issuer_key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH), primary_key=True)
    last_number: Mapped[int] = mapped_column(BigInteger)


class IssuerRecord(Base):
    """A CA certificate of this CA (an intermediate under a root, a root, a cross-certificate)
    and its state: which intermediate issues now, which ones retire, which were revoked.

    A CA folder made before rollover existed has no rows until its first rotation or
    revocation (:mod:`ostiary.authority.rollover` records the folder's own certificates then).
    """

    __tablename__ = "ca_issuers"
    __table_args__ = (
        CheckConstraint("kind IN ('intermediate', 'root', 'cross')", name="kind"),
        CheckConstraint("state IN ('active', 'retiring', 'revoked')", name="state"),
    )

    #: Hex SHA-256 of the certificate.
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    #: Hex of the certificate's subject key identifier (its leaves' AKI).
    key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH), index=True)
    #: Hex of the issuer's key identifier (the root that signed it).
    issuer_key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH))
    serial: Mapped[str] = mapped_column(String(SERIAL_LENGTH))
    subject: Mapped[str] = mapped_column(Text)
    not_after: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))
    der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    #: For an intermediate: an OCSP response about it signed by the root (SHA-1 CertID, RFC
    #: 5019), made with each root CRL while the root key is at hand (the server has none).
    root_ocsp: Mapped[bytes | None] = mapped_column(LargeBinary)

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)


class LatestCrl(Base):
    """The newest CRL published per issuer, shared by every replica (only ever replaced by
    one with a higher number: :mod:`ostiary.store.crl_numbers`).
    """

    __tablename__ = "latest_crls"

    issuer_key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger)
    #: How many revoked certificates of the issuer the CRL was built from.
    generation: Mapped[int] = mapped_column(BigInteger)
    this_update: Mapped[datetime]
    next_update: Mapped[datetime]
    der: Mapped[bytes] = mapped_column(LargeBinary)


class AuditEntry(Base):
    """One decision, hash-chained to the one before it (see :mod:`ostiary.store.audit`)."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(BigIntegerPrimaryKey, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    #: ``"certificate.issued"``, ``"certificate.revoked"``, ``"token.used"``...
    event: Mapped[str] = mapped_column(String(64))
    #: Who asked: a provisioner, an officer, a certificate subject.
    actor: Mapped[str | None] = mapped_column(Text)
    #: What it was about: a serial number, a provisioner name, a requested subject.
    target: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """The one row naming the newest audit entry, so that deleting it shows."""

    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_entry_id: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class SSHCertificateRecord(Base):
    """One issued OpenSSH certificate (``authority/ssh.py``), as issued plus its search fields.

    SSH serials are 64-bit and unique per CA key; ``ca_key_sha256`` names the user or host
    CA key (hex SHA-256 of its public key blob), so a KRL lists each CA's serials.
    """

    __tablename__ = "ssh_certificates"
    __table_args__ = (
        UniqueConstraint("ca_key_sha256", "serial"),
        CheckConstraint("status IN ('valid', 'revoked')", name="status"),
        CheckConstraint("cert_type IN ('user', 'host')", name="cert_type"),
        Index(None, "status", "ca_key_sha256"),
    )

    id: Mapped[int] = mapped_column(BigIntegerPrimaryKey, primary_key=True)
    ca_key_sha256: Mapped[str] = mapped_column(String(64))
    #: Lower-case hex of the 64-bit serial.
    serial: Mapped[str] = mapped_column(String(16))
    cert_type: Mapped[str] = mapped_column(String(8))
    key_id: Mapped[str] = mapped_column(Text)
    principals: Mapped[list[str]]
    not_before: Mapped[datetime]
    not_after: Mapped[datetime] = mapped_column(index=True)
    provisioner: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    status: Mapped[str] = mapped_column(String(16), default=CertificateStatus.VALID.value)
    revoked_at: Mapped[datetime | None]
    #: SHA-256 of the subject key's blob, as ``ssh-keygen -l`` prints it (``SHA256:...``).
    key_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    #: The certificate line, as in a ``-cert.pub`` file.
    certificate: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]

    @property
    def serial_number(self) -> int:
        return int(self.serial, 16)
