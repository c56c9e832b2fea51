"""The ``/enroll`` page in headless Chromium at a phone's viewport: a real ``ostiary ca
serve``, a real OpenID provider (oidc-provider-mock), a person signing in (or typing an
officer's code) and downloading a signed profile, and a person outside the provisioner's
domains refused. Screenshots land in ``artifacts/console/``.
"""

from __future__ import annotations

import plistlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from sqlalchemy import func, select

from ostiary.server.routes.phones import TICKET_COOKIE
from ostiary.store import ScepChallenge, ScepRepository, Store, sqlite_url_for
from ostiary.tls import client_context
from tests.conftest import require_tool
from tests.server.audit_fault import REFUSE, audit_refused

from ..client.conftest import RunningCA, ok
from ..oidc.conftest import CLIENT_ID, Provider, _start_provider
from .conftest import screenshot

CORP = "corp"
PHONES = "phones"
ALICE = "alice@corp.example"
IPHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
    "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
}


@dataclass
class Setup:
    ca: RunningCA
    provider: Provider
    folder: Path

    def phone(self, browser: Any) -> Any:
        return browser.new_context(ignore_https_errors=True, accept_downloads=True, **IPHONE)

    def profile(self, data: bytes, name: str) -> dict[str, Any]:
        """``openssl smime -verify`` against our root; the plist inside."""
        signed, plist = self.folder / f"{name}.mobileconfig", self.folder / f"{name}.plist"
        signed.write_bytes(data)
        result = subprocess.run(
            [require_tool("openssl"), "smime", "-verify", "-inform", "DER", "-in", str(signed),
             "-CAfile", str(self.ca.root_file), "-out", str(plist)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = plistlib.loads(plist.read_bytes())
        return document

    def challenge_row(self, challenge: str) -> tuple[str, list[str], bool]:
        store = Store.from_url(sqlite_url_for(self.ca.home / "ostiary.db"))
        try:
            with store.transaction(read_only=True) as session:
                row = ScepRepository(session).find_challenge(PHONES, challenge)
                assert row is not None
                return row.subject, list(row.sans), row.used_at is None
        finally:
            store.dispose()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("enroll-page")
    for provider in _start_provider(folder / "provider.log"):
        provider.set_user("alice", email=ALICE, email_verified=True)
        provider.set_user("eve", email="eve@elsewhere.example", email_verified=True)
        password_file = folder / "password"
        password_file.write_text("enroll page tests\n")
        secret_file = folder / "client-secret"
        secret_file.write_text("enroll-secret\n")
        secret_file.chmod(0o600)
        ca = RunningCA(folder / "ca", password_file)
        ca.init()
        ca.ca("provisioner", "add", CORP, "--type", "oidc", "--configuration-endpoint",
              provider.configuration_endpoint, "--client-id", CLIENT_ID, "--domains",
              "corp.example", "--client-secret-file", str(secret_file))  # fmt: skip
        ca.ca("provisioner", "add", PHONES, "--type", "scep", "--profile", "user")
        ca.start()
        try:
            yield Setup(ca, provider, folder)
        finally:
            ca.stop()


def _sign_in(page: Any, setup: Setup, sub: str) -> Any:
    page.goto(f"{setup.ca.url}/enroll")
    page.get_by_role("link", name=f"Sign in with {CORP}").click()
    page.locator("input[type=text][name=sub]").fill(sub)
    with page.expect_navigation(url=lambda url: "/enroll/oidc/callback" in url) as landed:
        page.get_by_role("button", name="Authorize").click()
    return landed.value


def _download(page: Any) -> tuple[bytes, str]:
    with page.expect_response(lambda r: "/enroll/profile" in r.url) as answered:
        with page.expect_download() as downloaded:
            page.locator("#download").click()
    path = downloaded.value.path()
    return Path(path).read_bytes(), answered.value.headers["content-type"]


def test_signed_in_person_downloads_a_signed_profile_on_a_phone(setup: Setup, browser: Any) -> None:
    context = setup.phone(browser)
    try:
        page = context.new_page()
        page.goto(f"{setup.ca.url}/enroll")
        assert page.get_by_role("heading", name="A certificate for your phone").is_visible()
        assert "PKCS#12" in page.content()  # what Android users can do instead
        screenshot(page, "enroll-start-phone")
        answer = _sign_in(page, setup, "alice")
        assert answer.status == 200
        assert page.get_by_role("heading", name="Your profile is ready").is_visible()
        assert f"CN={ALICE}" in page.content()
        assert "Settings &gt; Profile Downloaded &gt; Install" in page.content()
        screenshot(page, "enroll-ready-phone")
        href = page.locator("#download").get_attribute("href")
        assert href == "/enroll/profile"  # the ticket is in a cookie, never in a URL
        ticket = next(c for c in context.cookies() if c["name"] == TICKET_COOKIE)
        assert ticket["secure"] and ticket["httpOnly"] and ticket["sameSite"] == "Strict"
        data, content_type = _download(page)
        assert content_type == "application/x-apple-aspen-config"

        again = page.goto(f"{setup.ca.url}{href}")  # the link works once
        assert again.status == 404
        assert "used or expired" in page.locator("[role=alert]").inner_text()
    finally:
        context.close()
    profile = setup.profile(data, "alice")
    scep = profile["PayloadContent"][1]
    assert scep["PayloadType"] == "com.apple.security.scep"
    content = scep["PayloadContent"]
    assert content["URL"] == f"http://127.0.0.1:{setup.ca.http_port}/scep/{PHONES}"
    assert content["Subject"] == [[["CN", ALICE]]]
    assert content["SubjectAltName"] == {"rfc822Name": ALICE}
    assert content["Keysize"] == 2048 and content["KeyIsExtractable"] is False
    # the challenge inside is a live one-time challenge bound to the signed-in identity
    assert setup.challenge_row(content["Challenge"]) == (f"CN={ALICE}", [f"email:{ALICE}"], True)


def test_identity_outside_the_provisioners_domains_is_refused(setup: Setup, browser: Any) -> None:
    context = setup.phone(browser)
    try:
        page = context.new_page()
        answer = _sign_in(page, setup, "eve")
        assert answer.status == 403
        alert = page.locator("[role=alert]").inner_text()
        assert "eve@elsewhere.example" in alert and "outside the domains" in alert
        assert "corp.example" in alert
        assert page.locator("#download").count() == 0
        screenshot(page, "enroll-refused-phone")
    finally:
        context.close()


def test_enrollment_code_gets_a_profile_once(setup: Setup, browser: Any) -> None:
    made = ok("ca", "enroll-code", "--provisioner", PHONES, "--subject", "bob@corp.example",
              "--san", "email:bob@corp.example", "--dir", setup.ca.home)  # fmt: skip
    code = made.stdout.strip().splitlines()[-1]
    assert len(code) == 14 and code.count("-") == 2
    context = setup.phone(browser)
    try:
        page = context.new_page()
        page.goto(f"{setup.ca.url}/enroll")
        page.get_by_label("Enrollment code").fill(code.lower().replace("-", " "))
        page.get_by_role("button", name="Get my profile").click()
        assert page.get_by_role("heading", name="Your profile is ready").is_visible()
        data, _ = _download(page)

        page.goto(f"{setup.ca.url}/enroll")  # the code works once
        page.get_by_label("Enrollment code").fill(code)
        with page.expect_response(lambda r: r.url.endswith("/enroll/code")) as answered:
            page.get_by_role("button", name="Get my profile").click()
        assert answered.value.status == 401
        assert "wrong, used or expired" in page.locator("[role=alert]").inner_text()
    finally:
        context.close()
    content = setup.profile(data, "bob")["PayloadContent"][1]["PayloadContent"]
    assert content["Subject"] == [[["CN", "bob@corp.example"]]]
    assert setup.challenge_row(content["Challenge"])[1] == ["email:bob@corp.example"]


def test_bad_requests_get_problems_and_change_nothing(setup: Setup) -> None:
    roots = x509.load_pem_x509_certificates(setup.ca.root_file.read_bytes())
    with httpx.Client(base_url=setup.ca.url, verify=client_context(roots)) as client:
        unknown = client.get("/enroll/oidc/sign-in", params={"provisioner": PHONES})
        assert unknown.status_code == 404  # a scep provisioner is no OpenID provider
        assert unknown.headers["content-type"].startswith("application/problem+json")
        client.cookies.set(TICKET_COOKIE, "x" * 43)
        no_ticket = client.get("/enroll/profile")
        assert no_ticket.status_code == 404
        as_json = client.post("/enroll/code", json={"code": "ABCD"})
        assert as_json.status_code == 415
        short = client.post("/enroll/code", data={"code": "ABCD"}, headers={"Accept": "text/html"})
        assert short.status_code == 401 and 'role="alert"' in short.text
        callback = client.get("/enroll/oidc/callback", params={"state": "s", "code": "c"})
        assert callback.status_code == 401  # no flow cookie: nothing to finish


def test_nothing_is_spent_while_the_audit_log_cannot_be_written(setup: Setup) -> None:
    """Issue 19: the code typed and the profile's download are each a 503 page with
    Retry-After while the audit log cannot be written; the code, the ticket and the names
    stay usable, and the same steps work once the fault is gone."""
    made = ok("ca", "enroll-code", "--provisioner", PHONES, "--subject", "carl@corp.example",
              "--san", "email:carl@corp.example", "--dir", setup.ca.home)  # fmt: skip
    code = made.stdout.strip().splitlines()[-1]
    url = sqlite_url_for(setup.ca.home / "ostiary.db")
    roots = x509.load_pem_x509_certificates(setup.ca.root_file.read_bytes())
    html = {"Accept": "text/html"}
    with httpx.Client(base_url=setup.ca.url, verify=client_context(roots), timeout=60) as phone:
        with audit_refused(url):
            typed = phone.post("/enroll/code", data={"code": code}, headers=html)
            assert typed.status_code == 503 and "Retry-After" in typed.headers, typed.text
            assert "audit log" in typed.text and REFUSE not in typed.text
        ready = phone.post("/enroll/code", data={"code": code}, headers=html)
        assert ready.status_code == 200, ready.text  # the code was not spent
        assert TICKET_COOKIE in phone.cookies
        before = _challenges(url)
        with audit_refused(url):
            download = phone.get("/enroll/profile", headers=html)
            assert download.status_code == 503 and "Retry-After" in download.headers
            assert "audit log" in download.text
            assert _challenges(url) == before
        profile = phone.get("/enroll/profile")  # the ticket was not spent
        assert profile.status_code == 200, profile.text
        assert phone.get("/enroll/profile").status_code == 404  # now it is
    content = setup.profile(profile.content, "carl")["PayloadContent"][1]["PayloadContent"]
    assert setup.challenge_row(content["Challenge"])[1] == ["email:carl@corp.example"]
    assert _challenges(url) == before + 1


def _challenges(url: str) -> int:
    store = Store.from_url(url)
    try:
        with store.transaction(read_only=True) as session:
            return int(session.scalar(select(func.count()).select_from(ScepChallenge)) or 0)
    finally:
        store.dispose()
