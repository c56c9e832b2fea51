"""The SDK's sign-in as a public app: loopback listener, state, nonce and PKCE, then the CA.

oidc-provider-mock only redeems codes from clients that authenticate with a secret (authlib's
code grant), which a public app does not have; the redemption hook here adds the mock's
placeholder secret and otherwise sends exactly what :func:`redeem_at_provider` sends.
Everything else (the CA, the provider, the listener, the browser's requests) is real.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from ostiary.client.api import OstiaryClient
from ostiary.client.enrollment import request_certificate
from ostiary.client.oidc import AuthorizationRequest, LoopbackListener, OIDCSignIn
from ostiary.core.names import format_general_name, parse_subject, sans_of
from ostiary.provisioners.oidc_code_exchange import post_token_request

from ..client.conftest import RunningCA
from .conftest import PUBLIC, Provider


def _redeem_for_mock(info: Mapping[str, Any], request: AuthorizationRequest, code: str) -> str:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": request.redirect_uri,
        "client_id": str(info["client_id"]),
        "code_verifier": request.code_verifier,
        "client_secret": "mock-needs-one",
    }
    return post_token_request(str(info["token_endpoint"]), form)


def test_sdk_sign_in_enrolls_through_the_credential_hook(
    oidc_ca: RunningCA, provider: Provider
) -> None:
    provider.set_user(
        "cleo", email="cleo@corp.example", email_verified=True, upn="cleo.upn@corp.example"
    )
    browsers: list[threading.Thread] = []

    def browser(url: str) -> None:
        thread = threading.Thread(target=provider.sign_in, args=(url, "cleo"))
        thread.start()
        browsers.append(thread)

    sign_in = OIDCSignIn(PUBLIC, open_browser=browser, timeout=20, redeem=_redeem_for_mock)
    roots = x509.load_pem_x509_certificates(Path(oidc_ca.root_file).read_bytes())
    with OstiaryClient(oidc_ca.url, roots) as client:
        enrollment = request_certificate(
            client, parse_subject("cleo.upn@corp.example"), [], credential=sign_in
        )
    for thread in browsers:
        thread.join(10)
    certificate = enrollment.issued.certificate
    names = [format_general_name(n) for n in sans_of(certificate.extensions)]
    assert names == ["upn:cleo.upn@corp.example", "email:cleo@corp.example"]
    assert certificate.public_key() == enrollment.private_key.public_key()


def test_listener_ignores_other_paths_and_answers_once() -> None:
    import httpx

    with LoopbackListener() as listener:
        base = f"http://127.0.0.1:{listener.port}"
        assert httpx.get(base + "/favicon.ico").status_code == 404
        listener.finish("Signed in.")  # the outcome the page shows, once the code is redeemed
        page = httpx.get(listener.redirect_uri + "?code=a&state=b")
        assert page.status_code == 200 and "Signed in." in page.text
        assert httpx.get(listener.redirect_uri + "?code=c&state=d").status_code == 409
        assert listener.wait(1) == {"code": "a", "state": "b"}


def test_listener_page_waits_for_the_outcome_and_escapes_it() -> None:
    import httpx

    pages: list[httpx.Response] = []
    with LoopbackListener() as listener:
        browser = threading.Thread(
            target=lambda: pages.append(httpx.get(listener.redirect_uri + "?code=a&state=b"))
        )
        browser.start()
        listener.wait(5)
        listener.finish("The sign-in did not succeed: <script>x</script>")
        browser.join(10)
    assert "did not succeed: &lt;script&gt;" in pages[0].text
    assert "Signed in" not in pages[0].text
