"""ACME while the audit log cannot be written (issue 19): finalize and revokeCert are refused
and change nothing; the same requests work once the fault is gone.

The answer is an RFC 8555 problem document, since that is what an ACME client reads:
``serverInternal`` (RFC 8555 has no type for "try again later") with HTTP 503 and
Retry-After, and a fresh Replay-Nonce for the retry. certbot and lego report the detail and
stop; a renewal agent tries again at its next run. The order stays ``ready``, so finalizing it
again works: nothing was issued, nothing revoked.
"""

from __future__ import annotations

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.acme.conftest import AcmeServer, RawClient, Responder, b64url, csr_der
from tests.acme.test_rejections import poll, ready_order
from tests.server.audit_fault import REFUSE, audit_entries, audit_refused

pytestmark = pytest.mark.slow


def _unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:ietf:params:acme:error:serverInternal"
    assert "audit log cannot be written" in answer.json()["detail"]
    assert REFUSE not in answer.text
    assert int(answer.headers["Retry-After"]) >= 1
    assert answer.headers["Replay-Nonce"]


def _issued(client: RawClient, order: dict[str, object]) -> x509.Certificate:
    valid = poll(client, str(order["url"]), until=("valid", "invalid"))
    pem = client.post(str(valid["certificate"]), None).content
    return x509.load_pem_x509_certificates(pem)[0]


def test_finalize_and_revocation_are_refused_while_the_audit_log_cannot_be_written(
    acme_server: AcmeServer,
    raw: RawClient,
    responder: Responder,
) -> None:
    issued_order = ready_order(raw, responder, ["localhost"])
    key = ec.generate_private_key(ec.SECP256R1())
    finalized = raw.post(
        str(issued_order["finalize"]), {"csr": b64url(csr_der(["localhost"], key))}
    )
    assert finalized.status_code == 200, finalized.text
    issued = _issued(raw, issued_order)
    revoke = {"certificate": b64url(issued.public_bytes(serialization.Encoding.DER))}
    order = ready_order(raw, responder, ["localhost"])
    csr = {"csr": b64url(csr_der(["localhost"], ec.generate_private_key(ec.SECP256R1())))}
    url = acme_server.folder.database_url
    before = (acme_server.certificate_count(), audit_entries(url))
    with audit_refused(url):
        _unavailable(raw.post(str(order["finalize"]), csr))
        _unavailable(raw.post(raw.directory["revokeCert"], revoke))
        assert raw.post(str(order["url"]), None).json()["status"] == "ready"
        assert (acme_server.certificate_count(), audit_entries(url)) == before
    # the fault gone: the same order finalizes, the same revocation is done
    assert raw.post(str(order["finalize"]), csr).status_code == 200
    assert _issued(raw, order).public_key() != issued.public_key()
    assert raw.post(raw.directory["revokeCert"], revoke).status_code == 200
    assert acme_server.certificate_count() == before[0] + 1
