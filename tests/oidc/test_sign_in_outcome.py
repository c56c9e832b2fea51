"""What the person sees at the end of an OpenID sign-in (``cert request --provisioner``): the
browser's page tells the real outcome, a refused code exchange suggests the fix, a refused
subject says who signed in and which names they may have, and SUBJECT may be left out.
A real ``ostiary ca serve``, a real oidc-provider-mock, the CLI in a subprocess.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from cryptography import x509

from ..client.conftest import RunningCA
from .conftest import CONFIDENTIAL, PUBLIC, Provider
from .sign_in_cli import Request, start_cert_request
from .test_enroll import _names, _one_error_line


def _request(ca: RunningCA, folder: Path, provisioner: str, *subject: str) -> Request:
    """``ostiary cert request [SUBJECT] CRT KEY --provisioner NAME --no-browser``."""
    files = [str(folder / "user.crt"), str(folder / "user.key")]
    return start_cert_request(ca, [*subject, *files, "--provisioner", provisioner])


def _browser_page(provider: Provider, request: Request, sub: str) -> str:
    """Sign in as ``sub`` and follow the redirect back: the text of the page shown."""
    location = provider.sign_in(request.url, sub, follow=False)
    return httpx.get(location, timeout=60).text


def test_refused_code_exchange_is_shown_in_the_browser_and_suggests_the_secret(
    oidc_ca: RunningCA, provider: Provider, tmp_path: Path
) -> None:
    """oidc-provider-mock wants a client secret, as Entra does for a web app: the public
    provisioner's code exchange is refused.
    """
    provider.set_user("bea", email="bea@corp.example", email_verified=True)
    request = _request(oidc_ca, tmp_path, PUBLIC, "bea@corp.example")
    page = _browser_page(provider, request, "bea")
    code, err = request.finish()
    assert code == 1
    assert "Signed in" not in page
    assert "did not succeed" in page and "invalid_client" in page
    line = _one_error_line(err)
    assert "refused the code: invalid_client" in line
    assert f"ostiary ca provisioner update {PUBLIC} --client-secret-file" in line
    assert not (tmp_path / "user.crt").exists()


def test_a_good_sign_in_says_signed_in_and_subject_may_be_left_out(
    oidc_ca: RunningCA, provider: Provider, tmp_path: Path
) -> None:
    provider.set_user(
        "dora", email="dora@corp.example", email_verified=True, upn="dora@corp.example"
    )
    request = _request(oidc_ca, tmp_path, CONFIDENTIAL)  # no SUBJECT
    page = _browser_page(provider, request, "dora")
    code, err = request.finish()
    assert code == 0, err
    assert "Signed in." in page and "did not succeed" not in page
    certificate = x509.load_pem_x509_certificates((tmp_path / "user.crt").read_bytes())[0]
    assert certificate.subject.rfc4514_string() == "CN=dora@corp.example"
    assert _names(tmp_path / "user.crt") == ["upn:dora@corp.example", "email:dora@corp.example"]


def test_a_refused_subject_says_who_signed_in_and_what_they_may_have(
    oidc_ca: RunningCA, provider: Provider, tmp_path: Path
) -> None:
    provider.set_user(
        "alice", email="alice@corp.example", email_verified=True, upn="alice@corp.example"
    )
    request = _request(oidc_ca, tmp_path, CONFIDENTIAL, "alice")
    provider.sign_in(request.url, "alice")
    code, err = request.finish()
    assert code == 1
    line = _one_error_line(err)
    assert "common name 'alice', which is not authorized" in line
    assert "you signed in as alice@corp.example" in line
    assert "upn:alice@corp.example" in line and "email:alice@corp.example" in line
    assert "leave SUBJECT out" in line
    assert not (tmp_path / "user.crt").exists()
