"""The console in headless Chromium: approve, revoke, refuse strangers and forged forms."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.client.conftest import OSTIARY, ok
from tests.console.conftest import (
    APPROVAL,
    OFFICER,
    Console,
    browser_context,
    screenshot,
)


def _start_waiting_request(
    console: Console, name: str, crt: Path, key: Path, provisioner: str = APPROVAL
) -> tuple[subprocess.Popen[str], str, str | None]:
    """``ostiary cert request ... --wait`` as a subprocess; its request id and code."""
    process = subprocess.Popen(
        [
            *OSTIARY,
            "cert",
            "request",
            name,
            str(crt),
            str(key),
            "--provisioner",
            provisioner,
            "--note",
            f"{name} in the hall",
            "--wait",
            "--timeout",
            "60",
            *console.client_args(),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    assert process.stderr is not None
    request_id = code = None
    for _ in range(10):
        line = process.stderr.readline()
        if not line:
            break
        if found := re.search(r"Request ([0-9a-f]{32}) is waiting", line):
            request_id = found.group(1)
        if found := re.search(r"code: ([A-Z0-9]{8})", line):
            code = found.group(1)
        if "expires" in line and provisioner != APPROVAL:
            break
        if code:
            break
    assert request_id is not None, process.stderr.read()
    return process, request_id, code


def _ocsp_status(console: Console, crt: Path) -> ocsp.OCSPCertStatus:
    certificate, issuer = x509.load_pem_x509_certificates(crt.read_bytes())[:2]
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1()).build()
    answer = httpx.post(
        f"http://127.0.0.1:{console.ca.http_port}/ocsp",
        content=request.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
    )
    response = ocsp.load_der_ocsp_response(answer.content)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    return response.certificate_status


def test_officer_approves_a_pending_request_and_the_waiting_client_gets_it(
    console: Console, browser: Any, tmp_path: Path
) -> None:
    crt, key = tmp_path / "door.crt", tmp_path / "door.key"
    process, request_id, code = _start_waiting_request(console, "garage.door.example", crt, key)
    assert code is not None
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    context = browser_context(
        browser, console, console.officer, viewport={"width": 1100, "height": 800}
    )
    try:
        page = context.new_page()
        page.goto(f"{console.ca.url}/console/requests")
        article = page.locator("article", has_text=request_id)
        assert "garage.door.example in the hall" in article.inner_text()
        assert code not in page.content()  # only the requester ever sees it
        screenshot(page, "requests")
        # A wrong code is refused and leaves the request pending.
        article.get_by_label("One-time code from the requester").fill("WRONGCOD")
        article.get_by_role("button", name="Approve").click()
        assert page.locator("h1").inner_text().startswith("401")
        assert "does not match" in page.locator("main").inner_text()
        assert process.poll() is None
        page.goto(f"{console.ca.url}/console/requests")
        article = page.locator("article", has_text=request_id)
        article.get_by_label("One-time code from the requester").fill(code.lower())
        article.get_by_role("button", name="Approve").click()
        page.wait_for_url(re.compile(r"/console/certificates/[0-9a-f]+$"))
        assert "CN=garage.door.example" in page.locator("main").inner_text()
        screenshot(page, "certificate")
    finally:
        context.close()
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    issued = x509.load_pem_x509_certificates(crt.read_bytes())[0]
    assert issued.subject.rfc4514_string() == "CN=garage.door.example"
    assert not Path(str(crt) + ".request").exists()
    audit = ok("ca", "audit", "verify", "--dir", console.ca.home).stdout
    assert "hash chain intact" in audit


def test_revoking_in_the_console_makes_ocsp_say_revoked(console: Console, browser: Any) -> None:
    victim = console.enroll("printer")
    assert _ocsp_status(console, victim.crt) == ocsp.OCSPCertStatus.GOOD
    serial = f"{x509.load_pem_x509_certificate(victim.crt.read_bytes()).serial_number:x}"
    context = browser_context(
        browser, console, console.officer, viewport={"width": 1100, "height": 800}
    )
    try:
        page = context.new_page()
        page.goto(f"{console.ca.url}/console/certificates?q=printer")
        screenshot(page, "certificates")
        page.get_by_role("link", name="CN=printer").click()
        # Without the confirmation the browser does not submit (required checkbox).
        page.get_by_label("Reason").select_option("keyCompromise")
        page.get_by_role("button", name="Revoke this certificate").click()
        assert _ocsp_status(console, victim.crt) == ocsp.OCSPCertStatus.GOOD
        page.get_by_label("I understand that revocation is permanent").check()
        page.get_by_role("button", name="Revoke this certificate").click()
        page.wait_for_load_state()
        assert "revoked" in page.locator(".lead .badge").inner_text()
        assert page.url.endswith(f"/console/certificates/{serial}")
    finally:
        context.close()
    assert _ocsp_status(console, victim.crt) == ocsp.OCSPCertStatus.REVOKED


def test_visitors_without_a_certificate_or_the_role_are_refused(
    console: Console, browser: Any
) -> None:
    for identity, status in ((None, 401), (console.stranger, 403)):
        context = browser_context(browser, console, identity)
        try:
            page = context.new_page()
            for path in ("/console", "/console/requests", "/console/certificates"):
                response = page.goto(f"{console.ca.url}{path}")
                assert response is not None and response.status == status
                assert page.locator("h1").inner_text().startswith(str(status))
                assert response.headers["x-frame-options"] == "DENY"
            if identity is None:
                screenshot(page, "refused")
        finally:
            context.close()
    # An officer's certificate that was revoked no longer opens the console.
    revoked = console.enroll(OFFICER, stem="revoked-officer")
    serial = f"{x509.load_pem_x509_certificate(revoked.crt.read_bytes()).serial_number:x}"
    ok(
        "ca",
        "revoke",
        serial,
        "--dir",
        console.ca.home,
        "--password-file",
        console.ca.password_file,
    )
    context = browser_context(browser, console, revoked)
    try:
        response = context.new_page().goto(f"{console.ca.url}/console")
        assert response is not None and response.status == 401
    finally:
        context.close()
    # API clients get a problem document instead of a page.
    answer = httpx.get(
        f"{console.ca.url}/console", verify=False, headers={"Accept": "application/json"}
    )
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"


def test_form_posts_without_the_csrf_token_are_refused(console: Console, browser: Any) -> None:
    victim = console.enroll("scanner")
    serial = f"{x509.load_pem_x509_certificate(victim.crt.read_bytes()).serial_number:x}"
    context = browser_context(browser, console, console.officer)
    try:
        page = context.new_page()
        page.goto(f"{console.ca.url}/console/certificates/{serial}")
        token = page.locator("input[name=csrf_token]").get_attribute("value")
        assert token
        url = f"{console.ca.url}/console/certificates/{serial}/revoke"
        for form in (
            {"reason": "keyCompromise", "confirm": "yes"},
            {"reason": "keyCompromise", "confirm": "yes", "csrf_token": "0" * 64},
            {"reason": "keyCompromise", "confirm": "yes", "csrf_token": token[:-1]},
        ):
            answer = context.request.post(url, form=form, headers={"Accept": "text/html"})
            assert answer.status == 403, answer.text()
            assert "CSRF" in answer.text()
        # Another officer session (a new cookie) cannot replay this session's token.
        other = browser_context(browser, console, console.officer)
        try:
            answer = other.request.post(
                url, form={"reason": "keyCompromise", "confirm": "yes", "csrf_token": token}
            )
            assert answer.status == 403
        finally:
            other.close()
    finally:
        context.close()
    assert _ocsp_status(console, victim.crt) == ocsp.OCSPCertStatus.GOOD


def test_main_pages_render_for_an_officer(console: Console, browser: Any) -> None:
    for name, size in (
        ("desktop", {"width": 1100, "height": 800}),
        ("phone", {"width": 390, "height": 800}),
    ):
        context = browser_context(browser, console, console.officer, viewport=size)
        try:
            page = context.new_page()
            for path, title in (
                ("/console", "Dashboard"),
                ("/console/audit", "Audit log"),
                ("/console/provisioners", "Provisioners"),
            ):
                response = page.goto(f"{console.ca.url}{path}")
                assert response is not None and response.status == 200
                assert page.locator("h1").inner_text() == title
                headers = response.headers
                assert "script-src" not in headers["content-security-policy"]
                assert "default-src 'none'" in headers["content-security-policy"]
                if name == "desktop" or path == "/console":
                    screenshot(page, f"{title.lower().replace(' ', '-')}-{name}")
            page.goto(f"{console.ca.url}/console/audit")
            assert "Hash chain intact" in page.locator("main").inner_text()
        finally:
            context.close()


def test_rejected_request_tells_the_waiting_client_why(console: Console, tmp_path: Path) -> None:
    crt, key = tmp_path / "x.crt", tmp_path / "x.key"
    process, request_id, code = _start_waiting_request(
        console, "visitor", crt, key, provisioner="open-doors"
    )
    assert code is None
    listed = ok(
        "ca",
        "requests",
        "list",
        "--format",
        "json",
        "--dir",
        console.ca.home,
        "--password-file",
        console.ca.password_file,
    ).stdout
    assert request_id in listed
    ok(
        "ca",
        "requests",
        "reject",
        request_id,
        "--reason",
        "unknown device",
        *console.officer_args(),
    )
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 1
    told = errors.strip().splitlines()[-1]
    assert told.startswith(
        f"error: request {request_id} was rejected by an officer: unknown device;"
    )
    assert not crt.exists() and not key.exists()  # nothing left to resume
