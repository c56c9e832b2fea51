"""Changing and removing signing keys (``ca key update``, ``ca key remove``).

A key's policy (audiences, callers, whether bare digests are signed) changes in place, so the
certificates already uploaded to the identity provider keep working; the change is one audit
entry, ``signing_key.updated``, with the old and the new values. Removing a key revokes the
certificate of every version (``cessationOfOperation``: a leaked copy stops being accepted
wherever revocation is checked), forgets the file keys and deletes the record; one audit
entry, ``signing_key.removed``, next to each ``certificate.revoked``. Keys in a PKCS#11
token stay in the token (remove them with its tools), as :meth:`discard` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from ostiary.authority.authority import Authority
from ostiary.authority.signing_keys import DEFAULT_CALLERS, check_audiences, validate_key_name
from ostiary.core.encoding import parse_serial
from ostiary.core.errors import AlreadyRevoked, BadRequest
from ostiary.signers.signing_keys import SigningKeyStore, SigningKeyStores
from ostiary.store import AuditLog, SigningKeyRepository

#: Longest caller pattern (a glob over an identity).
_MAX_PATTERN = 512


@dataclass(frozen=True)
class SigningKeyChange:
    """What ``update`` changes; None leaves that setting as it is."""

    audiences: Sequence[str] | None = None
    callers: Sequence[str] | None = None
    allow_digest_signing: bool | None = None

    def is_empty(self) -> bool:
        return self.audiences is None and self.callers is None and self.allow_digest_signing is None


def _check_callers(callers: Sequence[str]) -> list[str]:
    found = list(dict.fromkeys(c.strip() for c in callers if c.strip()))
    if not found:
        raise BadRequest(
            f"a signing key needs at least one --caller (at create the default is "
            f"{DEFAULT_CALLERS[0]})"
        )
    for pattern in found:
        if len(pattern) > _MAX_PATTERN:
            raise BadRequest(f"a caller pattern has at most {_MAX_PATTERN} characters")
    return found


def update_signing_key(
    authority: Authority, name: str, change: SigningKeyChange, *, actor: str | None
) -> dict[str, Any]:
    """Apply ``change`` to key ``name`` (validated as at create); the settings now in force."""
    validate_key_name(name)
    if change.is_empty():
        raise BadRequest("nothing to change: give --audience, --caller or --allow-digest-signing")
    audiences = check_audiences(change.audiences) if change.audiences is not None else None
    callers = _check_callers(change.callers) if change.callers is not None else None
    now = authority.clock()
    with authority.store.transaction() as session:
        record = SigningKeyRepository(session).get(name, for_update=True)
        before = _settings(record.audiences, record.callers, record.allow_digest_signing)
        if audiences is not None:
            record.audiences = audiences
        if callers is not None:
            record.callers = callers
        if change.allow_digest_signing is not None:
            record.allow_digest_signing = change.allow_digest_signing
        after = _settings(record.audiences, record.callers, record.allow_digest_signing)
        record.updated_at = now
        AuditLog(session).append(
            "signing_key.updated",
            actor=actor,
            target=name,
            details={"before": before, "after": after},
            at=now,
        )
    return after


def remove_signing_key(
    authority: Authority, key_store: SigningKeyStore, name: str, *, actor: str | None
) -> list[str]:
    """Revoke every version's certificate, forget the keys, delete the record; the serials."""
    validate_key_name(name)
    with authority.store.transaction(read_only=True) as session:
        repository = SigningKeyRepository(session)
        versions = [
            (v.serial, v.backend, v.key_ref) for v in repository.versions(repository.get(name))
        ]
    serials = [serial for serial, _, _ in versions]
    for serial in serials:
        try:
            authority.revoke(
                parse_serial(serial), reason=x509.ReasonFlags.cessation_of_operation, actor=actor
            )
        except AlreadyRevoked:
            pass
    now = authority.clock()
    with authority.store.transaction() as session:
        record = SigningKeyRepository(session).get(name, for_update=True)
        session.delete(record)
        AuditLog(session).append(
            "signing_key.removed",
            actor=actor,
            target=name,
            details={"revoked": serials},
            at=now,
        )
    for _, backend, reference in versions:
        store = key_store.using(backend) if isinstance(key_store, SigningKeyStores) else key_store
        store.discard(reference)
    return serials


def _settings(audiences: Sequence[str], callers: Sequence[str], digests: bool) -> dict[str, Any]:
    return {
        "audiences": list(audiences),
        "callers": list(callers),
        "allow_digest_signing": digests,
    }


__all__ = ["SigningKeyChange", "remove_signing_key", "update_signing_key"]
