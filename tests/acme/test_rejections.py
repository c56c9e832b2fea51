"""Rejected twins: each wrong request gets its RFC 8555 problem type, no 5xx, nothing issued."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from joserfc.jwk import ECKey, OctKey

from tests.acme.conftest import AcmeServer, RawClient, Responder, b64url, csr_der, problem_type

pytestmark = pytest.mark.slow


@pytest.fixture
def nothing_issued(acme_server: AcmeServer) -> Iterator[None]:
    before = acme_server.certificate_count()
    yield
    assert acme_server.certificate_count() == before


def new_order(raw: RawClient, names: list[str]) -> dict[str, object]:
    answer = raw.post(
        raw.directory["newOrder"], {"identifiers": [{"type": "dns", "value": n} for n in names]}
    )
    assert answer.status_code == 201, answer.text
    return {"url": answer.headers["Location"], **answer.json()}


def ready_order(raw: RawClient, responder: Responder, names: list[str]) -> dict[str, object]:
    order = new_order(raw, names)
    thumbprint = raw.key.thumbprint()
    for authz_url in order["authorizations"]:  # type: ignore[attr-defined]
        authz = raw.post(authz_url, None).json()
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        responder.answers[challenge["token"]] = f"{challenge['token']}.{thumbprint}"
        started = raw.post(challenge["url"], {})
        assert started.status_code == 200
        # valid already (validated within the POST's wait), or processing: poll after 1 s
        if started.json()["status"] == "processing":
            assert started.headers["Retry-After"] == "1"
    return poll(raw, str(order["url"]), until=("ready", "invalid"))


def poll(raw: RawClient, url: str, *, until: tuple[str, ...]) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, object] = raw.post(url, None).json()
        if body["status"] in until or time.monotonic() > deadline:
            return {"url": url, **body}
        time.sleep(0.1)


def test_a_nonce_is_accepted_once(raw: RawClient, nothing_issued: None) -> None:
    document = raw.signed(
        raw.directory["newOrder"], {"identifiers": [{"type": "dns", "value": "vm"}]}
    )
    assert raw.post(raw.directory["newOrder"], None, document=document).status_code == 201
    replay = raw.post(raw.directory["newOrder"], None, document=document)
    assert replay.status_code == 400
    assert problem_type(replay) == "badNonce"
    assert replay.headers["Replay-Nonce"]  # a fresh one to retry with


def test_the_nonce_an_answer_carries_is_good_once(raw: RawClient, nothing_issued: None) -> None:
    # Recorded with the spent one (a success) or afterwards (a refusal after authentication).
    url = raw.directory["newOrder"]
    payload = {"identifiers": [{"type": "dns", "value": "vm"}]}
    created = raw.post(url, payload)
    assert created.status_code == 201
    order = created.json()
    refused = raw.post(str(order["finalize"]), {"csr": "AA"})
    assert problem_type(refused) in ("badCSR", "orderNotReady")
    for answer in (created, refused):
        document = raw.signed(url, payload, header={"nonce": answer.headers["Replay-Nonce"]})
        assert raw.post(url, None, document=document).status_code == 201
        replay = raw.post(url, None, document=document)
        assert problem_type(replay) == "badNonce"


def test_a_made_up_nonce_is_refused(raw: RawClient) -> None:
    answer = raw.post(raw.directory["newOrder"], {"identifiers": []}, header={"nonce": "made-up"})
    assert problem_type(answer) == "badNonce"


def test_the_url_must_match_exactly(raw: RawClient) -> None:
    url = raw.directory["newOrder"]
    answer = raw.post(
        url, {"identifiers": [{"type": "dns", "value": "vm"}]}, header={"url": url + "/"}
    )
    assert answer.status_code == 401
    assert problem_type(answer) == "unauthorized"


def test_the_content_type_must_be_jose_json(raw: RawClient) -> None:
    answer = raw.post(
        raw.directory["newOrder"],
        {"identifiers": [{"type": "dns", "value": "vm"}]},
        content_type="application/json",
    )
    assert answer.status_code == 415
    assert problem_type(answer) == "malformed"


def test_kid_and_jwk_together_are_refused(raw: RawClient) -> None:
    answer = raw.post(
        raw.directory["newOrder"],
        {"identifiers": [{"type": "dns", "value": "vm"}]},
        header={"jwk": raw.key.as_dict(private=False)},
    )
    assert problem_type(answer) == "malformed"
    assert "exactly one" in answer.json()["detail"]


def test_jwk_is_refused_where_an_account_must_sign(acme_server: AcmeServer) -> None:
    raw = RawClient(acme_server)
    try:
        answer = raw.post(
            raw.directory["newOrder"], {"identifiers": [{"type": "dns", "value": "vm"}]}
        )
    finally:
        raw.close()
    assert problem_type(answer) == "malformed"


@pytest.mark.parametrize("alg", ["none", "HS256"], ids=["fail/alg-none", "fail/hs256"])
def test_alg_none_and_macs_are_refused(raw: RawClient, alg: str) -> None:
    url = raw.directory["newOrder"]
    payload = b64url(json.dumps({"identifiers": [{"type": "dns", "value": "vm"}]}).encode())
    protected = {"alg": alg, "nonce": raw.nonce(), "url": url, "kid": raw.kid}
    if alg == "none":
        document = {
            "protected": b64url(json.dumps(protected).encode()),
            "payload": payload,
            "signature": "",
        }
    else:
        document = raw.signed(
            url,
            {"identifiers": [{"type": "dns", "value": "vm"}]},
            header={"alg": "HS256"},
            key=OctKey.import_key(b"k" * 32),
        )
    answer = raw.post(url, None, document=document)
    assert problem_type(answer) == "badSignatureAlgorithm"
    assert "ES256" in answer.json()["algorithms"]


def test_an_ed25519_account_orders(acme_server: AcmeServer) -> None:
    from joserfc.jwk import OKPKey

    raw = RawClient(acme_server)
    raw.key = OKPKey.generate_key("Ed25519")
    raw.alg = "EdDSA"
    try:
        raw.register()
        order = raw.post(
            raw.directory["newOrder"], {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]}
        )
    finally:
        raw.close()
    assert order.status_code == 201, order.text
    assert order.json()["identifiers"] == [{"type": "ip", "value": "127.0.0.1"}]


def test_a_signature_by_another_key_is_refused(raw: RawClient) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    answer = raw.post(
        raw.directory["newOrder"],
        {"identifiers": [{"type": "dns", "value": "vm"}]},
        key=ECKey.import_key(stranger),
    )
    assert problem_type(answer) == "malformed"


def test_wildcards_need_dns01(raw: RawClient) -> None:
    answer = raw.post(
        raw.directory["newOrder"], {"identifiers": [{"type": "dns", "value": "*.a.vm"}]}
    )
    assert problem_type(answer) == "rejectedIdentifier"
    assert "dns-01" in answer.json()["detail"]


def test_names_outside_the_provisioner_patterns_are_rejected(acme_server: AcmeServer) -> None:
    raw = RawClient(acme_server, "clients")
    raw.register()
    try:
        answer = raw.post(
            raw.directory["newOrder"], {"identifiers": [{"type": "dns", "value": "localhost"}]}
        )
    finally:
        raw.close()
    assert problem_type(answer) == "rejectedIdentifier"


def test_finalize_before_ready_is_refused(raw: RawClient, nothing_issued: None) -> None:
    order = new_order(raw, ["localhost"])
    key = ec.generate_private_key(ec.SECP256R1())
    answer = raw.post(str(order["finalize"]), {"csr": b64url(csr_der(["localhost"], key))})
    assert answer.status_code == 403
    assert problem_type(answer) == "orderNotReady"


@pytest.mark.parametrize(
    "names",
    [["localhost", "vm"], []],
    ids=["fail/extra-name", "fail/missing-name"],
)
def test_the_csr_must_name_exactly_the_identifiers(
    raw: RawClient, responder: Responder, nothing_issued: None, names: list[str]
) -> None:
    order = ready_order(raw, responder, ["localhost"])
    assert order["status"] == "ready"
    key = ec.generate_private_key(ec.SECP256R1())
    answer = raw.post(str(order["finalize"]), {"csr": b64url(csr_der(names, key))})
    assert problem_type(answer) == "badCSR"
    # The order stays ready: the right CSR still finalizes it.
    assert raw.post(str(order["url"]), None).json()["status"] == "ready"


def test_a_wrong_answer_makes_authorization_and_order_invalid_at_once(
    raw: RawClient, responder: Responder, nothing_issued: None
) -> None:
    order = new_order(raw, ["localhost"])
    authz_url = order["authorizations"][0]  # type: ignore[index]
    authz = raw.post(authz_url, None).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    responder.answers[challenge["token"]] = f"{challenge['token']}.not-the-thumbprint"
    assert raw.post(challenge["url"], {}).status_code == 200
    done = poll(raw, str(order["url"]), until=("invalid", "ready"))
    assert done["status"] == "invalid"
    assert done["error"]["type"] == "urn:ietf:params:acme:error:incorrectResponse"  # type: ignore[index]
    assert raw.post(authz_url, None).json()["status"] == "invalid"
    key = ec.generate_private_key(ec.SECP256R1())
    answer = raw.post(str(order["finalize"]), {"csr": b64url(csr_der(["localhost"], key))})
    assert problem_type(answer) == "orderNotReady"


def test_another_accounts_order_is_not_readable(acme_server: AcmeServer, raw: RawClient) -> None:
    order = new_order(raw, ["vm"])
    other = RawClient(acme_server)
    other.register()
    try:
        answer = other.post(str(order["url"]), None)
    finally:
        other.close()
    assert problem_type(answer) == "unauthorized"


def test_garbage_bodies_are_malformed(raw: RawClient) -> None:
    url = raw.directory["newOrder"]
    for body in (
        b"",
        b"[]",
        b"{",
        json.dumps({"protected": "x", "payload": "", "signature": ""}).encode(),
    ):
        answer = raw.http.post(url, content=body, headers={"Content-Type": "application/jose+json"})
        assert problem_type(answer) == "malformed", body
    protected = base64.urlsafe_b64encode(b"[1]").decode()
    answer = raw.http.post(
        url,
        content=json.dumps({"protected": protected, "payload": "", "signature": ""}).encode(),
        headers={"Content-Type": "application/jose+json"},
    )
    assert problem_type(answer) == "malformed"


def key_change_inner(
    raw: RawClient, new_key: ECKey, *, old: dict[str, object] | None = None, **header: object
) -> dict[str, str]:
    url = raw.directory["keyChange"]
    protected = {"alg": "ES256", "jwk": new_key.as_dict(private=False), "url": url, **header}
    payload = {"account": raw.kid, "oldKey": old or raw.key.as_dict(private=False)}
    registry = jws.JWSRegistry(strict_check_header=False)
    body = json.dumps(payload).encode()
    return dict(jws.serialize_json({"protected": protected}, body, new_key, registry=registry))


def test_key_change_twins(acme_server: AcmeServer, raw: RawClient) -> None:
    url = raw.directory["keyChange"]
    new_key = ECKey.generate_key("P-256")
    stranger = ECKey.generate_key("P-256").as_dict(private=False)
    wrong_old = raw.post(url, key_change_inner(raw, new_key, old=stranger))
    assert problem_type(wrong_old) == "unauthorized"
    with_nonce = raw.post(url, key_change_inner(raw, new_key, nonce=raw.nonce()))
    assert problem_type(with_nonce) == "malformed"
    other_url = raw.post(url, key_change_inner(raw, new_key, url=url + "?x"))
    assert problem_type(other_url) == "unauthorized"
    # A key that already holds an account: 409, and Location names that account.
    other = RawClient(acme_server)
    other.register()
    other.close()
    taken = raw.post(url, key_change_inner(raw, other.key))  # type: ignore[arg-type]
    assert taken.status_code == 409
    assert taken.headers["Location"] == other.kid
    # After all that the account still answers to its old key.
    assert raw.post(str(raw.kid), None).status_code == 200


def test_a_provisioner_name_outside_ascii_gets_a_problem_not_a_dropped_connection(
    acme_server: AcmeServer,
) -> None:
    """Found by the API fuzzer: the name in the path went into the Link header as it was,
    and a header that is not latin-1 made the server drop the connection."""
    with acme_server.client() as http:
        for path in ("/acme/%C2%BC%1D%C3%AB/account/x", "/acme/\u00e9t\u00e9/new-order"):
            answer = http.post(
                path, content=b"{}", headers={"Content-Type": "application/jose+json"}
            )
            assert answer.status_code in (400, 404), answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["link"].isascii()
            assert 'rel="index"' in answer.headers["link"]


@pytest.mark.parametrize(
    ("validity", "rule"),
    [
        pytest.param({"notBefore": "2099-01-01T00:00:00Z"}, "notBefore", id="fail/future"),
        pytest.param({"notAfter": "2099-01-01T00:00:00Z"}, "notAfter", id="fail/beyond-claims"),
        pytest.param({"notAfter": "2000-01-01T00:00:00Z"}, "notAfter", id="fail/in-the-past"),
        pytest.param({"notAfter": "tomorrow"}, "notAfter", id="fail/not-rfc3339"),
    ],
)  # fmt: skip
def test_an_order_validity_outside_the_claims_is_refused_before_anything_is_stored(
    raw: RawClient, validity: dict[str, str], rule: str
) -> None:
    identifiers = [{"type": "dns", "value": "localhost"}]
    answer = raw.post(raw.directory["newOrder"], {"identifiers": identifiers, **validity})
    assert problem_type(answer) == "malformed"
    assert rule in answer.json()["detail"]
    # Nothing was stored: the account has no orders.
    account = raw.post(str(raw.kid), None).json()
    assert raw.post(account["orders"], None).json()["orders"] == []


def test_two_finalizes_at_once_issue_one_certificate(
    acme_server: AcmeServer, raw: RawClient, responder: Responder
) -> None:
    """The order becomes valid in the transaction that records its certificate: of two
    finalizes racing (here, on two connections), one issues, the other gets orderNotReady
    and nothing of its signing is recorded.
    """
    order = ready_order(raw, responder, ["localhost"])
    twin = raw.on(acme_server)
    before = acme_server.certificate_count()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = {"csr": b64url(csr_der(["localhost"], key))}
    documents = [c.signed(str(order["finalize"]), csr) for c in (raw, twin)]
    start = threading.Barrier(2)

    def finalize(client: RawClient, document: dict[str, str]) -> httpx.Response:
        start.wait(30)
        return client.post(str(order["finalize"]), None, document=document)

    try:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(finalize, (raw, twin), documents))
    finally:
        twin.close()
    assert sorted(a.status_code for a in answers) == [200, 403], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 403)
    assert problem_type(refused) == "orderNotReady"
    assert acme_server.certificate_count() == before + 1
    assert raw.post(str(order["url"]), None).json()["status"] == "valid"
