"""Audit fail-closed on the officer's and requester's paths (issue 19): while the audit log
cannot be written (a trigger refusing every new entry), submitting a request, approving and
rejecting it (API, console form, ``ca requests approve``), revoking from the console, and the
CA owner's offline ``ca sign`` / ``ca revoke`` are refused and change nothing; once the
fault is gone the same requests work.

API clients get the 503 ``audit-unavailable`` problem with Retry-After; a browser gets the
console's error page with the same status, Retry-After and the reason (try again later),
not "something went wrong"; the CLI one ``error:`` line and exit status 1.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ostiary.store import (
    CertificateRecord,
    CertificateRepository,
    CertificateStatus,
    RequestRepository,
    Store,
    sqlite_url_for,
)
from tests.client.conftest import ok, refused
from tests.console.conftest import Console
from tests.console.test_approval import _csr
from tests.console.test_console_hardening import _CSRF, csrf_token, officer_client
from tests.server.audit_fault import (
    REFUSE,
    assert_audit_unavailable,
    audit_entries,
    audit_refused,
)

OPEN = "open-doors"  # the approval provisioner without one-time codes


def _url(console: Console) -> str:
    return sqlite_url_for(console.ca.home / "ostiary.db")


def _state(console: Console) -> tuple[int, int]:
    """(certificates, audit entries)."""
    store = Store.from_url(_url(console))
    try:
        with store.transaction(read_only=True) as session:
            count = session.scalar(select(func.count()).select_from(CertificateRecord))
    finally:
        store.dispose()
    return int(count or 0), audit_entries(_url(console))


def _status(console: Console, request_id: str) -> str:
    return str(_read(console, lambda session: RequestRepository(session).get(request_id).status))


def _certificate_status(console: Console, serial: int) -> CertificateStatus:
    return _read(console, lambda session: CertificateRepository(session).get(serial).status)  # type: ignore[no-any-return]


def _read(console: Console, read: Callable[[Session], Any]) -> Any:
    store = Store.from_url(_url(console))
    try:
        with store.transaction(read_only=True) as session:
            return read(session)
    finally:
        store.dispose()


@pytest.fixture
def api(console: Console) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(console.ca.root_file))
    with httpx.Client(base_url=console.ca.url, verify=context) as client:
        yield client


def _officer_api(console: Console) -> httpx.Client:
    """The officer over mTLS, as an API client (problem documents, not pages)."""
    context = ssl.create_default_context(cafile=str(console.ca.root_file))
    context.load_cert_chain(console.officer.crt, console.officer.key)
    return httpx.Client(base_url=console.ca.url, verify=context)


def _submit(api: httpx.Client, name: str) -> httpx.Response:
    return api.post("/requests", json={"csr": _csr(name), "provisioner": OPEN, "note": "x"})


def _html_refused(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert int(answer.headers["Retry-After"]) >= 1
    assert "try again later" in answer.text
    assert REFUSE not in answer.text


def test_requests_and_decisions_are_refused_while_the_audit_log_cannot_be_written(
    console: Console, api: httpx.Client
) -> None:
    waiting = [str(_submit(api, f"fc-{n}").json()["request_id"]) for n in range(3)]
    before = _state(console)
    with (
        audit_refused(_url(console)),
        _officer_api(console) as officer,
        officer_client(console) as browser,
    ):
        assert_audit_unavailable(_submit(api, "fc-new"))
        assert_audit_unavailable(officer.post(f"/requests/{waiting[0]}/approve", json={}))
        assert_audit_unavailable(
            officer.post(f"/requests/{waiting[1]}/reject", json={"reason": "no"})
        )
        token = csrf_token(browser)  # a page read works: reads need no audit entry
        _html_refused(
            browser.post(f"/console/requests/{waiting[0]}/approve", data={"csrf_token": token})
        )
        _html_refused(
            browser.post(
                f"/console/requests/{waiting[1]}/reject",
                data={"csrf_token": token, "reason": "no"},
            )
        )
        cli = refused(
            "ca", "requests", "approve", waiting[2], "--cert", console.officer.crt,
            "--key", console.officer.key, *console.client_args(),
        )  # fmt: skip
        assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr
        assert "audit log cannot be written" in cli.stderr
        assert _state(console) == before
        assert [_status(console, r) for r in waiting] == ["pending"] * 3
    # the fault gone, the same decisions work
    with _officer_api(console) as officer:
        assert officer.post(f"/requests/{waiting[0]}/approve", json={}).status_code == 200
        answer = officer.post(f"/requests/{waiting[1]}/reject", json={"reason": "no"})
        assert answer.status_code == 200
    ok(
        "ca", "requests", "approve", waiting[2], "--cert", console.officer.crt,
        "--key", console.officer.key, *console.client_args(),
    )  # fmt: skip
    assert _submit(api, "fc-new").status_code == 202
    ok("ca", "audit", "verify", "--dir", console.ca.home)


def _revoke_form_token(browser: httpx.Client, serial: str) -> str:
    """The CSRF token of the certificate page's revoke form (a read: no audit entry)."""
    found = _CSRF.search(browser.get(f"/console/certificates/{serial}").text)
    assert found is not None
    return found.group(1)


def test_revocation_from_the_console_and_the_cli_is_refused_while_the_audit_log_cannot_be_written(
    console: Console, tmp_path: Path
) -> None:
    victim = console.enroll("fc-victim", stem="fc-victim")
    number = x509.load_pem_x509_certificate(victim.crt.read_bytes()).serial_number
    serial = f"{number:x}"
    csr_file = tmp_path / "offline.csr"
    csr_file.write_text(_csr("fc-offline"))
    before = _state(console)
    with audit_refused(_url(console)), officer_client(console) as browser:
        token = _revoke_form_token(browser, serial)
        form = {"csrf_token": token, "confirm": "yes", "reason": "keyCompromise"}
        _html_refused(browser.post(f"/console/certificates/{serial}/revoke", data=form))
        for args in (
            ("revoke", serial),
            ("sign", csr_file, "--out", tmp_path / "offline.crt", "--subject", "fc-offline"),
        ):
            cli = refused(
                "ca", *args, "--dir", console.ca.home, "--password-file", console.ca.password_file
            )
            assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr
            assert "audit log cannot be written" in cli.stderr
            assert REFUSE not in cli.stderr
        assert not (tmp_path / "offline.crt").exists()
        assert _state(console) == before
        assert _certificate_status(console, number) == CertificateStatus.VALID
    with officer_client(console) as browser:
        form["csrf_token"] = _revoke_form_token(browser, serial)
        revoked = browser.post(f"/console/certificates/{serial}/revoke", data=form)
        assert revoked.status_code == 303, revoked.text
    assert _certificate_status(console, number) == CertificateStatus.REVOKED
    console.ca.ca("sign", csr_file, "--out", tmp_path / "offline.crt", "--subject", "fc-offline")
    assert (tmp_path / "offline.crt").exists()


def test_an_approval_whose_request_cannot_be_marked_issues_nothing(console: Console) -> None:
    """The certificate, the request marked issued and both audit entries are one
    transaction: with only ``request.approved`` refused, no certificate is left behind
    a request stuck half-approved (before, the certificate was issued and committed, then
    marking the request failed, leaving it 'approving' for good)."""
    with (
        _officer_api(console) as officer,
        httpx.Client(
            base_url=console.ca.url,
            verify=ssl.create_default_context(cafile=str(console.ca.root_file)),
        ) as api,
    ):
        request_id = str(_submit(api, "fc-half").json()["request_id"])
        before = _state(console)
        with audit_refused(_url(console), event="request.approved"):
            assert_audit_unavailable(officer.post(f"/requests/{request_id}/approve", json={}))
            assert _state(console) == before
            assert _status(console, request_id) == "pending"
        assert officer.post(f"/requests/{request_id}/approve", json={}).status_code == 200
        assert _status(console, request_id) == "issued"
