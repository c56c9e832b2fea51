"""The console's defences (issue 22 review), against the real ``ostiary ca serve`` of the
session, as an officer over mTLS with a plain HTTP client: requester text is escaped on
every page, every page carries the content security policy, every form POST needs the
session's CSRF token (and changes nothing without it), and the CSRF cookie is a ``__Host-``
cookie that scripts and other sites cannot use.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ostiary.server.console.security import CONTENT_SECURITY_POLICY, STRICT_TRANSPORT_SECURITY
from tests.console.conftest import Console, Identity

HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


@pytest.fixture
def api(console: Console) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(console.ca.root_file))
    with httpx.Client(base_url=console.ca.url, verify=context) as client:
        yield client


def officer_client(console: Console, identity: Identity | None = None) -> httpx.Client:
    """A fresh officer session (its own cookie jar) over mTLS."""
    identity = identity or console.officer
    context = ssl.create_default_context(cafile=str(console.ca.root_file))
    context.load_cert_chain(identity.crt, identity.key)
    return httpx.Client(base_url=console.ca.url, verify=context, headers={"Accept": "text/html"})


def submit(api: httpx.Client, common_name: str, note: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    answer = api.post("/requests", json={"csr": csr, "provisioner": "open-doors", "note": note})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["request_id"])


def csrf_token(officer: httpx.Client) -> str:
    found = _CSRF.search(officer.get("/console/requests").text)
    assert found is not None
    return found.group(1)


def test_requester_text_is_escaped_on_every_page(console: Console, api: httpx.Client) -> None:
    request_id = submit(api, f"x{HOSTILE}", HOSTILE)
    with officer_client(console) as officer:
        pending = officer.get("/console/requests")
        assert pending.status_code == 200
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pending.text  # shown, as text
        token = csrf_token(officer)
        approved = officer.post(
            f"/console/requests/{request_id}/approve", data={"csrf_token": token}
        )
        assert approved.status_code == 303, approved.text
        certificate_page = approved.headers["location"]
        pages = [
            "/console",
            "/console/requests",
            "/console/certificates",
            f"/console/certificates?q={HOSTILE}",
            certificate_page,
            "/console/audit",
            "/console/provisioners",
            f"/console/certificates/{HOSTILE}",
            f"/console/no-such-page/{HOSTILE}",
        ]
        shown = 0
        for path in pages:
            answer = officer.get(path)
            assert answer.status_code in (200, 400, 404), (path, answer.status_code)
            if not answer.headers["content-type"].startswith("text/html"):
                # No console route: the app's problem document, which no browser renders.
                assert answer.headers["content-type"] == "application/problem+json", path
                continue
            body = answer.text
            for raw in ("<script", "<img", "\"'>"):
                assert raw not in body, (path, raw)
            shown += "alert(1)" in body
        assert shown >= 3  # the list, the search box and the certificate show the text


def test_every_page_carries_the_content_security_policy_and_hsts(console: Console) -> None:
    assert "script-src" not in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    with officer_client(console) as officer:
        for path in (
            "/console",
            "/console/requests",
            "/console/certificates",
            "/console/audit",
            "/console/provisioners",
            "/console/certificates/zz",  # an error page
        ):
            answer = officer.get(path)
            assert "content-security-policy" in answer.headers, (path, answer.status_code)
            assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["cache-control"] == "no-store"
            assert answer.headers["strict-transport-security"] == STRICT_TRANSPORT_SECURITY
        style = officer.get("/console/static/console.css")
        assert style.status_code == 200
        assert style.headers["strict-transport-security"] == STRICT_TRANSPORT_SECURITY
    with officer_client(console, console.stranger) as stranger:
        refused = stranger.get("/console")  # the refusal page too
        assert refused.status_code == 403
        assert refused.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert refused.headers["strict-transport-security"] == STRICT_TRANSPORT_SECURITY


def test_the_csrf_cookie_is_a_host_cookie_scripts_and_other_sites_cannot_use(
    console: Console,
) -> None:
    with officer_client(console) as officer:
        answer = officer.get("/console")
    (cookie,) = answer.headers.get_list("set-cookie")
    name, _, attributes = cookie.partition("=")
    assert name == "__Host-ostiary-csrf"
    parts = {p.strip().split("=")[0].lower(): p.strip() for p in attributes.split(";")[1:]}
    assert "secure" in parts
    assert "httponly" in parts
    assert parts["samesite"].lower() == "samesite=strict"
    assert parts["path"] == "Path=/"
    assert "domain" not in parts  # required by the __Host- prefix (RFC 6265bis 4.1.3.2)


def test_every_form_post_needs_the_sessions_csrf_token(console: Console, api: httpx.Client) -> None:
    waiting = submit(api, "csrf-wait", "waiting")
    victim = console.enroll("csrf-victim")
    serial = f"{x509.load_pem_x509_certificate(victim.crt.read_bytes()).serial_number:x}"
    forms = {
        f"/console/certificates/{serial}/revoke": {"reason": "keyCompromise", "confirm": "yes"},
        "/console/requests/reject-all": {"provisioner": "open-doors", "confirm": "yes"},
        f"/console/requests/{waiting}/approve": {"code": ""},
        f"/console/requests/{waiting}/reject": {"reason": "no"},
        "/console/oidc/sign-out": {"next": "/console"},
    }
    with officer_client(console) as other:
        others_token = csrf_token(other)
    with officer_client(console) as officer:
        token = csrf_token(officer)
        for url, form in forms.items():
            for bad in (None, "", "0" * len(token), token[:-1], others_token, token.upper()):
                sent = form if bad is None else {**form, "csrf_token": bad}
                answer = officer.post(url, data=sent)
                assert answer.status_code == 403, (url, bad, answer.text)
                assert "CSRF" in answer.text
        # Nothing changed: the request waits, the certificate is good.
        assert api.get(f"/requests/{waiting}").json()["status"] == "pending"
        assert serial not in officer.get("/console/certificates?status=revoked").text
        # The twins: the session's own token goes through.
        done = officer.post(
            f"/console/requests/{waiting}/reject", data={"reason": "no", "csrf_token": token}
        )
        assert done.status_code == 303, done.text
        revoked = officer.post(
            f"/console/certificates/{serial}/revoke",
            data={**forms[f"/console/certificates/{serial}/revoke"], "csrf_token": token},
        )
        assert revoked.status_code == 303, revoked.text
    assert api.get(f"/requests/{waiting}").json()["status"] == "rejected"
