"""Alerts: a burst and a new source address raise them, steady use does not; refused
audiences too. The model is exercised with exact times, then end to end through the server
(a real second loopback address as the "new source", a real webhook receiver)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ostiary.authority.signing_alerts import Metrics, SigningAlerts
from tests.signing.conftest import AUDIENCE, CLIENT_ID, OTHER_AUDIENCE, SigningRunning

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def run_minutes(
    alerts: SigningAlerts, per_minute: list[int], *, caller: str = "app", key: str = "k"
) -> list[Any]:
    """Spread each minute's signatures evenly over it; return every alert raised."""
    raised = []
    for minute, count in enumerate(per_minute):
        for i in range(count):
            at = START + timedelta(minutes=minute, seconds=i * 60 / max(count, 1))
            raised += alerts.observe(caller=caller, key=key, source="10.0.0.1", result="ok", at=at)
    return raised


def test_steady_use_stays_quiet() -> None:
    alerts = SigningAlerts()
    assert run_minutes(alerts, [6] * 60) == []
    assert alerts.metrics.value("ostiary_signing_alerts_total", kind="rate") == 0


def test_a_burst_raises_a_rate_alert_for_caller_and_key_once_a_minute() -> None:
    alerts = SigningAlerts()
    raised = run_minutes(alerts, [6] * 10 + [40])
    kinds = sorted((a.kind, a.subject) for a in raised)
    assert kinds == [("rate", "caller:app"), ("rate", "key:k")]
    # The first count above 3 x the learnt mean (6 * (1 - 0.7**10) = 5.83 a minute).
    assert raised[0].facts["count"] == 18 > raised[0].facts["threshold"]
    assert alerts.metrics.value("ostiary_signing_alerts_total", kind="rate") == 2


def test_nothing_is_judged_during_the_warm_up() -> None:
    alerts = SigningAlerts()
    assert run_minutes(alerts, [1, 50, 1, 50, 1]) == []


def test_a_slow_rise_is_learnt_but_a_jump_from_quiet_is_not() -> None:
    alerts = SigningAlerts()
    rising = [5 + m // 4 for m in range(40)]  # 5 -> 14 a minute over 40 minutes
    assert run_minutes(alerts, rising) == []
    quiet = SigningAlerts()
    assert [a.kind for a in run_minutes(quiet, [1] * 10 + [11], caller="c2")] == ["rate", "rate"]


def test_new_source_address_after_the_first_one() -> None:
    alerts = SigningAlerts()
    first = alerts.observe(caller="app", key="k", source="10.0.0.1", result="ok", at=START)
    again = alerts.observe(caller="app", key="k", source="10.0.0.1", result="ok", at=START)
    moved = alerts.observe(caller="app", key="k", source="10.9.9.9", result="ok", at=START)
    back = alerts.observe(caller="app", key="k", source="10.9.9.9", result="ok", at=START)
    assert first == again == back == []
    assert [a.kind for a in moved] == ["new_source"]
    assert moved[0].facts["source"] == "10.9.9.9"


def test_refused_audience_alerts_and_refusals_do_not_count_as_use() -> None:
    alerts = SigningAlerts()
    raised = alerts.observe(
        caller="app",
        key="k",
        source="10.0.0.1",
        result="audience-not-allowed",
        at=START,
        refused_audience="https://evil.example/token",
    )
    assert [a.kind for a in raised] == ["refused_audience"]
    assert alerts.metrics.value("ostiary_signing_operations_total", key="k", result="ok") == 0


def test_metrics_render_as_prometheus_text() -> None:
    metrics = Metrics()
    metrics.describe("x_total", "X.")
    metrics.inc("x_total", kind='a"b')
    metrics.inc("x_total", kind='a"b')
    assert (
        metrics.render() == '# HELP x_total X.\n# TYPE x_total counter\nx_total{kind="a\\"b"} 2\n'
    )


# ------------------------------------------------------------------ through the server


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]
    arrived: threading.Event

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append(json.loads(self.rfile.read(length)))
        self.arrived.set()
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]], threading.Event]]:
    received: list[dict[str, Any]] = []
    arrived = threading.Event()
    handler = type("Receiver", (_Receiver,), {"received": received, "arrived": arrived})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received, arrived
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _wait_for(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the webhook did not receive the alerts in time"
        time.sleep(0.02)


def _assert(server: SigningRunning, client: Any, audience: str = AUDIENCE) -> int:
    answer = client.post(
        "/signing/keys/billing/assertion", json={"client_id": CLIENT_ID, "audience": audience}
    )
    return int(answer.status_code)


def test_server_alerts_on_a_burst_and_a_new_address_and_is_quiet_on_steady_use(
    signing_server: SigningRunning,
    webhook: tuple[str, list[dict[str, Any]], threading.Event],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, received, arrived = webhook
    alerts = SigningAlerts(webhook_url=url)
    signing = signing_server.signing
    previous, signing.alerts = signing.alerts, alerts
    clock = signing_server.clock
    caller = signing_server.caller("billing-burst")
    caplog.set_level(logging.WARNING, logger="ostiary.signing.alerts")
    try:
        base = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        with signing_server.client(caller) as client:
            # Steady: two assertions a minute for eight minutes, from one address.
            for minute in range(8):
                for second in (5, 35):
                    clock.frozen = base + timedelta(minutes=minute, seconds=second)
                    assert _assert(signing_server, client) == 200
            assert received == [] and caplog.records == []
            # A burst in the ninth minute.
            for i in range(12):
                clock.frozen = base + timedelta(minutes=8, seconds=i)
                assert _assert(signing_server, client) == 200
        _wait_for(lambda: len(received) >= 2)
        kinds = {(a["kind"], a["subject"].split(":")[0]) for a in received}
        assert ("rate", "caller") in kinds and ("rate", "key") in kinds
        assert any("signing alert rate" in r.getMessage() for r in caplog.records)

        # The same caller from another loopback address: a new source.
        arrived.clear()
        clock.frozen = base + timedelta(minutes=9)
        with signing_server.client(caller, source="127.0.0.2") as moved:
            assert _assert(signing_server, moved) == 200
            # ...and an audience outside the allowlist.
            assert _assert(signing_server, moved, OTHER_AUDIENCE) == 403
        alerts.close()
        new_source = [a for a in received if a["kind"] == "new_source"]
        assert len(new_source) == 1 and new_source[0]["source"] == "127.0.0.2"
        refused = [a for a in received if a["kind"] == "refused_audience"]
        assert len(refused) == 1 and refused[0]["audience"] == OTHER_AUDIENCE
        assert alerts.metrics.value("ostiary_signing_alerts_total", kind="new_source") == 1

        token = signing_server.running.admin_token(now=clock())
        with signing_server.client() as client:
            metrics = client.get("/signing/metrics", headers={"Authorization": f"Bearer {token}"})
            anonymous = client.get("/signing/metrics")
        assert metrics.status_code == 200
        assert 'ostiary_signing_alerts_total{kind="new_source"} 1' in metrics.text
        assert anonymous.status_code == 401
    finally:
        signing.alerts = previous
        clock.frozen = None
        alerts.close()
