"""Client assertions and digest signatures from the CA, verified independently (PyJWT), and
every refusal (caller, audience, lifetime, replay, unknown key, revoked caller). A caller
with no credential is counted, not audited: tests/signing/test_anonymous_refusals.py."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import func, select

from ostiary.store import AuditEntry, AuditLog, UsedToken
from tests.signing.conftest import AUDIENCE, CLIENT_ID, OTHER_AUDIENCE, SigningRunning


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def audit_entries(server: SigningRunning, event: str) -> list[AuditEntry]:
    with server.authority.store.transaction(read_only=True) as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.event == event).order_by(AuditEntry.id)
            )
        )


def used_tokens(server: SigningRunning) -> int:
    with server.authority.store.transaction(read_only=True) as session:
        return int(session.scalar(select(func.count()).select_from(UsedToken)) or 0)


def ask_assertion(server: SigningRunning, identity, key: str = "billing", **body):  # type: ignore[no-untyped-def]
    payload = {"client_id": CLIENT_ID, "audience": AUDIENCE, **body}
    with server.client(identity) as client:
        return client.post(f"/signing/keys/{key}/assertion", json=payload)


@pytest.fixture(scope="module")
def billing_caller(signing_server: SigningRunning):  # type: ignore[no-untyped-def]
    return signing_server.caller("billing-api")


def test_assertion_verifies_with_pyjwt_against_the_key_certificate(
    signing_server: SigningRunning, billing_caller
) -> None:
    certificate = signing_server.certificates["billing"]
    answer = ask_assertion(signing_server, billing_caller, lifetime=600)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    token = body["assertion"]

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "PS256"
    der = certificate.public_bytes(Encoding.DER)
    assert header["x5t#S256"] == b64url(hashlib.sha256(der).digest())
    assert "x5t" not in header
    claims = jwt.decode(
        token,
        key=certificate.public_key(),
        algorithms=["PS256"],
        audience=AUDIENCE,
        issuer=CLIENT_ID,
        options={"require": ["exp", "iat", "nbf", "jti", "aud", "iss", "sub"]},
    )
    assert claims["sub"] == claims["iss"] == CLIENT_ID
    assert claims["exp"] - claims["iat"] == 600
    assert claims["nbf"] == claims["iat"]
    assert abs(claims["iat"] - datetime.now(UTC).timestamp()) < 30
    assert len(claims["jti"]) >= 16
    assert body["jti"] == claims["jti"]
    assert body["kid"] == "billing.v1"
    # A different key does not verify it (the signature really is the key's).
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, key=other, algorithms=["PS256"], audience=AUDIENCE)


def test_rs256_with_x5t_on_request(signing_server: SigningRunning, billing_caller) -> None:
    certificate = signing_server.certificates["billing"]
    answer = ask_assertion(signing_server, billing_caller, alg="RS256", thumbprint="x5t")
    assert answer.status_code == 200, answer.text
    token = answer.json()["assertion"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["x5t"] == b64url(certificate.fingerprint(hashes.SHA1()))
    claims = jwt.decode(
        token, key=certificate.public_key(), algorithms=["RS256"], audience=AUDIENCE
    )
    assert claims["exp"] - claims["iat"] == 300  # the default lifetime


def test_p256_key_makes_es256_assertions(signing_server: SigningRunning) -> None:
    caller = signing_server.caller("edge-worker", ("uri:spiffe://lab/edge",))
    answer = ask_assertion(signing_server, caller, key="edge")
    assert answer.status_code == 200, answer.text
    token = answer.json()["assertion"]
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    jwt.decode(
        token,
        key=signing_server.certificates["edge"].public_key(),
        algorithms=["ES256"],
        audience=AUDIENCE,
    )


@pytest.mark.parametrize("alg", ["RS256", "PS256", "RS384", "PS512"])
def test_sign_digest_rsa(signing_server: SigningRunning, billing_caller, alg: str) -> None:
    hash_algorithm = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[
        alg[2:]
    ]
    message = b"header.payload"
    digest = hashes.Hash(hash_algorithm)
    digest.update(message)
    value = digest.finalize()
    with signing_server.client(billing_caller) as client:
        answer = client.post(
            "/signing/keys/billing/sign", json={"alg": alg, "digest": b64url(value)}
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["kid"] == "billing.v1"
    public = signing_server.certificates["billing"].public_key()
    pad = (
        padding.PSS(padding.MGF1(hash_algorithm), padding.PSS.DIGEST_LENGTH)
        if alg.startswith("PS")
        else padding.PKCS1v15()
    )
    public.verify(unb64url(body["signature"]), message, pad, hash_algorithm)  # type: ignore[union-attr]


def test_sign_digest_es256_is_raw_r_s(signing_server: SigningRunning) -> None:
    caller = signing_server.caller("edge-signer", ("uri:spiffe://lab/edge",))
    message = b"eyJhbGciOiJFUzI1NiJ9.eyJ4IjoxfQ"
    with signing_server.client(caller) as client:
        answer = client.post(
            "/signing/keys/edge/sign",
            json={"alg": "ES256", "digest": b64url(hashlib.sha256(message).digest())},
        )
    assert answer.status_code == 200, answer.text
    signature = unb64url(answer.json()["signature"])
    assert len(signature) == 64
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    public = signing_server.certificates["edge"].public_key()
    public.verify(der, hashlib.sha256(message).digest(), ec.ECDSA(Prehashed(hashes.SHA256())))  # type: ignore[call-arg,union-attr]
    # And PyJWT accepts it as a JWS (raw R||S is what JWS wants).
    token = f"{message.decode()}.{b64url(signature)}"
    assert jwt.decode(token, key=public, algorithms=["ES256"]) == {"x": 1}  # type: ignore[arg-type]


def test_an_admin_token_may_use_a_key_that_allows_admins(signing_server: SigningRunning) -> None:
    token = signing_server.running.admin_token()
    with signing_server.client() as client:
        answer = client.post(
            "/signing/keys/billing/assertion",
            json={"client_id": CLIENT_ID, "audience": AUDIENCE},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200, answer.text
        refused = client.post(
            "/signing/keys/edge/assertion",
            json={"client_id": CLIENT_ID, "audience": AUDIENCE},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert refused.status_code == 403
    assert refused.json()["type"] == "urn:ostiary:error:caller-not-allowed"


def _revoked_caller(server: SigningRunning):  # type: ignore[no-untyped-def]
    identity = server.caller("billing-revoked")
    server.authority.revoke(
        identity.certificate.serial_number, reason=x509.ReasonFlags.key_compromise, actor="test"
    )
    return identity


REFUSALS = [
    pytest.param(
        lambda s: s.caller("reports-app"), "billing", {}, 403, "caller-not-allowed",
        id="fail/caller-not-allowed",
    ),
    pytest.param(
        lambda s: s.caller("billing-x"), "billing", {"audience": OTHER_AUDIENCE}, 403,
        "audience-not-allowed", id="fail/audience-outside-allowlist",
    ),
    pytest.param(
        lambda s: s.caller("billing-x"), "billing", {"lifetime": 601}, 403,
        "lifetime-not-allowed", id="fail/lifetime-over-600s",
    ),
    pytest.param(
        lambda s: s.caller("billing-x"), "nosuchkey", {}, 404, "not-found",
        id="fail/unknown-key",
    ),
    pytest.param(
        _revoked_caller, "billing", {}, 401, "certificate-revoked", id="fail/revoked-caller",
    ),
    pytest.param(
        lambda s: s.caller("billing-x"), "billing", {"alg": "ES256"}, 400, "bad-request",
        id="fail/alg-does-not-fit-key",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("make_caller", "key", "body", "status", "code"), REFUSALS)
def test_refused_assertions_sign_nothing_and_are_audited(
    signing_server: SigningRunning,
    make_caller,
    key,
    body,
    status,
    code,  # type: ignore[no-untyped-def]
) -> None:
    identity = make_caller(signing_server)
    denied_before = len(audit_entries(signing_server, "signing.denied"))
    spent_before = used_tokens(signing_server)
    answer = ask_assertion(signing_server, identity, key=key, **body)
    assert answer.status_code == status, answer.text
    problem = answer.json()
    assert problem["type"] == f"urn:ostiary:error:{code}"
    assert "assertion" not in problem
    assert used_tokens(signing_server) == spent_before
    denied = audit_entries(signing_server, "signing.denied")
    assert len(denied) == denied_before + 1
    assert denied[-1].details["result"] == "denied"
    assert denied[-1].details["code"] == code
    assert denied[-1].target == key
    assert denied[-1].details["source"] == "127.0.0.1"
    if identity is not None:
        assert denied[-1].actor == f"certificate:{identity.certificate.serial_number:x}"


def test_replayed_jti_is_refused(signing_server: SigningRunning, billing_caller) -> None:
    jti = "caller-chosen-jti-0001"
    first = ask_assertion(signing_server, billing_caller, jti=jti)
    assert first.status_code == 200, first.text
    assert jwt.decode(first.json()["assertion"], options={"verify_signature": False})["jti"] == jti
    again = ask_assertion(signing_server, billing_caller, jti=jti)
    assert again.status_code == 409
    assert again.json()["type"] == "urn:ostiary:error:token-reused"
    assert "assertion" not in again.json()
    # Another jti is fine.
    assert ask_assertion(signing_server, billing_caller, jti=jti + "b").status_code == 200


def test_an_assertions_only_key_refuses_bare_digests_but_makes_assertions(
    signing_server: SigningRunning, billing_caller
) -> None:
    with signing_server.client(billing_caller) as client:
        refused = client.post(
            "/signing/keys/strict/sign",
            json={"alg": "ES256", "digest": b64url(hashlib.sha256(b"x").digest())},
        )
    assert refused.status_code == 403
    assert refused.json()["type"] == "urn:ostiary:error:digest-signing-not-allowed"
    assert "signature" not in refused.json()
    denied = audit_entries(signing_server, "signing.denied")[-1]
    assert (denied.target, denied.details["code"]) == ("strict", "digest-signing-not-allowed")
    answer = ask_assertion(signing_server, billing_caller, key="strict")
    assert answer.status_code == 200, answer.text
    jwt.decode(
        answer.json()["assertion"],
        key=signing_server.certificates["strict"].public_key(),
        algorithms=["ES256"],
        audience=AUDIENCE,
    )


def test_bad_digest_input_is_a_problem_not_a_crash(
    signing_server: SigningRunning, billing_caller
) -> None:
    with signing_server.client(billing_caller) as client:
        wrong_size = client.post(
            "/signing/keys/billing/sign", json={"alg": "RS256", "digest": b64url(b"short")}
        )
        garbage = client.post(
            "/signing/keys/billing/sign", json={"alg": "RS256", "digest": "!!!not base64!!!"}
        )
        unknown_alg = client.post(
            "/signing/keys/billing/sign", json={"alg": "HS256", "digest": b64url(b"x" * 32)}
        )
    assert wrong_size.status_code == 400
    assert garbage.status_code == 400
    assert unknown_alg.status_code == 400
    for answer in (wrong_size, garbage, unknown_alg):
        assert answer.headers["content-type"] == "application/problem+json"


def test_every_signature_has_its_audit_entry_and_the_chain_verifies(
    signing_server: SigningRunning, billing_caller
) -> None:
    before = len(audit_entries(signing_server, "signing.assertion"))
    tokens = []
    for _ in range(3):
        answer = ask_assertion(signing_server, billing_caller)
        assert answer.status_code == 200
        tokens.append(answer.json()["assertion"])
    entries = audit_entries(signing_server, "signing.assertion")[before:]
    assert len(entries) == 3
    serial = format(billing_caller.certificate.serial_number, "x")
    for token, entry in zip(tokens, entries, strict=True):
        signing_input = token.rsplit(".", 1)[0].encode()
        claims = jwt.decode(token, options={"verify_signature": False})
        assert entry.actor == f"certificate:{serial}"
        assert entry.target == "billing"
        assert entry.details["digest_sha256"] == hashlib.sha256(signing_input).hexdigest()
        assert entry.details["jti"] == claims["jti"]
        assert entry.details["aud"] == AUDIENCE
        assert entry.details["alg"] == "PS256"
        assert entry.details["version"] == 1
        assert entry.details["source"] == "127.0.0.1"
        assert entry.details["result"] == "ok"
        assert isinstance(entry.details["latency_us"], int)
    with signing_server.authority.store.transaction(read_only=True) as session:
        verification = AuditLog(session).verify()
    assert verification.ok, verification
