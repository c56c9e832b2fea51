"""Remote signing: keys that never leave the CA sign digests and client assertions for callers.

Keys are made, rotated and listed by :mod:`ostiary.authority.signing_keys`.

Operations (:class:`RemoteSigning`): ``sign`` (a digest in, a JWS signature out) and
``assertion`` (the whole RFC 7523 JWT). Each checks, in order: the key exists; the caller
matches one of the key's caller patterns; for assertions the audience is on the key's
allowlist, the lifetime is at most 600 s and the ``jti`` was never used with this key (the
``used_tokens`` table, so replicas agree). Every operation of a caller with a credential,
refused or not, writes one audit entry (``signing.signed``, ``signing.assertion``,
``signing.denied``) with the caller, source address, key and version, alg, SHA-256 of the
signed digest, aud, result and latency, and is reported to
:class:`~ostiary.authority.signing_alerts.SigningAlerts`. A request with no credential of this
CA is only counted (:meth:`RemoteSigning.count_anonymous_refusal`): anonymous callers must
not grow the audit chain.

Caller identities are strings matched by glob patterns (``fnmatch``, case-sensitive): for a
client certificate ``cn:<common name>``, ``serial:<hex>`` and each SAN in the ``kind:value``
form (``uri:spiffe://prod/billing``, ``dns:app.example.com``, ``email:...``); for an admin
token ``admin:<actor>`` (``admin:admin@ops``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from cryptography import x509

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAMaterial
from ostiary.authority.signing_alerts import SigningAlerts
from ostiary.authority.signing_keys import MAX_TEXT, validate_key_name
from ostiary.core.encoding import serial_hex
from ostiary.core.errors import BadRequest, LifetimeNotAllowed, OstiaryError, PolicyDenied
from ostiary.core.jws import (
    MAX_ASSERTION_LIFETIME,
    b64url,
    b64url_decode,
    build_client_assertion,
    sign_digest,
)
from ostiary.core.names import common_name, format_general_name, sans_of
from ostiary.signers.signing_keys import (
    FileSigningKeyStore,
    Pkcs11SigningKeyStore,
    SigningKeyStore,
    SigningKeyStores,
)
from ostiary.store import (
    AuditLog,
    SigningKeyRecord,
    SigningKeyRepository,
    SigningKeyVersion,
)
from ostiary.store.signing_keys import kid_of
from ostiary.store.tokens import TokenRepository


class CallerNotAllowed(PolicyDenied):
    """The caller does not match any of the key's caller patterns."""

    code = "caller-not-allowed"


class DigestSigningNotAllowed(PolicyDenied):
    """The key was made for assertions only (no ``--allow-digest-signing``)."""

    code = "digest-signing-not-allowed"


class AudienceNotAllowed(PolicyDenied):
    """The assertion's audience is not on the key's allowlist."""

    code = "audience-not-allowed"


@dataclass(frozen=True)
class Caller:
    """Who asks: the audit actor and the identities the key's patterns are matched against."""

    actor: str
    identities: tuple[str, ...]

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate) -> Caller:
        serial = serial_hex(certificate.serial_number)
        identities = [f"serial:{serial}"]
        # The one CN the CA authorized; a subject with two is refused (InvalidName), never
        # read as two identities (OpenSSL-based relying parties would take the first).
        cn = common_name(certificate.subject)
        if cn is not None:
            identities.append(f"cn:{cn}")
        identities.extend(format_general_name(name) for name in sans_of(certificate.extensions))
        return cls(actor=f"certificate:{serial}", identities=tuple(identities))

    @classmethod
    def from_admin(cls, actor: str) -> Caller:
        return cls(actor=actor, identities=(f"admin:{actor}",))

    def matches(self, patterns: Sequence[str]) -> bool:
        return any(fnmatchcase(i, p) for p in patterns for i in self.identities)


@dataclass(frozen=True)
class Signature:
    kid: str
    alg: str
    signature: str


@dataclass(frozen=True)
class IssuedAssertion:
    kid: str
    assertion: str
    expires_at: datetime
    jti: str


class RemoteSigning:
    """The ``sign`` and ``assertion`` operations over one authority's signing keys."""

    def __init__(
        self, authority: Authority, key_store: SigningKeyStore, alerts: SigningAlerts | None = None
    ) -> None:
        self.authority = authority
        self.key_store = key_store
        self.alerts = alerts or SigningAlerts()

    def sign(
        self, caller: Caller, key_name: str, *, alg: str, digest: str, source: str | None
    ) -> Signature:
        """Sign a base64url ``digest`` with ``alg``; audited as ``signing.signed``."""
        started = time.monotonic()
        facts: dict[str, Any] = {"operation": "sign", "alg": alg}
        try:
            raw = b64url_decode(digest, what="digest")
            facts["digest_sha256"] = hashlib.sha256(raw).hexdigest()
            record, version = self._authorized(caller, key_name)
            facts["version"] = version.version
            if not record.allow_digest_signing:
                raise DigestSigningNotAllowed(
                    f"signing key {key_name!r} makes assertions only, not bare signatures",
                    key=key_name,
                )
            key = self.key_store.load(version.key_ref)
            signature = sign_digest(key, alg, raw)
        except OstiaryError as error:
            self._deny(caller, key_name, source, facts, error, started)
            raise
        kid = kid_of(record.name, version.version)
        self._record("signing.signed", caller, key_name, source, facts, started, jti=None)
        return Signature(kid=kid, alg=alg, signature=b64url(signature))

    def assertion(
        self,
        caller: Caller,
        key_name: str,
        *,
        client_id: str,
        audience: str,
        lifetime: timedelta,
        source: str | None,
        alg: str | None = None,
        thumbprint: str = "x5t#S256",
        jti: str | None = None,
    ) -> IssuedAssertion:
        """Build and sign an RFC 7523 client assertion; audited as ``signing.assertion``."""
        started = time.monotonic()
        facts: dict[str, Any] = {"operation": "assertion", "aud": audience[:MAX_TEXT]}
        refused_audience: str | None = None
        try:
            if not client_id or len(client_id) > MAX_TEXT:
                raise BadRequest(f"client_id must be 1 to {MAX_TEXT} characters")
            facts["client_id"] = client_id
            record, version = self._authorized(caller, key_name)
            facts["version"] = version.version
            if audience not in record.audiences:
                refused_audience = audience[:MAX_TEXT]
                raise AudienceNotAllowed(
                    f"signing key {key_name!r} does not sign assertions for this audience",
                    key=key_name,
                )
            if lifetime > MAX_ASSERTION_LIFETIME:
                raise LifetimeNotAllowed(
                    f"an assertion lives at most {int(MAX_ASSERTION_LIFETIME.total_seconds())} s",
                    maximum=int(MAX_ASSERTION_LIFETIME.total_seconds()),
                )
            key = self.key_store.load(version.key_ref)
            now = self.authority.clock()
            built = build_client_assertion(
                key,
                version.certificate(),
                client_id=client_id,
                audience=audience,
                now=now,
                lifetime=lifetime,
                alg=alg,
                thumbprint=thumbprint,
                kid=None,
                jti=jti,
            )
            facts.update(
                alg=built.alg,
                jti=built.jti,
                digest_sha256=built.signing_input_sha256.hex(),
                exp=built.expires_at.isoformat(),
            )
        except OstiaryError as error:
            self._deny(caller, key_name, source, facts, error, started, refused_audience)
            raise
        self._record(
            "signing.assertion",
            caller,
            key_name,
            source,
            facts,
            started,
            jti=(built.jti, built.expires_at, now),
        )
        return IssuedAssertion(
            kid=kid_of(record.name, version.version),
            assertion=built.token,
            expires_at=built.expires_at,
            jti=built.jti,
        )

    def audit_refused_caller(
        self, actor: str | None, key_name: str, *, source: str | None, error: OstiaryError
    ) -> None:
        """Audit a request refused before it had a caller, from a client certificate of this
        CA that is revoked, expired or unknown to the store (a revoked workload knocking).
        """
        self.authority.audit(
            "signing.denied",
            actor=actor,
            target=key_name[:MAX_TEXT],
            details={
                "source": source,
                "result": "denied",
                "code": error.code,
                "reason": error.detail,
            },
        )

    def count_anonymous_refusal(self, *, source: str | None, error: OstiaryError) -> None:
        """Account a request refused with no credential of this CA (none, or a bad token).

        Not audited: anyone can send these, as fast as they like, and the audit chain can
        be neither pruned nor flooded. They are counted in the metrics and logged at most
        once a minute (:meth:`SigningAlerts.refused_anonymous`); nothing the caller chose
        (the key name) is kept.
        """
        self.alerts.refused_anonymous(code=error.code, source=source, at=self.authority.clock())

    def _authorized(
        self, caller: Caller, key_name: str
    ) -> tuple[SigningKeyRecord, SigningKeyVersion]:
        validate_key_name(key_name)
        with self.authority.store.transaction(read_only=True) as session:
            repository = SigningKeyRepository(session)
            record = repository.get(key_name)
            if not caller.matches(record.callers):
                presented = ", ".join(caller.identities)[:MAX_TEXT]
                raise CallerNotAllowed(
                    f"this caller may not use signing key {key_name!r}: it presented "
                    f"{presented}, which no --caller pattern of the key matches",
                    key=key_name,
                )
            return record, repository.version(record)

    def _record(
        self,
        event: str,
        caller: Caller,
        key_name: str,
        source: str | None,
        facts: dict[str, Any],
        started: float,
        *,
        jti: tuple[str, datetime, datetime] | None,
    ) -> None:
        """Spend the jti (if any) and write the audit entry in one transaction.

        A replayed jti raises :class:`~ostiary.core.errors.TokenReused` and is audited as
        denied; nothing signed is returned.
        """
        now = self.authority.clock()
        details = {**facts, "source": source, "result": "ok"}
        try:
            with self.authority.store.transaction() as session:
                if jti is not None:
                    token_id, expires_at, at = jti
                    TokenRepository(session).use(
                        token_id, f"signing:{key_name}", expires_at + timedelta(minutes=5), at
                    )
                details["latency_us"] = _micros_since(started)
                AuditLog(session).append(
                    event, actor=caller.actor, target=key_name, details=details, at=now
                )
        except OstiaryError as error:
            self._deny(caller, key_name, source, facts, error, started)
            raise
        self.alerts.observe(caller=caller.actor, key=key_name, source=source, result="ok", at=now)

    def _deny(
        self,
        caller: Caller,
        key_name: str,
        source: str | None,
        facts: dict[str, Any],
        error: OstiaryError,
        started: float,
        refused_audience: str | None = None,
    ) -> None:
        now = self.authority.clock()
        details = {
            **facts,
            "source": source,
            "result": "denied",
            "code": error.code,
            "reason": error.detail,
            "latency_us": _micros_since(started),
        }
        self.authority.audit(
            "signing.denied", actor=caller.actor, target=key_name[:MAX_TEXT], details=details
        )
        self.alerts.observe(
            caller=caller.actor,
            key=key_name[:MAX_TEXT],
            source=source,
            result=error.code,
            at=now,
            refused_audience=refused_audience,
        )


def _micros_since(started: float) -> int:
    """Microseconds since ``started`` (an int: the audit chain's canonical JSON has no floats)."""
    return int((time.monotonic() - started) * 1_000_000)


def signing_key_store(
    material: CAMaterial, password: bytes, *, kms: str | None = None
) -> SigningKeyStores:
    """The signing-key stores of a CA folder: encrypted files (sealed with ``password``,
    the CA password or, for a token CA, its PIN) and, when the CA's own keys are in a PKCS#11
    token, that token. New keys go to ``kms`` (default: the token if there is one).
    """
    stores: dict[str, SigningKeyStore] = {
        "file": FileSigningKeyStore(material.paths.root, password)
    }
    if getattr(material.config, "kms", "file") == "pkcs11":
        from ostiary.signers.pkcs11 import Pkcs11Signer

        if isinstance(material.signer, Pkcs11Signer):
            stores["pkcs11"] = Pkcs11SigningKeyStore(material.signer.token)
    return SigningKeyStores(kms or ("pkcs11" if "pkcs11" in stores else "file"), stores)


def open_remote_signing(
    authority: Authority, password: bytes, *, webhook_url: str | None = None
) -> RemoteSigning:
    """Remote signing over the CA folder's signing keys (see :func:`signing_key_store`)."""
    return RemoteSigning(
        authority,
        signing_key_store(authority.ca, password),
        SigningAlerts(webhook_url=webhook_url or None),
    )


__all__ = [
    "AudienceNotAllowed",
    "Caller",
    "CallerNotAllowed",
    "DigestSigningNotAllowed",
    "IssuedAssertion",
    "RemoteSigning",
    "Signature",
    "open_remote_signing",
    "signing_key_store",
]
