"""The issuance pipeline: what it issues, and every way it refuses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ostiary.core.errors import (
    BadRequest,
    InvalidCSR,
    LifetimeNotAllowed,
    NameNotAuthorized,
    WeakKey,
)
from ostiary.core.issuance import Authorization, certificate_names, issue_certificate
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import UPN_OID, format_general_name, parse_san, parse_subject
from ostiary.core.profiles import SMART_CARD_LOGON_OID, ProfileOptions

from ..conftest import NOW, TestCA

P256 = ec.generate_private_key(ec.SECP256R1())


def make_csr(
    common_name: str = "alice", sans: tuple[str, ...] = (), key: object = P256
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([parse_san(s) for s in sans]), critical=False
        )
    return builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]


def authz(*sans: str, profile: str = "client", **kwargs: object) -> Authorization:
    return Authorization(
        subject=parse_subject("alice"),
        names=tuple(parse_san(s) for s in sans),
        profile=profile,
        **kwargs,  # type: ignore[arg-type]
    )


def test_client_certificate_carries_authorized_names_and_pointers(test_ca: TestCA) -> None:
    cert = issue_certificate(
        make_csr(sans=("alice@example.com",)), authz("alice@example.com"), test_ca.issuer, now=NOW
    )
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.KeyUsage).critical
    assert ext.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == (
        test_ca.issuer.key_id
    )
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier)
    cdp = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name == [x509.UniformResourceIdentifier("http://ca.test/crl")]
    assert ext.get_extension_for_class(x509.AuthorityInformationAccess)
    cert.verify_directly_issued_by(test_ca.intermediate)


def test_names_come_from_the_authorization_not_the_csr(test_ca: TestCA) -> None:
    cert = issue_certificate(
        make_csr(), authz("dns:a.example", "dns:b.example"), test_ca.issuer, now=NOW
    )
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [format_general_name(n) for n in sans] == ["dns:a.example", "dns:b.example"]


def test_validity_is_backdated_and_defaults_to_the_claims(test_ca: TestCA) -> None:
    lifetime = Lifetime(default=timedelta(hours=8))
    cert = issue_certificate(
        make_csr(), authz("alice@example.com", lifetime=lifetime), test_ca.issuer, now=NOW
    )
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=1)
    assert cert.not_valid_after_utc == NOW + timedelta(hours=8)


def test_serial_is_positive_random_and_at_most_20_octets(test_ca: TestCA) -> None:
    serials = {
        issue_certificate(
            make_csr(), authz("alice@example.com"), test_ca.issuer, now=NOW
        ).serial_number
        for _ in range(20)
    }
    assert len(serials) == 20
    assert all(0 < s < 2**159 for s in serials)
    assert max(s.bit_length() for s in serials) > 64


def test_user_profile_carries_upn_email_and_optional_smart_card_logon(test_ca: TestCA) -> None:
    cert = issue_certificate(
        make_csr(),
        authz(
            "upn:alice@corp.example",
            "alice@corp.example",
            profile="user",
            options=ProfileOptions(smart_card_logon=True),
        ),
        test_ca.issuer,
        now=NOW,
    )
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    other = sans.get_values_for_type(x509.OtherName)
    assert other[0].type_id == UPN_OID
    assert other[0].value == b"\x0c\x12alice@corp.example"  # UTF8String
    assert sans.get_values_for_type(x509.RFC822Name) == ["alice@corp.example"]
    eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.CLIENT_AUTH, SMART_CARD_LOGON_OID]


def test_ocsp_profile_has_ocsp_signing_and_nocheck(test_ca: TestCA) -> None:
    cert = issue_certificate(make_csr(), authz(profile="ocsp"), test_ca.issuer, now=NOW)
    eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert cert.extensions.get_extension_for_class(x509.OCSPNoCheck)


def test_configured_policies_are_added(test_ca: TestCA) -> None:
    cert = issue_certificate(
        make_csr(),
        authz("alice@example.com", policies=("1.3.6.1.4.1.99999.1.1",)),
        test_ca.issuer,
        now=NOW,
    )
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == ["1.3.6.1.4.1.99999.1.1"]


def _forged_csr() -> x509.CertificateSigningRequest:
    der = bytearray(
        make_csr(sans=("alice@example.com",)).public_bytes(
            __import__(
                "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]
            ).Encoding.DER
        )
    )
    index = der.find(b"alice@example.com")
    der[index] ^= 0x01  # one bit of the signed content flipped: the signature no longer matches
    return x509.load_der_x509_csr(bytes(der))


@pytest.mark.parametrize(
    ("csr", "authorization", "error"),
    [
        pytest.param(
            _forged_csr(), authz("alice@example.com"), InvalidCSR, id="fail/bad-signature"
        ),
        pytest.param(
            make_csr(key=rsa.generate_private_key(65537, 1024)),
            authz("alice@example.com"),
            WeakKey,
            id="fail/rsa-1024",
        ),
        pytest.param(
            make_csr(sans=("mallory@example.com",)),
            authz("alice@example.com"),
            NameNotAuthorized,
            id="fail/san-outside-authorization",
        ),
        pytest.param(
            make_csr(common_name="mallory"),
            authz("alice@example.com"),
            NameNotAuthorized,
            id="fail/cn-outside-authorization",
        ),
        pytest.param(
            make_csr(),
            authz("dns:x.example", profile="user"),
            NameNotAuthorized,
            id="fail/profile-name-kind",
        ),
        pytest.param(
            make_csr(), authz(profile="server"), BadRequest, id="fail/server-without-name"
        ),
        pytest.param(
            make_csr(),
            authz("alice@example.com", requested=timedelta(days=31)),
            LifetimeNotAllowed,
            id="fail/lifetime-over-maximum",
        ),
        pytest.param(
            make_csr(),
            authz("alice@example.com", requested=timedelta(minutes=1)),
            LifetimeNotAllowed,
            id="fail/lifetime-under-minimum",
        ),
        pytest.param(
            make_csr(),
            authz(
                "alice@example.com",
                lifetime=Lifetime(maximum=timedelta(days=36500)),
                requested=timedelta(days=36000),
            ),
            LifetimeNotAllowed,
            id="fail/not-after-past-issuer",
        ),
    ],
)
def test_refused_requests(
    test_ca: TestCA, csr: x509.CertificateSigningRequest, authorization: Authorization, error: type
) -> None:
    with pytest.raises(error):
        issue_certificate(csr, authorization, test_ca.issuer, now=NOW)


def test_default_lifetime_is_shortened_to_the_issuer(test_ca: TestCA) -> None:
    end = test_ca.intermediate.not_valid_after_utc
    lifetime = Lifetime(default=timedelta(days=30))
    cert = issue_certificate(
        make_csr(),
        authz("alice@example.com", lifetime=lifetime),
        test_ca.issuer,
        now=end - timedelta(days=2),
    )
    assert cert.not_valid_after_utc == end


def test_csr_asking_a_subset_of_names_is_issued_with_all_authorized(test_ca: TestCA) -> None:
    cert = issue_certificate(
        make_csr(sans=("dns:a.example",)),
        authz("dns:a.example", "dns:b.example"),
        test_ca.issuer,
        now=NOW,
    )
    assert len(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == 2


_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_dns = st.builds(lambda a, b: f"dns:{a}.{b}.example", _label, _label)
_email = st.builds(lambda a, b: f"email:{a}@{b}.example", _label, _label)
_name = st.one_of(_dns, _email)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    granted=st.lists(_name, max_size=3, unique=True), asked=st.lists(_name, max_size=4, unique=True)
)
def test_property_no_name_outside_the_authorization_is_ever_issued(
    test_ca: TestCA, granted: list[str], asked: list[str]
) -> None:
    csr = make_csr(sans=tuple(asked))
    authorization = authz(*granted)
    try:
        cert = issue_certificate(csr, authorization, test_ca.issuer, now=NOW)
    except NameNotAuthorized:
        assert set(asked) - set(granted), "refused although every name was granted"
        return
    try:
        issued = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        issued_names = {format_general_name(n) for n in issued}
    except x509.ExtensionNotFound:
        issued_names = set()
    assert issued_names <= set(granted)
    assert set(asked) <= set(granted)


def test_chain_verification_accepts_a_client_certificate_named_by_subject_only(
    test_ca: TestCA,
) -> None:
    from ostiary.core.chain import verify_certificate_chain
    from ostiary.core.errors import InvalidCertificate

    cert, _ = test_ca.issue("bob", ())
    result = verify_certificate_chain(
        cert, intermediates=[test_ca.intermediate], roots=[test_ca.root], now=NOW
    )
    assert len(result.chain) == 3
    with pytest.raises(InvalidCertificate):
        verify_certificate_chain(cert, intermediates=[], roots=[test_ca.root], now=NOW)
    with pytest.raises(InvalidCertificate):
        verify_certificate_chain(
            cert,
            intermediates=[test_ca.intermediate],
            roots=[test_ca.root],
            now=NOW + timedelta(days=30),
        )


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "billing-service"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
                ]
            ),
            id="fail/two-cns",
        ),
        pytest.param(
            x509.Name(
                [
                    x509.RelativeDistinguishedName(
                        [
                            x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
                            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x"),
                        ]
                    )
                ]
            ),
            id="fail/multi-valued-rdn",
        ),
        pytest.param(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice\0admin")]), id="fail/nul"
        ),
        pytest.param(
            x509.Name([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "corp")]), id="fail/dc"
        ),
    ],
)
def test_the_pipeline_never_issues_a_forbidden_subject(test_ca: TestCA, subject: x509.Name) -> None:
    authorization = Authorization(subject=subject, names=(x509.DNSName("alice"),))
    with pytest.raises(BadRequest) as refused:
        issue_certificate(make_csr(), authorization, test_ca.issuer, now=NOW)
    assert refused.value.code == "invalid-name"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(x509.DNSName("evil.example\0.door.example"), id="fail/dns-nul"),
        pytest.param(x509.DNSName("a b.door.example"), id="fail/dns-space"),
        pytest.param(x509.DNSName("evil.example/.door.example"), id="fail/dns-slash"),
        pytest.param(x509.RFC822Name("a b@door.example"), id="fail/email-space"),
        pytest.param(x509.UniformResourceIdentifier("https://x\0y"), id="fail/uri-nul"),
        pytest.param(x509.RegisteredID(NameOID.COMMON_NAME), id="fail/registered-id"),
    ],
)
def test_the_pipeline_never_issues_a_malformed_san(test_ca: TestCA, name: x509.GeneralName) -> None:
    authorization = Authorization(subject=parse_subject("alice"), names=(name,))
    with pytest.raises(BadRequest) as refused:
        issue_certificate(make_csr(), authorization, test_ca.issuer, now=NOW)
    assert refused.value.code == "invalid-name"


def test_the_pipeline_issues_sans_in_canonical_form(test_ca: TestCA) -> None:
    authorization = Authorization(
        subject=parse_subject("CN=alice,O=Home"), names=(x509.DNSName("Gate.Door.Example"),)
    )
    certificate = issue_certificate(make_csr(), authorization, test_ca.issuer, now=NOW)
    assert certificate.subject.rfc4514_string() == "CN=alice,O=Home"
    issued = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert issued.get_values_for_type(x509.DNSName) == ["gate.door.example"]


def test_a_csr_asking_for_two_common_names_is_refused(test_ca: TestCA) -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "billing-service"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
                ]
            )
        )
        .sign(P256, hashes.SHA256())
    )
    with pytest.raises(BadRequest):
        issue_certificate(csr, authz(), test_ca.issuer, now=NOW)


_TPM_DEVICE = x509.DirectoryName(
    x509.Name(
        [
            x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.1"), "id:00001014"),
            x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.2"), "swtpm"),
            x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.3"), "id:20191023"),
        ]
    )
)


def test_a_tpm_device_name_is_issued_only_in_an_attestation_key_certificate() -> None:
    """The CA's attestation CA writes the TPM's manufacturer, model and version as a
    directoryName SAN; every other profile refuses directory names, as before.
    """
    for_ak = Authorization(
        subject=parse_subject("ak"), names=(_TPM_DEVICE,), profile="attestation-key"
    )
    assert certificate_names(for_ak)[1] == [_TPM_DEVICE]
    for_client = Authorization(subject=parse_subject("ak"), names=(_TPM_DEVICE,), profile="client")
    with pytest.raises(BadRequest, match="not an allowed subject alternative name"):
        certificate_names(for_client)
    other = x509.DirectoryName(parse_subject("CN=admin"))
    with pytest.raises(BadRequest):
        certificate_names(
            Authorization(subject=parse_subject("ak"), names=(other,), profile="attestation-key")
        )
