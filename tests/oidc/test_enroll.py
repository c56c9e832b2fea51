"""``ostiary cert request --provisioner NAME`` end to end: a real ``ostiary ca serve``, a real
OpenID provider, the CLI in a subprocess with ``--no-browser``, and the test as the browser.
"""

from __future__ import annotations

import json
import socket
import stat
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from ostiary.client.oidc import check_id_token_origin
from ostiary.core.errors import Unauthorized
from ostiary.core.names import format_general_name, sans_of
from ostiary.tls import client_context

from ..client.conftest import OSTIARY, RunningCA, ok
from .conftest import (
    CLIENT_ID,
    CONFIDENTIAL,
    MFA_POLICY,
    PUBLIC,
    SECRET,
    UNREACHABLE,
    Provider,
)
from .sign_in_cli import Request, start_cert_request


def _request(ca: RunningCA, folder: Path, subject: str, provisioner: str, *extra: str) -> Request:
    files = [str(folder / "user.crt"), str(folder / "user.key")]
    return start_cert_request(ca, [subject, *files, "--provisioner", provisioner, *extra])


def _https(ca: RunningCA) -> httpx.Client:
    roots = x509.load_pem_x509_certificates(ca.root_file.read_bytes())
    return httpx.Client(base_url=ca.url, verify=client_context(roots))


def _closed(redirect_uri: str) -> bool:
    parts = urlsplit(redirect_uri)
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", parts.port or 0)) != 0


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    return last


def _names(crt: Path) -> list[str]:
    certificate = x509.load_pem_x509_certificates(crt.read_bytes())[0]
    return [format_general_name(n) for n in sans_of(certificate.extensions)]


def test_sign_in_issues_certificate_and_p12_then_renews_without_signing_in(
    oidc_ca: RunningCA, provider: Provider, tmp_path: Path
) -> None:
    provider.set_user(
        "alice", email="alice@corp.example", email_verified=True, upn="alice@corp.example"
    )
    p12_file = tmp_path / "user.p12"
    request = _request(
        oidc_ca, tmp_path, "alice@corp.example", CONFIDENTIAL, "--p12", str(p12_file)
    )
    query = parse_qs(urlsplit(request.url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"][0].startswith("http://127.0.0.1:")
    assert len(query["state"][0]) >= 32 and "." in query["nonce"][0]

    provider.sign_in(request.url, "alice")
    code, err = request.finish()

    assert code == 0, err
    assert _names(tmp_path / "user.crt") == ["upn:alice@corp.example", "email:alice@corp.example"]
    assert stat.S_IMODE((tmp_path / "user.key").stat().st_mode) == 0o600
    key, certificate, _ = pkcs12.load_key_and_certificates(p12_file.read_bytes(), None)
    assert key is not None and certificate is not None
    assert _closed(request.redirect_uri)
    assert SECRET not in err

    before = x509.load_pem_x509_certificates((tmp_path / "user.crt").read_bytes())[0]
    ok("cert", "renew", tmp_path / "user.crt", tmp_path / "user.key", "--force",
       "--ca-url", oidc_ca.url, "--root", oidc_ca.root_file)  # fmt: skip
    after = x509.load_pem_x509_certificates((tmp_path / "user.crt").read_bytes())[0]
    assert after.serial_number != before.serial_number
    for certificate in (before, after):
        policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies)
        assert MFA_POLICY in [p.policy_identifier.dotted_string for p in policies.value]
    assert _names(tmp_path / "user.crt") == ["upn:alice@corp.example", "email:alice@corp.example"]


def test_confidential_app_info_names_the_ca_as_redeemer_and_never_the_secret(
    oidc_ca: RunningCA,
) -> None:
    for name, exchange in ((CONFIDENTIAL, "ca"), (PUBLIC, "client")):
        with _https(oidc_ca) as http:
            info = http.get(f"/provisioners/{name}")
        assert info.status_code == 200
        assert info.json()["code_exchange"] == exchange
        assert info.json()["client_id"] == CLIENT_ID
        assert SECRET not in info.text and "secret" not in info.text


def test_public_app_code_refused_by_the_provider_is_a_clear_error(
    oidc_ca: RunningCA, provider: Provider, tmp_path: Path
) -> None:
    """A public app redeems its code itself, with the PKCE verifier and no secret.

    oidc-provider-mock (authlib's code grant) only accepts secret-based client
    authentication, so here the provider refuses, which must read as one clear line;
    the public path to the CA is exercised in-process in test_public_app_sdk.py.
    """
    provider.set_user("bea", email="bea@corp.example")
    request = _request(oidc_ca, tmp_path, "bea@corp.example", PUBLIC)
    provider.sign_in(request.url, "bea")
    code, err = request.finish()
    assert code == 1
    assert "refused the code: invalid_client" in _one_error_line(err)
    assert not (tmp_path / "user.crt").exists()


def test_callback_with_wrong_state_is_refused_and_the_listener_closes(
    oidc_ca: RunningCA, tmp_path: Path
) -> None:
    request = _request(oidc_ca, tmp_path, "alice@corp.example", PUBLIC)
    forged = request.redirect_uri + "?" + urlencode({"code": "stolen", "state": "attacker"})
    httpx.get(forged)
    code, err = request.finish()
    assert code == 1
    assert "wrong 'state'" in _one_error_line(err)
    assert _closed(request.redirect_uri)
    assert not (tmp_path / "user.crt").exists() and not (tmp_path / "user.key").exists()


def test_declined_consent_is_a_clear_error(
    oidc_ca: RunningCA, provider: Provider, tmp_path: Path
) -> None:
    request = _request(oidc_ca, tmp_path, "alice@corp.example", PUBLIC)
    location = provider.deny(request.url)
    assert "error=access_denied" in location
    code, err = request.finish()
    assert code == 1
    assert "declined" in _one_error_line(err) and "access_denied" in err
    assert _closed(request.redirect_uri)


def test_no_sign_in_within_the_timeout(oidc_ca: RunningCA, tmp_path: Path) -> None:
    request = _request(oidc_ca, tmp_path, "alice@corp.example", PUBLIC, "--timeout", "1")
    code, err = request.finish()
    assert code == 1
    assert "no sign-in within 1 s" in _one_error_line(err)
    assert _closed(request.redirect_uri)


def test_unreachable_provider_is_a_clear_error(oidc_ca: RunningCA, tmp_path: Path) -> None:
    args = [*OSTIARY, "cert", "request", "a@corp.example", str(tmp_path / "a.crt"),
            str(tmp_path / "a.key"), "--provisioner", UNREACHABLE, "--no-browser",
            "--ca-url", oidc_ca.url, "--root", str(oidc_ca.root_file)]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "OpenID provider cannot be reached" in _one_error_line(result.stderr)


def test_id_token_from_another_issuer_is_named_as_a_wrong_provider(provider: Provider) -> None:
    token = provider.id_token("alice", nonce="n", host="localhost")
    info = {"issuer": provider.issuer}
    with pytest.raises(Unauthorized, match="wrong provider"):
        check_id_token_origin(token, info, "n")


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        pytest.param(f"/provisioners/{PUBLIC}/sign", {"csr": "x", "id_token": "a.b.c"}, 400,
                     id="fail/garbage-csr"),
        pytest.param("/provisioners/laptops/sign", {"csr": "x", "id_token": "a"}, 400,
                     id="fail/jwk-provisioner-garbage-csr"),
        pytest.param(f"/provisioners/{PUBLIC}/sign", {"csr": "x"}, 400, id="fail/no-id-token"),
        pytest.param(f"/provisioners/{PUBLIC}/token",
                     {"code": "c", "code_verifier": "v" * 43, "redirect_uri": "http://127.0.0.1:1/"},
                     400, id="fail/public-app-code-at-ca"),
        pytest.param(f"/provisioners/{CONFIDENTIAL}/token",
                     {"code": "c", "code_verifier": "v" * 43, "redirect_uri": "https://evil.example/"},
                     400, id="fail/non-loopback-redirect"),
        pytest.param(f"/provisioners/{CONFIDENTIAL}/token",
                     {"code": "c", "code_verifier": "v" * 43, "redirect_uri": "http://127.0.0.1:1/"},
                     401, id="fail/unknown-code"),
        pytest.param(f"/provisioners/{CONFIDENTIAL}/token",
                     {"code": "c", "code_verifier": "v" * 42 + "!", "redirect_uri": "http://127.0.0.1:1/"},
                     400, id="fail/verifier-not-unreserved-characters"),
    ],
)  # fmt: skip
def test_bad_requests_get_problem_documents(
    oidc_ca: RunningCA, path: str, body: dict[str, str], status: int
) -> None:
    with _https(oidc_ca) as http:
        answer = http.post(path, json=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert SECRET not in answer.text


def test_provisioner_info_of_unknown_or_jwk_provisioner_is_not_found(oidc_ca: RunningCA) -> None:
    for name in ("laptops", "nobody"):
        with _https(oidc_ca) as http:
            answer = http.get(f"/provisioners/{name}")
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("application/problem+json")


def test_provisioner_list_shows_oidc_provisioners_without_the_secret(oidc_ca: RunningCA) -> None:
    listed = json.loads(oidc_ca.ca("provisioner", "list", "--format", "json").stdout)
    types = {p["name"]: p["type"] for p in listed}
    assert types[PUBLIC] == types[CONFIDENTIAL] == "oidc"
    assert SECRET not in json.dumps(listed)


def test_provisioner_add_oidc_refuses_bad_settings(oidc_ca: RunningCA) -> None:
    from ..client.conftest import refused

    folder: list[str | Path] = ["--dir", oidc_ca.home, "--password-file", oidc_ca.password_file]
    base: list[str | Path] = ["ca", "provisioner", "add", "x", "--type", "oidc", *folder]
    assert "needs --configuration-endpoint" in refused(*base).stderr
    plain = ["--configuration-endpoint", "http://idp.example/.well-known/openid-configuration",
             "--client-id", "c"]  # fmt: skip
    assert "https://" in refused(*base, *plain).stderr
    https = ["--configuration-endpoint", "https://idp.example/.well-known/openid-configuration",
             "--client-id", "c"]  # fmt: skip
    assert "profile user or client" in refused(*base, *https, "--profile", "server").stderr
    assert "policy OID" in refused(*base, *https, "--policy-oid", "not-an-oid").stderr
