"""The backoff schedule, and the daemon loop driven by a fake clock (no sleeping)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.client.errors import CAUnavailable
from ostiary.client.renewal import Backoff, RenewalDaemon, RenewalPolicy, Wake, Waker
from ostiary.core.errors import RevokedCertificate
from ostiary.core.names import parse_subject

START = datetime(2026, 11, 1, tzinfo=UTC)
LIFETIME = timedelta(hours=3)


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        pytest.param(0, 0.5, 1.0, id="first"),
        pytest.param(1, 1.0, 2.0, id="doubles"),
        pytest.param(4, 8.0, 16.0, id="fifth"),
        pytest.param(8, 30.0, 60.0, id="capped"),
        pytest.param(10_000, 30.0, 60.0, id="capped/huge-attempt"),
    ],
)
def test_backoff_doubles_up_to_the_cap_with_jitter(attempt: int, low: float, high: float) -> None:
    backoff = Backoff(initial=timedelta(seconds=1), maximum=timedelta(minutes=1))
    assert backoff.delay(attempt, draw=0.0) == low
    assert low <= backoff.delay(attempt, draw=0.5) <= high
    assert backoff.delay(attempt, draw=0.999999) <= high


def test_backoff_refuses_a_maximum_below_the_start() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=timedelta(seconds=10), maximum=timedelta(seconds=1))


def _certificate(not_before: datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = parse_subject("daemon-test")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + LIFETIME)
        .sign(key, hashes.SHA256())
    )


@dataclass
class FakeTime:
    """A clock and a waker in one: each wait advances the clock instead of sleeping.

    ``events`` maps a wait's index to what ends it early (RENEW or STOP).
    """

    now: datetime = START
    waits: list[float] = field(default_factory=list)
    events: dict[int, Wake] = field(default_factory=dict)
    limit: int = 50

    def clock(self) -> datetime:
        return self.now

    def wait(self, seconds: float) -> Wake:
        index = len(self.waits)
        self.waits.append(seconds)
        if index >= self.limit:
            return Wake.STOP
        event = self.events.get(index)
        if event is not None:
            return event
        self.now += timedelta(seconds=seconds)
        return Wake.TIMEOUT


@dataclass
class FakeCA:
    """Renews by issuing a new certificate at the fake clock's time; fails on demand."""

    time: FakeTime
    failures: list[Exception] = field(default_factory=list)
    current: x509.Certificate = field(default_factory=lambda: _certificate(START))
    renewed_at: list[datetime] = field(default_factory=list)

    def renew(self) -> x509.Certificate:
        if self.failures:
            raise self.failures.pop(0)
        self.current = _certificate(self.time.now)
        self.renewed_at.append(self.time.now)
        return self.current


def _daemon(time: FakeTime, ca: FakeCA, lines: list[str]) -> RenewalDaemon:
    return RenewalDaemon(
        current=lambda: ca.current,
        renew=ca.renew,
        policy=RenewalPolicy(jitter_fraction=0.0),
        log=lines.append,
        waker=time,  # type: ignore[arg-type]
        clock=time.clock,
        backoff=Backoff(initial=timedelta(seconds=1), maximum=timedelta(seconds=30)),
        draw=lambda: 0.0,
        recheck=timedelta(days=1),
    )


def test_daemon_renews_when_due_and_again_a_lifetime_later() -> None:
    time, lines = FakeTime(limit=2), []
    ca = FakeCA(time)
    _daemon(time, ca, lines).run()
    assert ca.renewed_at == [START + timedelta(hours=2), START + timedelta(hours=4)]
    assert lines[-1] == "stopping"
    assert any(line.startswith("renewed: serial") for line in lines)


def test_daemon_backs_off_while_the_ca_is_down_then_succeeds() -> None:
    time, lines = FakeTime(limit=4), []
    down = CAUnavailable("cannot reach the CA")
    ca = FakeCA(time, failures=[down, down, down])
    _daemon(time, ca, lines).run()
    # wait until due, then 0.5 s, 1 s, 2 s (draw 0: half of 1, 2, 4), then renewed
    assert time.waits[1:4] == [0.5, 1.0, 2.0]
    assert ca.renewed_at == [START + timedelta(hours=2, seconds=3.5)]
    assert sum("renewal failed: cannot reach the CA" in line for line in lines) == 3


def test_daemon_waits_the_longest_backoff_after_a_refusal() -> None:
    time, lines = FakeTime(limit=3), []
    ca = FakeCA(time, failures=[RevokedCertificate("certificate is revoked")])
    _daemon(time, ca, lines).run()
    assert time.waits[1] == 15.0  # half of the 30 s maximum, at draw 0


def test_daemon_renews_at_once_when_asked_and_stops_when_told() -> None:
    time, lines = FakeTime(events={0: Wake.RENEW, 1: Wake.STOP}), []
    ca = FakeCA(time)
    _daemon(time, ca, lines).run()
    assert ca.renewed_at == [START]
    assert "renewal requested (SIGHUP)" in lines


def test_daemon_renews_first_thing_with_renew_now() -> None:
    time, lines = FakeTime(events={0: Wake.STOP}), []
    ca = FakeCA(time)
    _daemon(time, ca, lines).run(renew_now=True)
    assert ca.renewed_at == [START]


def test_waker_wakes_a_wait_from_another_thread() -> None:
    waker = Waker()
    try:
        threading.Timer(0.05, waker.request_renewal).start()
        assert waker.wait(10) is Wake.RENEW
        assert waker.wait(0) is Wake.TIMEOUT
        waker.request_renewal()
        waker.request_stop()
        assert waker.wait(10) is Wake.STOP
    finally:
        waker.close()


def test_daemon_does_not_loop_when_every_new_certificate_is_due_at_once() -> None:
    time, lines = FakeTime(limit=2), []
    ca = FakeCA(time)
    daemon = _daemon(time, ca, lines)
    daemon.policy = RenewalPolicy(renew_at=None, remaining=LIFETIME * 2, jitter_fraction=0.0)
    daemon.run()
    assert ca.renewed_at == [START + timedelta(seconds=30 * i) for i in range(3)]
    assert time.waits == [30.0, 30.0, 30.0]
    assert any("due at once" in line for line in lines)


def test_daemon_renews_early_when_the_issuer_is_retiring_and_keeps_going_if_it_cannot_ask() -> None:
    """After ``ca intermediate rotate`` the CA's current intermediate is another: the daemon
    renews at once (not at two thirds of the lifetime). A CA it cannot ask changes nothing."""
    time, lines = FakeTime(limit=1), []
    ca = FakeCA(time)
    retiring = {ca.current.serial_number}
    daemon = _daemon(time, ca, lines)
    daemon.issuer_retiring = lambda certificate: certificate.serial_number in retiring
    daemon.run()
    # At once, not when due; its successor then when due (two thirds of its lifetime).
    assert ca.renewed_at == [START, START + timedelta(hours=2)]
    assert "the CA issues from a new intermediate: renewing now, early" in lines

    time, lines = FakeTime(limit=1), []
    ca = FakeCA(time)

    def unreachable(certificate: x509.Certificate) -> bool:
        raise CAUnavailable("cannot reach the CA")

    daemon = _daemon(time, ca, lines)
    daemon.issuer_retiring = unreachable
    daemon.run()
    assert ca.renewed_at == [START + timedelta(hours=2)]  # when due, as without the question
    assert any("cannot ask the CA for its current intermediate" in line for line in lines)
