"""What relying parties fetch: CA certificates, CRLs and OCSP, over HTTPS and plain HTTP."""

from __future__ import annotations

import asyncio
import base64
import os
import urllib.parse
from datetime import UTC, datetime

import fastapi.routing
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ostiary.authority.authority import Authority
from ostiary.authority.root_crl import publish_root_crl
from ostiary.core.ca import fingerprint_sha256
from ostiary.server.app import create_app
from ostiary.server.problems import PROBLEM_JSON
from ostiary.tls import TLSIdentity
from tests.pkilint_helper import lint_crl, lint_ocsp_response
from tests.server.conftest import PASSWORD, Running, unrecorded_certificate

PUBLIC_PATHS = ["/health", "/roots", "/root.crt", "/intermediate.crt", "/crl", "/crl.pem"]


def ocsp_request(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    *,
    nonce: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        certificate, issuer, algorithm or hashes.SHA1()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def post_ocsp(client: httpx.Client, request: bytes) -> ocsp.OCSPResponse:
    answer = client.post(
        "/ocsp", content=request, headers={"content-type": "application/ocsp-request"}
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(answer.content)


def revoke_by_admin(running: Running, identity: TLSIdentity, reason: str = "keyCompromise") -> None:
    with running.client() as client:
        answer = client.post(
            "/revoke",
            json={"serial_number": f"{identity.certificate.serial_number:x}", "reason": reason},
            headers={"authorization": f"Bearer {running.admin_token()}"},
        )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("path", PUBLIC_PATHS)
def test_public_objects_are_served_on_both_listeners(running: Running, path: str) -> None:
    with running.client() as https, running.plain() as plain:
        secure, clear = https.get(path), plain.get(path)
    assert secure.status_code == clear.status_code == 200
    assert secure.headers["content-type"] == clear.headers["content-type"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/sign"),
        ("POST", "/renew"),
        ("POST", "/revoke"),
        ("GET", "/certificates"),
        ("GET", "/openapi.json"),
    ],
)
def test_the_plain_http_listener_serves_nothing_else(
    running: Running, method: str, path: str
) -> None:
    with running.plain() as plain:
        answer = plain.request(method, path, json={})
    assert answer.status_code == 404
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert answer.json()["type"] == "urn:ostiary:error:not-found"


def test_ca_certificates_are_served_in_der_and_pem(running: Running) -> None:
    material = running.authority.ca
    with running.plain() as plain:
        root = plain.get("/root.crt")
        intermediate = plain.get("/intermediate.crt")
        roots = plain.get("/roots").json()["roots"]
    assert root.headers["content-type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(root.content) == material.root
    assert x509.load_der_x509_certificate(intermediate.content) == material.intermediate
    assert [x509.load_pem_x509_certificate(p.encode()) for p in roots] == [material.root]


def test_a_root_is_found_by_its_fingerprint_in_any_spelling(running: Running) -> None:
    fingerprint = fingerprint_sha256(running.root)
    colons = ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    with running.client() as client:
        for spelling in (fingerprint, colons):
            answer = client.get(f"/roots/{spelling}")
            assert answer.status_code == 200
            assert x509.load_pem_x509_certificate(answer.content) == running.root
        for wrong in ("00" * 32, "not-hex", fingerprint[:-2]):
            missing = client.get(f"/roots/{wrong}")
            assert missing.status_code == 404
            assert missing.json()["type"] == "urn:ostiary:error:not-found"


def test_the_crl_is_signed_by_the_intermediate_lints_clean_and_carries_next_update(
    running: Running,
) -> None:
    with running.plain() as plain:
        answer = plain.get("/crl")
        pem = plain.get("/crl.pem")
    assert answer.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(answer.content)
    assert crl.is_signature_valid(running.authority.ca.intermediate.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None and crl.next_update_utc > datetime.now(UTC)
    assert (
        x509.load_pem_x509_crl(pem.content).public_bytes(serialization.Encoding.DER)
        == answer.content
    )
    assert lint_crl(answer.content) == []


def test_a_revocation_shows_in_the_next_crl_with_a_greater_number(running: Running) -> None:
    alice = running.enroll()
    with running.plain() as plain:
        before = x509.load_der_x509_crl(plain.get("/crl").content)
        again = x509.load_der_x509_crl(plain.get("/crl").content)
        revoke_by_admin(running, alice)
        after_der = plain.get("/crl").content
    after = x509.load_der_x509_crl(after_der)
    number = lambda crl: crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number  # noqa: E731
    assert number(again) == number(before), "an unchanged CRL is served again, not rebuilt"
    assert number(after) > number(before)
    entry = after.get_revoked_certificate_by_serial_number(alice.certificate.serial_number)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.key_compromise
    )
    assert lint_crl(after_der) == []


def test_an_unchanged_crl_answers_a_conditional_get_with_304(running: Running) -> None:
    with running.plain() as plain:
        first = plain.get("/crl")
        second = plain.get("/crl", headers={"if-none-match": first.headers["etag"]})
    assert second.status_code == 304
    assert second.content == b""
    assert first.headers["cache-control"] == "no-cache"


def test_the_root_crl_is_served_once_made_offline(running: Running) -> None:
    material = running.authority.ca
    with running.plain() as plain:
        assert plain.get("/root.crl").status_code == 404
        signer = material.load_root_signer(PASSWORD)
        publish_root_crl(
            material, running.authority.store, signer, now=datetime.now(UTC), actor="test"
        )
        answer = plain.get("/root.crl")
    assert answer.status_code == 200
    crl = x509.load_der_x509_crl(answer.content)
    assert crl.issuer == material.root.subject
    assert crl.is_signature_valid(material.root.public_key())  # type: ignore[arg-type]
    assert lint_crl(answer.content) == []


def test_ocsp_says_good_then_revoked_then_unknown_and_lints_clean(running: Running) -> None:
    alice = running.enroll()
    issuer = running.authority.ca.intermediate
    request = ocsp_request(alice.certificate, issuer)
    with running.plain() as plain:
        good = post_ocsp(plain, request)
        revoke_by_admin(running, alice)
        revoked = post_ocsp(plain, request)
    assert good.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert good.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert revoked.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason is x509.ReasonFlags.key_compromise
    for response in (good, revoked):
        assert lint_ocsp_response(response.public_bytes(serialization.Encoding.DER)) == []
        responder = response.certificates[0]
        usage = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.OCSP_SIGNING]
        responder.verify_directly_issued_by(issuer)
        algorithm = response.signature_hash_algorithm
        assert algorithm is not None
        public_key = responder.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))

    # A certificate signed by our intermediate but never recorded: the store does not know it.
    ghost = unrecorded_certificate(running.authority, "ghost@example.com")
    with running.plain() as plain:
        unknown = post_ocsp(plain, ocsp_request(ghost, issuer))
    assert unknown.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert lint_ocsp_response(unknown.public_bytes(serialization.Encoding.DER)) == []


def test_ocsp_echoes_the_nonce_and_answers_the_get_form(running: Running) -> None:
    alice = running.enroll()
    issuer = running.authority.ca.intermediate
    nonce = os.urandom(16)
    with running.plain() as plain:
        with_nonce = post_ocsp(plain, ocsp_request(alice.certificate, issuer, nonce=nonce))
        plain_request = ocsp_request(alice.certificate, issuer, algorithm=hashes.SHA256())
        encoded = urllib.parse.quote(base64.b64encode(plain_request).decode(), safe="")
        got = plain.get(f"/ocsp/{encoded}")
    assert with_nonce.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert got.status_code == 200
    by_get = ocsp.load_der_ocsp_response(got.content)
    assert by_get.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert by_get.serial_number == alice.certificate.serial_number


def test_a_request_without_nonce_reuses_the_signed_response_until_the_status_changes(
    running: Running,
) -> None:
    alice = running.enroll()
    request = ocsp_request(alice.certificate, running.authority.ca.intermediate)
    with running.plain() as plain:
        first = plain.post(
            "/ocsp", content=request, headers={"content-type": "application/ocsp-request"}
        ).content
        second = plain.post(
            "/ocsp", content=request, headers={"content-type": "application/ocsp-request"}
        ).content
        revoke_by_admin(running, alice)
        third = plain.post(
            "/ocsp", content=request, headers={"content-type": "application/ocsp-request"}
        ).content
    assert first == second
    assert ocsp.load_der_ocsp_response(third).certificate_status is ocsp.OCSPCertStatus.REVOKED


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x30\x03\x02\x01", id="truncated"),
        pytest.param(os.urandom(300), id="garbage"),
    ],
)
def test_a_malformed_ocsp_request_gets_malformed_request_with_http_200(
    running: Running, body: bytes
) -> None:
    with running.plain() as plain:
        answer = plain.post(
            "/ocsp", content=body, headers={"content-type": "application/ocsp-request"}
        )
        by_get = plain.get("/ocsp/" + base64.b64encode(body or b"\x00").decode())
        not_base64 = plain.get("/ocsp/%%%not-base64%%%")
    for response in (answer, by_get, not_base64):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/ocsp-response"
        parsed = ocsp.load_der_ocsp_response(response.content)
        assert parsed.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_ocsp_about_another_issuer_is_unauthorized(running: Running) -> None:
    from tests.conftest import make_test_ca

    other = make_test_ca()
    leaf, _ = other.issue()
    with running.plain() as plain:
        answer = post_ocsp(plain, ocsp_request(leaf, other.intermediate))
    assert answer.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_health_is_answered_without_the_thread_pool(
    authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A health probe every few seconds per load balancer: no thread switch for it."""

    async def no_thread(*args: object, **kwargs: object) -> None:
        raise AssertionError("/health went through the thread pool")

    monkeypatch.setattr(fastapi.routing, "run_in_threadpool", no_thread)

    async def probe() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(authority))
        async with httpx.AsyncClient(transport=transport, base_url="https://ca.test") as client:
            return await client.get("/health")

    answer = asyncio.run(probe())
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
