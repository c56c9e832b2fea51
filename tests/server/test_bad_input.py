"""Bad input to every endpoint: a clear 4xx problem document, nothing stored, never a 5xx.

One table, one row per way of being wrong (ids ``endpoint/what``). Each request goes over a
real TLS connection; before and after, the certificate and used-token rows are counted (the
audit log may grow: refusals are audited on purpose).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.exc import OperationalError

from ostiary.provisioners import CAIdentity
from ostiary.server.body import MAX_BODY_SIZE
from ostiary.server.problems import PROBLEM_JSON
from tests.server.conftest import Running, make_csr


@dataclass
class Request:
    method: str
    path: str
    json: Any = None
    content: bytes | Iterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    mtls: bool = False


Case = Callable[[Running], Request]


def _tamper(token: str, part: int) -> str:
    pieces = token.split(".")
    if part == 1:
        claims = json.loads(base64.urlsafe_b64decode(pieces[1] + "=="))
        claims["sans"] = ["dns:evil.example"]
        pieces[1] = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    else:
        signature = bytearray(base64.urlsafe_b64decode(pieces[2] + "=="))
        signature[5] ^= 0xFF
        pieces[2] = base64.urlsafe_b64encode(bytes(signature)).decode().rstrip("=")
    return ".".join(pieces)


def sign(
    running: Running, *, csr: str | None = None, token: str | None = None, **extra: Any
) -> Request:
    body = {
        "csr": csr if csr is not None else make_csr()[0],
        "token": token if token is not None else running.sign_token(),
        **extra,
    }
    return Request("POST", "/sign", json=body)


def other_ca(running: Running) -> CAIdentity:
    return CAIdentity(root_fingerprint="ab" * 32, issuers=running.ca.issuers)


def bad_signature_csr() -> str:
    csr_pem, _ = make_csr()
    der = bytearray(
        x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER)
    )
    der[-3] ^= 0x01  # inside the signature
    csr = x509.load_der_x509_csr(bytes(der))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def huge_chunks() -> Iterator[bytes]:
    for _ in range(20):
        yield b" " * 8192


BEARER = "authorization"

CASES: list[Any] = [
    # -- /sign: the body itself
    pytest.param(
        lambda r: Request(
            "POST", "/sign", content=b"{not json", headers={"content-type": "application/json"}
        ),
        400,
        "malformed",
        id="sign/garbage",
    ),
    pytest.param(
        lambda r: Request(
            "POST", "/sign", content=b"", headers={"content-type": "application/json"}
        ),
        400,
        "malformed",
        id="sign/empty",
    ),
    pytest.param(
        lambda r: Request(
            "POST", "/sign", content=b"\xff\xfe\x00", headers={"content-type": "application/json"}
        ),
        400,
        "malformed",
        id="sign/binary",
    ),
    pytest.param(
        lambda r: Request(
            "POST", "/sign", content=b"[1, 2]", headers={"content-type": "application/json"}
        ),
        400,
        "malformed",
        id="sign/array",
    ),
    pytest.param(
        lambda r: Request(
            "POST", "/sign", content=b"1" * 5000, headers={"content-type": "application/json"}
        ),
        400,
        "malformed",
        id="sign/huge-number",
    ),
    pytest.param(
        lambda r: Request(
            "POST",
            "/sign",
            content=b"[" * 3000 + b"]" * 3000,
            headers={"content-type": "application/json"},
        ),
        400,
        "malformed",
        id="sign/deep-nesting",
    ),
    pytest.param(
        lambda r: Request(
            "POST",
            "/sign",
            content=b"{" + b" " * (MAX_BODY_SIZE + 1) + b"}",
            headers={"content-type": "application/json"},
        ),
        413,
        "body-too-large",
        id="sign/oversized",
    ),
    pytest.param(
        lambda r: Request(
            "POST", "/sign", content=huge_chunks(), headers={"content-type": "application/json"}
        ),
        413,
        "body-too-large",
        id="sign/oversized-chunked",
    ),
    pytest.param(
        lambda r: Request(
            "POST",
            "/sign",
            content=b"csr=x",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        415,
        "unsupported-media-type",
        id="sign/form",
    ),
    pytest.param(
        lambda r: Request(
            "POST", "/sign", content=b'{"csr": "x"}', headers={"content-type": "text/plain"}
        ),
        415,
        "unsupported-media-type",
        id="sign/text-plain",
    ),
    pytest.param(
        lambda r: Request("POST", "/sign", content=b'{"csr": "x"}'),
        415,
        "unsupported-media-type",
        id="sign/no-content-type",
    ),
    pytest.param(
        lambda r: Request("POST", "/sign", json={"token": r.sign_token()}),
        400,
        "malformed",
        id="sign/no-csr",
    ),
    pytest.param(
        lambda r: Request("POST", "/sign", json={"csr": make_csr()[0]}),
        400,
        "malformed",
        id="sign/no-token",
    ),
    pytest.param(lambda r: sign(r, profile="server"), 400, "malformed", id="sign/unknown-member"),
    pytest.param(lambda r: sign(r, csr=12), 400, "malformed", id="sign/csr-not-a-string"),
    pytest.param(lambda r: sign(r, csr="x" * 60000), 400, "malformed", id="sign/csr-too-long"),
    # -- /sign: the CSR
    pytest.param(
        lambda r: sign(
            r, csr="-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        ),
        400,
        "malformed",
        id="sign/csr-garbage",
    ),
    pytest.param(lambda r: sign(r, csr="hello"), 400, "malformed", id="sign/csr-not-pem"),
    pytest.param(
        lambda r: sign(r, csr=bad_signature_csr()), 400, "bad-csr", id="sign/csr-bad-signature"
    ),
    pytest.param(
        lambda r: sign(r, csr=make_csr("alice@example.com", ["evil.example"])[0]),
        403,
        "name-not-authorized",
        id="sign/csr-other-san",
    ),
    pytest.param(
        lambda r: sign(r, csr=make_csr("mallory@example.com")[0]),
        403,
        "name-not-authorized",
        id="sign/csr-other-cn",
    ),
    pytest.param(
        lambda r: sign(r, not_after="90d"), 403, "lifetime-not-allowed", id="sign/lifetime-too-long"
    ),
    pytest.param(
        lambda r: sign(r, not_after="1m"), 403, "lifetime-not-allowed", id="sign/lifetime-too-short"
    ),
    pytest.param(
        lambda r: sign(r, not_after="soon"), 400, "bad-request", id="sign/not-after-garbage"
    ),
    pytest.param(
        lambda r: sign(r, not_after="99999999999999d"),
        400,
        "bad-request",
        id="sign/not-after-overflow",
    ),
    pytest.param(
        lambda r: sign(r, not_after="2030-01-01T00:00:00"),
        400,
        "bad-request",
        id="sign/not-after-no-zone",
    ),
    # -- /sign: the token
    pytest.param(lambda r: sign(r, token="garbage"), 401, "unauthorized", id="sign/token-garbage"),
    pytest.param(lambda r: sign(r, token="a.b.c"), 401, "unauthorized", id="sign/token-not-jws"),
    pytest.param(
        lambda r: sign(r, token=r.sign_token(now=datetime.now(UTC) - timedelta(hours=1))),
        401,
        "unauthorized",
        id="sign/token-expired",
    ),
    pytest.param(
        lambda r: sign(r, token=r.sign_token(now=datetime.now(UTC) + timedelta(hours=1))),
        401,
        "unauthorized",
        id="sign/token-not-yet-valid",
    ),
    pytest.param(
        lambda r: sign(r, token=_tamper(r.sign_token(), 2)),
        401,
        "unauthorized",
        id="sign/token-forged-signature",
    ),
    pytest.param(
        lambda r: sign(r, token=_tamper(r.sign_token(), 1)),
        401,
        "unauthorized",
        id="sign/token-forged-claims",
    ),
    pytest.param(
        lambda r: sign(
            r,
            token=r.provisioners.ops.mint_sign_token(
                r.provisioners.ops_key, "alice@example.com", ca=other_ca(r), now=datetime.now(UTC)
            ),
        ),
        401,
        "unauthorized",
        id="sign/token-wrong-audience",
    ),
    pytest.param(
        lambda r: sign(r, token=r.admin_token()), 401, "unauthorized", id="sign/token-admin"
    ),
    # -- /renew
    pytest.param(
        lambda r: Request(
            "POST", "/renew", content=b"", headers={"content-type": "application/json"}, mtls=True
        ),
        400,
        "malformed",
        id="renew/empty",
    ),
    pytest.param(
        lambda r: Request(
            "POST", "/renew", content=b"{}", headers={"content-type": "text/plain"}, mtls=True
        ),
        415,
        "unsupported-media-type",
        id="renew/text-plain",
    ),
    pytest.param(
        lambda r: Request("POST", "/renew", json={"csr": "junk"}, mtls=True),
        400,
        "malformed",
        id="renew/csr-garbage",
    ),
    pytest.param(
        lambda r: Request(
            "POST",
            "/renew",
            json={"csr": make_csr("alice@example.com", ["evil.example"])[0]},
            mtls=True,
        ),
        403,
        "name-not-authorized",
        id="renew/csr-other-names",
    ),
    pytest.param(
        lambda r: Request("POST", "/renew", json={}), 401, "unauthorized", id="renew/no-credential"
    ),
    pytest.param(
        lambda r: Request("POST", "/renew", json={}, headers={BEARER: "Basic YWxpY2U6cHc="}),
        401,
        "unauthorized",
        id="renew/basic-auth",
    ),
    pytest.param(
        lambda r: Request("POST", "/renew", json={}, headers={BEARER: "Bearer garbage"}),
        401,
        "unauthorized",
        id="renew/token-garbage",
    ),
    pytest.param(
        lambda r: Request("POST", "/renew", json={}, headers={BEARER: "Bearer " + r.sign_token()}),
        401,
        "unauthorized",
        id="renew/sign-token",
    ),
    pytest.param(
        lambda r: Request("POST", "/renew", json={}, headers={BEARER: "Bearer " + "x" * 20000}),
        401,
        "unauthorized",
        id="renew/token-too-long",
    ),
    # -- /revoke
    pytest.param(
        lambda r: Request("POST", "/revoke", json={"serial_number": "xyz"}, mtls=True),
        400,
        "malformed",
        id="revoke/serial-not-hex",
    ),
    pytest.param(
        lambda r: Request("POST", "/revoke", json={"serial_number": "1" * 100}, mtls=True),
        400,
        "malformed",
        id="revoke/serial-too-long",
    ),
    pytest.param(
        lambda r: Request(
            "POST", "/revoke", json={"serial_number": "01", "reason": "bored"}, mtls=True
        ),
        400,
        "bad-request",
        id="revoke/reason-unknown",
    ),
    pytest.param(
        lambda r: Request(
            "POST", "/revoke", json={"serial_number": "01", "reason": "removeFromCRL"}, mtls=True
        ),
        400,
        "bad-request",
        id="revoke/reason-remove-from-crl",
    ),
    pytest.param(
        lambda r: Request("POST", "/revoke", json={"serial_number": "01"}),
        401,
        "unauthorized",
        id="revoke/no-credential",
    ),
    pytest.param(
        lambda r: Request(
            "POST",
            "/revoke",
            json={"serial_number": "01"},
            headers={BEARER: "Bearer " + _tamper(r.admin_token(), 2)},
        ),
        401,
        "unauthorized",
        id="revoke/admin-forged",
    ),
    pytest.param(
        lambda r: Request(
            "POST", "/revoke", json={"serial_number": "01"}, headers={BEARER: "Bearer !!!.???.###"}
        ),
        401,
        "unauthorized",
        id="revoke/token-not-base64",
    ),
    pytest.param(
        lambda r: Request(
            "POST", "/revoke", content=b"serial=1", headers={"content-type": "text/plain"}
        ),
        415,
        "unsupported-media-type",
        id="revoke/text-plain",
    ),
    # -- /ocsp
    pytest.param(
        lambda r: Request(
            "POST", "/ocsp", content=b"\x30\x00", headers={"content-type": "application/json"}
        ),
        415,
        "unsupported-media-type",
        id="ocsp/wrong-type",
    ),
    pytest.param(
        lambda r: Request(
            "POST",
            "/ocsp",
            content=b"\x30" * (MAX_BODY_SIZE + 1),
            headers={"content-type": "application/ocsp-request"},
        ),
        413,
        "body-too-large",
        id="ocsp/oversized",
    ),
    # -- /certificates
    pytest.param(
        lambda r: Request("GET", "/certificates"), 401, "unauthorized", id="certificates/no-token"
    ),
    pytest.param(
        lambda r: Request("GET", "/certificates", headers={BEARER: "Bearer " + r.sign_token()}),
        401,
        "unauthorized",
        id="certificates/sign-token",
    ),
    pytest.param(
        lambda r: Request(
            "GET", "/certificates?limit=0", headers={BEARER: "Bearer " + r.admin_token()}
        ),
        400,
        "malformed",
        id="certificates/limit-zero",
    ),
    pytest.param(
        lambda r: Request(
            "GET", "/certificates?limit=abc", headers={BEARER: "Bearer " + r.admin_token()}
        ),
        400,
        "malformed",
        id="certificates/limit-text",
    ),
    pytest.param(
        lambda r: Request(
            "GET", "/certificates?status=lost", headers={BEARER: "Bearer " + r.admin_token()}
        ),
        400,
        "malformed",
        id="certificates/status-unknown",
    ),
    pytest.param(
        lambda r: Request("GET", "/certificates/zz", headers={BEARER: "Bearer " + r.admin_token()}),
        400,
        "malformed",
        id="certificate/serial-not-hex",
    ),
    pytest.param(
        lambda r: Request(
            "GET", "/certificates/abcdef", headers={BEARER: "Bearer " + r.admin_token()}
        ),
        404,
        "not-found",
        id="certificate/unknown",
    ),
    # -- routing
    pytest.param(
        lambda r: Request("GET", "/sign"), 405, "method-not-allowed", id="routing/get-sign"
    ),
    pytest.param(
        lambda r: Request("DELETE", "/crl"), 405, "method-not-allowed", id="routing/delete-crl"
    ),
    pytest.param(
        lambda r: Request("GET", "/nothing-here"), 404, "not-found", id="routing/unknown-path"
    ),
    pytest.param(
        lambda r: Request("GET", "/roots/zz"), 404, "not-found", id="routing/unknown-root"
    ),
]


@pytest.mark.parametrize(("case", "status", "code"), CASES)
def test_bad_input_is_a_clear_problem_and_changes_nothing(
    shared_running: Running, case: Case, status: int, code: str
) -> None:
    running = shared_running
    request = case(running)
    alice = running.enroll("alice@example.com", ["alice@example.com"]) if request.mtls else None
    before = running.counts()
    with running.client(identity=alice) as client:
        answer = client.request(
            request.method,
            request.path,
            json=request.json,
            content=request.content,
            headers=request.headers,
        )
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON
    problem = answer.json()
    assert problem["type"] == f"urn:ostiary:error:{code}"
    assert problem["status"] == status
    assert problem["title"] and problem["detail"]
    for secret in _tokens_in(request):
        assert secret not in answer.text
    assert running.counts() == before


def _tokens_in(request: Request) -> list[str]:
    found = []
    if isinstance(request.json, dict) and isinstance(request.json.get("token"), str):
        found.append(request.json["token"])
    value = request.headers.get(BEARER, "")
    if value.startswith("Bearer ") and len(value) > 20:
        found.append(value.removeprefix("Bearer "))
    return [f for f in found if len(f) > 10]


def test_an_unexpected_error_is_a_500_problem_without_details(
    running: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode() -> None:
        raise RuntimeError("secret internal state")

    monkeypatch.setattr(running.context.crl, "current", explode)
    with running.plain() as plain:
        answer = plain.get("/crl")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert answer.json()["type"] == "urn:ostiary:error:internal"
    assert "secret" not in answer.text
    assert "unexpected error in GET /crl" in caplog.text


def test_an_unreachable_database_is_a_503_problem(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable() -> None:
        raise OperationalError("SELECT 1", None, ConnectionRefusedError("db.internal:5432"))

    monkeypatch.setattr(running.context.crl, "current", unreachable)
    with running.plain() as plain:
        answer = plain.get("/crl")
    assert answer.status_code == 503
    assert answer.json()["type"] == "urn:ostiary:error:store-unavailable"
    assert answer.headers["retry-after"] == "5"
    assert "db.internal" not in answer.text


def test_a_key_we_refuse_is_a_400(running: Running) -> None:
    weak = ec.generate_private_key(ec.SECP192R1()) if hasattr(ec, "SECP192R1") else None
    if weak is None:  # pragma: no cover
        pytest.skip("no weak curve available")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "alice@example.com")])
        )
        .sign(weak, hashes.SHA256())
    )
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    before = running.counts()
    with running.client() as client:
        answer = client.post("/sign", json={"csr": pem, "token": running.sign_token()})
    assert answer.status_code == 400
    assert answer.json()["type"] == "urn:ostiary:error:bad-public-key"
    assert running.counts() == before
