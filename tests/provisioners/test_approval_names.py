"""Approval takes the subject and SANs from the CSR: exactly one CN, canonical SANs.

Security review (issue 22, finding 4): a CSR ``CN=billing-service, CN=garage.door.example``
under ``--allow-name '*.door.example'`` was accepted (the check read the last CN, OpenSSL's
relying parties the first), and SANs ``evil.example\\0.door.example``, ``a b.door.example``,
``evil.example/.door.example`` matched the glob. The pipeline now refuses them for every
entry path; these tests drive approval, the path that copies names from the CSR.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ostiary.core.errors import OstiaryError
from ostiary.core.names import canonical_general_name, format_general_name, sans_of
from ostiary.provisioners import ProvisionerClaims
from ostiary.provisioners.approval import add_approval_provisioner
from ostiary.provisioners.approval_decisions import approve_request
from ostiary.provisioners.approval_queue import submit_request
from ostiary.provisioners.patterns import name_matches
from ostiary.store import CertificateRepository, RequestRepository

from .conftest import Kit

DOORS = "doors"
PATTERNS = ("dns:*.door.example",)
_KEY = ec.generate_private_key(ec.SECP256R1())
CN = NameOID.COMMON_NAME


def _csr(
    rdns: list[list[tuple[x509.ObjectIdentifier, str]]], sans: list[x509.GeneralName]
) -> x509.CertificateSigningRequest:
    subject = x509.Name(
        [x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn]) for rdn in rdns]
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(_KEY, hashes.SHA256())


@pytest.fixture
def doors(kit: Kit) -> Kit:
    add_approval_provisioner(
        kit.store,
        DOORS,
        claims=ProvisionerClaims(allowed_names=PATTERNS),
        now=kit.now,
        profile="client",
        require_code=False,
    )
    return kit


def _pending(kit: Kit) -> int:
    with kit.store.transaction(read_only=True) as session:
        return RequestRepository(session).count_pending(DOORS, now=kit.now)


def _submit_and_approve(kit: Kit, csr: x509.CertificateSigningRequest) -> x509.Certificate:
    submitted = submit_request(kit.store, DOORS, csr, ca=kit.identity, now=kit.now)
    return approve_request(kit.authority, submitted.request_id, officer="officer-test")


def test_a_one_cn_request_is_approved_and_issued(doors: Kit) -> None:
    csr = _csr([[(CN, "garage.door.example")]], [x509.DNSName("garage.door.example")])
    certificate = _submit_and_approve(doors, csr)
    assert certificate.subject.rfc4514_string() == "CN=garage.door.example"
    assert [format_general_name(n) for n in sans_of(certificate.extensions)] == [
        "dns:garage.door.example"
    ]


@pytest.mark.parametrize(
    "rdns",
    [
        pytest.param([[(CN, "billing-service")], [(CN, "garage.door.example")]], id="two-cns"),
        pytest.param([[(CN, "garage.door.example")], [(CN, "billing-service")]], id="two-cns-b"),
        pytest.param(
            [[(CN, "garage.door.example"), (CN, "billing-service")]], id="multi-valued-rdn"
        ),
        pytest.param(
            [[(NameOID.ORGANIZATION_NAME, "Billing")], [(CN, "garage.door.example")]],
            id="other-attribute",
        ),
    ],
)
def test_a_request_whose_subject_is_more_than_one_cn_is_refused(
    doors: Kit, rdns: list[list[tuple[x509.ObjectIdentifier, str]]]
) -> None:
    csr = _csr(rdns, [x509.DNSName("garage.door.example")])
    with pytest.raises(OstiaryError) as refused:
        submit_request(doors.store, DOORS, csr, ca=doors.identity, now=doors.now)
    assert refused.value.code == "invalid-name"
    assert "one common name" in refused.value.detail
    assert _pending(doors) == 0


@pytest.mark.parametrize(
    "dns",
    [
        pytest.param("evil.example\0.door.example", id="nul"),
        pytest.param("a b.door.example", id="space"),
        pytest.param("evil.example/.door.example", id="slash"),
    ],
)
def test_a_san_that_is_not_a_dns_name_is_refused(doors: Kit, dns: str) -> None:
    csr = _csr([[(CN, "gate.door.example")]], [x509.DNSName(dns)])
    with pytest.raises(OstiaryError) as refused:
        submit_request(doors.store, DOORS, csr, ca=doors.identity, now=doors.now)
    assert refused.value.code == "invalid-name"
    assert _pending(doors) == 0
    with doors.store.transaction(read_only=True) as session:
        assert CertificateRepository(session).search() == []


# --------------------------------------------------------------------------- property

_ALPHABET = "ab.-*/ \0\u202eZ@"
_text = st.text(alphabet=_ALPHABET, min_size=1, max_size=10)
_value = st.one_of(_text, st.builds(lambda t: f"{t}.door.example", _text))
_attribute = st.tuples(
    st.sampled_from([CN, CN, NameOID.ORGANIZATION_NAME, NameOID.EMAIL_ADDRESS]), _value
)
_rdns = st.lists(st.lists(_attribute, min_size=1, max_size=2), max_size=3)


def _san(kind: str, value: str) -> x509.GeneralName:
    """A raw SAN as a forger would put it in a CSR (cryptography refuses non-ASCII ones)."""
    try:
        if kind == "email":
            return x509.RFC822Name(f"{value}@{value}")
        if kind == "uri":
            return x509.UniformResourceIdentifier(f"https://{value}")
        return x509.DNSName(value)
    except ValueError:
        return x509.DNSName("x.door.example")


_sans = st.lists(
    st.builds(_san, st.sampled_from(["dns", "dns", "email", "uri"]), _value), max_size=3
)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rdns=_rdns, sans=_sans)
def test_property_no_csr_with_a_forbidden_name_is_ever_issued(
    doors: Kit, rdns: list[list[tuple[x509.ObjectIdentifier, str]]], sans: list[x509.GeneralName]
) -> None:
    try:
        csr = _csr(rdns, sans)
    except ValueError:  # cryptography itself refuses to encode it: nothing to submit
        return
    try:
        certificate = _submit_and_approve(doors, csr)
    except OstiaryError:
        return
    subject = certificate.subject
    assert [a.oid for a in subject] in ([], [CN])  # one CN at most, nothing else
    issued = sans_of(certificate.extensions)
    assert issued or len(subject), "approval issued a certificate that names nobody"
    for name in issued:
        assert canonical_general_name(name) == name
        assert name_matches(format_general_name(name), PATTERNS)
    for attribute in subject:
        assert str(attribute.value).lower() in {str(n.value).lower() for n in issued}
