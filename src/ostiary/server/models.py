"""The JSON documents of the API (requests and answers), and how their fields are read.

Request models forbid unknown members and bound every string, so a typo is a clear 400 and
a huge field never reaches a parser. Serial numbers are hex at this edge and ``int`` inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, Field

from ostiary.core.crl import parse_revocation_reason as parse_reason
from ostiary.core.encoding import serial_hex
from ostiary.core.errors import BadRequest
from ostiary.provisioners import parse_not_after
from ostiary.store import CertificateRecord

#: Longest PEM CSR and JWT accepted (the body cap is 64 KiB anyway).
MAX_PEM = 48 * 1024
MAX_TOKEN = 16 * 1024


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignRequest(_Request):
    """``POST /sign``: a CSR and the one-time token that authorizes it."""

    csr: str = Field(min_length=1, max_length=MAX_PEM, description="PKCS#10 request, PEM")
    token: str = Field(min_length=1, max_length=MAX_TOKEN, description="one-time token (JWT)")
    not_after: str | None = Field(
        None,
        max_length=64,
        description="requested lifetime ('24h', '7d') or end (RFC 3339); default: the claims'",
    )
    attestation: dict[str, Any] | None = Field(
        None, description="TPM attestation of the CSR's key (docs/tpm.md), if required"
    )


class RenewRequest(_Request):
    """``POST /renew``: nothing to keep the key, or a CSR for a new key."""

    csr: str | None = Field(
        None, min_length=1, max_length=MAX_PEM, description="PKCS#10 request for a new key"
    )


class RevokeRequest(_Request):
    """``POST /revoke``: which certificate, and why (an RFC 5280 section 5.3.1 reason)."""

    serial_number: str = Field(min_length=1, max_length=64, description="hex, colons allowed")
    reason: str = Field("unspecified", min_length=1, max_length=64, examples=["keyCompromise"])


class CertificateAnswer(BaseModel):
    """A newly issued certificate, with the CA certificates that lead to the root."""

    certificate: str = Field(description="PEM")
    chain: list[str] = Field(description="issuing CA certificate(s), PEM, root excluded")
    serial_number: str = Field(description="hex")
    not_after: datetime

    @classmethod
    def of(cls, certificate: x509.Certificate, chain_pem: Sequence[str]) -> CertificateAnswer:
        """The answer for ``certificate``; ``chain_pem`` is already PEM (encoded once per
        intermediate, :meth:`~ostiary.server.context.ServerContext.chain_of`).
        """
        return cls(
            certificate=_pem(certificate),
            chain=list(chain_pem),
            serial_number=serial_hex(certificate.serial_number),
            not_after=certificate.not_valid_after_utc,
        )


class RevokeAnswer(BaseModel):
    serial_number: str
    status: Literal["revoked"] = "revoked"


class Roots(BaseModel):
    roots: list[str] = Field(description="the CA's root certificates, PEM, oldest first")
    cross_certificates: list[str] = Field(
        default_factory=list,
        description="cross-certificates between the roots (each root's key signed by the "
        "other), PEM: how a client that trusts one root learns the next",
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class CertificateSummary(BaseModel):
    """One recorded certificate, as listed."""

    serial_number: str
    subject: str
    sans: list[str]
    profile: str
    provisioner: str | None
    status: str
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None
    revocation_reason: str | None
    fingerprint_sha256: str

    @classmethod
    def of(cls, record: CertificateRecord) -> CertificateSummary:
        return cls(
            serial_number=record.serial,
            subject=record.subject,
            sans=list(record.sans),
            profile=record.profile,
            provisioner=record.provisioner,
            status=record.status,
            not_before=record.not_before,
            not_after=record.not_after,
            revoked_at=record.revoked_at,
            revocation_reason=record.revocation_reason,
            fingerprint_sha256=record.fingerprint_sha256,
        )


class CertificateDetail(CertificateSummary):
    """One recorded certificate with its PEM."""

    certificate: str = Field(description="PEM")
    issued_at: datetime

    @classmethod
    def of(cls, record: CertificateRecord) -> CertificateDetail:
        summary = CertificateSummary.of(record).model_dump()
        return cls(
            **summary,
            certificate=_pem(record.certificate()),
            issued_at=record.created_at,
        )


class CertificateList(BaseModel):
    certificates: list[CertificateSummary]
    next_offset: int | None = Field(description="offset of the next page; null on the last")


#: Reasons a holder may give for revoking its own certificate; the others (CA compromise,
#: privilege withdrawn, ...) are the CA operator's to state. removeFromCRL and certificateHold
#: are never accepted: revocation here is permanent.
HOLDER_REASONS = frozenset(
    {
        x509.ReasonFlags.unspecified,
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.cessation_of_operation,
    }
)


def parse_requested_not_after(text: str | None) -> timedelta | datetime | None:
    """A lifetime (``24h``) or an RFC 3339 time with a zone, as the client asked."""
    if text is None:
        return None
    try:
        return parse_not_after(text)
    except OverflowError:
        raise BadRequest(f"not_after {text!r} is too far away") from None


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


__all__ = [
    "HOLDER_REASONS",
    "CertificateAnswer",
    "CertificateDetail",
    "CertificateList",
    "CertificateSummary",
    "Health",
    "RenewRequest",
    "RevokeAnswer",
    "RevokeRequest",
    "Roots",
    "SignRequest",
    "parse_reason",
    "parse_requested_not_after",
]
