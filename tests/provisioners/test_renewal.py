"""Renewal authorizations: the same names, profile and provisioner, the provisioner's claims."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.core.errors import (
    InvalidCertificate,
    NameNotAuthorized,
    PolicyDenied,
    RevokedCertificate,
)
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import format_general_name, sans_of
from ostiary.provisioners import ProvisionerClaims, remove_provisioner, renewal_authorization
from ostiary.store import CertificateRepository

from .conftest import Kit, client_authorization, make_csr


def issue(
    kit: Kit, *, provisioner: str | None = "ci", days: int = 7, policies: tuple[str, ...] = ()
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    authorization = client_authorization(
        "alice",
        "alice@example.com",
        "dns:alice.lab.example",
        provisioner=provisioner,
        lifetime=Lifetime(default=timedelta(days=days)),
        policies=policies,
    )
    return kit.authority.issue(make_csr("alice", key=key), authorization, actor="t"), key


def spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_renewal_keeps_names_profile_provisioner_and_key(kit: Kit) -> None:
    certificate, _ = issue(kit)
    authorization, public_key = renewal_authorization(
        kit.store, certificate, now=kit.now + timedelta(days=5), ca=kit.identity
    )
    assert authorization.subject == certificate.subject
    assert list(authorization.names) == sans_of(certificate.extensions)
    assert authorization.provisioner == "ci"
    assert authorization.profile == "client"
    assert authorization.lifetime == kit.provisioner.claims.lifetime
    assert spki(public_key) == spki(certificate.public_key())

    renewed = kit.authority.renew(certificate, authorization, public_key, actor="t")
    assert renewed.serial_number != certificate.serial_number
    assert [format_general_name(n) for n in sans_of(renewed.extensions)] == [
        "email:alice@example.com",
        "dns:alice.lab.example",
    ]
    with kit.store.transaction(read_only=True) as session:
        record = CertificateRepository(session).get(renewed.serial_number)
    assert record.provisioner == "ci"


def test_renewal_with_a_csr_takes_the_new_key(kit: Kit) -> None:
    certificate, _ = issue(kit)
    new_key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr("alice", ("alice@example.com",), key=new_key)
    authorization, public_key = renewal_authorization(
        kit.store, certificate, now=kit.now, csr=csr, ca=kit.identity
    )
    assert spki(public_key) == spki(new_key.public_key())
    renewed = kit.authority.renew(certificate, authorization, public_key, actor="t", csr=csr)
    assert spki(renewed.public_key()) == spki(new_key.public_key())


def test_a_renewal_csr_may_not_ask_for_other_names(kit: Kit) -> None:
    certificate, _ = issue(kit)
    csr = make_csr("alice", ("mallory@example.com",))
    with pytest.raises(NameNotAuthorized):
        renewal_authorization(kit.store, certificate, now=kit.now, csr=csr, ca=kit.identity)


def test_policies_stay_with_the_key_only(kit: Kit) -> None:
    certificate, _ = issue(kit, policies=("1.3.6.1.4.1.99999.1",))
    same_key, _ = renewal_authorization(kit.store, certificate, now=kit.now, ca=kit.identity)
    new_key, _ = renewal_authorization(
        kit.store, certificate, now=kit.now, csr=make_csr("alice"), ca=kit.identity
    )
    assert same_key.policies == ("1.3.6.1.4.1.99999.1",)
    assert new_key.policies == ()


def test_offline_certificates_follow_the_ca_claims(kit: Kit) -> None:
    certificate, _ = issue(kit, provisioner="offline")
    authorization, _ = renewal_authorization(kit.store, certificate, now=kit.now, ca=kit.identity)
    assert authorization.lifetime == kit.identity.claims.lifetime


def test_renewal_is_refused_when_the_provisioner_does_not_allow_it(kit: Kit) -> None:
    kit.add_provisioner("once", claims=ProvisionerClaims(allow_renewal=False))
    certificate, _ = issue(kit, provisioner="once")
    with pytest.raises(PolicyDenied, match="does not allow renewal"):
        renewal_authorization(kit.store, certificate, now=kit.now, ca=kit.identity)


def test_renewal_is_refused_after_the_provisioner_was_removed(kit: Kit) -> None:
    kit.add_provisioner("gone")
    certificate, _ = issue(kit, provisioner="gone")
    renewal_authorization(kit.store, certificate, now=kit.now, ca=kit.identity)
    remove_provisioner(kit.store, "gone", now=kit.now)
    with pytest.raises(PolicyDenied, match="was removed"):
        renewal_authorization(kit.store, certificate, now=kit.now, ca=kit.identity)


def test_renewal_of_a_revoked_certificate_is_refused(kit: Kit) -> None:
    certificate, _ = issue(kit)
    kit.authority.revoke(
        certificate.serial_number, reason=x509.ReasonFlags.key_compromise, actor="t"
    )
    with pytest.raises(RevokedCertificate):
        renewal_authorization(kit.store, certificate, now=kit.now, ca=kit.identity)


@pytest.mark.parametrize(
    ("after_expiry", "days_later", "accepted"),
    [
        pytest.param(False, 0.5, True, id="ok/valid"),
        pytest.param(False, 2, False, id="fail/expired"),
        pytest.param(True, 2, True, id="ok/expired-allowed"),
        pytest.param(True, 10, False, id="fail/expired-past-window"),
    ],
)
def test_expired_certificates_renew_only_when_allowed(
    kit: Kit, after_expiry: bool, days_later: float, accepted: bool
) -> None:
    kit.add_provisioner("p", claims=ProvisionerClaims(allow_renewal_after_expiry=after_expiry))
    certificate, _ = issue(kit, provisioner="p", days=1)
    now = kit.now + timedelta(days=days_later)
    if accepted:
        renewal_authorization(kit.store, certificate, now=now, ca=kit.identity)
    else:
        with pytest.raises(InvalidCertificate):
            renewal_authorization(kit.store, certificate, now=now, ca=kit.identity)


def test_a_certificate_we_never_issued_cannot_renew(kit: Kit) -> None:
    from ..conftest import make_test_ca

    certificate, _ = make_test_ca().issue(now=kit.now)
    with pytest.raises(InvalidCertificate):
        renewal_authorization(kit.store, certificate, now=kit.now, ca=kit.identity)


@pytest.mark.parametrize(
    ("days", "expected_days"),
    [
        pytest.param(3, 3, id="ok/same-as-original"),
        pytest.param(29, 29, id="ok/long-original-within-maximum"),
    ],
)
def test_renewal_lives_as_long_as_the_original(kit: Kit, days: int, expected_days: int) -> None:
    certificate, _ = issue(kit, days=days)
    authorization, public_key = renewal_authorization(
        kit.store, certificate, now=kit.now + timedelta(days=1), ca=kit.identity
    )
    renewed = kit.authority.renew(certificate, authorization, public_key, actor="t")
    lifetime = renewed.not_valid_after_utc - renewed.not_valid_before_utc
    assert lifetime - timedelta(minutes=1) == timedelta(days=expected_days)
