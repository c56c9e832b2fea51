"""Refusals of callers with no credential are counted, not audited; those of known
certificates still are (the alerts and the audit need them)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import func, select

from ostiary.authority.signing_alerts import SigningAlerts
from ostiary.store import AuditEntry
from tests.signing.conftest import AUDIENCE, CLIENT_ID, SigningRunning

N = 25
#: The longest key name a path segment brought before (and that was written to the audit).
LONG_NAME = "k" * 512


def audit_rows(server: SigningRunning) -> int:
    with server.authority.store.transaction(read_only=True) as session:
        return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


ANONYMOUS = [
    pytest.param({}, "unauthorized", id="no-credential"),
    pytest.param({"Authorization": "Bearer not-a-token"}, "unauthorized", id="bad-admin-token"),
]


@pytest.mark.parametrize(("headers", "code"), ANONYMOUS)
def test_anonymous_refusals_add_no_audit_rows_and_are_counted(
    signing_server: SigningRunning,
    fresh_alerts: SigningAlerts,
    headers: dict[str, str],
    code: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = audit_rows(signing_server)
    caplog.set_level(logging.WARNING, logger="ostiary.signing.alerts")
    with signing_server.client() as client:
        for index in range(N):
            path = "sign" if index % 2 else "assertion"
            answer = client.post(
                f"/signing/keys/{LONG_NAME}/{path}",
                json={"client_id": CLIENT_ID, "audience": AUDIENCE},
                headers=headers,
            )
            assert answer.status_code == 401, answer.text
    assert audit_rows(signing_server) == before
    metric = fresh_alerts.metrics.value("ostiary_signing_refused_anonymous_total", code=code)
    assert metric == N
    with signing_server.client() as client:
        exposed = client.get(
            "/signing/metrics",
            headers={"Authorization": f"Bearer {signing_server.running.admin_token()}"},
        )
    assert f'ostiary_signing_refused_anonymous_total{{code="{code}"}} {N}' in exposed.text
    lines = [r for r in caplog.records if "without a credential" in r.getMessage()]
    assert len(lines) == 1, "logged at most once a minute"
    assert LONG_NAME not in caplog.text


def test_a_known_certificate_refused_a_key_is_still_audited(
    signing_server: SigningRunning, fresh_alerts: SigningAlerts
) -> None:
    caller = signing_server.caller("reports-app")  # not among billing's callers
    before = audit_rows(signing_server)
    with signing_server.client(caller) as client:
        answer = client.post(
            "/signing/keys/billing/assertion",
            json={"client_id": CLIENT_ID, "audience": AUDIENCE},
        )
    assert answer.status_code == 403, answer.text
    assert audit_rows(signing_server) == before + 1
    assert (
        fresh_alerts.metrics.value("ostiary_signing_refused_anonymous_total", code="unauthorized")
        == 0
    )
