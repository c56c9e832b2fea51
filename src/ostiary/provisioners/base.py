"""What every provisioner shares: its claims, the CA it speaks for, and what it returns.

A provisioner turns a credential (a one-time token, later an OIDC ID token, an attestation)
into an :class:`~ostiary.core.issuance.Authorization`. Its :class:`ProvisionerClaims` bound
what it may grant: certificate lifetimes, renewal, and which names (glob patterns, see
:mod:`ostiary.provisioners.patterns`).

Tokens name the CA they are for through the audience ``urn:ostiary:ca:<root sha256>:<purpose>``
(:meth:`CAIdentity.audience`), so a token made for one CA is refused by every other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ostiary.config import Claims
from ostiary.core.errors import BadRequest, LifetimeNotAllowed, PolicyDenied
from ostiary.core.issuance import (
    Authorization,
    certificate_names,
    check_requested_names,
    validity_for,
    verify_csr,
)
from ostiary.core.lifetime import Lifetime, format_duration, parse_duration
from ostiary.core.profiles import get_profile
from ostiary.provisioners.patterns import normalize_name_pattern

#: What a token is for; the last part of its audience.
Purpose = Literal["sign", "renew", "revoke", "admin", "ssh"]
PURPOSES: tuple[Purpose, ...] = ("sign", "renew", "revoke", "admin", "ssh")

#: Profiles a provisioner may hand out. ``ocsp`` (delegated OCSP signing) is deliberately
#: absent: only the CA owner's offline ``ca sign`` makes such certificates.
LEAF_PROFILES: tuple[str, ...] = ("client", "user", "server", "device")
#: The provisioner type of OpenID Connect sign-in (here, so that clients can name it lightly).
OIDC_TYPE = "oidc"

#: How long certificates may be renewed after they expired, when that is allowed at all.
DEFAULT_RENEW_AFTER_EXPIRY_WINDOW = timedelta(days=7)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_RFC3339_HINT = re.compile(r"^\d{4}-\d{2}-\d{2}")


def validate_provisioner_name(name: str) -> str:
    """A provisioner name: 1-64 characters, letters, digits and ``. _ @ -``, no leading mark."""
    if not _NAME.fullmatch(name):
        raise BadRequest(
            f"not a valid provisioner name: {name[:80]!r} (1-64 letters, digits, '.', '_', "
            "'@' or '-', starting with a letter or digit)"
        )
    return name


def is_provisioner_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class ProvisionerClaims:
    """What a provisioner may grant (step-ca's "claims", plus allowed-name patterns).

    ``allowed_names`` are normalized patterns (:func:`normalize_name_pattern`); when there
    are any, every name must match one. ``renew_after_expiry_window`` bounds renewal of an
    expired certificate when ``allow_renewal_after_expiry`` is set.
    """

    lifetime: Lifetime = field(default_factory=Lifetime)
    allow_renewal: bool = True
    allow_renewal_after_expiry: bool = False
    renew_after_expiry_window: timedelta = DEFAULT_RENEW_AFTER_EXPIRY_WINDOW
    allowed_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        normalized = tuple(dict.fromkeys(normalize_name_pattern(p) for p in self.allowed_names))
        object.__setattr__(self, "allowed_names", normalized)
        if self.renew_after_expiry_window <= timedelta():
            raise BadRequest("the renew-after-expiry window must be positive")

    @classmethod
    def from_ca_claims(cls, claims: Claims) -> ProvisionerClaims:
        """The CA-wide claims of ``ostiary.toml`` (used for offline-signed certificates)."""
        return cls(
            lifetime=claims.lifetime(),
            allow_renewal=claims.allow_renewal,
            allow_renewal_after_expiry=claims.allow_renewal_after_expiry,
        )

    def to_config(self) -> dict[str, Any]:
        """The JSON form kept in a provisioner record's ``config["claims"]``."""
        return {
            "min_lifetime": format_duration(self.lifetime.minimum),
            "default_lifetime": format_duration(self.lifetime.default),
            "max_lifetime": format_duration(self.lifetime.maximum),
            "allow_renewal": self.allow_renewal,
            "allow_renewal_after_expiry": self.allow_renewal_after_expiry,
            "renew_after_expiry_window": format_duration(self.renew_after_expiry_window),
            "allowed_names": list(self.allowed_names),
        }

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> ProvisionerClaims:
        """Read :meth:`to_config` back; a damaged record is :class:`BadRequest`."""
        try:
            return cls(
                lifetime=Lifetime(
                    parse_duration(str(data["min_lifetime"])),
                    parse_duration(str(data["default_lifetime"])),
                    parse_duration(str(data["max_lifetime"])),
                ),
                allow_renewal=bool(data["allow_renewal"]),
                allow_renewal_after_expiry=bool(data["allow_renewal_after_expiry"]),
                renew_after_expiry_window=parse_duration(
                    str(data.get("renew_after_expiry_window", "7d"))
                ),
                allowed_names=tuple(str(p) for p in data.get("allowed_names", ())),
            )
        except (KeyError, TypeError) as exc:
            raise BadRequest(f"provisioner claims are incomplete: {exc}") from None

    def check_within(self, ca: ProvisionerClaims) -> None:
        """Refuse lifetimes outside the CA-wide claims: a provisioner may only narrow them."""
        if self.lifetime.maximum > ca.lifetime.maximum:
            raise BadRequest(
                f"max lifetime {format_duration(self.lifetime.maximum)} exceeds the CA's "
                f"{format_duration(ca.lifetime.maximum)} (claims.max_lifetime in ostiary.toml)"
            )
        if self.lifetime.minimum < ca.lifetime.minimum:
            raise BadRequest(
                f"min lifetime {format_duration(self.lifetime.minimum)} is below the CA's "
                f"{format_duration(ca.lifetime.minimum)} (claims.min_lifetime in ostiary.toml)"
            )


def claims_from_record_config(config: Mapping[str, Any]) -> ProvisionerClaims:
    """The claims of any provisioner type: every type keeps them under ``config["claims"]``."""
    data = config.get("claims")
    if not isinstance(data, Mapping):
        raise BadRequest("the provisioner record has no claims")
    return ProvisionerClaims.from_config(data)


# --------------------------------------------------------------------------- the CA


@dataclass(frozen=True)
class CAIdentity:
    """The CA a token must be for, and what verifying tokens about certificates needs.

    ``root_fingerprint`` is the root's SHA-256 fingerprint (lower-case hex, no colons): it
    binds every token to this CA. ``issuers`` are the certificates of the issuing CA(s),
    current first; holder tokens must carry a certificate signed by one of them. ``claims``
    are the CA-wide claims, for certificates signed offline (no provisioner).
    A client that only mints holder tokens needs nothing but the fingerprint.
    """

    root_fingerprint: str
    issuers: tuple[x509.Certificate, ...] = ()
    claims: ProvisionerClaims = field(default_factory=ProvisionerClaims)

    def __post_init__(self) -> None:
        fingerprint = self.root_fingerprint.strip().lower().replace(":", "")
        if not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
            raise BadRequest("the root fingerprint must be 64 hex digits (SHA-256)")
        object.__setattr__(self, "root_fingerprint", fingerprint)

    @classmethod
    def from_certificates(
        cls,
        root: x509.Certificate,
        issuer: x509.Certificate,
        *,
        claims: ProvisionerClaims | Claims | None = None,
        others: Sequence[x509.Certificate] = (),
    ) -> CAIdentity:
        """The identity of a CA folder: its root, its issuing intermediate (then ``others``,
        the retiring ones), its claims.
        """
        if isinstance(claims, Claims):
            claims = ProvisionerClaims.from_ca_claims(claims)
        return cls(
            root_fingerprint=root.fingerprint(hashes.SHA256()).hex(),
            issuers=(issuer, *(o for o in others if o != issuer)),
            claims=claims or ProvisionerClaims(),
        )

    @property
    def issuer(self) -> x509.Certificate | None:
        """The current issuing CA certificate, if known."""
        return self.issuers[0] if self.issuers else None

    def audience(self, purpose: Purpose) -> str:
        """``urn:ostiary:ca:<root sha256 hex>:<purpose>``: the ``aud`` of our tokens."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        return f"urn:ostiary:ca:{self.root_fingerprint}:{purpose}"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TokenGrant:
    """A verified one-time credential: the authorization, and the id to spend (``jti``)."""

    authorization: Authorization
    provisioner: str
    token_id: str
    expires_at: datetime
    #: The provisioner wants a TPM attestation with the request (``require_attestation``).
    requires_attestation: bool = False


class Provisioner(Protocol):
    """A configured way of proving who may get which certificate."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def claims(self) -> ProvisionerClaims: ...

    def authorize(
        self,
        token: str,
        csr: x509.CertificateSigningRequest,
        *,
        ca: CAIdentity,
        now: datetime,
        requested_not_after: timedelta | datetime | None = None,
    ) -> TokenGrant:
        """Verify ``token`` and say what it authorizes; raise an ``OstiaryError`` if nothing."""
        ...


def precheck_request(
    csr: x509.CertificateSigningRequest,
    authorization: Authorization,
    *,
    ca: CAIdentity,
    now: datetime,
) -> None:
    """Run the pipeline's refusals before a one-time token is spent.

    The CSR signature and key, its names against the authorization, the profile's name kinds
    and the lifetime: a request that would be refused anyway leaves the token usable, so the
    client can fix the request and try again. :meth:`Authority.issue` checks all of it again.
    """
    verify_csr(csr)
    check_requested_names(csr, authorization)
    _, names = certificate_names(authorization)
    get_profile(authorization.profile).check_names(names)
    if ca.issuer is not None:
        validity_for(authorization, ca.issuer, now=now)


def check_profile(profile: str, allowed: Sequence[str]) -> str:
    """``profile`` if the provisioner may hand it out, else :class:`PolicyDenied`."""
    get_profile(profile)
    if profile not in allowed:
        raise PolicyDenied(
            f"profile {profile!r} is not allowed by this provisioner "
            f"(allowed: {', '.join(allowed)})",
            profile=profile,
        )
    return profile


# --------------------------------------------------------------------------- not_after


def parse_not_after(text: str) -> timedelta | datetime:
    """A requested end as people and the API write it: a duration (``24h``) or RFC 3339.

    An absolute time needs a time zone (``Z`` or an offset); it is returned in UTC.
    """
    value = text.strip()
    if not _RFC3339_HINT.match(value):
        return parse_duration(value)
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"not an RFC 3339 time: {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise BadRequest(f"not_after {value!r} needs a time zone (e.g. 2027-01-01T00:00:00Z)")
    return moment.astimezone(UTC)


def end_of(value: timedelta | datetime, *, now: datetime) -> datetime:
    """The absolute not_after a requested value means at ``now``."""
    return value if isinstance(value, datetime) else now + value


def combine_requested(
    token_value: timedelta | datetime | None,
    request_value: timedelta | datetime | None,
    *,
    now: datetime,
) -> timedelta | datetime | None:
    """The not_after to ask for: the request's, if no later than the token's ceiling.

    A request asking to end after the token's ``not_after`` is refused; without a request
    value the token's applies; without either, the provisioner's default lifetime does.
    """
    if token_value is None:
        return request_value
    if request_value is None:
        return token_value
    ceiling = end_of(token_value, now=now)
    asked = end_of(request_value, now=now)
    if asked > ceiling:
        raise LifetimeNotAllowed(
            f"the request asks for not_after {asked:%Y-%m-%d %H:%M:%SZ}, later than the "
            f"token allows ({ceiling:%Y-%m-%d %H:%M:%SZ})"
        )
    return request_value
