"""Officers sign in to the console with OpenID Connect: a real ``ostiary ca serve``, a real
OpenID provider (oidc-provider-mock), and the test playing the browser over HTTPS (httpx
with a cookie jar), posting the provider's login form like a person would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from cryptography import x509

from ostiary.server.console.sessions import FLOW_COOKIE, SESSION_COOKIE
from ostiary.tls import client_context

from ..client.conftest import PROVISIONER, RunningCA, ok
from ..oidc.conftest import CLIENT_ID, Provider, _start_provider
from .conftest import screenshot

SIGN_IN = "corp-console"
NO_ADMINS = "corp-users"
PUBLIC_APP = "corp-public"  # admins, but no client secret: the CA cannot be its client
ADMIN = "admin@corp.example"
HTML = {"Accept": "text/html"}
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


@dataclass
class Setup:
    ca: RunningCA
    provider: Provider
    folder: Path

    def browser(self, certificate: tuple[Path, Path] | None = None) -> httpx.Client:
        """A fresh browser profile for the CA: its own cookies, a certificate or none."""
        roots = x509.load_pem_x509_certificates(self.ca.root_file.read_bytes())
        tls = client_context(roots)
        if certificate is not None:
            tls.load_cert_chain(*certificate)
        return httpx.Client(base_url=self.ca.url, verify=tls, headers=HTML)

    def start(self, browser: httpx.Client) -> str:
        """Click "Sign in with …": the provider's authorization URL the CA sends us to."""
        answer = browser.get("/console/oidc/sign-in", params={"provisioner": SIGN_IN})
        assert answer.status_code == 303, answer.text
        return answer.headers["location"]

    def callback_for(self, authorization_url: str, sub: str) -> str:
        """Sign in at the provider as ``sub``; the callback URL it redirects to (on the CA)."""
        return self.provider.sign_in(authorization_url, sub, follow=False)

    def sign_in(self, browser: httpx.Client, sub: str) -> httpx.Response:
        return browser.get(self.callback_for(self.start(browser), sub))

    def enroll(self, name: str) -> tuple[Path, Path]:
        """A certificate (not an officer's); its files."""
        crt, key = self.folder / f"{name}.crt", self.folder / f"{name}.key"
        token = self.ca.token(name, not_after="1h")
        ok("cert", "request", name, crt, key, "--token", token, "--not-after", "1h",
           "--ca-url", self.ca.url, "--root", str(self.ca.root_file))  # fmt: skip
        return crt, key


def _serial(crt: Path) -> int:
    return x509.load_pem_x509_certificates(crt.read_bytes())[0].serial_number


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("console-oidc")
    for provider in _start_provider(folder / "provider.log"):
        provider.set_user("admin", email=ADMIN, email_verified=True)
        provider.set_user("bob", email="bob@corp.example", email_verified=True)
        password_file = folder / "password"
        password_file.write_text("console oidc tests\n")
        secret_file = folder / "client-secret"
        secret_file.write_text("console-secret\n")
        secret_file.chmod(0o600)
        ca = RunningCA(folder / "ca", password_file)
        ca.init()
        common = ["--type", "oidc", "--configuration-endpoint", provider.configuration_endpoint,
                  "--client-id", CLIENT_ID, "--domains", "corp.example"]  # fmt: skip
        ca.ca("provisioner", "add", SIGN_IN, *common, "--admins", ADMIN,
              "--client-secret-file", str(secret_file))  # fmt: skip
        ca.ca("provisioner", "add", NO_ADMINS, *common,
              "--client-secret-file", str(secret_file))  # fmt: skip
        ca.ca("provisioner", "add", PUBLIC_APP, *common, "--admins", ADMIN)
        ca.start()
        try:
            yield Setup(ca, provider, folder)
        finally:
            ca.stop()


def _csrf(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def test_visitor_gets_401_offering_sign_in_with_admin_providers_only(setup: Setup) -> None:
    with setup.browser() as browser:
        page = browser.get("/console")
    assert page.status_code == 401
    assert f'href="/console/oidc/sign-in?provisioner={SIGN_IN}"' in page.text
    assert f"Sign in with {SIGN_IN}" in page.text
    assert NO_ADMINS not in page.text and PUBLIC_APP not in page.text


def test_admin_signs_in_revokes_with_csrf_and_signs_out(setup: Setup) -> None:
    serial = _serial(setup.enroll("door-to-revoke")[0])
    with setup.browser() as browser:
        authorization_url = setup.start(browser)
        query = parse_qs(urlsplit(authorization_url).query)
        assert query["code_challenge_method"] == ["S256"]
        assert query["redirect_uri"] == [f"{setup.ca.url}/console/oidc/callback"]
        assert query["client_id"] == [CLIENT_ID]
        assert len(query["state"][0]) >= 43 and len(query["nonce"][0]) >= 43
        flow_cookie = browser.cookies.jar
        assert any(c.name == FLOW_COOKIE and c.secure for c in flow_cookie)

        signed_in = browser.get(setup.callback_for(authorization_url, "admin"))
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/console"
        set_cookie = signed_in.headers.get_list("set-cookie")
        session_header = next(h for h in set_cookie if h.startswith(SESSION_COOKIE + "="))
        for attribute in ("Secure", "HttpOnly", "SameSite=lax", "Path=/", "Max-Age=28800"):
            assert attribute.lower() in session_header.lower(), session_header

        dashboard = browser.get("/console")
        assert dashboard.status_code == 200, dashboard.text
        assert f"Signed in as <strong>{ADMIN}</strong>" in dashboard.text
        token = _csrf(dashboard)

        revoke = f"/console/certificates/{serial:x}/revoke"
        form = {"confirm": "yes", "reason": "keyCompromise"}
        refused = browser.post(revoke, data=form)  # no CSRF token: refused
        assert refused.status_code == 403
        refused = browser.post(revoke, data={**form, "csrf_token": "0" * 64})
        assert refused.status_code == 403
        done = browser.post(revoke, data={**form, "csrf_token": token})
        assert done.status_code == 303, done.text

        detail = browser.get(done.headers["location"])
        assert detail.status_code == 200 and "revoked" in detail.text.lower()
        audit = browser.get("/console/audit", params={"actor": "officer-oidc:"})
        assert f"officer-oidc:{ADMIN}" in audit.text
        assert "certificate.revoked" in audit.text and "console.signed_in" in audit.text

        session_id = browser.cookies[SESSION_COOKIE]
        out = browser.post("/console/oidc/sign-out", data={"csrf_token": token})
        assert out.status_code == 303
        assert browser.get("/console").status_code == 401
    with setup.browser() as thief:  # the old session id is worth nothing now
        thief.cookies.set(SESSION_COOKIE, session_id, domain="127.0.0.1")
        assert thief.get("/console").status_code == 401


def test_non_admin_identity_is_refused_with_403(setup: Setup) -> None:
    with setup.browser() as browser:
        answer = setup.sign_in(browser, "bob")
        assert answer.status_code == 403, answer.text
        assert "not among the admins" in answer.text
        assert SESSION_COOKIE not in browser.cookies
        assert browser.get("/console").status_code == 401


def test_an_unverified_email_equal_to_an_admins_is_refused_with_403(setup: Setup) -> None:
    """Issue 22, finding 7: Entra sends no email_verified, and users can set ``email``."""
    setup.provider.set_user("mallory", email=ADMIN, upn="mallory@corp.example")
    with setup.browser() as browser:
        answer = setup.sign_in(browser, "mallory")
        assert answer.status_code == 403, answer.text
        assert SESSION_COOKIE not in browser.cookies
        assert browser.get("/console").status_code == 401


def test_refused_oidc_admin_is_told_to_ask_for_the_provisioners_admins(setup: Setup) -> None:
    with setup.browser() as browser:
        refused = setup.sign_in(browser, "bob")
    assert refused.status_code == 403
    assert f"ostiary ca provisioner update {SIGN_IN} --admins" in refused.text
    assert "officer add" not in refused.text
    # Its twin: a certificate without the officer role is told about the officer role.
    with setup.browser(setup.enroll("carol-403")) as browser:
        by_certificate = browser.get("/console")
    assert by_certificate.status_code == 403
    assert "ostiary ca officer add CN" in by_certificate.text
    assert "--admins" not in by_certificate.text


def test_wrong_state_is_refused_and_spends_the_flow(setup: Setup) -> None:
    with setup.browser() as browser:
        callback = setup.callback_for(setup.start(browser), "admin")
        parts = urlsplit(callback)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        forged = urlunsplit(parts._replace(query=urlencode({**query, "state": "x" * 43})))
        assert browser.get(forged).status_code == 401
        assert browser.get(callback).status_code == 401  # the flow is gone with the first try
        assert SESSION_COOKIE not in browser.cookies


def test_callback_in_another_browser_is_refused(setup: Setup) -> None:
    """Login CSRF: a victim's browser fed the attacker's callback has no matching flow."""
    with setup.browser() as attacker, setup.browser() as victim:
        callback = setup.callback_for(setup.start(attacker), "admin")
        assert victim.get(callback).status_code == 401
        assert SESSION_COOKIE not in victim.cookies


def test_replayed_callback_is_refused(setup: Setup) -> None:
    with setup.browser() as browser:
        callback = setup.callback_for(setup.start(browser), "admin")
        flow_id = browser.cookies[FLOW_COOKIE]
        assert browser.get(callback).status_code == 303
    with setup.browser() as replay:  # the same flow cookie and callback, once more
        replay.cookies.set(FLOW_COOKIE, flow_id, domain="127.0.0.1")
        answer = replay.get(callback)
        assert answer.status_code == 401
        assert SESSION_COOKIE not in replay.cookies


def test_unknown_or_adminless_provisioner_cannot_start_sign_in(setup: Setup) -> None:
    with setup.browser() as browser:
        for name in (NO_ADMINS, PUBLIC_APP, PROVISIONER, "nope", "x" * 300):
            answer = browser.get("/console/oidc/sign-in", params={"provisioner": name})
            assert answer.status_code == 404, (name, answer.text)


def test_non_officer_certificate_with_an_oidc_session_is_the_session(setup: Setup) -> None:
    """A browser that presents a user certificate (403 alone) may still sign in as admin."""
    with setup.browser(setup.enroll("carol")) as browser:
        assert browser.get("/console").status_code == 403
        assert setup.sign_in(browser, "admin").status_code == 303
        dashboard = browser.get("/console")
        assert dashboard.status_code == 200
        assert f"Signed in as <strong>{ADMIN}</strong>" in dashboard.text


def test_real_chromium_signs_in_through_the_provider(setup: Setup, browser: Any) -> None:
    """The cookies (``__Host-``, Secure, SameSite=Lax) survive real cross-site redirects."""
    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(f"{setup.ca.url}/console")
        screenshot(page, "oidc-sign-in")
        page.click(f"text=Sign in with {SIGN_IN}")
        page.fill('input[name="sub"]', "admin")
        page.click('button:has-text("Authorize")')
        page.wait_for_url(f"{setup.ca.url}/console")
        assert f"Signed in as {ADMIN}" in page.inner_text("header")
        screenshot(page, "oidc-dashboard")
        page.click('button:has-text("Sign out")')
        page.wait_for_url(f"{setup.ca.url}/console")
        assert "Sign in with" in page.content()
    finally:
        context.close()


def test_session_ends_when_its_provisioner_is_removed(setup: Setup) -> None:
    """Sessions are checked against the provisioner's admins on every page."""
    common = ["--type", "oidc", "--configuration-endpoint",
              setup.provider.configuration_endpoint, "--client-id", CLIENT_ID]  # fmt: skip
    setup.ca.ca("provisioner", "add", "short-lived", *common, "--admins", ADMIN,
                "--client-secret-file", str(setup.folder / "client-secret"))  # fmt: skip
    with setup.browser() as browser:
        answer = browser.get("/console/oidc/sign-in", params={"provisioner": "short-lived"})
        assert browser.get(setup.callback_for(answer.headers["location"], "admin")).is_redirect
        assert browser.get("/console").status_code == 200
        setup.ca.ca("provisioner", "remove", "short-lived")
        assert browser.get("/console").status_code == 401


def test_a_restart_signs_no_one_out(setup: Setup) -> None:
    """Flows, sessions and the CSRF key are in the database, not in one process's memory:
    what holds across a restart holds across worker processes and replicas too."""
    with setup.browser() as browser:
        authorization_url = setup.start(browser)
        setup.ca.stop()
        setup.ca.start()
        signed_in = browser.get(setup.callback_for(authorization_url, "admin"))
        assert signed_in.status_code == 303, signed_in.text
        token = _csrf(browser.get("/console"))
        setup.ca.stop()
        setup.ca.start()
        assert browser.get("/console").status_code == 200
        out = browser.post("/console/oidc/sign-out", data={"csrf_token": token})
        assert out.status_code == 303, out.text
        assert browser.get("/console").status_code == 401
