"""The token flows the server and the CLI call: verify, spend once, audit; and mint.

Single use is enforced by the database (:func:`~.single_use.spend_token`): of two replicas
racing with the same token exactly one succeeds, and a replay gets
:class:`~ostiary.core.errors.TokenReused`.

Every refusal of a token is an :class:`~ostiary.core.errors.OstiaryError`, mostly
:class:`~ostiary.core.errors.Unauthorized`; messages never repeat a token or a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from cryptography import x509

from ostiary.core.errors import PolicyDenied
from ostiary.core.issuance import Authorization
from ostiary.core.names import format_general_name
from ostiary.provisioners import _jose
from ostiary.provisioners.base import CAIdentity, TokenGrant, precheck_request
from ostiary.provisioners.cache import ProvisionerCache
from ostiary.provisioners.holder import read_holder_token
from ostiary.provisioners.jwk import TOKEN_HEADERS, TOKEN_TTL, JWKProvisioner
from ostiary.provisioners.manage import load_jwk_provisioner, load_token_provisioner
from ostiary.provisioners.renewal import (
    check_certificate_time,
    check_renewable,
    find_issued_certificate,
)
from ostiary.provisioners.single_use import spend_token
from ostiary.store import AuditLog, Store, TokenSpend

_SIGN_TOKEN = "token"
_ADMIN_TOKEN = "admin token"


def authorize_sign(
    store: Store,
    token: str,
    csr: x509.CertificateSigningRequest,
    *,
    ca: CAIdentity,
    now: datetime,
    requested_not_after: timedelta | datetime | None = None,
) -> Authorization:
    """Verify a one-time sign token for ``csr``, spend it, and return what it authorizes.

    :func:`verify_sign_token`, then the request is checked as the pipeline will check it
    (CSR signature and key, names, profile, lifetime: a request that would fail leaves the
    token usable), then the token is spent in a transaction of its own ("token.used").
    The server does not spend here: it passes the token to
    :meth:`~ostiary.authority.Authority.issue`, which spends it in the transaction that
    records the certificate.
    """
    grant = verify_sign_token(
        store, token, csr, ca=ca, now=now, requested_not_after=requested_not_after
    )
    if grant.requires_attestation:  # this path carries none: refuse, never skip the check
        raise PolicyDenied(
            f"provisioner {grant.provisioner!r} requires a TPM attestation of the key: "
            "request through the CA server (docs/tpm.md)"
        )
    authorization = grant.authorization
    # The token is spent before anything is issued: refuse now what issuing would refuse.
    precheck_request(csr, authorization, ca=ca, now=now)
    spend_token(
        store,
        grant.provisioner,
        grant.token_id,
        grant.expires_at,
        what=_SIGN_TOKEN,
        now=now,
        actor=f"provisioner:{grant.provisioner}",
        target=authorization.subject.rfc4514_string(),
        details={
            "purpose": "sign",
            "provisioner": grant.provisioner,
            "token_id": grant.token_id,
            "san": [format_general_name(n) for n in authorization.names],
            "profile": authorization.profile,
        },
    )
    return authorization


class ProvisionerNotInMemory(Exception):
    """The token's provisioner would be read from the database (not an error of the caller:
    verify again where I/O may wait).
    """


def verify_sign_token(
    store: Store,
    token: str,
    csr: x509.CertificateSigningRequest,
    *,
    ca: CAIdentity,
    now: datetime,
    requested_not_after: timedelta | datetime | None = None,
    provisioners: ProvisionerCache[JWKProvisioner] | None = None,
    in_memory_only: bool = False,
) -> TokenGrant:
    """Verify a one-time sign token for ``csr`` without spending it; what it grants.

    ``in_memory_only`` (a caller on an event loop): raise :class:`ProvisionerNotInMemory`
    instead of reading the provisioner from the database, so that the caller does that in a
    worker thread (a database that does not answer must not stall the loop).

    The provisioner is found by the token's ``iss`` (read unverified, then verified with
    that provisioner's key), from ``provisioners`` when given. ``requested_not_after`` is the
    request body's ``not_after``; see :mod:`ostiary.provisioners.jwk` for how it meets the
    token's. The CSR is not checked here: the caller issues first and spends
    :attr:`TokenGrant.token_id` only with the certificate (``Authority.issue(token=...)``,
    :func:`sign_token_spend`), so a request the pipeline refuses leaves the token usable.
    """
    unverified = _jose.peek(token, what=_SIGN_TOKEN, allowed_headers=TOKEN_HEADERS)
    issuer = unverified.claims.get("iss")
    if provisioners is not None:
        if in_memory_only and isinstance(issuer, str) and provisioners.fresh(issuer) is None:
            raise ProvisionerNotInMemory(issuer)
        provisioner = provisioners.load(issuer, what=_SIGN_TOKEN)
    else:
        provisioner = load_token_provisioner(store, issuer, what=_SIGN_TOKEN)
    return provisioner.authorize(
        unverified, csr, ca=ca, now=now, requested_not_after=requested_not_after
    )


def sign_token_spend(grant: TokenGrant) -> TokenSpend:
    """What spends the token of ``grant`` (in the issuing transaction)."""
    return TokenSpend(grant.provisioner, grant.token_id, grant.expires_at)


def verify_holder_token(
    store: Store,
    token: str,
    *,
    purpose: Literal["renew", "revoke"],
    ca: CAIdentity,
    now: datetime,
) -> x509.Certificate:
    """Verify a token signed by a certificate's own key (``x5c``), spend it; the certificate.

    The certificate must be one this CA issued (in the store, signed by one of
    ``ca.issuers``), not revoked, and valid at ``now``; for ``renew``, its provisioner must
    allow renewal, and an expired certificate passes only within the renew-after-expiry
    window. The token's signature must verify with the certificate's key.
    """
    holder = read_holder_token(token, purpose=purpose, ca=ca, now=now)
    certificate = holder.certificate
    serial = f"{certificate.serial_number:x}"
    with store.transaction(read_only=True) as session:
        record = find_issued_certificate(session, certificate, ca=ca)
        if purpose == "renew":
            check_renewable(session, record, certificate, ca=ca, now=now)
        else:
            check_certificate_time(certificate, now=now)
    spend_token(
        store,
        f"x5c:{record.fingerprint_sha256}",
        holder.token_id,
        holder.expires_at,
        what="holder token",
        now=now,
        actor=f"certificate:{serial}",
        target=serial,
        details={"purpose": purpose, "token_id": holder.token_id},
    )
    return certificate


def verify_admin_token(store: Store, token: str, *, ca: CAIdentity, now: datetime) -> str:
    """Verify an admin token; return the actor (``admin@<provisioner>``) for the audit log.

    Admin tokens are not single-use (a console makes several calls with one) but live at most
    one hour; only provisioners created with ``--admin`` can make them.
    """
    unverified = _jose.peek(token, what=_ADMIN_TOKEN, allowed_headers=TOKEN_HEADERS)
    provisioner = load_token_provisioner(store, unverified.claims.get("iss"), what=_ADMIN_TOKEN)
    return provisioner.verify_admin_token(token, ca=ca, now=now)


def mint_sign_token(
    store: Store,
    provisioner: str,
    subject: str,
    *,
    ca: CAIdentity,
    password: bytes,
    now: datetime,
    sans: Sequence[str] = (),
    profile: str | None = None,
    not_after: str | None = None,
    ttl: timedelta = TOKEN_TTL,
    actor: str | None = None,
) -> str:
    """A one-time sign token from ``provisioner`` (its key unlocked with the CA ``password``).

    The minting is audited ("token.minted", with the token id, never the token).
    """
    with store.transaction(read_only=True) as session:
        loaded = load_jwk_provisioner(session, provisioner)
    token_id = _jose.new_token_id()
    token = loaded.mint_sign_token(
        loaded.load_private_key(password),
        subject,
        ca=ca,
        now=now,
        sans=sans,
        profile=profile,
        not_after=not_after,
        ttl=ttl,
        token_id=token_id,
    )
    claims = _jose.peek(token, what=_SIGN_TOKEN, allowed_headers=TOKEN_HEADERS).claims
    _audit_minted(
        store,
        now=now,
        actor=actor,
        target=subject,
        details={
            "purpose": "sign",
            "provisioner": provisioner,
            "token_id": token_id,
            "san": list(claims["sans"]),
            "profile": claims["profile"],
            "ttl_seconds": int(ttl.total_seconds()),
        },
    )
    return token


def mint_admin_token(
    store: Store,
    provisioner: str,
    *,
    ca: CAIdentity,
    password: bytes,
    now: datetime,
    ttl: timedelta = TOKEN_TTL,
    actor: str | None = None,
) -> str:
    """An admin token from an admin ``provisioner``; audited like :func:`mint_sign_token`."""
    with store.transaction(read_only=True) as session:
        loaded = load_jwk_provisioner(session, provisioner)
    token_id = _jose.new_token_id()
    token = loaded.mint_admin_token(
        loaded.load_private_key(password), ca=ca, now=now, ttl=ttl, token_id=token_id
    )
    _audit_minted(
        store,
        now=now,
        actor=actor,
        target=f"admin@{provisioner}",
        details={
            "purpose": "admin",
            "provisioner": provisioner,
            "token_id": token_id,
            "ttl_seconds": int(ttl.total_seconds()),
        },
    )
    return token


def _audit_minted(
    store: Store, *, now: datetime, actor: str | None, target: str, details: dict[str, Any]
) -> None:
    with store.transaction() as session:
        AuditLog(session).append(
            "token.minted", at=now, actor=actor, target=target, details=details
        )
