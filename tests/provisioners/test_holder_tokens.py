"""Holder tokens (``x5c``): renew and revoke with the certificate's own key."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ostiary.authority.authority import Authority
from ostiary.core.errors import (
    BadRequest,
    InvalidCertificate,
    PolicyDenied,
    RevokedCertificate,
    TokenReused,
    Unauthorized,
)
from ostiary.core.issuance import issue_certificate
from ostiary.core.lifetime import Lifetime
from ostiary.provisioners import (
    CAIdentity,
    ProvisionerClaims,
    mint_holder_token,
    verify_holder_token,
)
from ostiary.provisioners._jose import b64_der, new_token_id
from ostiary.store import CertificateRepository

from ..conftest import make_test_ca
from .conftest import Kit, client_authorization, compact, make_csr, sign_compact

Issued = tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]


def issue(
    authority: Authority,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    *,
    provisioner: str = "ci",
    days: int = 7,
) -> Issued:
    key = key or ec.generate_private_key(ec.SECP256R1())
    authorization = client_authorization(
        "alice",
        "alice@example.com",
        provisioner=provisioner,
        lifetime=Lifetime(default=timedelta(days=days)),
    )
    return authority.issue(make_csr("alice", key=key), authorization, actor="test"), key


def verify(
    kit: Kit, token: str, purpose: Any = "renew", *, days_later: float = 0
) -> x509.Certificate:
    return verify_holder_token(
        kit.store,
        token,
        purpose=purpose,
        ca=kit.identity,
        now=kit.now + timedelta(days=days_later),
    )


def mint(kit: Kit, issued: Issued, purpose: Any = "renew", *, days_later: float = 0) -> str:
    certificate, key = issued
    return mint_holder_token(
        certificate,
        key,
        purpose=purpose,
        ca=kit.identity,
        now=kit.now + timedelta(days=days_later),
    )


def holder_claims(kit: Kit, certificate: x509.Certificate, **changes: Any) -> dict[str, Any]:
    issued = int(kit.now.timestamp())
    claims: dict[str, Any] = {
        "aud": kit.identity.audience("renew"),
        "sub": f"{certificate.serial_number:x}",
        "iat": issued,
        "nbf": issued,
        "exp": issued + 300,
        "jti": new_token_id(),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def x5c(certificate: x509.Certificate) -> list[str]:
    return [b64_der(certificate.public_bytes(serialization.Encoding.DER))]


# --------------------------------------------------------------------------- accepted


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()), id="ok/es256"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="ok/es384"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()), id="ok/es512"),
        pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="ok/rs256"),
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="ok/ed25519"),
    ],
)
@pytest.mark.parametrize("purpose", ["renew", "revoke"])
def test_a_holder_token_proves_the_certificate(
    kit: Kit, make_key: Callable[[], CertificateIssuerPrivateKeyTypes], purpose: str
) -> None:
    issued = issue(kit.authority, make_key())
    assert verify(kit, mint(kit, issued, purpose), purpose) == issued[0]


@pytest.mark.parametrize(
    ("alg", "make_key"),
    [
        pytest.param("PS256", lambda: rsa.generate_private_key(65537, 2048), id="ok/ps256"),
        pytest.param("EdDSA", ed25519.Ed25519PrivateKey.generate, id="ok/eddsa"),
    ],
)
def test_other_algorithms_the_key_type_allows(
    kit: Kit, alg: str, make_key: Callable[[], CertificateIssuerPrivateKeyTypes]
) -> None:
    certificate, key = issue(kit.authority, make_key())
    token = sign_compact(
        {"alg": alg, "x5c": x5c(certificate)}, holder_claims(kit, certificate), key
    )
    assert verify(kit, token) == certificate


# --------------------------------------------------------------------------- refused


def test_a_token_signed_by_another_key_is_refused(kit: Kit) -> None:
    certificate, _ = issue(kit.authority)
    other = ec.generate_private_key(ec.SECP256R1())
    token = sign_compact(
        {"alg": "ES256", "x5c": x5c(certificate)}, holder_claims(kit, certificate), other
    )
    with pytest.raises(Unauthorized, match="signature does not verify"):
        verify(kit, token)


def test_a_certificate_of_another_ca_is_refused(kit: Kit) -> None:
    foreign = make_test_ca()
    certificate, key = foreign.issue(now=kit.now)
    with pytest.raises(InvalidCertificate, match="not issued by this CA"):
        verify(kit, mint(kit, (certificate, key)))


def test_a_certificate_signed_by_our_key_but_never_recorded_is_refused(kit: Kit) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue_certificate(
        make_csr("alice", key=key),
        client_authorization("alice", "alice@example.com"),
        kit.authority.issuer,
        now=kit.now,
    )
    with pytest.raises(InvalidCertificate):
        verify(kit, mint(kit, (certificate, key)))


def test_a_recorded_certificate_not_signed_by_our_issuer_is_refused(kit: Kit) -> None:
    foreign = make_test_ca()
    certificate, key = foreign.issue(now=kit.now)
    with kit.store.transaction() as session:
        CertificateRepository(session).add(certificate, profile="client", provisioner="ci")
    with pytest.raises(InvalidCertificate, match="issuing key"):
        verify(kit, mint(kit, (certificate, key)))


@pytest.mark.parametrize("purpose", ["renew", "revoke"])
def test_a_revoked_certificate_is_refused(kit: Kit, purpose: str) -> None:
    issued = issue(kit.authority)
    kit.authority.revoke(issued[0].serial_number, reason=x509.ReasonFlags.superseded, actor="t")
    with pytest.raises(RevokedCertificate):
        verify(kit, mint(kit, issued, purpose), purpose)


@pytest.mark.parametrize("purpose", ["renew", "revoke"])
def test_an_expired_certificate_is_refused(kit: Kit, purpose: str) -> None:
    issued = issue(kit.authority, days=1)
    with pytest.raises(InvalidCertificate, match="expired"):
        verify(kit, mint(kit, issued, purpose, days_later=2), purpose, days_later=2)


@pytest.mark.parametrize(
    ("days_later", "accepted"),
    [
        pytest.param(0.5, True, id="ok/still-valid"),
        pytest.param(3, True, id="ok/expired-within-window"),
        pytest.param(9, False, id="fail/expired-past-window"),
    ],
)
def test_renewal_after_expiry_only_within_the_window(
    kit: Kit, days_later: float, accepted: bool
) -> None:
    kit.add_provisioner(
        "late",
        claims=ProvisionerClaims(
            allow_renewal_after_expiry=True, renew_after_expiry_window=timedelta(days=7)
        ),
    )
    issued = issue(kit.authority, provisioner="late", days=1)
    token = mint(kit, issued, days_later=days_later)
    if accepted:
        verify(kit, token, days_later=days_later)
    else:
        with pytest.raises(InvalidCertificate, match="too late"):
            verify(kit, token, days_later=days_later)


def test_revoking_an_expired_certificate_is_refused_even_when_renewal_is_allowed(
    kit: Kit,
) -> None:
    kit.add_provisioner("late", claims=ProvisionerClaims(allow_renewal_after_expiry=True))
    issued = issue(kit.authority, provisioner="late", days=1)
    with pytest.raises(InvalidCertificate):
        verify(kit, mint(kit, issued, "revoke", days_later=2), "revoke", days_later=2)


def test_renew_is_refused_when_the_provisioner_does_not_allow_it(kit: Kit) -> None:
    kit.add_provisioner("once", claims=ProvisionerClaims(allow_renewal=False))
    issued = issue(kit.authority, provisioner="once")
    with pytest.raises(PolicyDenied):
        verify(kit, mint(kit, issued))
    verify(kit, mint(kit, issued, "revoke"), "revoke")


def test_a_holder_token_is_accepted_once(kit: Kit) -> None:
    issued = issue(kit.authority)
    token = mint(kit, issued)
    verify(kit, token)
    with pytest.raises(TokenReused):
        verify(kit, token)


def test_a_holder_token_is_accepted_once_across_replicas(
    replicas: tuple[Kit, Authority],
) -> None:
    kit, other = replicas
    issued = issue(kit.authority)
    token = mint(kit, issued)
    verify(kit, token)
    with pytest.raises(TokenReused):
        verify_holder_token(other.store, token, purpose="renew", ca=kit.identity, now=kit.now)


def _bad_claims(**changes: Any) -> Callable[[Kit, Issued], str]:
    def make(kit: Kit, issued: Issued) -> str:
        certificate, key = issued
        claims = holder_claims(kit, certificate, **changes)
        return sign_compact({"alg": "ES256", "x5c": x5c(certificate)}, claims, key)

    return make


def _bad_header(**changes: Any) -> Callable[[Kit, Issued], str]:
    def make(kit: Kit, issued: Issued) -> str:
        certificate, key = issued
        header: dict[str, Any] = {"alg": "ES256", "x5c": x5c(certificate), **changes}
        header = {k: v for k, v in header.items() if v is not None}
        return sign_compact(header, holder_claims(kit, certificate), key)

    return make


def _forged_header(**changes: Any) -> Callable[[Kit, Issued], str]:
    def make(kit: Kit, issued: Issued) -> str:
        certificate, _ = issued
        header = {"alg": "ES256", "x5c": x5c(certificate), **changes}
        return compact(header, holder_claims(kit, certificate), b"\x00" * 64)

    return make


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda k, i: mint(k, i, "revoke"), id="fail/revoke-token-used-to-renew"),
        pytest.param(
            _bad_claims(aud=CAIdentity(root_fingerprint="ef" * 32).audience("renew")),
            id="fail/other-ca",
        ),
        pytest.param(_bad_claims(sub="1234"), id="fail/other-serial"),
        pytest.param(_bad_claims(sub="not hex"), id="fail/sub-not-hex"),
        pytest.param(_bad_claims(sub=None), id="fail/no-sub"),
        pytest.param(_bad_claims(exp=None), id="fail/no-exp"),
        pytest.param(_bad_claims(jti=None), id="fail/no-jti"),
        pytest.param(
            lambda k, i: _bad_claims(exp=int(k.now.timestamp()) + 301)(k, i),
            id="fail/lifetime-over-5-minutes",
        ),
        pytest.param(
            lambda k, i: _bad_claims(
                iat=int(k.now.timestamp()) - 400, exp=int(k.now.timestamp()) - 100
            )(k, i),
            id="fail/expired",
        ),
        pytest.param(_bad_header(x5c=None), id="fail/no-x5c"),
        pytest.param(_bad_header(x5c=["%%%"]), id="fail/x5c-not-base64"),
        pytest.param(_bad_header(x5c=["AAAA"]), id="fail/x5c-not-a-certificate"),
        pytest.param(_bad_header(x5c=[]), id="fail/x5c-empty"),
        pytest.param(_forged_header(alg="ES384"), id="fail/alg-of-another-curve"),
        pytest.param(_forged_header(alg="none"), id="fail/alg-none"),
        pytest.param(_forged_header(alg="HS256"), id="fail/hs256"),
        pytest.param(_bad_header(jku="https://evil.example"), id="fail/jku-header"),
        pytest.param(lambda k, i: "garbage", id="fail/garbage"),
    ],
)
def test_bad_holder_tokens_are_unauthorized(
    kit: Kit, make_token: Callable[[Kit, Issued], str]
) -> None:
    token = make_token(kit, issue(kit.authority))
    with pytest.raises(Unauthorized):
        verify(kit, token)


def test_minting_needs_the_certificate_key(kit: Kit) -> None:
    certificate, _ = issue(kit.authority)
    with pytest.raises(BadRequest):
        mint(kit, (certificate, ec.generate_private_key(ec.SECP256R1())))


@pytest.mark.parametrize(
    "lifetime",
    [
        pytest.param(timedelta(minutes=6), id="fail/too-long"),
        pytest.param(timedelta(0), id="fail/zero"),
    ],
)
def test_minting_bounds_the_token_lifetime(kit: Kit, lifetime: timedelta) -> None:
    certificate, key = issue(kit.authority)
    with pytest.raises(BadRequest):
        mint_holder_token(
            certificate, key, purpose="renew", ca=kit.identity, now=kit.now, lifetime=lifetime
        )
