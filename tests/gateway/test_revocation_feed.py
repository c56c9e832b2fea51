"""Our gateway follows the CA's revocation feed: a revoked certificate is refused within a
second while good statuses are still cached for 30 s; a forged feed changes nothing; when
the feed is away the gateway asks OCSP/CRL, trusts what it had for the grace and then fails
closed. Real CA server, real gateway, real TLS on loopback."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ostiary.gateway.feed import FeedFollower
from ostiary.gateway.server import Gateway
from tests.gateway.conftest import (
    CA,
    EchoUpstream,
    Issued,
    gateway_config,
    run_gateway,
    running_ca,
)
from tests.gateway.test_gateway import refused

#: The gateway's default reuse of a good OCSP status.
DEFAULT_CACHE = 30.0


def follower_of(gateway: Gateway, timeout: float = 10.0) -> FeedFollower:
    """The gateway's follower of our issuing CA, once it is current."""
    deadline = time.monotonic() + timeout
    while True:
        followers = list(gateway.feeds.followers.values())
        if followers and followers[0].current():
            return followers[0]
        assert time.monotonic() < deadline, "the gateway did not start following the feed"
        time.sleep(0.02)


def seconds_until_refused(ca: CA, issued: Issued, port: int, limit: float) -> float:
    started = time.monotonic()
    while not refused(ca, issued, port):
        assert time.monotonic() - started < limit, f"still accepted {limit} s after revocation"
        time.sleep(0.02)
    return time.monotonic() - started


def test_revoked_certificate_is_refused_within_a_second_with_the_default_cache(
    ca: CA, upstream: EchoUpstream
) -> None:
    url = f"http://127.0.0.1:{upstream.port}"
    config = gateway_config(ca, url, revocation_cache_seconds=DEFAULT_CACHE)
    with run_gateway(config) as gateway:
        dave = ca.issue("dave", ("email:dave@example.com",))
        assert not refused(ca, dave, gateway.port)  # good, and cached for 30 s by OCSP
        follower_of(gateway)
        decided = gateway.metrics.feed_decided
        assert not refused(ca, dave, gateway.port)
        assert gateway.metrics.feed_decided == decided + 1  # the feed answered, not OCSP
        ca.revoke(dave)
        took = seconds_until_refused(ca, dave, gateway.port, limit=5)
        assert took < 1.0
        assert gateway.metrics.refused["revoked"] >= 1


def test_without_the_feed_a_revoked_certificate_passes_while_its_status_is_cached(
    ca: CA, upstream: EchoUpstream
) -> None:
    """The twin: the same revocation with the feed off is seen only when the cache expires."""
    url = f"http://127.0.0.1:{upstream.port}"
    config = gateway_config(ca, url, revocation_cache_seconds=DEFAULT_CACHE, revocation_feed="off")
    with run_gateway(config) as gateway:
        erin = ca.issue("erin", ("email:erin@example.com",))
        assert not refused(ca, erin, gateway.port)
        ca.revoke(erin)
        time.sleep(1.5)
        assert not refused(ca, erin, gateway.port)
        assert gateway.feeds.followers == {}


def test_a_revocation_by_another_process_is_refused_within_a_second(
    ca: CA, upstream: EchoUpstream
) -> None:
    """``ostiary ca revoke`` (another Authority on the database) reaches the gateway too."""
    from cryptography import x509

    from ostiary.authority.authority import Authority

    url = f"http://127.0.0.1:{upstream.port}"
    with run_gateway(gateway_config(ca, url, revocation_cache_seconds=DEFAULT_CACHE)) as gateway:
        fay = ca.issue("fay", ("email:fay@example.com",))
        assert not refused(ca, fay, gateway.port)
        follower_of(gateway)
        elsewhere = Authority(ca.authority.ca, ca.authority.store)
        elsewhere.revoke(
            fay.certificate.serial_number, reason=x509.ReasonFlags.superseded, actor="cli"
        )
        assert seconds_until_refused(ca, fay, gateway.port, limit=5) < 1.0


class _ForgedFeed(BaseHTTPRequestHandler):
    """A feed that answers with whatever ``body`` is set to (a forgery)."""

    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/jose")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def forged_feed() -> Iterator[tuple[str, type[_ForgedFeed]]]:
    handler = type("Forged", (_ForgedFeed,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/revocations", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("forgery", ["unsigned", "other-key", "garbage"])
def test_a_forged_feed_revokes_nothing_and_ocsp_decides(
    ca: CA,
    upstream: EchoUpstream,
    forged_feed: tuple[str, type[_ForgedFeed]],
    forgery: str,
) -> None:
    import json

    from cryptography.hazmat.primitives.asymmetric import ec

    from ostiary.core.jws import b64url, sign_message
    from tests.conftest import make_test_ca

    url, handler = forged_feed
    gina = ca.issue("gina", ("email:gina@example.com",))
    header = {"alg": "ES256", "kid": ca.authority.issuer_key_id}
    payload = {
        "iss": ca.authority.issuer_key_id,
        "after": 0,
        "head": 10**9,
        "revoked": [{"seq": 1, "serial": f"{gina.certificate.serial_number:x}"}],
    }
    signing_input = (
        b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    ).encode()
    if forgery == "unsigned":
        handler.body = signing_input + b"."
    elif forgery == "other-key":
        key = make_test_ca().issuer.private_key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        signature = b64url(sign_message(key, "ES256", signing_input)).encode()
        handler.body = signing_input + b"." + signature
    else:
        handler.body = b"revoked: everyone"
    upstream_url = f"http://127.0.0.1:{upstream.port}"
    with run_gateway(gateway_config(ca, upstream_url, revocation_feed=url)) as gateway:
        assert not refused(ca, gina, gateway.port)  # the forged revocation is not applied
        time.sleep(0.5)  # the follower has asked (and refused) the forgery by now
        follower = next(iter(gateway.feeds.followers.values()))
        assert follower.failing and not follower.current() and not follower.revoked
        assert not refused(ca, gina, gateway.port)
        assert gateway.metrics.feed_decided == 0
        # OCSP still decides: a real revocation is seen.
        ca.revoke(gina)
        seconds_until_refused(ca, gina, gateway.port, limit=5)


def test_a_gap_starts_over_from_the_crl(ca: CA) -> None:
    """A position the CA cannot continue from (here: ahead of its log, as after a restore
    from a backup) is answered with a snapshot: the follower reads the CRL and so learns of
    a revocation that no event after its position names."""
    hana = ca.issue("hana", ("email:hana@example.com",))
    ca.revoke(hana)
    issuer = ca.authority.ca.intermediate

    def follow_from(position: int | None) -> FeedFollower:
        follower = FeedFollower(f"{ca.url}/revocations", issuer, grace_seconds=0, timeout_seconds=5)

        async def once() -> None:
            try:
                if position is None:  # where the feed is now
                    await follower.poll_once(hold=0)
                    follower.revoked.clear()
                else:
                    follower.after = position
                await follower.poll_once(hold=0)
            finally:
                await follower.aclose()

        asyncio.run(once())
        return follower

    gap = follow_from(10**12)
    assert hana.certificate.serial_number in gap.revoked
    assert not gc.is_tracked(gap.revoked)  # never walked by the collector, however large
    assert gap.after < 10**12 and gap.current()
    current = follow_from(None)  # the twin: no gap, nothing new, nothing learned
    assert hana.certificate.serial_number not in current.revoked and current.current()


def test_an_outage_is_survived_within_the_grace_and_fails_closed_past_it(
    ca_material: Any, provisioners: Any, upstream: EchoUpstream, tmp_path: Path
) -> None:
    """The CA server stops: OCSP and the feed are gone. A client never seen before is let in
    while the last feed answer is within the grace, refused (revocation-unknown) after."""
    grace = 2.0
    with running_ca(ca_material, provisioners, tmp_path) as own:
        ivan, jane = own.issue("ivan"), own.issue("jane")
        url = f"http://127.0.0.1:{upstream.port}"
        config = gateway_config(own, url, revocation_grace_seconds=grace)
        with run_gateway(config) as gateway:
            assert not refused(own, own.issue("warm"), gateway.port)
            follower = follower_of(gateway)
            own.running.server.request_stop()
            deadline = time.monotonic() + 10
            while not follower.failing:  # the held request is answered 503 at stop
                assert time.monotonic() < deadline
                time.sleep(0.02)
            stopped = time.monotonic()
            assert not refused(own, ivan, gateway.port)  # within the grace
            assert time.monotonic() - stopped < grace
            time.sleep(max(0.0, (follower.confirmed_at or 0) + grace + 0.3 - time.monotonic()))
            assert refused(own, jane, gateway.port)  # past it: fail closed
            deadline = time.monotonic() + 5
            while gateway.metrics.refused["revocation-unknown"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
