"""The write of one issuance, as the store's group commit runs it.

:class:`~ostiary.authority.authority.Authority` signs a certificate, then hands the store a
:data:`~ostiary.store.Unit` made here: the certificate row, its audit entry and what the
caller records with it (an ACME order's serial), written in one transaction with the
records of concurrent issuances. The unit is also where the refusals that only the write
transaction can decide are made: a one-time token spent meanwhile, a key reported
compromised, a second successor of one certificate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from cryptography import x509

from ostiary.core.encoding import serial_hex
from ostiary.core.errors import KeyCompromised, Superseded, TokenReused
from ostiary.core.issuance import Authorization
from ostiary.core.names import format_general_name
from ostiary.store import (
    Batch,
    TokenSpend,
    TokenUse,
    Unit,
    certificate_values,
    key_is_compromised,
    record_certificate,
)


def issuance_unit(
    certificate: x509.Certificate,
    authorization: Authorization,
    *,
    actor: str | None,
    event: str,
    details: dict[str, Any] | None,
    at: datetime,
    token: TokenSpend | None,
    renewed_from: int | None = None,
    then: Callable[[Batch, x509.Certificate], None] | None = None,
) -> Unit[bool]:
    """The write of one issuance: False (and a "token.reused" entry) for a spent token.

    The row and the entry are made here, in the caller's thread, and read the
    certificate's fields once; the unit only queues them (see
    :mod:`ostiary.store.group_commit`). In the write transaction it refuses a key
    reported compromised (:class:`KeyCompromised`), so that a revocation for
    keyCompromise committed before this transaction is never outrun; and, for a
    renewal, a second successor of one certificate (:class:`Superseded`, by the
    database's unique key, on any replica).
    """
    row = certificate_values(
        certificate,
        profile=authorization.profile,
        provisioner=authorization.provisioner,
        now=at,
        renewed_from=renewed_from,
    )
    names = [format_general_name(n) for n in authorization.names]
    entry = {
        "subject": row["subject"],
        "san": names,
        "profile": authorization.profile,
        "provisioner": authorization.provisioner,
        "not_after": row["not_after"].isoformat(),
        "fingerprint_sha256": row["fingerprint_sha256"],
        **({"token_id": token.token_id} if token is not None else {}),
        **(details or {}),
    }
    serial = serial_hex(certificate.serial_number)
    superseded = None
    if renewed_from is not None:
        predecessor = serial_hex(renewed_from)

        def superseded() -> Exception:
            return Superseded(
                f"certificate {predecessor} was renewed at the same moment by another "
                "request: renew with the newest certificate",
                serial=predecessor,
            )

    def unit(batch: Batch) -> bool:
        if token is not None and not batch.token_spent:
            batch.audit.append(
                "token.reused",
                at=at,
                actor=actor,
                target=authorization.subject.rfc4514_string(),
                details={
                    "purpose": "sign",
                    "provisioner": token.provisioner,
                    "token_id": token.token_id,
                    "san": names,
                    "profile": authorization.profile,
                },
            )
            return False
        if key_is_compromised(batch.connection, row["spki_sha256"]):
            raise KeyCompromised(
                "this key was reported compromised (a certificate for it was revoked for "
                "keyCompromise): make a new key and request a new certificate",
                spki_sha256=row["spki_sha256"],
            )
        record_certificate(batch, row, duplicate=superseded)
        batch.audit.append(event, at=at, actor=actor, target=serial, details=entry)
        if then is not None:
            then(batch, certificate)
        return True

    return unit


def token_use(token: TokenSpend | None, at: datetime) -> TokenUse | None:
    """What the store spends with the unit: ``token`` at ``at``, if any."""
    return TokenUse(token, at) if token is not None else None


def check_spent(recorded: bool, token: TokenSpend | None) -> None:
    """:class:`TokenReused` when the unit found its token spent (it recorded nothing)."""
    if not recorded:
        raise TokenReused(
            "this token was already used: tokens are single-use",
            token_id=token.token_id if token is not None else None,
        )
