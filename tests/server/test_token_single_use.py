"""A one-time token is spent once, however many connections race with it (issue 22 review):
eight clients send the same token at the same moment to the real server (the ``POST /sign``
fast path of server/api_http.py; ``POST /renew`` with a holder token), on SQLite and on
PostgreSQL. Exactly one gets its certificate; the seven others get ``token-reused``, and the
store holds one certificate and one spent token id more, no other.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.server.conftest import Running, make_csr

RACERS = 8
REUSED = "urn:ostiary:error:token-reused"


def race(running: Running, send: Callable[[httpx.Client], httpx.Response]) -> list[httpx.Response]:
    """``send`` on RACERS connections at once: each connects first, then all post together."""
    barrier = threading.Barrier(RACERS)

    def one(_: int) -> httpx.Response:
        with running.client() as client:
            assert client.get("/health").status_code == 200  # the connection is up
            barrier.wait()
            return send(client)

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(one, range(RACERS)))


def assert_one_winner(answers: list[httpx.Response]) -> httpx.Response:
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * (RACERS - 1), [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["type"] == REUSED
    (winner,) = [a for a in answers if a.status_code == 201]
    return winner


def test_one_sign_token_sent_on_eight_connections_at_once_issues_one_certificate(
    shared_running: Running,
) -> None:
    running = shared_running
    csr, _ = make_csr("race@example.com")
    before = running.counts()
    token = running.sign_token("race@example.com")
    answers = race(running, lambda c: c.post("/sign", json={"csr": csr, "token": token}))
    assert_one_winner(answers)
    after = running.counts()
    assert after == {k: v + 1 for k, v in before.items()}


def test_eight_different_sign_tokens_at_once_all_issue(shared_running: Running) -> None:
    """The twin: the race refuses the replay, not the concurrency."""
    running = shared_running
    csr, _ = make_csr("many@example.com")
    before = running.counts()
    tokens = iter([running.sign_token("many@example.com") for _ in range(RACERS)])
    lock = threading.Lock()

    def send(client: httpx.Client) -> httpx.Response:
        with lock:
            token = next(tokens)
        return client.post("/sign", json={"csr": csr, "token": token})

    assert [a.status_code for a in race(running, send)] == [201] * RACERS
    assert running.counts() == {k: v + RACERS for k, v in before.items()}


def test_one_holder_token_sent_on_eight_connections_at_once_renews_once(
    shared_running: Running,
) -> None:
    running = shared_running
    alice = running.enroll("holder@example.com")
    before = running.counts()
    token = running.holder_token(alice, "renew")
    bearer = {"authorization": f"Bearer {token}"}
    winner = assert_one_winner(race(running, lambda c: c.post("/renew", json={}, headers=bearer)))
    renewed = x509.load_pem_x509_certificate(winner.json()["certificate"].encode())
    assert renewed.public_key() == alice.certificate.public_key()
    assert running.counts() == {k: v + 1 for k, v in before.items()}


def test_a_holder_token_signed_by_another_key_renews_nothing(shared_running: Running) -> None:
    """A holder token is bound to the certificate's key: the victim's certificate in ``x5c``
    with a signature by another key (the thief's own certified key, or a fresh one) is
    refused, and spends nothing; the victim's genuine token then renews."""
    running = shared_running
    victim = running.enroll("victim@example.com")
    thief = running.enroll("thief@example.com")
    genuine = running.holder_token(victim, "renew")
    thiefs = running.holder_token(thief, "renew")
    forged = [
        _resigned(genuine, thief.private_key),
        _resigned(genuine, ec.generate_private_key(ec.SECP256R1())),
        genuine.split(".")[0] + "." + ".".join(thiefs.split(".")[1:]),  # victim's x5c
    ]
    before = running.counts()
    with running.client() as client:
        for token in forged:
            answer = client.post("/renew", json={}, headers={"authorization": f"Bearer {token}"})
            assert answer.status_code == 401, answer.text
            assert answer.json()["type"] == "urn:ostiary:error:unauthorized"
        assert running.counts() == before
        answer = client.post("/renew", json={}, headers={"authorization": f"Bearer {genuine}"})
    assert answer.status_code == 201, answer.text


def _resigned(token: str, key: ec.EllipticCurvePrivateKey) -> str:
    """``token``'s header and claims with an ES256 signature (RFC 7518 3.4) by ``key``."""
    signing_input = token.rpartition(".")[0]
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}"
