"""Alerts on remote signing: unusual rates, a caller's new source address, refused audiences.

A stolen workload credential shows up as signatures the workload would not have asked for:
more of them than usual, or from another address, or for another audience. Each operation
is reported to :meth:`SigningAlerts.observe` with its time (injected: tests are exact).

Rate model, per caller and per key ("subjects"): signatures are counted per clock minute.
When a minute closes, its count updates an exponentially weighted mean and variance
(``alpha`` = 0.3; minutes with no signatures count as zeros, up to 60 of them). For the
first ``warmup_minutes`` (5) of a subject's life nothing is judged. Afterwards, the running
count of the current minute raises a ``rate`` alert the moment it exceeds

    max(min_burst, factor * mean, mean + sigmas * sqrt(variance))

with ``min_burst`` = 10, ``factor`` = 3, ``sigmas`` = 4; at most once per subject per minute.
Steady use (the same count each minute) keeps the variance near zero and the threshold at
three times the usual rate; a burst crosses it within the minute it starts. Only increases
are judged: a drop is not an attack.

New source: the first address a caller signs from is learnt silently; any further address
raises ``new_source`` once (then it is known). Refused audience: every assertion refused
because its ``aud`` is not on the key's allowlist raises ``refused_audience``.

Requests refused without a credential of this CA (no client certificate, a bad token) are
not operations of any caller: they are counted in
``ostiary_signing_refused_anonymous_total{code=...}`` and logged at most once a minute with
how many came (:meth:`SigningAlerts.refused_anonymous`), never audited.

Every alert is a warning log line (``ostiary.signing.alerts``), a Prometheus counter
(``ostiary_signing_alerts_total{kind=...}``, see :class:`Metrics`), and, when a webhook URL
is set, a JSON POST sent from a background thread so signing never waits for it. The state
is per process: each replica learns its own baselines, and a restart starts a new warm-up.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

logger = logging.getLogger("ostiary.signing.alerts")

#: At most one log line per this interval about requests refused without a credential.
ANONYMOUS_LOG_INTERVAL = timedelta(minutes=1)
#: Minutes with no signatures applied to the average at most (a quiet night is not news).
_MAX_IDLE_MINUTES = 60


@dataclass(frozen=True)
class Alert:
    """One alert: what kind, about whom, and the numbers behind it."""

    kind: str  # "rate", "new_source", "refused_audience"
    subject: str  # "caller:<id>" or "key:<name>"
    at: datetime
    detail: str
    facts: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "at": self.at.isoformat(),
            "detail": self.detail,
            **self.facts,
        }


class Metrics:
    """Counters in the Prometheus text exposition format (version 0.0.4), no dependency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self._help: dict[str, str] = {}

    def describe(self, name: str, text: str) -> None:
        self._help[name] = text

    def inc(self, name: str, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + 1

    def value(self, name: str, **labels: str) -> int:
        with self._lock:
            return self._counters.get((name, tuple(sorted(labels.items()))), 0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            items = sorted(self._counters.items())
        names = sorted({name for (name, _), _ in items} | set(self._help))
        for name in names:
            lines.append(f"# HELP {name} {self._help.get(name, name)}")
            lines.append(f"# TYPE {name} counter")
            for (metric, labels), count in items:
                if metric != name:
                    continue
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{text}}} {count}" if text else f"{name} {count}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class _Rate:
    """The learnt per-minute rate of one subject."""

    first_minute: int
    minute: int
    count: int = 0
    mean: float = 0.0
    variance: float = 0.0
    alerted_minute: int = -1


@dataclass(frozen=True)
class RateModel:
    """The parameters of the rate baseline (see the module docstring)."""

    alpha: float = 0.3
    warmup_minutes: int = 5
    min_burst: int = 10
    factor: float = 3.0
    sigmas: float = 4.0

    def threshold(self, mean: float, variance: float) -> float:
        return max(
            float(self.min_burst), self.factor * mean, mean + self.sigmas * math.sqrt(variance)
        )


class SigningAlerts:
    """Watches signing operations and raises alerts (thread-safe)."""

    def __init__(
        self,
        *,
        model: RateModel | None = None,
        webhook_url: str | None = None,
        metrics: Metrics | None = None,
        post: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.model = model or RateModel()
        self.metrics = metrics or Metrics()
        self.metrics.describe("ostiary_signing_alerts_total", "Remote-signing alerts raised.")
        self.metrics.describe(
            "ostiary_signing_operations_total", "Remote-signing operations, by key and result."
        )
        self.metrics.describe(
            "ostiary_signing_refused_anonymous_total",
            "Remote-signing requests refused without a credential of this CA, by code.",
        )
        self._anonymous_lock = threading.Lock()
        self._anonymous_unlogged = 0
        self._anonymous_logged_at: datetime | None = None
        self._rates: dict[str, _Rate] = {}
        self._sources: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._webhook_url = webhook_url
        self._post = post or _post_json
        self._outbox: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=1000)
        self._sender: threading.Thread | None = None

    def observe(
        self,
        *,
        caller: str,
        key: str,
        source: str | None,
        result: str,
        at: datetime,
        refused_audience: str | None = None,
    ) -> list[Alert]:
        """Account one operation; return (and publish) the alerts it raises."""
        self.metrics.inc("ostiary_signing_operations_total", key=key, result=result)
        alerts: list[Alert] = []
        with self._lock:
            if refused_audience is not None:
                alerts.append(
                    Alert(
                        "refused_audience",
                        f"caller:{caller}",
                        at,
                        f"{caller} asked key {key!r} for an audience outside its allowlist",
                        {"key": key, "audience": refused_audience, "source": source},
                    )
                )
            if result == "ok":
                for subject in (f"caller:{caller}", f"key:{key}"):
                    alert = self._count(subject, at)
                    if alert is not None:
                        alerts.append(alert)
                if source is not None:
                    alert = self._check_source(caller, source, at)
                    if alert is not None:
                        alerts.append(alert)
        for alert in alerts:
            self._publish(alert)
        return alerts

    def refused_anonymous(self, *, code: str, source: str | None, at: datetime) -> bool:
        """Count a request refused with no credential of this CA (not audited, see
        :meth:`~ostiary.authority.remote_signing.RemoteSigning.count_anonymous_refusal`);
        log a line at most once per :data:`ANONYMOUS_LOG_INTERVAL` with how many came since
        the last one. Whether a line was logged.
        """
        self.metrics.inc("ostiary_signing_refused_anonymous_total", code=code)
        with self._anonymous_lock:
            self._anonymous_unlogged += 1
            last = self._anonymous_logged_at
            if last is not None and at - last < ANONYMOUS_LOG_INTERVAL:
                return False
            count, self._anonymous_unlogged = self._anonymous_unlogged, 0
            self._anonymous_logged_at = at
        logger.warning(
            "remote signing refused %d request(s) without a credential (latest from %s, %s)",
            count,
            source or "unknown address",
            code,
        )
        return True

    def _count(self, subject: str, at: datetime) -> Alert | None:
        minute = int(at.timestamp() // 60)
        rate = self._rates.get(subject)
        if rate is None:
            rate = self._rates[subject] = _Rate(first_minute=minute, minute=minute)
        if minute > rate.minute:
            self._close_minute(rate, rate.count)
            idle = min(minute - rate.minute - 1, _MAX_IDLE_MINUTES)
            for _ in range(idle):
                self._close_minute(rate, 0)
            rate.minute, rate.count = minute, 0
        rate.count += 1
        if minute - rate.first_minute < self.model.warmup_minutes:
            return None
        threshold = self.model.threshold(rate.mean, rate.variance)
        if rate.count > threshold and rate.alerted_minute != minute:
            rate.alerted_minute = minute
            return Alert(
                "rate",
                subject,
                at,
                f"{subject} signed {rate.count} times this minute; "
                f"its usual rate is {rate.mean:.1f} a minute",
                {"count": rate.count, "baseline": round(rate.mean, 2), "threshold": threshold},
            )
        return None

    def _close_minute(self, rate: _Rate, count: int) -> None:
        alpha = self.model.alpha
        difference = count - rate.mean
        rate.mean += alpha * difference
        rate.variance = (1 - alpha) * (rate.variance + alpha * difference * difference)

    def _check_source(self, caller: str, source: str, at: datetime) -> Alert | None:
        known = self._sources.setdefault(caller, set())
        if source in known:
            return None
        first = not known
        known.add(source)
        if first:
            return None
        return Alert(
            "new_source",
            f"caller:{caller}",
            at,
            f"{caller} signed from a new address {source}",
            {"source": source, "known_sources": len(known) - 1},
        )

    def _publish(self, alert: Alert) -> None:
        self.metrics.inc("ostiary_signing_alerts_total", kind=alert.kind)
        logger.warning("signing alert %s: %s", alert.kind, alert.detail)
        if self._webhook_url is None:
            return
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_loop, daemon=True)
            self._sender.start()
        try:
            self._outbox.put_nowait(alert.as_json())
        except queue.Full:
            logger.warning("signing alert webhook is behind: alert %s not posted", alert.kind)

    def _send_loop(self) -> None:
        url = self._webhook_url
        while True:
            item = self._outbox.get()
            if item is None or url is None:
                return
            try:
                self._post(url, item)
            except httpx.HTTPError as exc:
                logger.warning("signing alert webhook failed: %s", type(exc).__name__)

    def close(self) -> None:
        """Stop the webhook thread after it has sent what is queued."""
        if self._sender is not None:
            self._outbox.put(None)
            self._sender.join(10)
            self._sender = None


def _post_json(url: str, body: dict[str, Any]) -> None:
    httpx.post(url, json=body, timeout=5).raise_for_status()


__all__ = ["ANONYMOUS_LOG_INTERVAL", "Alert", "Metrics", "RateModel", "SigningAlerts"]
