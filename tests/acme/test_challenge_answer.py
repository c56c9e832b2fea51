"""The challenge POST's answer: the outcome when the validation ends within the POST's wait
(one second by default, ``--acme-challenge-wait``), else ``processing`` with ``Retry-After``
while the validation goes on in the background (RFC 8555 sections 7.5.1 and 8.2); with
``--acme-challenge-wait 0``, always at once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ostiary.authority.folder import CAMaterial
from tests.acme.conftest import Provisioners, RawClient, Responder, serving_acme

pytestmark = pytest.mark.slow


def http01_of(raw: RawClient, name: str) -> tuple[str, dict[str, str]]:
    """A new order for ``name``: its order URL and its http-01 challenge."""
    answer = raw.post(raw.directory["newOrder"], {"identifiers": [{"type": "dns", "value": name}]})
    assert answer.status_code == 201, answer.text
    authz = raw.post(answer.json()["authorizations"][0], None).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    return answer.headers["Location"], challenge


@pytest.mark.parametrize(
    ("thumbprint", "status", "order_status"),
    [(True, "valid", "ready"), (False, "invalid", "invalid")],
    ids=["right-answer", "fail/wrong-answer"],
)
def test_a_quick_validation_is_answered_as_it_ended_without_retry_after(
    raw: RawClient, responder: Responder, thumbprint: bool, status: str, order_status: str
) -> None:
    order_url, challenge = http01_of(raw, "localhost")
    suffix = raw.key.thumbprint() if thumbprint else "not-the-thumbprint"
    responder.answers[challenge["token"]] = f"{challenge['token']}.{suffix}"
    answer = raw.post(challenge["url"], {})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == status
    assert body["url"] == challenge["url"] and body["token"] == challenge["token"]
    if thumbprint:
        assert body["validated"].endswith("Z") and "error" not in body
    else:
        assert body["error"]["type"] == "urn:ietf:params:acme:error:incorrectResponse"
    assert "Retry-After" not in answer.headers
    assert 'rel="up"' in answer.headers["Link"]
    # already stored: the order is done at the first look, no poll needed
    assert raw.post(order_url, None).json()["status"] == order_status
    assert raw.post(challenge["url"], None).json()["status"] == status


def test_a_slow_validation_is_answered_processing_and_goes_on(
    raw: RawClient, responder: Responder
) -> None:
    order_url, challenge = http01_of(raw, "localhost")
    token = challenge["token"]
    responder.answers[token] = f"{token}.{raw.key.thumbprint()}"
    responder.held[token] = release = threading.Event()
    try:
        began = time.monotonic()
        answer = raw.post(challenge["url"], {})
        waited = time.monotonic() - began
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "processing"
        assert answer.headers["Retry-After"] == "1"
        assert 0.9 <= waited < 5  # the POST's wait (1 s), not the validation's 20 s
        # a second POST neither starts another validation nor waits
        again = raw.post(challenge["url"], {})
        assert again.json()["status"] == "processing"
        assert again.headers["Retry-After"] == "1"
    finally:
        release.set()
    deadline = time.monotonic() + 20
    while (status := raw.post(order_url, None).json()["status"]) == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status == "ready"
    assert raw.post(challenge["url"], None).json()["status"] == "valid"


def test_with_no_wait_even_a_quick_validation_is_answered_processing(
    ca_material: CAMaterial, provisioners: Provisioners, tmp_path: Path
) -> None:
    with serving_acme(
        ca_material, provisioners, tmp_path, options=("--acme-challenge-wait", "0")
    ) as server:
        responder = Responder(server.http_port)
        raw = RawClient(server)
        try:
            raw.register()
            order_url, challenge = http01_of(raw, "localhost")
            responder.answers[challenge["token"]] = f"{challenge['token']}.{raw.key.thumbprint()}"
            answer = raw.post(challenge["url"], {})
            assert answer.json()["status"] == "processing"
            assert answer.headers["Retry-After"] == "1"
            deadline = time.monotonic() + 20
            while raw.post(order_url, None).json()["status"] == "pending":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert raw.post(challenge["url"], None).json()["status"] == "valid"
        finally:
            raw.close()
            responder.close()
