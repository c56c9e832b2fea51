"""Who an ID token names, as certificate names, and the rules on the person.

Identity mapping: ``email`` becomes an rfc822Name SAN only when the provider vouches for it
(``email_verified: true``, or Entra's ``xms_edov: true``; Entra sends no ``email_verified``
and documents ``email`` as mutable and unverified); ``upn`` a UPN otherName SAN (the default
username binding of Entra certificate-based authentication), and ``preferred_username`` only
when the provisioner says so (``upn_from_preferred_username``, off by default: Entra documents
it as mutable); optionally ``sub`` or ``oid`` a URI SAN ``<issuer>/<claim>/<value>``. The
subject's common name is the UPN, else the e-mail address.

The rules: the domain rule (e-mail and UPN domains must be among ``domains``), the group rule
(``groups`` must share one with the configured ones), and who is an admin. Admins are listed
by an identifier the provider does not let users choose: ``sub:<sub>`` (with the provider's
verified ``iss``, the OpenID Connect identity), Entra's ``oid:<object id>``, or an e-mail
address, which matches only a *verified* ``email``.

Every function here takes claims already verified (:mod:`.oidc_id_token`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from cryptography import x509

from ostiary.core.errors import BadRequest, PolicyDenied, Unauthorized
from ostiary.core.names import parse_subject, upn_name, validate_email


class IdentityRules(Protocol):
    """What an ``oidc`` provisioner says about the people it serves."""

    @property
    def domains(self) -> tuple[str, ...]: ...

    @property
    def admins(self) -> tuple[str, ...]: ...

    @property
    def groups(self) -> tuple[str, ...]: ...

    @property
    def uri_claim(self) -> str | None: ...

    @property
    def upn_from_preferred_username(self) -> bool: ...


@dataclass(frozen=True)
class OIDCIdentity:
    subject: x509.Name
    names: tuple[x509.GeneralName, ...]
    #: The ``admins`` entry this person matched (``sub:...``, ``oid:...``, an address).
    admin_entry: str | None
    display: str

    @property
    def admin(self) -> bool:
        return self.admin_entry is not None


def identity_of(rules: IdentityRules, claims: Mapping[str, Any]) -> OIDCIdentity:
    """The person the claims name, as certificate names; the domain rule applied."""
    email = _claim_text(claims, "email")
    if email is not None and not email_is_verified(claims):
        email = None
    upn = _claim_text(claims, "upn")
    if upn is None and rules.upn_from_preferred_username:
        upn = _claim_text(claims, "preferred_username")
    if upn is not None and not _looks_like_address(upn):
        upn = None
    if email is None and upn is None:
        raise Unauthorized(
            "the ID token names no verified e-mail address and no UPN (the provider must "
            "send 'email' with 'email_verified': true, or Entra's 'xms_edov'; or add the "
            "'upn' optional claim)"
        )
    names: list[x509.GeneralName] = []
    if upn is not None:
        _check_domain(rules, upn, "UPN")
        names.append(upn_name(upn))
    if email is not None:
        _check_domain(rules, email, "e-mail address")
        try:
            names.append(x509.RFC822Name(validate_email(email)))
        except BadRequest:
            raise Unauthorized("the ID token's e-mail address is not valid") from None
    if rules.uri_claim is not None:
        value = _claim_text(claims, rules.uri_claim)
        if value is None:
            raise Unauthorized(f"the ID token has no {rules.uri_claim!r} claim")
        issuer = str(claims["iss"]).rstrip("/")
        uri = f"{issuer}/{rules.uri_claim}/{quote(value, safe='')}"
        names.append(x509.UniformResourceIdentifier(uri))
    display = upn or email or ""
    subject = parse_subject(display) if "=" not in display else _cn(display)
    return OIDCIdentity(
        subject=subject,
        names=tuple(names),
        admin_entry=admin_entry(rules, claims, verified_email=email),
        display=display,
    )


def admin_entry(
    rules: IdentityRules, claims: Mapping[str, Any], *, verified_email: str | None
) -> str | None:
    """The entry of ``admins`` these (verified) claims match, or ``None``.

    ``sub:`` entries match the ``sub`` claim exactly (the token's ``iss`` is the
    provisioner's provider, checked with the ID token); ``oid:`` entries Entra's object id;
    an address only ``verified_email``. Never ``preferred_username`` or an unverified
    ``email``: users can set those.
    """
    sub, oid = _claim_text(claims, "sub"), _claim_text(claims, "oid")
    candidates = [
        f"sub:{sub}" if sub else None,
        f"oid:{oid.lower()}" if oid else None,
        verified_email.lower() if verified_email else None,
    ]
    for candidate in candidates:
        if candidate is not None and candidate in rules.admins:
            return candidate
    return None


def check_groups(rules: IdentityRules, claims: Mapping[str, Any]) -> None:
    """Refuse (:class:`PolicyDenied`) a person in none of the required ``groups``."""
    if not rules.groups:
        return
    found = claims.get("groups")
    if isinstance(found, list) and set(rules.groups) & {str(g) for g in found}:
        return
    raise PolicyDenied(
        "the signed-in user is in none of the groups this provisioner requires "
        f"({', '.join(rules.groups)})"
    )


def email_is_verified(claims: Mapping[str, Any]) -> bool:
    """Whether the provider vouches for ``email``: ``email_verified`` or Entra's ``xms_edov``
    is JSON ``true`` (a missing claim, a string ``"true"`` or anything else is not).
    """
    return claims.get("email_verified") is True or claims.get("xms_edov") is True


def normalize_admin(entry: str) -> str:
    """An ``admins`` entry in its stored form: ``sub:<sub>``, ``oid:<guid>`` or an address.

    ``sub`` values are kept as given (case matters); object ids and addresses are lower-cased.
    A bare ``user@domain`` (or ``email:user@domain``) is an e-mail address; anything else
    without ``sub:`` or ``oid:`` is refused, so a typo cannot silently match nothing.
    """
    text = entry.strip()
    kind, colon, value = text.partition(":")
    kind = kind.lower() if colon else ""
    value = value.strip()
    if kind == "sub" and value and len(value) <= 255:
        return f"sub:{value}"
    if kind == "oid" and value and len(value) <= 64:
        return f"oid:{value.lower()}"
    address = value if kind == "email" else text
    if (kind in ("", "email")) and _looks_like_address(address):
        return validate_email(address).lower()
    raise BadRequest(
        f"an oidc admin is 'sub:<subject>', 'oid:<Entra object id>' or a verified e-mail "
        f"address, not {entry[:80]!r}"
    )


def _check_domain(rules: IdentityRules, address: str, what: str) -> None:
    if not rules.domains:
        return
    domain = address.rpartition("@")[2].lower()
    if domain not in rules.domains:
        raise PolicyDenied(
            f"the {what} {address!r} is outside the domains this provisioner serves "
            f"({', '.join(rules.domains)})",
            domain=domain,
        )


def _cn(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, text)])


def _claim_text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if isinstance(value, str) and value.strip() and len(value) <= 256:
        return value.strip()
    return None


def _looks_like_address(text: str) -> bool:
    local, at, domain = text.partition("@")
    return bool(at and local and "." in domain and " " not in text)


__all__ = [
    "IdentityRules",
    "OIDCIdentity",
    "admin_entry",
    "check_groups",
    "email_is_verified",
    "identity_of",
    "normalize_admin",
]
