"""``oidc`` provisioners: a person signs in with the company's OpenID provider.

The client runs the authorization-code flow with PKCE against the provider (see
``docs/api.md``) and sends the ID token with its CSR to ``POST /sign``. Verification:

- the signature, with the provider's key from discovery (``jwks_uri``; cached, fetched again
  for an unknown ``kid``; a token without ``kid`` needs a provider with exactly one key), only
  with the algorithms the provider announces among RSA/ECDSA ones (never ``none`` or HMAC);
- ``iss`` (the discovered issuer), ``aud`` (our client id; with several audiences ``azp`` must
  be ours), ``exp``/``iat``/``nbf`` with 30 s of leeway, and ``exp - iat`` at most a day;
- the ``nonce``: made by the client for the CSR's key (:mod:`.oidc_binding`), so an ID token
  authorizes exactly one key;
- Entra's ``tid`` when a tenant is configured; the domain rule (e-mail and UPN domains must be
  among ``domains``); the group rule (``groups`` must share one with the configured ones);
- single use: the ``jti`` if the token has one, else the SHA-256 of the token, spent in the
  used-tokens table (:class:`~ostiary.store.TokenRepository`) under ``oidc:<provisioner>``.

Identity mapping: ``email`` becomes an rfc822Name SAN only when the provider vouches for it
(``email_verified: true``, or Entra's ``xms_edov: true``; Entra sends no ``email_verified``
and documents ``email`` as mutable and unverified); ``upn`` a UPN otherName SAN (the default
username binding of Entra certificate-based authentication), and ``preferred_username`` only
when the provisioner says so (``upn_from_preferred_username``, off by default: Entra documents
it as mutable); optionally ``sub`` or ``oid`` a URI SAN ``<issuer>/<claim>/<value>``. The
subject's common name is the UPN, else the e-mail address. A user gets exactly their own
identity; a CSR asking for anything else is refused.

Admins may ask for other names (within the provisioner's allowed-name patterns) and sign in
to the console. They are listed by an identifier the provider does not let users choose:
``sub:<sub>`` (with the provider's verified ``iss``, the OpenID Connect identity), Entra's
``oid:<object id>``, or an e-mail address, which matches only a *verified* ``email``.

The client secret of a confidential app stays on the CA: the record keeps only the *path* of
a file holding it, and :func:`redeem_code` uses it to redeem the client's code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from cryptography import x509
from sqlalchemy.orm import Session

from ostiary.core.errors import (
    BadRequest,
    MalformedInput,
    NameNotAuthorized,
    NotFound,
    PolicyDenied,
    Unauthorized,
    Unavailable,
)
from ostiary.core.issuance import Authorization
from ostiary.core.names import (
    canonical_general_name,
    common_name,
    format_general_name,
    parse_subject,
    requested_subject,
    sans_of,
    upn_name,
    validate_email,
)
from ostiary.provisioners import _jose
from ostiary.provisioners.base import (
    OIDC_TYPE,
    CAIdentity,
    ProvisionerClaims,
    TokenGrant,
    check_profile,
    precheck_request,
    validate_provisioner_name,
)
from ostiary.provisioners.oidc_binding import check_nonce_for_key
from ostiary.provisioners.oidc_discovery import (
    ProviderDirectory,
    ProviderMetadata,
    check_provider_url,
    default_directory,
)
from ostiary.provisioners.patterns import check_allowed_names
from ostiary.provisioners.single_use import spend_token
from ostiary.store import AuditLog, ProvisionerRepository, Store

#: The provisioner type, as stored in the record.
#: Profiles an ``oidc`` provisioner may hand out.
OIDC_PROFILES = ("user", "client")
#: Scopes the client asks for.
DEFAULT_SCOPES = ("openid", "email", "profile")
#: The longest ``exp - iat`` an ID token may have.
MAX_ID_TOKEN_LIFETIME = timedelta(hours=24)
#: Claims that may become a URI SAN.
URI_CLAIMS = ("sub", "oid")

_WHAT = "ID token"
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*)){1,30}")
_HEADERS = frozenset({"alg", "kid", "typ", "x5t", "x5t#S256", "cty"})


@dataclass(frozen=True)
class OIDCProvisioner:
    """An ``oidc`` provisioner as configured (no secret: only where to read it)."""

    name: str
    configuration_endpoint: str
    client_id: str
    claims: ProvisionerClaims
    client_secret_file: str | None = None
    tenant_id: str | None = None
    domains: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    profile: str = "user"
    uri_claim: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    provider_ca_file: str | None = None
    policies: tuple[str, ...] = ()
    upn_from_preferred_username: bool = False
    directory: ProviderDirectory = field(default=default_directory, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_provisioner_name(self.name)
        check_provider_url(self.configuration_endpoint)
        if not self.client_id.strip() or len(self.client_id) > 256:
            raise BadRequest("an oidc provisioner needs a client id (at most 256 characters)")
        check_profile(self.profile, OIDC_PROFILES)
        if self.uri_claim is not None and self.uri_claim not in URI_CLAIMS:
            raise BadRequest(f"the URI SAN claim must be one of {', '.join(URI_CLAIMS)}")
        object.__setattr__(self, "domains", tuple(d.strip().lower() for d in self.domains if d))
        object.__setattr__(self, "admins", tuple(normalize_admin(a) for a in self.admins if a))
        object.__setattr__(self, "groups", tuple(g.strip() for g in self.groups if g.strip()))
        for oid in self.policies:
            if not _OID.fullmatch(oid):
                raise BadRequest(f"not a dotted policy OID: {oid[:64]!r}")
        if "openid" not in self.scopes:
            raise BadRequest("the scopes must include 'openid'")

    @property
    def type(self) -> str:
        return OIDC_TYPE

    @property
    def confidential(self) -> bool:
        """Whether the app has a client secret (the CA then redeems codes for clients)."""
        return self.client_secret_file is not None

    @property
    def ca_file(self) -> Path | None:
        return Path(self.provider_ca_file) if self.provider_ca_file else None

    # ----------------------------------------------------------------- record

    @classmethod
    def from_config(
        cls, name: str, config: Mapping[str, Any], *, directory: ProviderDirectory | None = None
    ) -> OIDCProvisioner:
        try:
            return cls(
                name=name,
                configuration_endpoint=str(config["configuration_endpoint"]),
                client_id=str(config["client_id"]),
                claims=ProvisionerClaims.from_config(config["claims"]),
                client_secret_file=config.get("client_secret_file"),
                tenant_id=config.get("tenant_id"),
                domains=tuple(config.get("domains", ())),
                admins=tuple(config.get("admins", ())),
                groups=tuple(config.get("groups", ())),
                profile=str(config.get("profile", "user")),
                uri_claim=config.get("uri_claim"),
                scopes=tuple(config.get("scopes", DEFAULT_SCOPES)),
                provider_ca_file=config.get("provider_ca_file"),
                policies=tuple(config.get("policies", ())),
                upn_from_preferred_username=bool(config.get("upn_from_preferred_username")),
                directory=directory or default_directory,
            )
        except (KeyError, TypeError, AttributeError, BadRequest):
            raise MalformedInput(
                f"provisioner {name!r}: its stored configuration is damaged"
            ) from None

    def to_config(self) -> dict[str, Any]:
        return {
            "configuration_endpoint": self.configuration_endpoint,
            "client_id": self.client_id,
            "client_secret_file": self.client_secret_file,
            "tenant_id": self.tenant_id,
            "domains": list(self.domains),
            "admins": list(self.admins),
            "groups": list(self.groups),
            "profile": self.profile,
            "profiles": [self.profile],
            "uri_claim": self.uri_claim,
            "scopes": list(self.scopes),
            "provider_ca_file": self.provider_ca_file,
            "policies": list(self.policies),
            "upn_from_preferred_username": self.upn_from_preferred_username,
            "claims": self.claims.to_config(),
        }

    def public_info(self) -> dict[str, Any]:
        """What a client needs to start the sign-in (``GET /provisioners/{name}``)."""
        metadata = self.metadata()
        return {
            "name": self.name,
            "type": OIDC_TYPE,
            "configuration_endpoint": self.configuration_endpoint,
            "issuer": metadata.issuer,
            "authorization_endpoint": metadata.authorization_endpoint,
            "token_endpoint": metadata.token_endpoint,
            "client_id": self.client_id,
            "scopes": list(self.scopes),
            "code_exchange": "ca" if self.confidential else "client",
            "profile": self.profile,
        }

    def metadata(self) -> ProviderMetadata:
        return self.directory.metadata(self.configuration_endpoint, ca_file=self.ca_file)

    # ----------------------------------------------------------------- verifying

    def verified_claims(
        self, id_token: str, *, now: datetime
    ) -> tuple[Mapping[str, Any], datetime]:
        """The claims of ``id_token`` once signature, issuer, audience and times check out."""
        unverified = _jose.peek(id_token, what=_WHAT, allowed_headers=_HEADERS)
        kid = unverified.header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("the ID token's 'kid' is not a string")
        metadata = self.metadata()
        key = self.directory.key_for(metadata, kid, ca_file=self.ca_file)
        _jose.verify_jws(id_token, key, metadata.algorithms, what=_WHAT)
        claims = unverified.claims
        times = _jose.check_claims(
            claims,
            what=_WHAT,
            now=now,
            audience=self.client_id,
            issuer=metadata.issuer,
            max_lifetime=MAX_ID_TOKEN_LIFETIME,
            require_token_id=False,
        )
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.client_id:
            raise Unauthorized("the ID token has several audiences and 'azp' is not this client")
        if self.tenant_id is not None and "tid" not in claims:
            raise Unauthorized(
                "the ID token has no tenant id ('tid'), which this provisioner requires "
                f"({self.tenant_id}): is the provider Entra ID?"
            )
        if self.tenant_id is not None and claims.get("tid") != self.tenant_id:
            raise Unauthorized("the ID token is from another tenant ('tid')")
        return claims, times.expires_at

    def authorize(
        self,
        token: str,
        csr: x509.CertificateSigningRequest,
        *,
        ca: CAIdentity,
        now: datetime,
        requested_not_after: timedelta | datetime | None = None,
    ) -> TokenGrant:
        """Verify an ID token for ``csr``; what it authorizes and the id to spend."""
        claims, expires_at = self.verified_claims(token, now=now)
        check_nonce_for_key(claims.get("nonce"), csr.public_key())
        identity = self.identity_of(claims)
        self.check_groups(claims)
        subject, names = identity.subject, identity.names
        if identity.admin:
            subject, names = _requested_or(csr, subject, names)
        check_allowed_names(subject, names, self.claims.allowed_names)
        authorization = Authorization(
            subject=subject,
            names=names,
            profile=self.profile,
            lifetime=self.claims.lifetime,
            requested=requested_not_after,
            policies=self.policies,
            provisioner=self.name,
        )
        return TokenGrant(
            authorization=authorization,
            provisioner=self.name,
            token_id=id_token_spend_id(claims, token),
            expires_at=expires_at,
        )

    def identity_of(self, claims: Mapping[str, Any]) -> OIDCIdentity:
        """The person the claims name, as certificate names; the domain rule applied."""
        email = _claim_text(claims, "email")
        if email is not None and not email_is_verified(claims):
            email = None
        upn = _claim_text(claims, "upn")
        if upn is None and self.upn_from_preferred_username:
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
            self._check_domain(upn, "UPN")
            names.append(upn_name(upn))
        if email is not None:
            self._check_domain(email, "e-mail address")
            try:
                names.append(x509.RFC822Name(validate_email(email)))
            except BadRequest:
                raise Unauthorized("the ID token's e-mail address is not valid") from None
        if self.uri_claim is not None:
            value = _claim_text(claims, self.uri_claim)
            if value is None:
                raise Unauthorized(f"the ID token has no {self.uri_claim!r} claim")
            issuer = str(claims["iss"]).rstrip("/")
            uri = f"{issuer}/{self.uri_claim}/{quote(value, safe='')}"
            names.append(x509.UniformResourceIdentifier(uri))
        display = upn or email or ""
        subject = parse_subject(display) if "=" not in display else _cn(display)
        return OIDCIdentity(
            subject=subject,
            names=tuple(names),
            admin_entry=self.admin_entry(claims, verified_email=email),
            display=display,
        )

    def admin_entry(self, claims: Mapping[str, Any], *, verified_email: str | None) -> str | None:
        """The entry of ``admins`` these (verified) claims match, or ``None``.

        ``sub:`` entries match the ``sub`` claim exactly (the token's ``iss`` is this
        provisioner's provider, checked in :meth:`verified_claims`); ``oid:`` entries Entra's
        object id; an address only ``verified_email``. Never ``preferred_username`` or an
        unverified ``email``: users can set those.
        """
        sub, oid = _claim_text(claims, "sub"), _claim_text(claims, "oid")
        candidates = [
            f"sub:{sub}" if sub else None,
            f"oid:{oid.lower()}" if oid else None,
            verified_email.lower() if verified_email else None,
        ]
        for candidate in candidates:
            if candidate is not None and candidate in self.admins:
                return candidate
        return None

    def _check_domain(self, address: str, what: str) -> None:
        if not self.domains:
            return
        domain = address.rpartition("@")[2].lower()
        if domain not in self.domains:
            raise PolicyDenied(
                f"the {what} {address!r} is outside the domains this provisioner serves "
                f"({', '.join(self.domains)})",
                domain=domain,
            )

    def check_groups(self, claims: Mapping[str, Any]) -> None:
        """Refuse (:class:`PolicyDenied`) a person in none of the required ``groups``."""
        if not self.groups:
            return
        found = claims.get("groups")
        if isinstance(found, list) and set(self.groups) & {str(g) for g in found}:
            return
        raise PolicyDenied(
            "the signed-in user is in none of the groups this provisioner requires "
            f"({', '.join(self.groups)})"
        )


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


def _requested_or(
    csr: x509.CertificateSigningRequest, subject: x509.Name, names: tuple[x509.GeneralName, ...]
) -> tuple[x509.Name, tuple[x509.GeneralName, ...]]:
    """What an admin's CSR asks for (subject and SANs), or their own identity if nothing."""
    try:
        requested = tuple(canonical_general_name(n) for n in sans_of(csr.extensions))
    except (ValueError, x509.DuplicateExtension):
        raise BadRequest("the CSR extensions cannot be parsed") from None
    if not requested:
        return subject, names
    asked = requested_subject(csr.subject)  # one CN and nothing else
    return (asked if len(asked) else subject), requested


def id_token_spend_id(claims: Mapping[str, Any], token: str) -> str:
    """The id an ID token is spent under: its ``jti``, else the SHA-256 of the token."""
    jti = claims.get("jti")
    if isinstance(jti, str) and 16 <= len(jti) <= _jose.MAX_TOKEN_ID_LENGTH and jti.isprintable():
        return f"jti:{jti}"[: _jose.MAX_TOKEN_ID_LENGTH]
    return "sha256:" + hashlib.sha256(token.strip().encode("ascii", "replace")).hexdigest()


# --------------------------------------------------------------------------- flows


def load_oidc_provisioner(
    session: Session, name: str, *, directory: ProviderDirectory | None = None
) -> OIDCProvisioner:
    """The ``oidc`` provisioner called ``name``; :class:`NotFound` or :class:`PolicyDenied`."""
    record = ProvisionerRepository(session).get(name)
    if record.type != OIDC_TYPE:
        raise PolicyDenied(
            f"provisioner {name!r} is of type {record.type!r}, not {OIDC_TYPE!r}", name=name
        )
    return OIDCProvisioner.from_config(record.name, record.config, directory=directory)


def find_oidc_provisioner(
    store: Store, name: str, *, directory: ProviderDirectory | None = None
) -> OIDCProvisioner:
    """Like :func:`load_oidc_provisioner`, for callers without a session."""
    validate_provisioner_name(name)
    with store.transaction(read_only=True) as session:
        return load_oidc_provisioner(session, name, directory=directory)


def sign_in_provisioner(
    store: Store, name: str, *, directory: ProviderDirectory | None = None
) -> OIDCProvisioner:
    """The ``oidc`` provisioner a sign-in names; anything else is :class:`Unauthorized`."""
    try:
        return find_oidc_provisioner(store, name, directory=directory)
    except (NotFound, PolicyDenied):
        raise Unauthorized(f"there is no OpenID Connect provisioner named {name[:64]!r}") from None


def authorize_oidc_sign(
    store: Store,
    provisioner: str,
    id_token: str,
    csr: x509.CertificateSigningRequest,
    *,
    ca: CAIdentity,
    now: datetime,
    requested_not_after: timedelta | datetime | None = None,
    directory: ProviderDirectory | None = None,
) -> Authorization:
    """Verify ``id_token`` for ``csr`` with the ``oidc`` provisioner, spend it once, audit.

    As with one-time tokens, the request is prechecked (CSR, names, profile, lifetime) before
    the ID token is spent, so a request that would fail leaves the sign-in usable.
    """
    loaded = sign_in_provisioner(store, provisioner, directory=directory)
    grant = loaded.authorize(id_token, csr, ca=ca, now=now, requested_not_after=requested_not_after)
    authorization = grant.authorization
    try:
        precheck_request(csr, authorization, ca=ca, now=now)
    except NameNotAuthorized as exc:
        raise NameNotAuthorized(_with_allowed(exc.detail, authorization), **exc.data) from None
    spend_token(
        store,
        f"oidc:{loaded.name}",
        grant.token_id,
        grant.expires_at + _jose.LEEWAY,
        what="ID token",
        now=now,
        actor=f"oidc:{loaded.name}:{common_name(authorization.subject) or '?'}",
        target=authorization.subject.rfc4514_string(),
        details={
            "purpose": "sign",
            "provisioner": loaded.name,
            "token_id": grant.token_id,
            "san": [format_general_name(n) for n in authorization.names],
            "profile": authorization.profile,
        },
    )
    return authorization


def _with_allowed(detail: str, authorization: Authorization) -> str:
    """A refused name's message, with who signed in and the names this sign-in allows."""
    who = common_name(authorization.subject) or "?"
    allowed = [f"common name {who!r}"] + [format_general_name(n) for n in authorization.names]
    return (
        f"{detail}: you signed in as {who}, and this sign-in allows {', '.join(allowed)} "
        "(leave SUBJECT out to get exactly these)"
    )


def add_oidc_provisioner(
    store: Store,
    provisioner: OIDCProvisioner,
    *,
    now: datetime,
    ca_claims: ProvisionerClaims | None = None,
    actor: str | None = None,
) -> OIDCProvisioner:
    """Record ``provisioner`` with a "provisioner.added" entry; :class:`Conflict` if taken."""
    from ostiary.provisioners.manage import OFFLINE

    if provisioner.name == OFFLINE:
        raise PolicyDenied(f"{OFFLINE!r} names certificates signed offline: choose another name")
    if ca_claims is not None:
        provisioner.claims.check_within(ca_claims)
    if provisioner.client_secret_file is not None:
        read_client_secret(provisioner)
    config = provisioner.to_config()
    with store.transaction() as session:
        ProvisionerRepository(session).add(provisioner.name, type=OIDC_TYPE, config=config, now=now)
        AuditLog(session).append(
            "provisioner.added",
            at=now,
            actor=actor,
            target=provisioner.name,
            details={"type": OIDC_TYPE, **{k: v for k, v in config.items()}},
        )
    return provisioner


def read_client_secret(provisioner: OIDCProvisioner) -> str:
    """The client secret from its file (first line); never logged, never sent to clients."""
    path = Path(provisioner.client_secret_file or "")
    try:
        secret = path.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeError):
        raise Unavailable(
            f"provisioner {provisioner.name!r}: its client secret file cannot be read"
        ) from None
    if not secret or not secret[0].strip():
        raise BadRequest(f"provisioner {provisioner.name!r}: its client secret file is empty")
    return secret[0].strip()


def check_loopback_redirect(redirect_uri: str) -> str:
    """A loopback redirect URI (RFC 8252 section 7.3): ``http://127.0.0.1:<port>/...``."""
    parts = urlsplit(redirect_uri)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "::1") or not parts.port:
        raise BadRequest("the redirect URI must be http://127.0.0.1:<port>/... (RFC 8252 7.3)")
    return redirect_uri


def redeem_code(
    provisioner: OIDCProvisioner,
    *,
    code: str,
    code_verifier: str,
    redirect_uri: str,
    timeout: float = 10.0,
) -> str:
    """Redeem an authorization code at the provider with the client secret; the ID token.

    Only for confidential apps: the secret stays here. The provider checks the PKCE
    verifier and the redirect URI against the authorization request, so the CA learns and
    returns nothing the client could not have had with a public app.
    """
    if not provisioner.confidential:
        raise BadRequest(
            f"provisioner {provisioner.name!r} is a public client: redeem the code yourself"
        )
    check_loopback_redirect(redirect_uri)
    metadata = provisioner.metadata()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": code_verifier,
        "redirect_uri": redirect_uri,
        "client_id": provisioner.client_id,
        "client_secret": read_client_secret(provisioner),
    }
    return post_token_request(
        metadata.token_endpoint, form, ca_file=provisioner.ca_file, timeout=timeout
    )


def post_token_request(
    token_endpoint: str,
    form: Mapping[str, str],
    *,
    ca_file: Path | None = None,
    timeout: float = 10.0,
    verify: Any = None,
) -> str:
    """POST a token request (RFC 6749 4.1.3) and return the ``id_token`` of the answer."""
    from ostiary.tls import web_client_context

    url = check_provider_url(token_endpoint, what="the token endpoint")
    if verify is None:
        verify = web_client_context(ca_file) if url.startswith("https://") else True
    try:
        with httpx.Client(verify=verify, timeout=timeout, trust_env=False) as http:
            response = http.post(url, data=dict(form), headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"the OpenID provider's token endpoint cannot be reached: {type(exc).__name__}"
        ) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise Unavailable(f"the token endpoint answered {response.status_code} without JSON")
    if response.status_code != 200 or "error" in answer:
        error = str(answer.get("error", "error"))[:64]
        description = str(answer.get("error_description", ""))[:200]
        raise Unauthorized(
            f"the OpenID provider refused the code: {error}"
            + (f" ({description})" if description else "")
        )
    id_token = answer.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise Unauthorized("the OpenID provider's answer has no ID token (ask for scope 'openid')")
    return id_token


__all__ = [
    "DEFAULT_SCOPES",
    "OIDC_PROFILES",
    "OIDC_TYPE",
    "OIDCIdentity",
    "OIDCProvisioner",
    "add_oidc_provisioner",
    "authorize_oidc_sign",
    "check_loopback_redirect",
    "find_oidc_provisioner",
    "load_oidc_provisioner",
    "post_token_request",
    "read_client_secret",
    "redeem_code",
]
