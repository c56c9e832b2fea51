"""OCSP: what a request gets back, how bad requests are answered, and who accepts it."""

from __future__ import annotations

import base64
import subprocess
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import OCSPExtensionOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ostiary.core.errors import BadRequest, MalformedInput
from ostiary.core.keys import KeyType
from ostiary.core.ocsp import (
    CertStatus,
    OcspResponder,
    build_ocsp_response,
    build_unsuccessful_response,
    ocsp_request_from_get_path,
)

from ..conftest import NOW, TestCA, make_test_ca, require_tool
from ..pkilint_helper import lint_ocsp_response

VALIDITY = timedelta(hours=12)
SHA1 = hashes.SHA1()
GOOD = CertStatus.good()
REVOKED_AT = NOW - timedelta(hours=3)
Responder = tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]


@pytest.fixture(scope="module")
def responder(test_ca: TestCA) -> Responder:
    """A delegated responder: OCSPSigning and ocsp-nocheck, issued by the intermediate."""
    return test_ca.issue("OCSP Responder", (), profile="ocsp", lifetime=timedelta(days=30))


@pytest.fixture(scope="module")
def leaf(test_ca: TestCA) -> x509.Certificate:
    return test_ca.issue("alice", ("alice@example.com",))[0]


def make_request(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    algorithm: hashes.HashAlgorithm = SHA1,
    nonce: x509.ExtensionType | None = None,
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, algorithm)
    if nonce is not None:
        builder = builder.add_extension(nonce, critical=False)
    return builder.build().public_bytes(Encoding.DER)


def answer(
    ca: TestCA,
    responder: Responder,
    request: bytes,
    status: CertStatus | Callable[[int], CertStatus] = GOOD,
) -> ocsp.OCSPResponse:
    lookup = status if callable(status) else (lambda serial: status)
    der = build_ocsp_response(
        request,
        lookup=lookup,
        issuer=ca.intermediate,
        responder_certificate=responder[0],
        responder_key=responder[1],
        now=NOW.replace(microsecond=654321),
        validity=VALIDITY,
    )
    return ocsp.load_der_ocsp_response(der)


def signature_verifies(response: ocsp.OCSPResponse, signer: x509.Certificate) -> bool:
    """Check the response's signature with ``signer``'s key (raises InvalidSignature)."""
    public_key = signer.public_key()
    algorithm = response.signature_hash_algorithm
    signature, data = response.signature, response.tbs_response_bytes
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        assert algorithm is not None
        public_key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(public_key, rsa.RSAPublicKey):
        assert algorithm is not None
        public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    else:
        assert isinstance(public_key, ed25519.Ed25519PublicKey)
        public_key.verify(signature, data)
    return True


# --------------------------------------------------------------------- signed answers

STATUSES = [
    pytest.param(CertStatus.good(), id="good"),
    pytest.param(CertStatus.revoked(REVOKED_AT, x509.ReasonFlags.key_compromise), id="revoked"),
    pytest.param(CertStatus.revoked(REVOKED_AT), id="revoked-no-reason"),
    pytest.param(CertStatus.unknown(), id="unknown"),
]
HASHES = [pytest.param(hashes.SHA1(), id="sha1"), pytest.param(hashes.SHA256(), id="sha256")]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("algorithm", HASHES)
def test_response_states_status_for_the_requested_certificate(
    test_ca: TestCA,
    responder: Responder,
    leaf: x509.Certificate,
    status: CertStatus,
    algorithm: hashes.HashAlgorithm,
) -> None:
    asked: list[int] = []

    def lookup(serial: int) -> CertStatus:
        asked.append(serial)
        return status

    response = answer(
        test_ca, responder, make_request(leaf, test_ca.intermediate, algorithm), lookup
    )
    assert asked == [leaf.serial_number]
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is status.status
    assert response.serial_number == leaf.serial_number
    assert response.hash_algorithm.name == algorithm.name
    assert response.produced_at_utc == response.this_update_utc == NOW
    assert response.next_update_utc == NOW + VALIDITY
    assert response.revocation_time_utc == status.revoked_at
    assert response.revocation_reason == status.reason
    responder_ski = responder[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert response.responder_key_hash == responder_ski.value.digest
    assert response.responder_name is None
    assert response.certificates == [responder[0]]
    assert signature_verifies(response, responder[0])


def test_unspecified_reason_is_left_out_of_revoked_info(
    test_ca: TestCA, responder: Responder, leaf: x509.Certificate
) -> None:
    status = CertStatus.revoked(REVOKED_AT, x509.ReasonFlags.unspecified)
    response = answer(test_ca, responder, make_request(leaf, test_ca.intermediate), status)
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is None


@pytest.mark.parametrize("size", [1, 16, 32, 128])
def test_nonce_is_echoed(
    test_ca: TestCA, responder: Responder, leaf: x509.Certificate, size: int
) -> None:
    nonce = bytes(range(size))
    request = make_request(leaf, test_ca.intermediate, nonce=x509.OCSPNonce(nonce))
    response = answer(test_ca, responder, request)
    echoed = response.extensions.get_extension_for_class(x509.OCSPNonce)
    assert echoed.value.nonce == nonce


def test_nonce_without_octet_string_wrapper_is_echoed_byte_for_byte(
    test_ca: TestCA, responder: Responder, leaf: x509.Certificate
) -> None:
    # Clients that predate RFC 8954 put the raw nonce in extnValue; echo what was sent.
    raw = b"0123456789abcdef"
    request = make_request(
        leaf, test_ca.intermediate, nonce=x509.UnrecognizedExtension(OCSPExtensionOID.NONCE, raw)
    )
    response = build_ocsp_response(
        request,
        lookup=lambda serial: CertStatus.good(),
        issuer=test_ca.intermediate,
        responder_certificate=responder[0],
        responder_key=responder[1],
        now=NOW,
        validity=VALIDITY,
    )
    extn_value = bytes((0x04, len(raw))) + raw
    assert extn_value in request
    assert extn_value in response
    assert bytes((0x04, len(raw) + 2, 0x04, len(raw))) + raw not in response
    nonce = ocsp.load_der_ocsp_response(response).extensions.get_extension_for_class(x509.OCSPNonce)
    assert nonce.value.nonce == raw


def test_ca_signing_its_own_responses_includes_no_certificates(
    test_ca: TestCA, leaf: x509.Certificate
) -> None:
    response = answer(
        test_ca,
        (test_ca.intermediate, test_ca.intermediate_key),
        make_request(leaf, test_ca.intermediate),
    )
    assert response.certificates == []
    assert signature_verifies(response, test_ca.intermediate)


@pytest.mark.parametrize("key_type", [KeyType.P384, KeyType.ED25519, KeyType.RSA2048])
@pytest.mark.parametrize("algorithm", HASHES)
def test_ca_of_each_key_type_answers_for_its_certificates(
    key_type: KeyType, algorithm: hashes.HashAlgorithm
) -> None:
    ca = make_test_ca(key_type)
    leaf, _ = ca.issue()
    response = answer(
        ca, (ca.intermediate, ca.intermediate_key), make_request(leaf, ca.intermediate, algorithm)
    )
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert signature_verifies(response, ca.intermediate)


def test_naive_now_is_taken_as_utc(
    test_ca: TestCA, responder: Responder, leaf: x509.Certificate
) -> None:
    der = build_ocsp_response(
        make_request(leaf, test_ca.intermediate),
        lookup=lambda s: GOOD,
        issuer=test_ca.intermediate,
        responder_certificate=responder[0],
        responder_key=responder[1],
        now=NOW.replace(tzinfo=None),
        validity=VALIDITY,
    )
    assert ocsp.load_der_ocsp_response(der).produced_at_utc == NOW


# ------------------------------------------------------------------------ refusals


def _two_requests(request: bytes) -> bytes:
    single = asn1_ocsp.OCSPRequest.load(request)["tbs_request"]["request_list"][0].dump()
    twice = [asn1_ocsp.Request.load(single), asn1_ocsp.Request.load(single)]
    return bytes(asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": twice}}).dump())


def _with_hash(request: bytes, algorithm: str) -> bytes:
    cert_id = asn1_ocsp.OCSPRequest.load(request)["tbs_request"]["request_list"][0]["req_cert"]
    changed = asn1_ocsp.CertId(
        {
            "hash_algorithm": {"algorithm": algorithm},
            "issuer_name_hash": cert_id["issuer_name_hash"].native,
            "issuer_key_hash": cert_id["issuer_key_hash"].native,
            "serial_number": cert_id["serial_number"].native,
        }
    )
    return bytes(
        asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": [{"req_cert": changed}]}}).dump()
    )


MALFORMED = [
    pytest.param(lambda good: b"", id="fail/empty"),
    pytest.param(lambda good: b"not an ocsp request", id="fail/garbage"),
    pytest.param(lambda good: good[:-3], id="fail/truncated"),
    pytest.param(lambda good: good + b"\x00", id="fail/trailing-data"),
    pytest.param(_two_requests, id="fail/two-requests"),
]


@pytest.mark.parametrize("mangle", MALFORMED)
def test_malformed_request_gets_malformed_request_status(
    test_ca: TestCA,
    responder: Responder,
    leaf: x509.Certificate,
    mangle: Callable[[bytes], bytes],
) -> None:
    request = mangle(make_request(leaf, test_ca.intermediate))
    response = answer(test_ca, responder, request)
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize(
    "nonce",
    [pytest.param(b"", id="fail/empty-nonce"), pytest.param(b"n" * 129, id="fail/nonce-over-128")],
)
def test_nonce_of_bad_length_gets_malformed_request_status(
    test_ca: TestCA, responder: Responder, leaf: x509.Certificate, nonce: bytes
) -> None:
    request = make_request(leaf, test_ca.intermediate, nonce=x509.OCSPNonce(nonce))
    response = answer(test_ca, responder, request)
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_request_for_another_issuer_gets_unauthorized_status(
    test_ca: TestCA, responder: Responder
) -> None:
    other = make_test_ca()
    other_leaf, _ = other.issue()
    looked_up: list[int] = []

    def lookup(serial: int) -> CertStatus:
        looked_up.append(serial)
        return CertStatus.good()

    response = answer(test_ca, responder, make_request(other_leaf, other.intermediate), lookup)
    assert response.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert looked_up == []


@pytest.mark.parametrize(
    "algorithm",
    [pytest.param("md5", id="fail/md5-cert-id"), pytest.param("sha3_256", id="fail/sha3-cert-id")],
)
def test_unknown_cert_id_hash_gets_unauthorized_status(
    test_ca: TestCA, responder: Responder, leaf: x509.Certificate, algorithm: str
) -> None:
    request = _with_hash(make_request(leaf, test_ca.intermediate), algorithm)
    response = answer(test_ca, responder, request)
    assert response.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_issuer_name_hash_mismatch_gets_unauthorized_status(
    test_ca: TestCA, responder: Responder, leaf: x509.Certificate
) -> None:
    request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        b"\x00" * 20,
        test_ca.intermediate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest,
        leaf.serial_number,
        hashes.SHA1(),
    )
    response = answer(test_ca, responder, request.build().public_bytes(Encoding.DER))
    assert response.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=300))
def test_any_bytes_get_an_ocsp_response_never_an_exception(
    test_ca: TestCA, responder: Responder, data: bytes
) -> None:
    response = answer(test_ca, responder, data)
    assert response.response_status in {
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
    }


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_altered_requests_never_raise(
    test_ca: TestCA, responder: Responder, leaf: x509.Certificate, position: int, value: int
) -> None:
    request = bytearray(
        make_request(leaf, test_ca.intermediate, nonce=x509.OCSPNonce(b"\x01" * 32))
    )
    request[position % len(request)] = value
    response = answer(test_ca, responder, bytes(request))
    assert isinstance(response.response_status, ocsp.OCSPResponseStatus)


@pytest.mark.parametrize(
    "status",
    [
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        ocsp.OCSPResponseStatus.INTERNAL_ERROR,
        ocsp.OCSPResponseStatus.TRY_LATER,
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
    ],
    ids=lambda s: s.name.lower(),
)
def test_unsuccessful_response_carries_only_its_status(status: ocsp.OCSPResponseStatus) -> None:
    response = ocsp.load_der_ocsp_response(build_unsuccessful_response(status))
    assert response.response_status is status


def test_unsuccessful_response_cannot_claim_success() -> None:
    with pytest.raises(BadRequest):
        build_unsuccessful_response(ocsp.OCSPResponseStatus.SUCCESSFUL)


# ------------------------------------------------------------------ responder settings


def test_responder_from_another_ca_is_refused(test_ca: TestCA) -> None:
    other = make_test_ca()
    cert, key = other.issue("OCSP Responder", (), profile="ocsp")
    with pytest.raises(BadRequest, match="not issued by the CA"):
        OcspResponder(
            issuer=test_ca.intermediate,
            responder_certificate=cert,
            responder_key=key,
            validity=VALIDITY,
        )


def test_responder_without_ocsp_signing_usage_is_refused(test_ca: TestCA) -> None:
    cert, key = test_ca.issue("not a responder", ("bob@example.com",), profile="client")
    with pytest.raises(BadRequest, match="OCSPSigning"):
        OcspResponder(
            issuer=test_ca.intermediate,
            responder_certificate=cert,
            responder_key=key,
            validity=VALIDITY,
        )


def test_responder_key_must_match_its_certificate(test_ca: TestCA, responder: Responder) -> None:
    with pytest.raises(BadRequest, match="does not belong"):
        OcspResponder(
            issuer=test_ca.intermediate,
            responder_certificate=responder[0],
            responder_key=ec.generate_private_key(ec.SECP256R1()),
            validity=VALIDITY,
        )


@pytest.mark.parametrize(
    ("validity", "cache_for"),
    [
        pytest.param(timedelta(0), timedelta(0), id="fail/zero-validity"),
        pytest.param(VALIDITY, VALIDITY, id="fail/cache-as-long-as-validity"),
        pytest.param(VALIDITY, -timedelta(seconds=1), id="fail/negative-cache"),
    ],
)
def test_responder_timing_must_make_sense(
    test_ca: TestCA, responder: Responder, validity: timedelta, cache_for: timedelta
) -> None:
    with pytest.raises(BadRequest):
        OcspResponder(
            issuer=test_ca.intermediate,
            responder_certificate=responder[0],
            responder_key=responder[1],
            validity=validity,
            cache_for=cache_for,
        )


def test_cert_status_refuses_inconsistent_fields() -> None:
    with pytest.raises(BadRequest):
        CertStatus(ocsp.OCSPCertStatus.REVOKED)
    with pytest.raises(BadRequest):
        CertStatus(ocsp.OCSPCertStatus.GOOD, revoked_at=NOW)
    with pytest.raises(BadRequest):
        CertStatus(ocsp.OCSPCertStatus.GOOD, reason=x509.ReasonFlags.superseded)


# ---------------------------------------------------------------------- caching


@pytest.fixture
def caching_responder(test_ca: TestCA, responder: Responder) -> OcspResponder:
    return OcspResponder(
        issuer=test_ca.intermediate,
        responder_certificate=responder[0],
        responder_key=responder[1],
        validity=VALIDITY,
        cache_for=timedelta(hours=1),
    )


def test_cached_response_is_reused_within_cache_time(
    caching_responder: OcspResponder, test_ca: TestCA, leaf: x509.Certificate
) -> None:
    request = make_request(leaf, test_ca.intermediate)
    first = caching_responder.respond(request, lookup=lambda s: CertStatus.good(), now=NOW)
    again = caching_responder.respond(
        request, lookup=lambda s: CertStatus.good(), now=NOW + timedelta(minutes=59)
    )
    later = caching_responder.respond(
        request, lookup=lambda s: CertStatus.good(), now=NOW + timedelta(hours=1)
    )
    assert again == first
    assert later != first
    assert ocsp.load_der_ocsp_response(later).produced_at_utc == NOW + timedelta(hours=1)


def test_revocation_shows_at_once_despite_the_cache(
    caching_responder: OcspResponder, test_ca: TestCA, leaf: x509.Certificate
) -> None:
    request = make_request(leaf, test_ca.intermediate)
    caching_responder.respond(request, lookup=lambda s: CertStatus.good(), now=NOW)
    revoked = CertStatus.revoked(NOW, x509.ReasonFlags.key_compromise)
    response = caching_responder.respond(
        request, lookup=lambda s: revoked, now=NOW + timedelta(minutes=1)
    )
    assert ocsp.load_der_ocsp_response(response).certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_requests_with_a_nonce_are_never_served_from_the_cache(
    caching_responder: OcspResponder, test_ca: TestCA, leaf: x509.Certificate
) -> None:
    responses = {
        ocsp.load_der_ocsp_response(
            caching_responder.respond(
                make_request(leaf, test_ca.intermediate, nonce=x509.OCSPNonce(nonce)),
                lookup=lambda s: CertStatus.good(),
                now=NOW,
            )
        )
        .extensions.get_extension_for_class(x509.OCSPNonce)
        .value.nonce
        for nonce in (b"a" * 16, b"b" * 16)
    }
    assert responses == {b"a" * 16, b"b" * 16}


def test_presigned_response_answers_what_a_sha1_client_asks(
    caching_responder: OcspResponder, test_ca: TestCA, leaf: x509.Certificate
) -> None:
    presigned = caching_responder.response_for(leaf.serial_number, CertStatus.good(), now=NOW)
    asked = caching_responder.respond(
        make_request(leaf, test_ca.intermediate), lookup=lambda s: CertStatus.good(), now=NOW
    )
    parsed, reference = ocsp.load_der_ocsp_response(presigned), ocsp.load_der_ocsp_response(asked)
    assert (parsed.serial_number, parsed.issuer_key_hash, parsed.issuer_name_hash) == (
        reference.serial_number,
        reference.issuer_key_hash,
        reference.issuer_name_hash,
    )
    assert parsed.hash_algorithm.name == "sha1"


# -------------------------------------------------------------------------- GET path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


GET_FORMS = [
    pytest.param(lambda d: urllib.parse.quote(_b64(d), safe=""), id="ok/url-encoded"),
    pytest.param(_b64, id="ok/not-url-encoded"),
    pytest.param(lambda d: "/" + urllib.parse.quote(_b64(d), safe=""), id="ok/leading-slash"),
    pytest.param(lambda d: base64.urlsafe_b64encode(d).decode(), id="ok/base64url"),
    pytest.param(lambda d: _b64(d).rstrip("="), id="ok/no-padding"),
    pytest.param(lambda d: _b64(d).replace("+", " "), id="ok/plus-became-space"),
]


@pytest.mark.parametrize("encode", GET_FORMS)
def test_get_path_gives_back_the_request(
    test_ca: TestCA, leaf: x509.Certificate, encode: Callable[[bytes], str]
) -> None:
    # Find a request whose base64 has '+' and '/' so that every form is exercised.
    for size in range(8, 40):
        request = make_request(leaf, test_ca.intermediate, nonce=x509.OCSPNonce(b"\xfb\xff" * size))
        if "+" in _b64(request) and "/" in _b64(request):
            break
    assert ocsp_request_from_get_path(encode(request)) == request


@given(data=st.binary(min_size=1, max_size=200))
def test_get_path_round_trips_any_bytes(data: bytes) -> None:
    assert ocsp_request_from_get_path(urllib.parse.quote(_b64(data), safe="")) == data
    assert ocsp_request_from_get_path(base64.urlsafe_b64encode(data).decode()) == data


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("", id="fail/empty"),
        pytest.param("%%%", id="fail/not-base64"),
        pytest.param("abc!def", id="fail/bad-character"),
        pytest.param("a", id="fail/one-character"),
    ],
)
def test_get_path_that_is_not_base64_is_malformed(path: str) -> None:
    with pytest.raises(MalformedInput):
        ocsp_request_from_get_path(path)


# ------------------------------------------------------------------ independent checkers


@pytest.mark.parametrize("status", STATUSES)
def test_pkilint_finds_no_error_in_ocsp_response(
    test_ca: TestCA, responder: Responder, leaf: x509.Certificate, status: CertStatus
) -> None:
    request = make_request(leaf, test_ca.intermediate, nonce=x509.OCSPNonce(b"\x07" * 32))
    der = build_ocsp_response(
        request,
        lookup=lambda s: status,
        issuer=test_ca.intermediate,
        responder_certificate=responder[0],
        responder_key=responder[1],
        now=NOW,
        validity=VALIDITY,
    )
    assert lint_ocsp_response(der) == []


@dataclass(frozen=True)
class Live:
    """A CA, responder and leaf made at the wall clock, for ``openssl ocsp``.

    ``openssl ocsp`` checks a response's thisUpdate/nextUpdate against the system clock
    (``-attime`` moves only the chain check), so what it reads must be made now, not at
    the fixed :data:`NOW` of the other tests.
    """

    now: datetime
    ca: TestCA
    responder: Responder
    leaf: x509.Certificate

    def response(self, request: bytes, status: CertStatus = GOOD) -> bytes:
        return build_ocsp_response(
            request,
            lookup=lambda s: status,
            issuer=self.ca.intermediate,
            responder_certificate=self.responder[0],
            responder_key=self.responder[1],
            now=self.now,
            validity=VALIDITY,
        )


@pytest.fixture(scope="module")
def live() -> Live:
    now = datetime.now(UTC).replace(microsecond=0)
    ca = make_test_ca(now=now)
    responder = ca.issue("OCSP Responder", (), profile="ocsp", now=now, lifetime=timedelta(days=30))
    leaf = ca.issue("alice", ("alice@example.com",), now=now)[0]
    return Live(now, ca, responder, leaf)


def _run_openssl_ocsp(live: Live, folder: Path, *arguments: str, ca: TestCA | None = None) -> str:
    """Run ``openssl ocsp`` on files written to ``folder``; return exit code and output.

    The chain and ``issuer.pem`` come from ``ca`` (``live.ca`` unless given).
    """
    openssl = require_tool("openssl")
    ca = ca or live.ca
    files = {
        "leaf.pem": live.leaf.public_bytes(Encoding.PEM),
        "issuer.pem": ca.intermediate.public_bytes(Encoding.PEM),
        "chain.pem": ca.intermediate.public_bytes(Encoding.PEM)
        + ca.root.public_bytes(Encoding.PEM),
        "responder.pem": live.responder[0].public_bytes(Encoding.PEM),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    result = subprocess.run(
        [openssl, "ocsp", *arguments],
        capture_output=True,
        text=True,
        check=False,
        cwd=folder,
    )
    return f"{result.returncode}\n{result.stdout}{result.stderr}"


def _verify_with_request(
    live: Live,
    folder: Path,
    *,
    request: bytes,
    response: bytes,
    trust: tuple[str, ...] = ("-CAfile", "chain.pem"),
    ca: TestCA | None = None,
) -> str:
    """openssl checks the signature, the responder's authority and the nonce of ``request``."""
    (folder / "request.der").write_bytes(request)
    (folder / "response.der").write_bytes(response)
    return _run_openssl_ocsp(
        live, folder,
        "-reqin", "request.der", "-respin", "response.der", "-resp_text", *trust,
        ca=ca,
    )  # fmt: skip


def _status_for_leaf(live: Live, folder: Path, *, response: bytes, algorithm: str = "sha1") -> str:
    """openssl looks the leaf up in the response (``-cert``), as a relying party does."""
    (folder / "response.der").write_bytes(response)
    return _run_openssl_ocsp(
        live, folder,
        "-respin", "response.der", "-no_nonce", "-issuer", "issuer.pem",
        f"-{algorithm}", "-cert", "leaf.pem", "-CAfile", "chain.pem",
    )  # fmt: skip


@pytest.mark.interop
@pytest.mark.parametrize(
    ("status", "word"),
    [
        pytest.param(CertStatus.good(), "good", id="good"),
        pytest.param(
            CertStatus.revoked(REVOKED_AT, x509.ReasonFlags.key_compromise), "revoked", id="revoked"
        ),
        pytest.param(CertStatus.unknown(), "unknown", id="unknown"),
    ],
)
@pytest.mark.parametrize(
    ("algorithm", "trust"),
    [
        pytest.param(hashes.SHA1(), ("-CAfile", "chain.pem"), id="sha1-chain"),
        pytest.param(hashes.SHA256(), ("-CAfile", "chain.pem"), id="sha256-chain"),
        pytest.param(hashes.SHA1(), ("-VAfile", "responder.pem"), id="sha1-vafile"),
    ],
)
def test_openssl_verifies_response_and_reads_status(
    live: Live,
    tmp_path: Path,
    status: CertStatus,
    word: str,
    algorithm: hashes.HashAlgorithm,
    trust: tuple[str, ...],
) -> None:
    request = make_request(
        live.leaf, live.ca.intermediate, algorithm, nonce=x509.OCSPNonce(b"\x05" * 32)
    )
    response = live.response(request, status)
    checked = _verify_with_request(live, tmp_path, request=request, response=response, trust=trust)
    assert checked.startswith("0\n"), checked
    assert "Response verify OK" in checked
    assert f"Cert Status: {word}" in checked
    looked_up = _status_for_leaf(live, tmp_path, response=response, algorithm=algorithm.name)
    assert "Response verify OK" in looked_up, looked_up
    assert f"leaf.pem: {word}" in looked_up
    assert "WARNING" not in looked_up, looked_up
    if word == "revoked":
        assert "Reason: keyCompromise" in looked_up


@pytest.mark.interop
def test_openssl_verifies_presigned_response(live: Live, tmp_path: Path) -> None:
    presigner = OcspResponder(
        issuer=live.ca.intermediate,
        responder_certificate=live.responder[0],
        responder_key=live.responder[1],
        validity=VALIDITY,
        cache_for=timedelta(hours=1),
    )
    response = presigner.response_for(live.leaf.serial_number, CertStatus.good(), now=live.now)
    output = _status_for_leaf(live, tmp_path, response=response)
    assert "Response verify OK" in output, output
    assert "leaf.pem: good" in output
    assert "WARNING" not in output, output


@pytest.mark.interop
def test_openssl_rejects_response_against_another_ca(live: Live, tmp_path: Path) -> None:
    request = make_request(live.leaf, live.ca.intermediate)
    output = _verify_with_request(
        live,
        tmp_path,
        request=request,
        response=live.response(request),
        ca=make_test_ca(now=live.now),
    )
    assert "Response verify OK" not in output
    assert "Response Verify Failure" in output


@pytest.mark.interop
def test_openssl_rejects_response_with_another_nonce(live: Live, tmp_path: Path) -> None:
    sent = make_request(live.leaf, live.ca.intermediate, nonce=x509.OCSPNonce(b"\x01" * 32))
    replayed = make_request(live.leaf, live.ca.intermediate, nonce=x509.OCSPNonce(b"\x02" * 32))
    output = _verify_with_request(live, tmp_path, request=sent, response=live.response(replayed))
    assert "Nonce Verify error" in output
    assert "Response verify OK" not in output
