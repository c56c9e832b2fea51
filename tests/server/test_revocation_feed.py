"""The revocation feed on the plain-HTTP listener: signed, ordered, resumable, held, bounded.

Answers are checked with the gateway's own verifier (:func:`verify_feed_answer`) against the
CA's intermediate, as a subscriber does."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAMaterial
from ostiary.authority.revocation_feed import MAX_WAITING_PER_ADDRESS, RevocationFeed
from ostiary.core.jws import b64url, sign_message
from ostiary.gateway.feed import FeedRefused, revoked_serials_of_crl, verify_feed_answer
from ostiary.store import Store, migrate
from tests.conftest import make_test_ca
from tests.server.conftest import Provisioners, Running, material_for, run_server


@pytest.fixture
def running(shared_running: Running) -> Running:
    """One server per module and backend: each test reads from its own position."""
    return shared_running


def ask(running: Running, after: int, nonce: str = "n0nce", wait: float = 0) -> bytes:
    with running.plain() as client:
        answer = client.get(
            "/revocations", params={"after": after, "nonce": nonce, "wait": f"{wait:g}"}
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/jose"
    return answer.content


def revoke(authority: Authority, serial: int) -> None:
    authority.revoke(serial, reason=x509.ReasonFlags.key_compromise, actor="test")


def test_a_new_subscriber_starts_from_the_crl_then_follows_revocations(running: Running) -> None:
    issuer = running.authority.ca.intermediate
    early = running.enroll("early@example.com").certificate
    revoke(running.authority, early.serial_number)

    first = verify_feed_answer(ask(running, 0), issuer, after=0, nonce="n0nce")
    assert first.snapshot == "/crl" and first.serials == ()
    with running.plain() as client:
        crl = client.get(first.snapshot).content
    assert early.serial_number in revoked_serials_of_crl(crl, issuer, now=datetime.now(UTC))

    nothing = verify_feed_answer(ask(running, first.head), issuer, after=first.head, nonce="n0nce")
    assert nothing.serials == () and nothing.snapshot is None and nothing.head == first.head

    late = running.enroll("late@example.com").certificate
    revoke(running.authority, late.serial_number)
    news = verify_feed_answer(ask(running, first.head), issuer, after=first.head, nonce="n0nce")
    assert news.serials == (late.serial_number,) and news.head > first.head


def test_a_position_ahead_of_the_log_is_told_to_start_over(running: Running) -> None:
    """A database restored from a backup, or another CA's position: a snapshot, not silence."""
    issuer = running.authority.ca.intermediate
    head = verify_feed_answer(ask(running, 0), issuer, after=0, nonce="n0nce").head
    ahead = verify_feed_answer(ask(running, head + 1000), issuer, after=head + 1000, nonce="n0nce")
    assert ahead.snapshot == "/crl"


def test_a_position_outside_the_window_is_told_to_start_over(running: Running) -> None:
    authority = running.authority
    feed = RevocationFeed(authority, window=2)
    start = feed.read(0).head
    for subject in ("a@example.com", "b@example.com"):
        revoke(authority, running.enroll(subject).certificate.serial_number)
    assert feed.read(start).snapshot  # four audit entries later: outside a window of two
    assert not RevocationFeed(authority).read(start).snapshot


def test_a_held_request_is_answered_within_a_second_of_a_revocation(running: Running) -> None:
    issuer = running.authority.ca.intermediate
    head = verify_feed_answer(ask(running, 0), issuer, after=0, nonce="n0nce").head
    victim = running.enroll("victim@example.com").certificate
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(ask, running, head, "held", 20)
        time.sleep(0.5)
        assert not held.done()  # nothing new: the request is held
        revoked_at = time.monotonic()
        revoke(running.authority, victim.serial_number)
        token = held.result(timeout=5)
        took = time.monotonic() - revoked_at
    answer = verify_feed_answer(token, issuer, after=head, nonce="held")
    assert answer.serials == (victim.serial_number,)
    assert took < 1.0


def test_a_revocation_made_by_another_process_wakes_a_held_request(running: Running) -> None:
    """``ostiary ca revoke`` or another replica: another Authority on the same database; the
    server learns of it by its audit-log poll."""
    issuer = running.authority.ca.intermediate
    head = verify_feed_answer(ask(running, 0), issuer, after=0, nonce="n0nce").head
    victim = running.enroll("other@example.com").certificate
    elsewhere = Authority(running.authority.ca, running.authority.store)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(ask, running, head, "held", 20)
        time.sleep(0.3)
        revoked_at = time.monotonic()
        revoke(elsewhere, victim.serial_number)
        token = held.result(timeout=5)
        took = time.monotonic() - revoked_at
    assert verify_feed_answer(token, issuer, after=head, nonce="held").serials == (
        victim.serial_number,
    )
    assert took < 1.0


def test_a_held_request_with_nothing_new_is_answered_at_its_wait(running: Running) -> None:
    issuer = running.authority.ca.intermediate
    head = verify_feed_answer(ask(running, 0), issuer, after=0, nonce="n0nce").head
    started = time.monotonic()
    answer = verify_feed_answer(ask(running, head, "w", 0.6), issuer, after=head, nonce="w")
    assert 0.55 <= time.monotonic() - started < 3
    assert answer.serials == () and answer.snapshot is None


def test_an_answer_is_refused_when_forged_tampered_replayed_or_unsigned(
    running: Running,
) -> None:
    authority = running.authority
    issuer = authority.ca.intermediate
    head = verify_feed_answer(ask(running, 0), issuer, after=0, nonce="n0nce").head
    victim = running.enroll("forged@example.com").certificate
    genuine = ask(running, head, "mine")
    verify_feed_answer(genuine, issuer, after=head, nonce="mine")  # the accepted twin

    header, payload, signature = genuine.split(b".")
    claims = json.loads(_unb64(payload))
    claims["revoked"] = [{"seq": head + 1, "serial": f"{victim.serial_number:x}"}]
    tampered = header + b"." + b64url(json.dumps(claims).encode()).encode() + b"." + signature
    unsigned_header = b64url(json.dumps({"alg": "none", "kid": authority.issuer_key_id}).encode())
    unsigned = unsigned_header.encode() + b"." + payload + b"."
    # The same payload signed by the intermediate of another CA, naming our CA's key id.
    other = make_test_ca(now=datetime.now(UTC) - timedelta(days=1))
    other_key = other.issuer.private_key
    assert isinstance(other_key, ec.EllipticCurvePrivateKey)
    signing_input = header + b"." + payload
    signed_by_other = (
        signing_input + b"." + b64url(sign_message(other_key, "ES256", signing_input)).encode()
    )

    for bad in (tampered, unsigned, signed_by_other, b"not a jws"):
        with pytest.raises(FeedRefused):
            verify_feed_answer(bad, issuer, after=head, nonce="mine")
    with pytest.raises(FeedRefused, match="replayed"):  # someone else's (or an old) answer
        verify_feed_answer(genuine, issuer, after=head, nonce="another")
    with pytest.raises(FeedRefused, match="replayed"):
        verify_feed_answer(genuine, issuer, after=head - 1, nonce="mine")
    with pytest.raises(FeedRefused, match="not signed by the issuing CA"):
        verify_feed_answer(genuine, other.intermediate, after=head, nonce="mine")


def _unb64(part: bytes) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        pytest.param("after=-1", "after must be a whole number", id="fail/negative-after"),
        pytest.param("after=x", "after must be a whole number", id="fail/after-not-a-number"),
        pytest.param("wait=31", "wait must be at most 30", id="fail/wait-too-long"),
        pytest.param("nonce=a%20b", "nonce must be", id="fail/nonce-with-space"),
        pytest.param("nonce=" + "a" * 65, "nonce must be", id="fail/nonce-too-long"),
    ],
)
def test_bad_feed_queries_are_400_problems(running: Running, query: str, problem: str) -> None:
    with running.plain() as client:
        answer = client.get(f"/revocations?{query}")
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert problem in answer.json()["detail"]


def test_feed_wants_get(running: Running) -> None:
    with running.plain() as client:
        answer = client.post("/revocations", content=b"")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET, HEAD"


def test_held_requests_are_capped_per_address(running: Running) -> None:
    issuer = running.authority.ca.intermediate
    head = verify_feed_answer(ask(running, 0), issuer, after=0, nonce="n0nce").head
    with ThreadPoolExecutor(MAX_WAITING_PER_ADDRESS) as pool:
        held = [pool.submit(ask, running, head, f"h{i}", 1) for i in range(MAX_WAITING_PER_ADDRESS)]
        deadline = time.monotonic() + 5
        feed = running.context.feed
        while sum(feed._waiting.values()) < MAX_WAITING_PER_ADDRESS:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with running.plain() as client:
            over = client.get("/revocations", params={"after": head, "wait": "1"})
            immediate = client.get("/revocations", params={"after": head})  # not held: served
        assert over.status_code == 429
        assert over.json()["type"] == "urn:ostiary:error:too-many-requests"
        assert immediate.status_code == 200
        for future in held:
            future.result(timeout=10)


def test_issuance_is_not_held_up_by_waiting_subscribers(running: Running) -> None:
    issuer = running.authority.ca.intermediate
    head = verify_feed_answer(ask(running, 0), issuer, after=0, nonce="n0nce").head
    with ThreadPoolExecutor(4) as pool:
        held = [pool.submit(ask, running, head, f"h{i}", 2) for i in range(4)]
        time.sleep(0.2)
        started = time.monotonic()
        running.enroll("busy@example.com")
        assert time.monotonic() - started < 1.5
        for future in held:
            future.result(timeout=10)


def test_stopping_the_server_answers_held_requests_at_once(
    authority: Authority, provisioners: Provisioners
) -> None:
    with run_server(authority, provisioners) as running:
        _stop_while_held(running)


def _stop_while_held(running: Running) -> None:
    issuer = running.authority.ca.intermediate
    head = verify_feed_answer(ask(running, 0), issuer, after=0, nonce="n0nce").head
    statuses: list[int] = []

    def hold() -> None:
        with running.plain() as client:
            statuses.append(
                client.get("/revocations", params={"after": head, "wait": 25}).status_code
            )

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    running.server.request_stop()
    thread.join(10)
    assert statuses == [503]
    assert time.monotonic() - started < 3


def test_the_feed_is_served_over_https_too(running: Running) -> None:
    issuer = running.authority.ca.intermediate
    with running.client() as client:
        good = client.get("/revocations", params={"after": 0, "nonce": "tls"})
        bad = client.get("/revocations", params={"after": "soon"})
    assert good.status_code == 200 and good.headers["content-type"] == "application/jose"
    assert verify_feed_answer(good.content, issuer, after=0, nonce="tls").snapshot == "/crl"
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"


def test_a_new_subscriber_of_an_empty_log_waits_instead_of_starting_over(
    ca_material: CAMaterial, tmp_path: Path
) -> None:
    """Nothing recorded yet (head 0): no snapshot, or a subscriber would ask again and again;
    the twin, once something is recorded, is told to start over."""
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    migrate(url)
    store = Store.from_url(url)
    try:
        authority = Authority(material_for(ca_material, url, tmp_path / "ca"), store)
        feed = RevocationFeed(authority)
        empty = feed.read(0)
        assert empty.head == 0 and not empty.snapshot and empty.revocations == ()
        authority.audit("test.event", actor="test", target=None, details={})
        assert feed.read(0).snapshot
    finally:
        store.dispose()
