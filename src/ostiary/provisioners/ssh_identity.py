"""SSH user certificates for a signed-in identity: an OIDC sign-in, or an X.509 certificate.

The principals come from the identity, never from the request, by the provisioner's
``principals_from`` mapping (``ostiary ca ssh policy NAME --principals-from ...``):

    email-local   the local part of a verified e-mail address (``first.last`` of
                  ``first.last@corp.example``)
    email         the whole verified address
    upn-local     the part of the UPN before ``@``
    upn           the whole UPN
    cn            the X.509 subject's common name (the exchange only)
    groups        each entry of the ID token's ``groups`` claim (OIDC only)
    claim:NAME    the ID token claim NAME, a string or a list of strings
                  (e.g. ``claim:preferred_username``; OIDC only)

Values are kept exactly as the identity spells them (dots, ``@``, ``+``, non-ASCII letters:
step-ca#253); a value OpenSSH cannot carry (a comma, a space, a control character) or outside
the policy's principal patterns is left out, and an identity that maps to no principal at
all is refused. The request may ask for fewer principals (a subset), never for others.

- OIDC: the ID token is verified by the ``oidc`` provisioner (signature, issuer, audience,
  tenant, domain and group rules) and its nonce must commit to the SSH public key
  (:mod:`.oidc_binding`), so a sign-in authorizes one key; it is spent with the certificate.
- X.509 exchange: the holder of a current, unrevoked certificate of this CA (proven by the
  mTLS handshake) gets an SSH user certificate under the policy of the provisioner that
  issued the X.509 certificate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from ostiary.core.encoding import serial_hex
from ostiary.core.errors import BadRequest, NameNotAuthorized, NotFound, PolicyDenied
from ostiary.core.names import UPN_OID, common_name, decode_other_name, sans_of
from ostiary.provisioners.base import CAIdentity
from ostiary.provisioners.oidc import sign_in_provisioner
from ostiary.provisioners.oidc_binding import check_nonce_for_key
from ostiary.provisioners.oidc_discovery import ProviderDirectory
from ostiary.provisioners.oidc_id_token import (
    id_token_kept_until,
    id_token_spend_id,
    verify_id_token,
)
from ostiary.provisioners.oidc_identity import check_groups, identity_of
from ostiary.provisioners.renewal import check_certificate_time, find_issued_certificate
from ostiary.provisioners.ssh import SSHGrant, SSHPolicy, check_principal, load_ssh_policy
from ostiary.ssh import SSHCertificateType, SSHPublicKey
from ostiary.store import Store, TokenSpend

_MAX_GROUPS = 200


@dataclass(frozen=True)
class IdentityFacts:
    """What an identity says about itself, as principals may be taken from it."""

    emails: tuple[str, ...] = ()
    upns: tuple[str, ...] = ()
    common_name: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


def map_principals(
    policy: SSHPolicy,
    facts: IdentityFacts,
    *,
    provisioner: str,
    requested: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """The principals ``facts`` map to under ``policy`` (or the ``requested`` subset)."""
    if not policy.principals_from:
        raise PolicyDenied(
            f"provisioner {provisioner!r} maps no identity to SSH principals (the CA owner "
            f"sets it: ostiary ca ssh policy {provisioner} --principals-from email-local)"
        )
    found: list[str] = []
    for source in policy.principals_from:
        found.extend(_values(source, facts))
    usable = [value for value in dict.fromkeys(found) if _usable(value, policy)]
    if not usable:
        raise PolicyDenied(
            f"this identity maps to no usable SSH principal under provisioner {provisioner!r} "
            f"(from {', '.join(policy.principals_from)}; allowed {', '.join(policy.principals)})"
        )
    if not requested:
        return policy.check_principals(usable)
    for principal in requested:
        if principal not in usable:
            raise NameNotAuthorized(
                f"principal {principal[:64]!r} is not yours: this identity gives "
                f"{', '.join(usable)}",
                principal=principal[:64],
            )
    return policy.check_principals(list(requested))


def _values(source: str, facts: IdentityFacts) -> list[str]:
    if source == "email":
        return list(facts.emails)
    if source == "email-local":
        return [address.rpartition("@")[0] for address in facts.emails]
    if source == "upn":
        return list(facts.upns)
    if source == "upn-local":
        return [upn.rpartition("@")[0] or upn for upn in facts.upns]
    if source == "cn":
        return [facts.common_name] if facts.common_name else []
    if source == "groups":
        groups = facts.claims.get("groups")
        if isinstance(groups, list):
            return [g for g in groups[:_MAX_GROUPS] if isinstance(g, str)]
        return []
    value = facts.claims.get(source.removeprefix("claim:"))
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value[:_MAX_GROUPS] if isinstance(v, str)]
    return []


def _usable(value: str, policy: SSHPolicy) -> bool:
    try:
        check_principal(value)
        policy.check_principals([value])
    except (BadRequest, NameNotAuthorized):
        return False
    return True


# --------------------------------------------------------------------------- OIDC


def authorize_ssh_sign_in(
    store: Store,
    provisioner: str,
    id_token: str,
    public_key: SSHPublicKey,
    *,
    now: datetime,
    principals: Sequence[str] | None = None,
    lifetime: timedelta | None = None,
    directory: ProviderDirectory | None = None,
) -> SSHGrant:
    """Verify an ID token made for ``public_key``; the user certificate it authorizes.

    The ID token is spent (under ``oidc:<provisioner>``, as X.509 sign-ins are) in the
    transaction that records the certificate.
    """
    loaded = sign_in_provisioner(store, provisioner, directory=directory)
    claims, expires_at = verify_id_token(loaded, id_token, now=now)
    check_nonce_for_key(claims.get("nonce"), public_key.key)
    identity = identity_of(loaded, claims)  # the domain rule; an e-mail or UPN is needed
    check_groups(loaded, claims)
    _, policy = load_ssh_policy(store, loaded.name)
    facts = names_facts(identity.names, claims=claims)
    names = map_principals(policy, facts, provisioner=loaded.name, requested=principals)
    authorization = policy.authorization(
        SSHCertificateType.USER,
        names,
        key_id=identity.display or names[0],
        provisioner=loaded.name,
        lifetime=lifetime,
    )
    spend = TokenSpend(
        f"oidc:{loaded.name}", id_token_spend_id(claims, id_token), id_token_kept_until(expires_at)
    )
    return SSHGrant(authorization, spend)


# --------------------------------------------------------------------------- X.509


def authorize_ssh_exchange(
    store: Store,
    certificate: x509.Certificate,
    *,
    ca: CAIdentity,
    now: datetime,
    principals: Sequence[str] | None = None,
    lifetime: timedelta | None = None,
) -> tuple[SSHGrant, str]:
    """The user certificate an X.509 certificate of this CA exchanges for; and its serial.

    The certificate must be recorded here, signed by our issuing key, unrevoked and within
    its validity; the policy is that of the provisioner that issued it.
    """
    with store.transaction(read_only=True) as session:
        record = find_issued_certificate(session, certificate, ca=ca)  # revoked: refused
    check_certificate_time(certificate, now=now)
    if record.provisioner is None:
        raise PolicyDenied(
            "this certificate was signed offline, by no provisioner: it has no SSH policy"
        )
    try:
        _, policy = load_ssh_policy(store, record.provisioner)
    except NotFound:
        raise PolicyDenied(
            f"the provisioner that issued this certificate ({record.provisioner!r}) is gone"
        ) from None
    facts = names_facts(
        sans_of(certificate.extensions), common_name=common_name(certificate.subject)
    )
    names = map_principals(policy, facts, provisioner=record.provisioner, requested=principals)
    serial = serial_hex(certificate.serial_number)
    authorization = policy.authorization(
        SSHCertificateType.USER,
        names,
        key_id=facts.common_name or (facts.emails or names)[0],
        provisioner=record.provisioner,
        lifetime=lifetime,
    )
    remaining = certificate.not_valid_after_utc - now
    if remaining < timedelta(minutes=1):
        raise PolicyDenied(f"certificate {serial} ends within a minute: renew it first")
    if authorization.lifetime > remaining:
        # The SSH certificate ends no later than the X.509 one it was exchanged for.
        authorization = replace(authorization, lifetime=remaining)
    return SSHGrant(authorization, None), serial


def names_facts(
    names: Sequence[x509.GeneralName],
    *,
    common_name: str | None = None,
    claims: Mapping[str, Any] | None = None,
) -> IdentityFacts:
    """The facts certificate names give: e-mail addresses (RFC822Name) and UPNs."""
    emails: list[str] = []
    upns: list[str] = []
    for name in names:
        if isinstance(name, x509.RFC822Name):
            emails.append(name.value)
        elif isinstance(name, x509.OtherName) and name.type_id == UPN_OID:
            decoded = decode_other_name(name)
            if decoded is not None:
                upns.append(decoded)
    return IdentityFacts(
        emails=tuple(emails), upns=tuple(upns), common_name=common_name, claims=claims or {}
    )
