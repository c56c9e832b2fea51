"""Remote signing: keys that never leave the CA sign digests and client assertions for callers.

Keys (:func:`create_signing_key`, :func:`rotate_signing_key`, :func:`list_signing_keys`):
each version is a key pair in a :class:`~ostiary.signers.signing_keys.SigningKeyStore` and a
certificate issued for it through :meth:`Authority.issue` (profile ``client``, so it is
recorded, audited and revocable like any other certificate; Entra ID accepts any usage on a
certificate credential, and digitalSignature is what it is used for).

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
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAMaterial
from ostiary.authority.signing_alerts import SigningAlerts
from ostiary.core.encoding import serial_hex
from ostiary.core.errors import BadRequest, LifetimeNotAllowed, OstiaryError, PolicyDenied
from ostiary.core.issuance import Authorization
from ostiary.core.jws import (
    MAX_ASSERTION_LIFETIME,
    b64url,
    b64url_decode,
    build_client_assertion,
    sign_digest,
)
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import common_name, format_general_name, parse_subject, sans_of
from ostiary.signers.signing_keys import (
    SIGNING_KEY_TYPES,
    FileSigningKeyStore,
    Pkcs11SigningKeyStore,
    SigningKeyStore,
    SigningKeyStores,
    generate_signing_key,
)
from ostiary.store import (
    AuditLog,
    SigningKeyRecord,
    SigningKeyRepository,
    SigningKeyVersion,
    Store,
)
from ostiary.store.signing_keys import kid_of
from ostiary.store.tokens import TokenRepository

#: Key names: what a URL path segment and a file name can both carry.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: Default and longest lifetime of a signing key's certificate.
DEFAULT_CERTIFICATE_LIFETIME = timedelta(days=365)
_CERTIFICATE_LIFETIME = Lifetime(
    timedelta(hours=1), DEFAULT_CERTIFICATE_LIFETIME, timedelta(days=1095)
)
#: Audiences and client ids are URLs and GUIDs: bounded so that rows and logs stay small.
_MAX_TEXT = 512
#: Callers allowed on a key created without ``--caller``: admin tokens only.
DEFAULT_CALLERS = ("admin:*",)
#: The kinds of caller identity a pattern may name (:meth:`Caller.from_certificate`).
CALLER_KINDS = ("cn", "serial", "admin", "dns", "email", "ip", "uri", "upn", "pid")


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
class SigningKeyInfo:
    """A signing key as listed: its policy and versions."""

    name: str
    key_type: str
    audiences: list[str]
    callers: list[str]
    allow_digest_signing: bool
    current_version: int
    versions: list[tuple[int, str, str, datetime]]  # (version, backend, serial, created_at)


def validate_key_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadRequest(
            "a signing key name is 1-64 characters: lower-case letters, digits, '-' and '_'"
        )
    return name


def check_caller_patterns(callers: Sequence[str]) -> list[str]:
    """Caller patterns as given, each saying which kind of identity it matches.

    A caller's identities are ``kind:value`` texts (``cn:app1``, ``uri:...``, ``admin:...``):
    a pattern without a kind (``app1``) could never match one, and would lock every caller
    out without a word, so it is refused with the forms that would do.
    """
    for pattern in callers:
        kind, sep, rest = pattern.partition(":")
        if len(pattern) > _MAX_TEXT:
            raise BadRequest(f"a caller pattern is at most {_MAX_TEXT} characters")
        if not sep or kind not in CALLER_KINDS or not rest:
            guess = f"'cn:{pattern}'" if not sep else f"'cn:{rest or '*'}'"
            raise BadRequest(
                f"caller pattern {pattern!r} names no kind of identity, so it would never "
                f"match: write it as kind:glob with kind one of {', '.join(CALLER_KINDS)} "
                f"(e.g. {guess} for a certificate whose common name is that)"
            )
    return list(dict.fromkeys(callers))


def _check_audiences(audiences: Sequence[str]) -> list[str]:
    if not audiences:
        raise BadRequest("a signing key needs at least one --audience")
    for audience in audiences:
        if not audience.startswith("https://") or len(audience) > _MAX_TEXT:
            raise BadRequest(f"an audience is an https:// URL of at most {_MAX_TEXT} characters")
    return list(dict.fromkeys(audiences))


def _issue_key_certificate(
    authority: Authority,
    name: str,
    version: int,
    key_store: SigningKeyStore,
    key_type: str,
    *,
    lifetime: timedelta | None,
    actor: str | None,
) -> tuple[str, x509.Certificate]:
    reference, key = key_store.create(name, version, key_type)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(parse_subject(f"{name} signing key v{version}"))
        .sign(key, hashes.SHA256())
    )
    authorization = Authorization(
        subject=csr.subject,
        names=(),
        profile="client",
        lifetime=_CERTIFICATE_LIFETIME,
        requested=lifetime,
        provisioner=None,
    )
    try:
        certificate = authority.issue(
            csr,
            authorization,
            actor=actor,
            details={"signing_key": name, "signing_key_version": version},
        )
    except OstiaryError:
        key_store.discard(reference)
        raise
    return reference, certificate


def create_signing_key(
    authority: Authority,
    key_store: SigningKeyStore,
    name: str,
    *,
    key_type: str,
    audiences: Sequence[str],
    callers: Sequence[str] = (),
    lifetime: timedelta | None = None,
    actor: str | None = None,
    allow_digest_signing: bool = False,
) -> tuple[SigningKeyVersion, x509.Certificate]:
    """Make key ``name`` version 1 and its certificate; record and audit both.

    ``allow_digest_signing`` opens the bare ``sign`` operation; without it the key makes only
    assertions, whose audience, lifetime and jti the CA checks.
    """
    validate_key_name(name)
    if key_type not in SIGNING_KEY_TYPES:
        generate_signing_key(key_type)  # raises the readable error
    audience_list = _check_audiences(audiences)
    caller_list = check_caller_patterns(callers) or list(DEFAULT_CALLERS)
    now = authority.clock()
    with authority.store.transaction() as session:
        SigningKeyRepository(session).add(
            name,
            key_type=key_type,
            audiences=audience_list,
            callers=caller_list,
            now=now,
            allow_digest_signing=allow_digest_signing,
        )
    try:
        return _add_version(authority, key_store, name, lifetime=lifetime, actor=actor)
    except OstiaryError:
        with authority.store.transaction() as session:
            session.delete(SigningKeyRepository(session).get(name))
        raise


def rotate_signing_key(
    authority: Authority,
    key_store: SigningKeyStore,
    name: str,
    *,
    lifetime: timedelta | None = None,
    actor: str | None = None,
) -> tuple[SigningKeyVersion, x509.Certificate]:
    """A new key pair and certificate for ``name``, which becomes current at once; it is made
    where the current version lives (a file key stays a file key).
    """
    with authority.store.transaction(read_only=True) as session:
        repository = SigningKeyRepository(session)
        backend = repository.version(repository.get(name)).backend
    if isinstance(key_store, SigningKeyStores):
        key_store = key_store.using(backend)
    return _add_version(authority, key_store, name, lifetime=lifetime, actor=actor)


def _add_version(
    authority: Authority,
    key_store: SigningKeyStore,
    name: str,
    *,
    lifetime: timedelta | None,
    actor: str | None,
) -> tuple[SigningKeyVersion, x509.Certificate]:
    with authority.store.transaction(read_only=True) as session:
        record = SigningKeyRepository(session).get(name)
        number, key_type = record.current_version + 1, record.key_type
    reference, certificate = _issue_key_certificate(
        authority, name, number, key_store, key_type, lifetime=lifetime, actor=actor
    )
    now = authority.clock()
    with authority.store.transaction() as session:
        repository = SigningKeyRepository(session)
        record = repository.get(name, for_update=True)
        version = repository.add_version(
            record, backend=key_store.backend, key_ref=reference, certificate=certificate, now=now
        )
        AuditLog(session).append(
            "signing_key.created" if number == 1 else "signing_key.rotated",
            actor=actor,
            target=name,
            details={
                "version": number,
                "key_type": record.key_type,
                "backend": key_store.backend,
                "serial": version.serial,
                "audiences": list(record.audiences),
                "callers": list(record.callers),
                "allow_digest_signing": record.allow_digest_signing,
            },
            at=now,
        )
    return version, certificate


def list_signing_keys(source: Authority | Store) -> list[SigningKeyInfo]:
    """Every signing key; reads the database only (no key is unlocked)."""
    store = source.store if isinstance(source, Authority) else source
    with store.transaction(read_only=True) as session:
        repository = SigningKeyRepository(session)
        return [
            SigningKeyInfo(
                name=record.name,
                key_type=record.key_type,
                audiences=list(record.audiences),
                callers=list(record.callers),
                allow_digest_signing=record.allow_digest_signing,
                current_version=record.current_version,
                versions=[
                    (v.version, v.backend, v.serial, v.created_at)
                    for v in repository.versions(record)
                ],
            )
            for record in repository.all()
        ]


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
        facts: dict[str, Any] = {"operation": "assertion", "aud": audience[:_MAX_TEXT]}
        refused_audience: str | None = None
        try:
            if not client_id or len(client_id) > _MAX_TEXT:
                raise BadRequest(f"client_id must be 1 to {_MAX_TEXT} characters")
            facts["client_id"] = client_id
            record, version = self._authorized(caller, key_name)
            facts["version"] = version.version
            if audience not in record.audiences:
                refused_audience = audience[:_MAX_TEXT]
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
            target=key_name[:_MAX_TEXT],
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
                presented = ", ".join(caller.identities)[:_MAX_TEXT]
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
            "signing.denied", actor=caller.actor, target=key_name[:_MAX_TEXT], details=details
        )
        self.alerts.observe(
            caller=caller.actor,
            key=key_name[:_MAX_TEXT],
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
    "CALLER_KINDS",
    "DEFAULT_CALLERS",
    "AudienceNotAllowed",
    "Caller",
    "CallerNotAllowed",
    "DigestSigningNotAllowed",
    "IssuedAssertion",
    "RemoteSigning",
    "Signature",
    "SigningKeyInfo",
    "check_caller_patterns",
    "create_signing_key",
    "list_signing_keys",
    "open_remote_signing",
    "rotate_signing_key",
    "signing_key_store",
    "validate_key_name",
]
