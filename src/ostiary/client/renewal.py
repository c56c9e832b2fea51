"""When to renew, and the loop that keeps a certificate renewed.

The policy is pure (times passed in). By default a certificate is due once two thirds of its
lifetime have passed (a third left), or by ``--renew-at P%`` of the lifetime elapsed, or by
``--expires-in D`` (or ``P%``) left. Jitter moves the moment *earlier* by up to
:data:`JITTER_FRACTION` of the lifetime, never later, so the rule stays a promise; the draw
comes from the certificate's fingerprint, so every run (cron, ``needs-renewal``, the daemon)
agrees about one certificate while a fleet issued at the same moment spreads out.

:class:`RenewalDaemon` sleeps until the certificate is due, renews, backs off exponentially
(capped, with jitter) while the CA is unreachable, renews at once when asked (SIGHUP) and
stops when told (SIGTERM). Time, waiting and randomness are injected, so the loop is tested
without sleeping.
"""

from __future__ import annotations

import contextlib
import random
import select
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ostiary.client.errors import is_transient
from ostiary.core.errors import BadRequest, OstiaryError, WrongPassword
from ostiary.core.lifetime import format_duration, parse_duration

#: Default share of the lifetime that has passed when renewal is due (a third left).
DEFAULT_RENEW_AT = 2 / 3
#: Jitter moves the due time earlier by up to this share of the lifetime.
JITTER_FRACTION = 0.05

Clock = Callable[[], datetime]
Log = Callable[[str], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def jitter_draw(certificate: x509.Certificate) -> float:
    """A number in [0, 1) fixed for ``certificate`` (from its SHA-256 fingerprint)."""
    digest = certificate.fingerprint(hashes.SHA256())
    return int.from_bytes(digest[:8], "big") / 2**64


class DueRule(Protocol):
    """When a certificate is due: a :class:`RenewalPolicy`, or one that also asks the CA
    (:class:`~ostiary.client.acme_renewal.FollowRenewalInfo`).
    """

    def certificate_due_at(self, certificate: x509.Certificate) -> datetime: ...

    def needs_renewal(self, certificate: x509.Certificate, *, now: datetime) -> bool: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class RenewalPolicy:
    """When a certificate is due: ``renew_at`` of its lifetime passed, or ``remaining`` left.

    Exactly one of the two is set.
    """

    renew_at: float | None = DEFAULT_RENEW_AT
    remaining: timedelta | None = None
    jitter_fraction: float = JITTER_FRACTION

    def __post_init__(self) -> None:
        if (self.renew_at is None) == (self.remaining is None):
            raise ValueError("set exactly one of renew_at and remaining")
        if self.renew_at is not None and not 0 <= self.renew_at <= 1:
            raise ValueError("renew_at is a fraction of the lifetime, between 0 and 1")
        if not 0 <= self.jitter_fraction < 1:
            raise ValueError("jitter_fraction is between 0 and 1")

    def due_at(self, not_before: datetime, not_after: datetime, *, draw: float) -> datetime:
        """When a certificate valid from ``not_before`` to ``not_after`` is due for renewal.

        ``draw`` in [0, 1) picks the jitter: 0 is the rule's exact moment, values towards 1
        move it earlier, by at most ``jitter_fraction`` of the lifetime, and never before
        ``not_before``.
        """
        lifetime = not_after - not_before
        if self.remaining is not None:
            exact = not_after - self.remaining
        else:
            exact = not_before + lifetime * float(self.renew_at or 0)
        earlier = lifetime * (self.jitter_fraction * draw)
        return max(not_before, exact - earlier)

    def certificate_due_at(self, certificate: x509.Certificate) -> datetime:
        return self.due_at(
            certificate.not_valid_before_utc,
            certificate.not_valid_after_utc,
            draw=jitter_draw(certificate),
        )

    def needs_renewal(self, certificate: x509.Certificate, *, now: datetime) -> bool:
        return now >= self.certificate_due_at(certificate)

    def describe(self) -> str:
        if self.remaining is not None:
            return f"when less than {format_duration(self.remaining)} is left"
        return f"once {round(float(self.renew_at or 0) * 100)}% of the lifetime has passed"


def parse_renewal_policy(
    expires_in: str | None = None, renew_at: str | None = None
) -> RenewalPolicy:
    """The policy from ``--expires-in D|P%`` or ``--renew-at P%`` (default: at 2/3 elapsed).

    ``--expires-in 8h`` renews when less than 8 hours are left; ``--expires-in 25%`` when
    less than a quarter of the lifetime is left; ``--renew-at 75%`` is the same thing.
    """
    if expires_in is not None and renew_at is not None:
        raise BadRequest("give --expires-in or --renew-at, not both")
    if renew_at is not None:
        return RenewalPolicy(renew_at=_percent(renew_at, "--renew-at"))
    if expires_in is None:
        return RenewalPolicy()
    if expires_in.strip().endswith("%"):
        return RenewalPolicy(renew_at=1 - _percent(expires_in, "--expires-in"))
    return RenewalPolicy(renew_at=None, remaining=parse_duration(expires_in))


def _percent(text: str, option: str) -> float:
    value = text.strip().removesuffix("%")
    try:
        number = float(value)
    except ValueError:
        raise BadRequest(f"{option} {text!r}: give a percentage such as 66%") from None
    if not text.strip().endswith("%") or not 0 <= number <= 100:
        raise BadRequest(f"{option} {text!r}: give a percentage between 0% and 100%")
    return number / 100


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts while the CA is unreachable: doubling from ``initial`` up to
    ``maximum``, each wait drawn in [half, all] of its ceiling so that clients spread out.
    """

    initial: timedelta = timedelta(seconds=1)
    maximum: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if not timedelta() < self.initial <= self.maximum:
            raise ValueError("backoff needs 0 < initial <= maximum")

    def delay(self, attempt: int, *, draw: float) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0 for the first)."""
        ceiling = self.maximum.total_seconds()
        if attempt < 64:
            ceiling = min(ceiling, self.initial.total_seconds() * 2**attempt)
        return ceiling * (0.5 + draw / 2)


class Wake(Enum):
    """Why a wait ended."""

    TIMEOUT = "timeout"
    RENEW = "renew"
    STOP = "stop"


class Waker:
    """Waits that end early on request: signal handlers and other threads call
    :meth:`request_renewal` (SIGHUP) or :meth:`request_stop` (SIGTERM).

    A socket pair wakes the wait rather than a lock, so that a signal handler arriving at any
    moment cannot deadlock on a lock its own thread holds.
    """

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._renew = False
        self._stop = False

    def request_renewal(self) -> None:
        self._renew = True
        self._poke()

    def request_stop(self) -> None:
        self._stop = True
        self._poke()

    def wait(self, seconds: float) -> Wake:
        """Wait up to ``seconds``; a pending stop wins over a pending renewal."""
        if not (self._stop or self._renew):
            select.select([self._reader], [], [], max(0.0, seconds))
        self._drain()
        if self._stop:
            return Wake.STOP
        if self._renew:
            self._renew = False
            return Wake.RENEW
        return Wake.TIMEOUT

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # full or closed: a wake-up is pending anyway
            self._writer.send(b"\0")

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._reader.recv(4096):
                pass


def install_signal_handlers(waker: Waker) -> None:
    """SIGHUP renews at once; SIGTERM and SIGINT stop the daemon cleanly."""
    if hasattr(signal, "SIGHUP"):  # not on Windows
        signal.signal(signal.SIGHUP, lambda _signum, _frame: waker.request_renewal())
    signal.signal(signal.SIGTERM, lambda _signum, _frame: waker.request_stop())
    signal.signal(signal.SIGINT, lambda _signum, _frame: waker.request_stop())


@dataclass
class RenewalDaemon:
    """Keeps one certificate renewed until stopped.

    ``current`` reads the certificate as it is now (from disk, so a replacement made by
    someone else is noticed); ``renew`` renews it and returns the new one (writing files,
    refreshing a .p12 and running a hook is the caller's business). Failures are logged and
    retried: with backoff while the CA is unavailable, at the backoff's maximum for refusals.
    """

    current: Callable[[], x509.Certificate]
    renew: Callable[[], x509.Certificate]
    policy: DueRule
    log: Log
    waker: Waker = field(default_factory=Waker)
    clock: Clock = utc_now
    backoff: Backoff = field(default_factory=Backoff)
    draw: Callable[[], float] = random.random
    #: Look at the certificate and the clock at least this often (suspend, clock changes).
    recheck: timedelta = timedelta(hours=1)
    #: Whether the certificate's issuer is retiring (the CA rotated its intermediate): then
    #: it is renewed at once, so that its successor comes from the new one. Asked at most
    #: once per ``recheck``; a failure to ask is logged and changes nothing.
    issuer_retiring: Callable[[x509.Certificate], bool] | None = None

    def run(self, *, renew_now: bool = False) -> None:
        """Loop until :meth:`Waker.request_stop`; renew first thing with ``renew_now``."""
        attempt = 0
        announced: datetime | None = None
        asked: datetime | None = None
        while True:
            current = self.current()
            due = self.policy.certificate_due_at(current)
            now = self.clock()
            if not renew_now and (asked is None or now - asked >= self.recheck):
                asked = now
                renew_now = self._retiring(current)
            if not renew_now and now < due:
                if due != announced:
                    self.log(f"next renewal at {_timestamp(due)}")
                    announced = due
                wake = self.waker.wait(min(due - now, self.recheck).total_seconds())
                if wake is Wake.STOP:
                    break
                renew_now = wake is Wake.RENEW
                if renew_now:
                    self.log("renewal requested (SIGHUP)")
                continue
            try:
                certificate = self.renew()
            except OstiaryError as exc:
                if _key_refused(exc):
                    # Retrying a wrong PIN would lock the TPM (and every key on it); a
                    # lockout only lifts with time or its owner. Stop, and let systemd see it.
                    self.log(f"renewal failed: {exc.detail}; stopping, no further attempts")
                    raise
                delay = self.backoff.delay(attempt if is_transient(exc) else 64, draw=self.draw())
                attempt += 1
                self.log(f"renewal failed: {exc.detail}; next attempt in {delay:.1f}s")
                if self.waker.wait(delay) is Wake.STOP:
                    break
                continue
            attempt = 0
            renew_now = False
            self.log(
                f"renewed: serial {certificate.serial_number:x}, "
                f"not_after {_timestamp(certificate.not_valid_after_utc)}"
            )
            if self.policy.needs_renewal(certificate, now=self.clock()):
                pause = self.backoff.maximum.total_seconds()
                self.log(
                    "the new certificate is due at once (its lifetime is shorter than the "
                    f"renewal rule); waiting {pause:.0f}s rather than renewing in a loop"
                )
                if self.waker.wait(pause) is Wake.STOP:
                    break
        self.log("stopping")

    def _retiring(self, certificate: x509.Certificate) -> bool:
        if self.issuer_retiring is None:
            return False
        try:
            retiring = self.issuer_retiring(certificate)
        except OstiaryError as exc:
            self.log(f"cannot ask the CA for its current intermediate: {exc.detail}")
            return False
        if retiring:
            self.log("the CA issues from a new intermediate: renewing now, early")
        return retiring


def _key_refused(exc: OstiaryError) -> bool:
    """A wrong PIN for the key, or a TPM in lockout: failures no retry can mend."""
    return isinstance(exc, WrongPassword) or exc.code == "tpm-lockout"


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
