"""Remote signing reads the one common name the CA authorized, never a second one.

A certificate whose subject carries two CNs (``CN=billing-service, CN=garage.door.example``)
was issued by approval before the pipeline refused such subjects; OpenSSL-based relying
parties take the first CN, and remote signing took every CN as an identity. Such a caller is
refused now; the same key with a one-CN caller signs (the twin).
"""

from __future__ import annotations

from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ostiary.store import CertificateRepository
from ostiary.tls import TLSIdentity
from tests.signing.conftest import SigningRunning
from tests.signing.test_assertions import ask_assertion


def _legacy_two_cn_caller(server: SigningRunning) -> TLSIdentity:
    """A certificate as approval issued it before the fix: recorded, valid, two CNs."""
    authority = server.authority
    issuer = authority.issuer
    key = ec.generate_private_key(ec.SECP256R1())
    now = authority.clock()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "billing-service"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "garage.door.example"),
                ]
            )
        )
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("garage.door.example")]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(issuer.key_id, None, None), critical=False)
        .sign(issuer.private_key, hashes.SHA256())
    )
    with authority.store.transaction() as session:
        CertificateRepository(session).add(
            certificate, profile="client", provisioner="doors", now=now
        )
    return TLSIdentity((certificate, issuer.certificate), key)


def test_a_caller_with_two_common_names_cannot_use_a_key_bound_to_one_of_them(
    signing_server: SigningRunning,
) -> None:
    answer = ask_assertion(signing_server, _legacy_two_cn_caller(signing_server), key="strict")
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("invalid-name")


def test_a_caller_with_one_matching_common_name_signs(signing_server: SigningRunning) -> None:
    caller = signing_server.caller("billing-service")
    answer = ask_assertion(signing_server, caller, key="strict")
    assert answer.status_code == 200, answer.text
