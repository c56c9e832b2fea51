"""newOrder, the challenge POST and finalize spend the request's nonce in their own write
(ostiary.acme.nonces): a request whose nonce is spent changes nothing, and a failed one
still spends it and hands out a good next nonce.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.acme.conftest import AcmeServer, RawClient, Responder, b64url, csr_der, problem_type
from tests.acme.test_rejections import ready_order

pytestmark = pytest.mark.slow

ORDER = {"identifiers": [{"type": "dns", "value": "vm"}]}


def spent_nonce(raw: RawClient) -> str:
    """A nonce another request (a POST-as-GET of the account) has just spent."""
    nonce = raw.nonce()
    assert raw.post(str(raw.kid), None, header={"nonce": nonce}).status_code == 200
    return nonce


def orders_of(raw: RawClient) -> list[str]:
    answer = raw.post(str(raw.kid), None).json()
    return list(raw.post(answer["orders"], None).json()["orders"])


def test_a_new_order_with_a_spent_nonce_stores_nothing(raw: RawClient) -> None:
    before = orders_of(raw)
    refused = raw.post(raw.directory["newOrder"], ORDER, header={"nonce": spent_nonce(raw)})
    assert problem_type(refused) == "badNonce"
    assert orders_of(raw) == before
    assert raw.post(raw.directory["newOrder"], ORDER).status_code == 201


def test_a_challenge_post_with_a_spent_nonce_starts_nothing(
    raw: RawClient, responder: Responder
) -> None:
    created = raw.post(raw.directory["newOrder"], ORDER)
    authz_url = created.json()["authorizations"][0]
    challenge = next(
        c for c in raw.post(authz_url, None).json()["challenges"] if c["type"] == "http-01"
    )
    responder.answers[challenge["token"]] = f"{challenge['token']}.{raw.key.thumbprint()}"
    refused = raw.post(challenge["url"], {}, header={"nonce": spent_nonce(raw)})
    assert problem_type(refused) == "badNonce"
    assert raw.post(challenge["url"], None).json()["status"] == "pending"
    assert raw.post(challenge["url"], {}).json()["status"] in ("valid", "processing")


def test_a_refused_new_order_spends_its_nonce_and_hands_out_a_good_one(raw: RawClient) -> None:
    url = raw.directory["newOrder"]
    wrong = {"identifiers": [{"type": "dns", "value": "not a name"}]}
    document = raw.signed(url, wrong)
    refused = raw.post(url, None, document=document)
    assert problem_type(refused) == "rejectedIdentifier"
    # the operation failed before its write: the nonce was spent after it all the same
    assert problem_type(raw.post(url, None, document=document)) == "badNonce"
    following = raw.signed(url, ORDER, header={"nonce": refused.headers["Replay-Nonce"]})
    assert raw.post(url, None, document=following).status_code == 201
    assert problem_type(raw.post(url, None, document=following)) == "badNonce"


def test_a_finalize_with_a_spent_nonce_issues_nothing(
    acme_server: AcmeServer, raw: RawClient, responder: Responder
) -> None:
    order = ready_order(raw, responder, ["localhost"])
    assert order["status"] == "ready"
    csr = {"csr": b64url(csr_der(["localhost"], ec.generate_private_key(ec.SECP256R1())))}
    before = acme_server.certificate_count()
    refused = raw.post(str(order["finalize"]), csr, header={"nonce": spent_nonce(raw)})
    assert problem_type(refused) == "badNonce"
    assert acme_server.certificate_count() == before
    assert raw.post(str(order["url"]), None).json()["status"] == "ready"
    finalized = raw.post(str(order["finalize"]), csr)
    assert finalized.status_code == 200, finalized.text
    assert finalized.json()["status"] == "valid"
    assert acme_server.certificate_count() == before + 1
