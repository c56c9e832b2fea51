"""Finalize after a validator attested the key (device-attest-01's ValidationResult).

The device-attest-01 validators are tested on their own; here the outcome they hand the
order state machine (``attested_spki_der``, ``hardware_key``) is recorded as
``record_outcome`` records it, and finalize must hold the CSR to that key and put the
hardware policy OID in the certificate.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.acme.authorizations import record_outcome
from ostiary.acme.validation import ValidationResult
from ostiary.core.names import decode_other_name, permanent_identifier_name
from ostiary.store import Store
from tests.acme.conftest import (
    HARDWARE_POLICY,
    AcmeServer,
    RawClient,
    b64url,
    csr_der,
    problem_type,
)
from tests.acme.test_rejections import poll

pytestmark = pytest.mark.slow


def test_only_the_attested_key_is_certified_and_with_the_hardware_policy(
    acme_server: AcmeServer,
) -> None:
    raw = RawClient(acme_server, "hardware")
    raw.register()
    try:
        made = raw.post(
            raw.directory["newOrder"], {"identifiers": [{"type": "dns", "value": "vm"}]}
        )
        order_url = made.headers["Location"]
        authz = raw.post(made.json()["authorizations"][0], None).json()
        challenge_id = authz["challenges"][0]["url"].rsplit("/", 1)[1]
        attested = ec.generate_private_key(ec.SECP256R1())
        spki = attested.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        store = Store.from_url(acme_server.folder.database_url)
        try:
            record_outcome(
                store,
                challenge_id,
                ValidationResult(attested_spki_der=spki, hardware_key=True),
                None,
                now=datetime.now(UTC),
            )
        finally:
            store.dispose()
        order = poll(raw, order_url, until=("ready",))
        before = acme_server.certificate_count()
        other = ec.generate_private_key(ec.SECP256R1())
        refused = raw.post(str(order["finalize"]), {"csr": b64url(csr_der(["vm"], other))})
        assert problem_type(refused) == "badCSR"
        assert "attested" in refused.json()["detail"]
        assert acme_server.certificate_count() == before

        done = raw.post(str(order["finalize"]), {"csr": b64url(csr_der(["vm"], attested))})
        assert done.status_code == 200, done.text
        chain = raw.post(done.json()["certificate"], None)
        leaf = x509.load_pem_x509_certificates(chain.content)[0]
    finally:
        raw.close()
    policies = leaf.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert HARDWARE_POLICY in {p.policy_identifier.dotted_string for p in policies}
    assert leaf.public_key() == attested.public_key()


def _attest(server: AcmeServer, raw: RawClient, authorization_url: str, spki: bytes) -> None:
    """What device-attest-01's validator hands the state machine for this authorization."""
    authz = raw.post(authorization_url, None).json()
    assert [c["type"] for c in authz["challenges"]] == ["device-attest-01"]
    store = Store.from_url(server.folder.database_url)
    try:
        record_outcome(
            store,
            authz["challenges"][0]["url"].rsplit("/", 1)[1],
            ValidationResult(attested_spki_der=spki, hardware_key=True),
            None,
            now=datetime.now(UTC),
        )
    finally:
        store.dispose()


def test_a_hardware_module_is_proved_by_device_attest_only_and_left_out_of_the_certificate(
    acme_server: AcmeServer,
) -> None:
    device = {"type": "permanent-identifier", "value": "dev-4711"}
    module = {"type": "hardware-module", "value": "SN-0042"}
    web = RawClient(acme_server, "acme")  # http-01 only: nothing proves a module there
    web.register()
    raw = RawClient(acme_server, "devices")  # http-01 and device-attest-01
    raw.register()
    try:
        refused = web.post(web.directory["newOrder"], {"identifiers": [device, module]})
        assert problem_type(refused) == "rejectedIdentifier"
        alone = raw.post(raw.directory["newOrder"], {"identifiers": [module]})
        assert problem_type(alone) == "rejectedIdentifier"
        assert "permanent-identifier" in alone.json()["detail"]

        made = raw.post(raw.directory["newOrder"], {"identifiers": [device, module]})
        assert made.status_code == 201, made.text
        attested = ec.generate_private_key(ec.SECP256R1())
        spki = attested.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for authorization_url in made.json()["authorizations"]:
            _attest(acme_server, raw, authorization_url, spki)
        order = poll(raw, made.headers["Location"], until=("ready",))
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .add_extension(
                x509.SubjectAlternativeName([permanent_identifier_name("dev-4711")]),
                critical=False,
            )
            .sign(attested, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
        done = raw.post(str(order["finalize"]), {"csr": b64url(csr)})
        assert done.status_code == 200, done.text
        leaf = x509.load_pem_x509_certificates(raw.post(done.json()["certificate"], None).content)[
            0
        ]
    finally:
        raw.close()
        web.close()
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [decode_other_name(n) for n in sans.get_values_for_type(x509.OtherName)] == ["dev-4711"]
    assert len(list(sans)) == 1
    policies = leaf.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert HARDWARE_POLICY in {p.policy_identifier.dotted_string for p in policies}
