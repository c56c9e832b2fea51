"""SCEP with the tests' own client: every cipher and digest answered in kind, and the
negatives (tampered signature, wrong recipient, garbled envelope, unknown transaction,
another CSR under a used transactionID), each with its failInfo, never a 5xx, nothing issued.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AttributeOID

from tests.scep.client import Request, make_csr, read_reply, self_signed, send
from tests.scep.conftest import ScepServer, ostiary

SUCCESS, FAILURE, PENDING = 0, 2, 3
BAD_ALG, BAD_MESSAGE_CHECK, BAD_REQUEST, BAD_TIME, BAD_CERT_ID = range(5)
PKCS_REQ, RENEWAL_REQ, CERT_POLL = 19, 17, 20
PATH = "/scep/devices"


@cache
def _key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _request(
    server: ScepServer, cn: str, challenge: str | None, *, key: rsa.RSAPrivateKey | None = None,
    name: str = "devices", **options: object,
) -> Request:  # fmt: skip
    key = key or _key()
    csr = make_csr(key, cn, challenge).public_bytes(serialization.Encoding.DER)
    ra = server.ca_certs(name)[0]
    return Request(key, self_signed(key, cn), PKCS_REQ, csr, [ra], **options)  # type: ignore[arg-type]


def _ra(server: ScepServer, name: str = "devices") -> x509.Certificate:
    return server.ca_certs(name)[0]


def test_capabilities_and_ca_certificates(ec_ca: ScepServer) -> None:
    with ec_ca.plain() as http:
        caps = http.get(PATH, params={"operation": "GetCACaps", "message": "0"})
        cgi = http.get(f"{PATH}/pkiclient.exe", params={"operation": "GetCACaps"})
        unknown = http.get("/scep/nobody", params={"operation": "GetCACaps"})
        bad_operation = http.get(PATH, params={"operation": "GetEverything"})
    assert caps.status_code == 200 and caps.headers["content-type"].startswith("text/plain")
    assert caps.text.split() == [
        "POSTPKIOperation", "SHA-256", "SHA-512", "AES", "SCEPStandard", "Renewal",
    ]  # fmt: skip
    assert cgi.text == caps.text
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert bad_operation.status_code == 400
    ra, *cas = ec_ca.ca_certs("devices")
    root = next(c for c in cas if c.issuer == c.subject)
    intermediate = next(c for c in cas if c.issuer != c.subject)
    assert isinstance(ra.public_key(), rsa.RSAPublicKey)  # an RSA RA in front of the EC CA
    usage = ra.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    assert ra.issuer == intermediate.subject and intermediate.issuer == root.subject
    # the HTTPS listener serves the same
    with ec_ca.serve.client() as https:
        assert https.get(PATH, params={"operation": "GetCACaps"}).text == caps.text


@pytest.mark.parametrize(
    ("cipher", "digest"),
    [
        ("des", "sha1"),
        ("tripledes_3key", "sha1"),
        ("tripledes_3key", "sha256"),
        ("aes128_cbc", "sha256"),
        ("aes256_cbc", "sha512"),
    ],
)
def test_each_cipher_and_digest_is_answered_in_kind(
    ec_ca: ScepServer, cipher: str, digest: str
) -> None:
    cn = f"dev-{cipher}-{digest}"
    request = _request(ec_ca, cn, ec_ca.challenge("devices", cn), cipher=cipher, digest=digest)
    with ec_ca.plain() as http:
        reply = send(http, PATH, request, _ra(ec_ca))
    assert reply.status == SUCCESS
    assert (reply.cipher, reply.digest) == (cipher, digest)
    assert reply.transaction_id == request.transaction_id
    assert reply.recipient_nonce == request.nonce
    assert reply.certificate is not None
    assert reply.certificate.subject.rfc4514_string() == f"CN={cn}"


def test_get_pkioperation_with_unescaped_base64(ec_ca: ScepServer) -> None:
    request = _request(ec_ca, "dev-get", ec_ca.challenge("devices", "dev-get"))
    message = base64.b64encode(request.der()).decode()
    with ec_ca.plain() as http:  # '+' and '/' as macOS sends them, not percent-encoded
        answer = http.get(f"{PATH}?operation=PKIOperation&message={message}")
    assert answer.status_code == 200
    assert read_reply(answer.content, request, _ra(ec_ca)).status == SUCCESS


def _remade(request: Request, cn: str) -> Request:
    """The same request made again as certmonger does: a random subjectKeyIdentifier, SHA-512."""
    first = x509.load_der_x509_csr(request.inner)
    challenge = first.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(first.subject)
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge)
        .add_extension(x509.SubjectKeyIdentifier(os.urandom(20)), critical=False)
        .sign(request.key, hashes.SHA512())
    )
    return dataclasses.replace(request, inner=csr.public_bytes(serialization.Encoding.DER))


def test_repeated_transaction_is_idempotent_and_another_csr_is_refused(ec_ca: ScepServer) -> None:
    request = _request(ec_ca, "dev-repeat", ec_ca.challenge("devices", "dev-repeat"))
    with ec_ca.plain() as http:
        first = send(http, PATH, request, _ra(ec_ca))
        before = ec_ca.count_certificates()
        again = send(http, PATH, request, _ra(ec_ca))
        # certmonger's resubmit: a new CSR for the same key and names, its bytes differ
        remade = _remade(request, "dev-repeat")
        regenerated = send(http, PATH, remade, _ra(ec_ca))
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other = _request(
            ec_ca, "dev-repeat", ec_ca.challenge("devices", "dev-repeat"), key=other_key,
            transaction_id=request.transaction_id,
        )  # fmt: skip
        refused = send(http, PATH, other, _ra(ec_ca))
        polled = send(
            http, PATH,
            Request(request.key, request.signer, CERT_POLL, b"\x30\x00", request.recipients,
                    transaction_id=request.transaction_id),
            _ra(ec_ca),
        )  # fmt: skip
    assert first.status == again.status == SUCCESS
    assert first.certificate == again.certificate == regenerated.certificate
    assert remade.inner != request.inner
    assert (refused.status, refused.fail_info, refused.certificate) == (FAILURE, BAD_REQUEST, None)
    assert polled.status == SUCCESS and polled.certificate == first.certificate
    assert ec_ca.count_certificates() == before


@pytest.mark.parametrize(
    ("case", "fail_info"),
    [
        ("tampered signature", BAD_MESSAGE_CHECK),
        ("wrong recipient", BAD_MESSAGE_CHECK),
        ("garbled envelope", BAD_MESSAGE_CHECK),
        ("unknown transaction", BAD_CERT_ID),
        ("wrong challenge", BAD_REQUEST),
        ("no challenge", BAD_REQUEST),
        ("1024-bit key", BAD_REQUEST),
        ("name not in the challenge", BAD_REQUEST),
    ],
)
def test_refusals_carry_their_fail_info_and_issue_nothing(
    ec_ca: ScepServer, case: str, fail_info: int
) -> None:
    challenge = ec_ca.challenge("devices", "dev-neg")
    request = _request(ec_ca, "dev-neg", challenge)
    if case == "tampered signature":
        request.tamper_signature = True
    elif case == "wrong recipient":
        request.recipients = [_ra(ec_ca, "users")]  # another provisioner's RA
    elif case == "garbled envelope":
        request.garble_envelope = True
    elif case == "unknown transaction":
        request.message_type, request.inner = CERT_POLL, b"\x30\x00"
    elif case == "wrong challenge":
        request = _request(ec_ca, "dev-neg", challenge + "x")
    elif case == "no challenge":
        request = _request(ec_ca, "dev-neg", None)
    elif case == "1024-bit key":
        request = _request(ec_ca, "dev-neg", challenge, key=_key(1024))
    elif case == "name not in the challenge":
        request = _request(ec_ca, "someone-else", challenge)
    before = ec_ca.count_certificates()
    with ec_ca.plain() as http:
        reply = send(http, PATH, request, _ra(ec_ca))
    assert (reply.status, reply.fail_info, reply.certificate) == (FAILURE, fail_info, None)
    assert ec_ca.count_certificates() == before
    # the challenge was not spent by the refused request: it still works once
    with ec_ca.plain() as http:
        assert send(http, PATH, _request(ec_ca, "dev-neg", challenge), _ra(ec_ca)).status == SUCCESS


def test_a_challenge_works_once(ec_ca: ScepServer) -> None:
    challenge = ec_ca.challenge("devices", "dev-once")
    with ec_ca.plain() as http:
        first = send(http, PATH, _request(ec_ca, "dev-once", challenge), _ra(ec_ca))
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        second = send(http, PATH, _request(ec_ca, "dev-once", challenge, key=other), _ra(ec_ca))
    assert first.status == SUCCESS
    assert (second.status, second.fail_info) == (FAILURE, BAD_REQUEST)


def test_garbage_is_a_400_not_a_5xx(ec_ca: ScepServer) -> None:
    with ec_ca.plain() as http:
        for body in (b"", b"garbage", b"\x30\x03\x02\x01\x00"):
            answer = http.post(f"{PATH}?operation=PKIOperation", content=body)
            assert answer.status_code == 400, answer.text
        assert http.get(f"{PATH}?operation=PKIOperation&message=%%%").status_code == 400


def test_renewal_req_signed_with_the_current_certificate(ec_ca: ScepServer) -> None:
    key = _key()
    with ec_ca.plain() as http:
        issued = send(
            http,
            PATH,
            _request(ec_ca, "dev-renew", ec_ca.challenge("devices", "dev-renew")),
            _ra(ec_ca),
        ).certificate
        assert issued is not None
        new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        csr = make_csr(new_key, "dev-renew", None).public_bytes(serialization.Encoding.DER)
        renewal = Request(key, issued, RENEWAL_REQ, csr, [_ra(ec_ca)])
        renewed = send(http, PATH, renewal, _ra(ec_ca))
        # a self-signed certificate is no credential for a renewal
        stranger = Request(key, self_signed(key, "dev-renew"), RENEWAL_REQ, csr, [_ra(ec_ca)])
        refused = send(http, PATH, stranger, _ra(ec_ca))
    assert renewed.status == SUCCESS and renewed.certificate is not None
    assert renewed.certificate.subject == issued.subject
    assert renewed.certificate.public_key() == new_key.public_key()
    assert (refused.status, refused.fail_info) == (FAILURE, BAD_REQUEST)


def test_require_approval_answers_pending_to_the_request_and_its_polls(ec_ca: ScepServer) -> None:
    request = _request(ec_ca, "kiosk-1", ec_ca.challenge("gated", "kiosk-1"), name="gated")
    poll = Request(request.key, request.signer, CERT_POLL, b"\x30\x00", request.recipients,
                   transaction_id=request.transaction_id)  # fmt: skip
    before = ec_ca.count_certificates()
    with ec_ca.plain() as http:
        pending = send(http, "/scep/gated", request, _ra(ec_ca, "gated"))
        polled = send(http, "/scep/gated", poll, _ra(ec_ca, "gated"))
    assert (pending.status, pending.certificate) == (PENDING, None)
    assert (polled.status, polled.certificate) == (PENDING, None)
    assert ec_ca.count_certificates() == before  # nothing before an officer approves


def test_a_refusal_in_the_write_spends_neither_challenge_nor_transaction(
    ec_ca: ScepServer,
) -> None:
    """The challenge, the transaction, the certificate and its audit entry are one write:
    a key reported compromised is refused in that write, and then nothing of it stays.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with ec_ca.plain() as http:
        first = send(
            http, PATH, _request(ec_ca, "dev-stolen", ec_ca.challenge("devices", "dev-stolen"),
                                 key=key), _ra(ec_ca),
        )  # fmt: skip
        assert first.status == SUCCESS and first.certificate is not None
        serial = f"{first.certificate.serial_number:x}"
        password = ("--password-file", str(ec_ca.password_file))
        ostiary(ec_ca.home, "ca", "revoke", serial, "--reason", "keyCompromise", *password)
        challenge = ec_ca.challenge("devices", "dev-stolen")
        refused_request = _request(ec_ca, "dev-stolen", challenge, key=key)
        before = ec_ca.count_certificates()
        refused = send(http, PATH, refused_request, _ra(ec_ca))
        assert (refused.status, refused.fail_info) == (FAILURE, BAD_REQUEST)
        assert ec_ca.count_certificates() == before
        # no transaction was recorded: a poll for it is unknown
        poll = Request(key, refused_request.signer, CERT_POLL, b"\x30\x00", [_ra(ec_ca)],
                       transaction_id=refused_request.transaction_id)  # fmt: skip
        assert send(http, PATH, poll, _ra(ec_ca)).fail_info == BAD_CERT_ID
        # and the challenge was not spent: a new key enrolls with it
        fresh = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        again = send(http, PATH, _request(ec_ca, "dev-stolen", challenge, key=fresh), _ra(ec_ca))
    assert again.status == SUCCESS and again.certificate is not None
    assert again.certificate.public_key() == fresh.public_key()
