"""Signing keys and their versions: names, caller and audience policy, create, rotate, list.

Each version is a key pair in a :class:`~ostiary.signers.signing_keys.SigningKeyStore` and a
certificate issued for it through :meth:`Authority.issue` (profile ``client``, so it is
recorded, audited and revocable like any other certificate; Entra ID accepts any usage on a
certificate credential, and digitalSignature is what it is used for). What the keys are used
for is :mod:`ostiary.authority.remote_signing`; changing and removing them is
:mod:`ostiary.authority.signing_key_admin`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ostiary.authority.authority import Authority
from ostiary.core.errors import BadRequest, OstiaryError
from ostiary.core.issuance import Authorization
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import parse_subject
from ostiary.signers.signing_keys import (
    SIGNING_KEY_TYPES,
    SigningKeyStore,
    SigningKeyStores,
    generate_signing_key,
)
from ostiary.store import AuditLog, SigningKeyRepository, SigningKeyVersion, Store

#: Key names: what a URL path segment and a file name can both carry.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: Default and longest lifetime of a signing key's certificate.
DEFAULT_CERTIFICATE_LIFETIME = timedelta(days=365)
_CERTIFICATE_LIFETIME = Lifetime(
    timedelta(hours=1), DEFAULT_CERTIFICATE_LIFETIME, timedelta(days=1095)
)
#: Audiences and client ids are URLs and GUIDs: bounded so that rows and logs stay small.
MAX_TEXT = 512
#: Callers allowed on a key created without ``--caller``: admin tokens only.
DEFAULT_CALLERS = ("admin:*",)
#: The kinds of caller identity a pattern may name (``remote_signing.Caller``).
CALLER_KINDS = ("cn", "serial", "admin", "dns", "email", "ip", "uri", "upn", "pid")


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
        if len(pattern) > MAX_TEXT:
            raise BadRequest(f"a caller pattern is at most {MAX_TEXT} characters")
        if not sep or kind not in CALLER_KINDS or not rest:
            guess = f"'cn:{pattern}'" if not sep else f"'cn:{rest or '*'}'"
            raise BadRequest(
                f"caller pattern {pattern!r} names no kind of identity, so it would never "
                f"match: write it as kind:glob with kind one of {', '.join(CALLER_KINDS)} "
                f"(e.g. {guess} for a certificate whose common name is that)"
            )
    return list(dict.fromkeys(callers))


def check_audiences(audiences: Sequence[str]) -> list[str]:
    if not audiences:
        raise BadRequest("a signing key needs at least one --audience")
    for audience in audiences:
        if not audience.startswith("https://") or len(audience) > MAX_TEXT:
            raise BadRequest(f"an audience is an https:// URL of at most {MAX_TEXT} characters")
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
    audience_list = check_audiences(audiences)
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
