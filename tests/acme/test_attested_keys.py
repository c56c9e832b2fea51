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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.acme.authorizations import record_outcome
from ostiary.acme.validation import ValidationResult
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
