"""The ``jwk`` provisioner: one-time tokens signed with the provisioner's own P-256 key.

The CA owner makes a provisioner (``ostiary ca provisioner add NAME --type jwk``): an ES256
key pair whose public JWK (RFC 7517) goes in the provisioner record, and whose private key is
kept there too, encrypted with the CA password (PKCS#8, PBES2 with PBKDF2-SHA256 at 600,000
iterations), so that every replica or CLI that holds the CA password can mint tokens and
nothing else can.

A sign token is a JWT (RFC 7519) in compact JWS form (RFC 7515)::

    header  {"alg": "ES256", "kid": <RFC 7638 thumbprint>, "typ": "JWT"}
    claims  {"iss": <provisioner>, "aud": "urn:ostiary:ca:<fp>:sign", "sub": <subject>,
             "sans": ["dns:host.lab.example", ...], "profile": "client",
             "not_after": "24h" (optional), "iat", "nbf", "exp", "jti"}

Verification: the ``kid`` must be this provisioner's key (compared in constant time), ``alg``
must be ES256 (nothing else is even considered), then ``iss``, ``aud``, the times with 30 s of
leeway, ``exp - iat`` at most one hour (a stolen key cannot mint long-lived tokens), and a
``jti`` of at least 128 bits. The certificate gets exactly the token's ``sans`` and a subject
from ``sub``; the names must fit the provisioner's allowed-name patterns.

``not_after``: the token's value is a ceiling set by whoever minted it. A request may ask for
an end no later than it (the request's value is then used); a later one is refused
(:class:`~ostiary.core.errors.LifetimeNotAllowed`) rather than silently shortened. Durations
count from the time the token is used. Both are bounded by the provisioner's lifetime claims.

Admin tokens are the same JWT with ``aud`` ``...:admin`` and ``sub`` ``admin``, from a
provisioner created with ``--admin``; they are not single-use, but short-lived.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwk
from joserfc.errors import JoseError

from ostiary.core.errors import BadRequest, LifetimeNotAllowed, MalformedInput, Unauthorized
from ostiary.core.issuance import Authorization
from ostiary.core.lifetime import format_duration
from ostiary.core.names import check_subject, format_general_name, parse_san, parse_subject
from ostiary.provisioners import _jose
from ostiary.provisioners.base import (
    LEAF_PROFILES,
    CAIdentity,
    ProvisionerClaims,
    TokenGrant,
    check_profile,
    combine_requested,
    end_of,
    parse_not_after,
)
from ostiary.provisioners.patterns import check_allowed_names, default_sans_for
from ostiary.signers.files import decrypt_private_key_pem, encrypt_private_key_pem

#: The provisioner type, as stored in the record.
JWK_TYPE = "jwk"
#: The only algorithm a ``jwk`` provisioner signs and accepts (ECDSA P-256, RFC 7518 3.4).
ALGORITHM = "ES256"
#: Default validity of sign and admin tokens.
TOKEN_TTL = timedelta(minutes=5)
#: The longest ``exp - iat`` a sign or admin token may have, minted or received.
MAX_TOKEN_TTL = timedelta(hours=1)
#: ``sub`` of admin tokens.
ADMIN_SUBJECT = "admin"
#: At most this many names in one token.
MAX_SANS = 100

#: The JOSE header parameters a token of this type may carry; any other one is refused.
TOKEN_HEADERS = frozenset({"alg", "kid", "typ"})
_TOKEN = "token"
_ADMIN_TOKEN = "admin token"


@dataclass(frozen=True)
class JWKProvisioner:
    """A ``jwk`` provisioner as configured: its public key, encrypted private key, claims.

    ``profiles`` are the profiles its tokens may name; the first is the default.
    """

    name: str
    public_jwk: Mapping[str, str]
    encrypted_key: str
    claims: ProvisionerClaims
    admin: bool = False
    profiles: tuple[str, ...] = LEAF_PROFILES
    #: The ``attest`` provisioner whose TPM attestation every request must carry, if any.
    require_attestation: str | None = None

    @property
    def type(self) -> str:
        return JWK_TYPE

    @property
    def default_profile(self) -> str:
        return self.profiles[0]

    @cached_property
    def verification_key(self) -> jwk.ECKey:
        key = jwk.ECKey.import_key({k: self.public_jwk[k] for k in ("kty", "crv", "x", "y")})
        if key.curve_name != "P-256":
            raise MalformedInput(f"provisioner {self.name!r}: its key is not a P-256 key")
        return key

    @cached_property
    def kid(self) -> str:
        """The key's RFC 7638 thumbprint (SHA-256, base64url): computed once, never trusted."""
        return self.verification_key.thumbprint()

    # ----------------------------------------------------------------- record

    @classmethod
    def create(
        cls,
        name: str,
        *,
        password: bytes,
        claims: ProvisionerClaims,
        admin: bool = False,
        profiles: Sequence[str] = LEAF_PROFILES,
    ) -> JWKProvisioner:
        """A new provisioner with a fresh P-256 key, encrypted with the CA ``password``."""
        allowed = tuple(dict.fromkeys(profiles))
        if not allowed:
            raise BadRequest("a provisioner needs at least one profile")
        for profile in allowed:
            check_profile(profile, LEAF_PROFILES)
        private_key = ec.generate_private_key(ec.SECP256R1())
        public = jwk.ECKey.import_key(_jose.import_public_key(private_key.public_key()).as_dict())
        public_jwk = {str(k): str(v) for k, v in public.as_dict().items()}
        public_jwk.update(kid=public.thumbprint(), alg=ALGORITHM, use="sig")
        encrypted = encrypt_private_key_pem(private_key, password).decode("ascii")
        return cls(name, public_jwk, encrypted, claims, admin, allowed)

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> JWKProvisioner:
        """The provisioner stored as ``config`` (see :meth:`to_config`)."""
        try:
            key = config["key"]
            provisioner = cls(
                name=name,
                public_jwk={str(k): str(v) for k, v in key.items()},
                encrypted_key=str(config["encrypted_key"]),
                claims=ProvisionerClaims.from_config(config["claims"]),
                admin=bool(config.get("admin", False)),
                profiles=tuple(str(p) for p in config.get("profiles", LEAF_PROFILES)),
                require_attestation=_optional_name(config.get("require_attestation")),
            )
            provisioner.verification_key  # noqa: B018 - parse the key now, not at first use
        except (KeyError, TypeError, AttributeError, ValueError, JoseError):
            raise MalformedInput(
                f"provisioner {name!r}: its stored configuration is damaged"
            ) from None
        if not provisioner.profiles:
            raise MalformedInput(f"provisioner {name!r}: its stored configuration is damaged")
        return provisioner

    def to_config(self) -> dict[str, Any]:
        """The JSON kept in the provisioner record (the private key only encrypted)."""
        config: dict[str, Any] = {
            "key": dict(self.public_jwk),
            "encrypted_key": self.encrypted_key,
            "admin": self.admin,
            "profiles": list(self.profiles),
            "claims": self.claims.to_config(),
        }
        if self.require_attestation:
            config["require_attestation"] = self.require_attestation
        return config

    def load_private_key(self, password: bytes) -> ec.EllipticCurvePrivateKey:
        """Decrypt the signing key with the CA password (:class:`WrongPassword` if wrong)."""
        key = decrypt_private_key_pem(self.encrypted_key.encode("ascii"), password)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_key(
            key, self.verification_key
        ):
            raise MalformedInput(f"provisioner {self.name!r}: its two key halves do not match")
        return key

    # ----------------------------------------------------------------- minting

    def mint_sign_token(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        subject: str,
        *,
        ca: CAIdentity,
        now: datetime,
        sans: Sequence[str] = (),
        profile: str | None = None,
        not_after: str | None = None,
        ttl: timedelta = TOKEN_TTL,
        token_id: str | None = None,
    ) -> str:
        """A one-time sign token for ``subject`` and exactly ``sans`` (``kind:value`` texts).

        Everything the CA would refuse is refused here first: bad names, names outside the
        allowed patterns, an unknown or disallowed profile, a bad ``not_after``. Without
        ``sans``, a subject that is an e-mail address, IP address or dotted DNS name becomes
        the one SAN.
        """
        parsed_subject = check_subject(parse_subject(subject))
        names = tuple(parse_san(s) for s in sans)
        texts = [format_general_name(n) for n in names] or list(default_sans_for(subject))
        if len(texts) > MAX_SANS:
            raise BadRequest(f"a token carries at most {MAX_SANS} names")
        check_allowed_names(
            parsed_subject, [parse_san(t) for t in texts], self.claims.allowed_names
        )
        chosen = check_profile(profile or self.default_profile, self.profiles)
        claims: dict[str, Any] = {"sub": subject.strip(), "sans": texts, "profile": chosen}
        if not_after is not None:
            # The same bounds the CA applies when the token is used: refused now, not later.
            try:
                self.claims.lifetime.check(end_of(parse_not_after(not_after), now=now) - now)
            except LifetimeNotAllowed as exc:
                raise LifetimeNotAllowed(
                    f"not_after {not_after.strip()!r}: {exc.detail} of provisioner {self.name!r}"
                ) from None
            claims["not_after"] = not_after.strip()
        return self._mint(private_key, claims, ca.audience("sign"), now, ttl, token_id)

    def mint_admin_token(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        *,
        ca: CAIdentity,
        now: datetime,
        ttl: timedelta = TOKEN_TTL,
        token_id: str | None = None,
    ) -> str:
        """An admin token (``aud`` ``...:admin``, ``sub`` ``admin``), if this is an admin one."""
        if not self.admin:
            raise BadRequest(f"provisioner {self.name!r} is not an admin provisioner")
        claims = {"sub": ADMIN_SUBJECT}
        return self._mint(private_key, claims, ca.audience("admin"), now, ttl, token_id)

    def _mint(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        claims: dict[str, Any],
        audience: str,
        now: datetime,
        ttl: timedelta,
        token_id: str | None,
    ) -> str:
        if not timedelta(seconds=1) <= ttl <= MAX_TOKEN_TTL:
            raise BadRequest(
                f"a token's lifetime must be between 1s and {format_duration(MAX_TOKEN_TTL)}"
            )
        issued = int(now.timestamp())
        body = {
            "iss": self.name,
            "aud": audience,
            **claims,
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(ttl.total_seconds()),
            "jti": token_id or _jose.new_token_id(),
        }
        header = {"alg": ALGORITHM, "kid": self.kid}
        return _jose.sign_jwt(header, body, _jose.import_private_key(private_key))

    # ----------------------------------------------------------------- verifying

    def authorize(
        self,
        token: str | _jose.UnverifiedToken,
        csr: x509.CertificateSigningRequest,
        *,
        ca: CAIdentity,
        now: datetime,
        requested_not_after: timedelta | datetime | None = None,
    ) -> TokenGrant:
        """Verify a sign token; return what it authorizes and the ``jti`` to spend.

        ``token`` may be one already read to find its provisioner (:func:`_jose.peek`, with
        this type's header allowlist), so that it is not read twice. ``csr`` is not needed to
        verify a token of this type (its names are checked by the pipeline); it is part of
        the provisioner protocol for types that bind the key.
        """
        claims = self.verified_claims(token, what=_TOKEN)
        times = _jose.check_claims(
            claims,
            what=_TOKEN,
            now=now,
            audience=ca.audience("sign"),
            issuer=self.name,
            max_lifetime=MAX_TOKEN_TTL,
        )
        subject_text = _string_claim(claims, "sub", limit=1024)
        try:
            subject = parse_subject(subject_text)
        except BadRequest:
            raise Unauthorized("the token's subject is not a valid name") from None
        names = tuple(parse_san(text) for text in _sans_claim(claims))
        check_allowed_names(subject, names, self.claims.allowed_names)
        profile_claim = claims.get("profile")
        if profile_claim is not None and not isinstance(profile_claim, str):
            raise Unauthorized("the token's 'profile' claim is not a string")
        profile = check_profile(profile_claim or self.default_profile, self.profiles)
        token_not_after = claims.get("not_after")
        if token_not_after is not None and not isinstance(token_not_after, str):
            raise Unauthorized("the token's 'not_after' claim is not a string")
        requested = combine_requested(
            parse_not_after(token_not_after) if token_not_after is not None else None,
            requested_not_after,
            now=now,
        )
        authorization = Authorization(
            subject=subject,
            names=names,
            profile=profile,
            lifetime=self.claims.lifetime,
            requested=requested,
            provisioner=self.name,
        )
        return TokenGrant(
            authorization=authorization,
            provisioner=self.name,
            token_id=str(claims["jti"]),
            expires_at=times.expires_at,
            requires_attestation=bool(self.require_attestation),
        )

    def verify_admin_token(self, token: str, *, ca: CAIdentity, now: datetime) -> str:
        """Verify an admin token; return the actor, ``admin@<provisioner>``."""
        if not self.admin:
            raise Unauthorized(f"provisioner {self.name!r} is not an admin provisioner")
        claims = self.verified_claims(token, what=_ADMIN_TOKEN)
        _jose.check_claims(
            claims,
            what=_ADMIN_TOKEN,
            now=now,
            audience=ca.audience("admin"),
            issuer=self.name,
            subject=ADMIN_SUBJECT,
            max_lifetime=MAX_TOKEN_TTL,
            require_token_id=False,
        )
        return f"{ADMIN_SUBJECT}@{self.name}"

    def verified_claims(
        self, token: str | _jose.UnverifiedToken, *, what: str
    ) -> Mapping[str, Any]:
        """The claims of ``token`` once its key id and signature check out (nothing else)."""
        if isinstance(token, _jose.UnverifiedToken):
            unverified = token
        else:
            unverified = _jose.peek(token, what=what, allowed_headers=TOKEN_HEADERS)
        kid = unverified.header.get("kid")
        if not isinstance(kid, str) or not hmac.compare_digest(
            kid.encode("utf-8", "replace"), self.kid.encode("ascii")
        ):
            raise Unauthorized(f"the {what} was not signed with provisioner {self.name!r}'s key")
        _jose.verify_jws(unverified, self.verification_key, (ALGORITHM,), what=what)
        return unverified.claims


def _same_key(private_key: ec.EllipticCurvePrivateKey, public: jwk.ECKey) -> bool:
    numbers = private_key.public_key().public_numbers()
    expected = public.public_key.public_numbers()
    return numbers.x == expected.x and numbers.y == expected.y


def _string_claim(claims: Mapping[str, Any], name: str, *, limit: int) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise Unauthorized(f"the token's {name!r} claim must be a non-empty string")
    return value


def _sans_claim(claims: Mapping[str, Any]) -> list[str]:
    value = claims.get("sans", [])
    if (
        not isinstance(value, list)
        or len(value) > MAX_SANS
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise Unauthorized(f"the token's 'sans' claim must be a list of at most {MAX_SANS} names")
    return value


def _optional_name(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError("not a provisioner name")
    return value
