"""EST (RFC 7030) driven by curl and openssl, with the commands of docs/mdm.md: cacerts,
csrattrs, simpleenroll with a one-time code, simplereenroll over mTLS; a wrong or spent code
is a 401 with WWW-Authenticate, a malformed body a 400 problem, and nothing is issued.
The certificates pass ``openssl verify -purpose sslclient`` and pkilint.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ostiary.server.limits import Limits
from ostiary.store import sqlite_url_for
from tests.abuse import answers_until
from tests.conftest import require_tool
from tests.pkilint_helper import lint_certificate
from tests.scep.conftest import ScepServer, ostiary, start_ca
from tests.server.audit_fault import AUDIT_UNAVAILABLE, audit_refused

#: Refused credentials an address may send at once (the server's own limit).
FAILED_CREDENTIALS_BURST = Limits.default().failed_tokens.burst


@pytest.fixture(scope="module")
def est(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServer]:
    require_tool("curl")
    require_tool("openssl")
    server = start_ca(
        tmp_path_factory.mktemp("est"),
        "p256",
        [("gear", "--type", "est", "--profile", "client"), ("other", "--type", "est")],
        name="Est Test",
    )
    yield server
    server.serve.stop()


def _sh(server: ScepServer, folder: Path, script: str, provisioner: str = "gear") -> str:
    """Run ``script`` in bash with ``$EST`` (the provisioner's URL) and ``$ROOT``."""
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-ec", script],
        cwd=folder,
        env={
            **os.environ,
            "EST": f"{server.serve.https_url}/.well-known/est/{provisioner}",
            "ROOT": str(server.home / "certs" / "root.crt"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _code(server: ScepServer, subject: str, *sans: str, provisioner: str = "gear") -> str:
    args = [a for san in sans for a in ("--san", san)]
    made = ostiary(server.home, "ca", "est", "code", "--provisioner", provisioner,
                   "--subject", subject, *args)  # fmt: skip
    return made.strip().splitlines()[-1]


ENROLL = """
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {key} \
    -subj /CN={cn} -outform DER 2>/dev/null | openssl base64 |
  curl -sS --cacert "$ROOT" {auth} -H 'Content-Type: application/pkcs10' --data-binary @- \
    -D {headers} -o {body} -w '%{{http_code}}' "$EST/{operation}"
"""


def _enroll(
    server: ScepServer, folder: Path, name: str, cn: str, auth: str,
    operation: str = "simpleenroll", provisioner: str = "gear",
) -> tuple[str, str, str]:  # fmt: skip
    """(HTTP status, headers, body) of an enrollment with a new P-256 key in ``name``.key."""
    status = _sh(
        server, folder,
        ENROLL.format(key=f"{name}.key", cn=cn, auth=auth, headers=f"{name}.headers",
                      body=f"{name}.body", operation=operation),
        provisioner,
    )  # fmt: skip
    return status, (folder / f"{name}.headers").read_text(), (folder / f"{name}.body").read_text()


def _certificate(server: ScepServer, folder: Path, name: str) -> x509.Certificate:
    """The certificate in ``name``.body, read back with openssl (base64 certs-only PKCS#7)."""
    _sh(server, folder, f"openssl base64 -d -in {name}.body | "
        f"openssl pkcs7 -inform DER -print_certs -out {name}.crt")  # fmt: skip
    return x509.load_pem_x509_certificate((folder / f"{name}.crt").read_bytes())


def test_cacerts_and_csrattrs_read_with_openssl(est: ScepServer, tmp_path: Path) -> None:
    out = _sh(est, tmp_path, """
curl -sS --cacert "$ROOT" -D headers "$EST/cacerts" | openssl base64 -d |
  openssl pkcs7 -inform DER -print_certs -out est-ca.pem
grep -c 'BEGIN CERTIFICATE' est-ca.pem
curl -sS --cacert "$ROOT" "$EST/csrattrs" | openssl base64 -d | openssl asn1parse -inform DER
""")  # fmt: skip
    headers = (tmp_path / "headers").read_text().lower()
    assert "content-type: application/pkcs7-mime" in headers
    assert "content-transfer-encoding: base64" in headers
    assert out.splitlines()[0] == "2"  # the issuing CA and the root
    assert "ecdsa-with-SHA256" in out and "prime256v1" in out
    pems = (tmp_path / "est-ca.pem").read_bytes()
    chain = x509.load_pem_x509_certificates(pems)
    assert {c.subject for c in chain} == {est.serve.root.subject, _issuer(est).subject}


def _issuer(server: ScepServer) -> x509.Certificate:
    return x509.load_pem_x509_certificate((server.home / "certs" / "intermediate.crt").read_bytes())


def test_enroll_with_a_code_then_reenroll_over_mtls(est: ScepServer, tmp_path: Path) -> None:
    code = _code(est, "switch-1", "dns:switch-1.example")
    before = est.count_certificates()
    status, headers, _ = _enroll(est, tmp_path, "switch", "switch-1", f"-u 'switch-1:{code}'")
    assert status == "200"
    assert "application/pkcs7-mime; smime-type=certs-only" in headers.lower()
    assert "content-transfer-encoding: base64" in headers.lower()
    issued = _certificate(est, tmp_path, "switch")
    assert issued.subject.rfc4514_string() == "CN=switch-1"
    sans = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["switch-1.example"]  # the code's, not asked
    (tmp_path / "chain.pem").write_bytes((est.home / "certs" / "intermediate.crt").read_bytes())
    verified = _sh(est, tmp_path, 'openssl verify -CAfile "$ROOT" -untrusted chain.pem '
                   "-purpose sslclient switch.crt")  # fmt: skip
    assert verified.strip() == "switch.crt: OK"
    assert lint_certificate(issued.public_bytes(Encoding.DER)) == []
    assert est.count_certificates() == before + 1

    # the code is spent: a second enrollment with it is a 401 asking for Basic credentials
    status, headers, body = _enroll(est, tmp_path, "again", "switch-1", f"-u 'switch-1:{code}'")
    assert status == "401"
    assert 'www-authenticate: basic realm="ostiary-est"' in headers.lower()
    assert "one-time" in json.loads(body)["detail"]

    # re-enroll over mTLS with the current certificate and a new key: same names
    status, _, _ = _enroll(
        est, tmp_path, "renewed", "switch-1", "--cert switch.crt --key switch.key",
        operation="simplereenroll",
    )  # fmt: skip
    assert status == "200"
    renewed = _certificate(est, tmp_path, "renewed")
    assert renewed.subject == issued.subject
    assert renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName) == (
        issued.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    )
    assert renewed.public_key() != issued.public_key()
    assert lint_certificate(renewed.public_bytes(Encoding.DER)) == []
    assert est.count_certificates() == before + 2

    # a certificate of this EST provisioner also authorizes simpleenroll (same names)
    status, _, _ = _enroll(est, tmp_path, "bycert", "switch-1",
                           "--cert renewed.crt --key renewed.key")  # fmt: skip
    assert status == "200"
    assert _certificate(est, tmp_path, "bycert").subject == issued.subject


def test_refusals_issue_nothing(est: ScepServer, tmp_path: Path) -> None:
    code = _code(est, "switch-2")
    other = _code(est, "switch-3", provisioner="other")
    # a certificate of the CA from another EST provisioner, to try on gear's routes
    foreign = _code(est, "switch-4", provisioner="other")
    status, _, _ = _enroll(est, tmp_path, "foreign", "switch-4", f"-u 'x:{foreign}'",
                           provisioner="other")  # fmt: skip
    assert status == "200"
    _certificate(est, tmp_path, "foreign")
    before = est.count_certificates()
    cases = {
        "wrong code": (f"-u 'switch-2:{code}x'", "simpleenroll", "switch-2", "401"),
        "no credentials": ("", "simpleenroll", "switch-2", "401"),
        "another provisioner's code": (f"-u 'x:{other}'", "simpleenroll", "switch-3", "401"),
        "a name outside the code": (f"-u 'x:{code}'", "simpleenroll", "router-9", "403"),
        "reenroll without a certificate": (f"-u 'x:{code}'", "simplereenroll", "switch-2", "401"),
        "another provisioner's certificate": (
            "--cert foreign.crt --key foreign.key",
            "simplereenroll",
            "switch-4",
            "403",
        ),
    }
    for case, (auth, operation, cn, expected) in cases.items():
        status, headers, body = _enroll(est, tmp_path, "refused", cn, auth, operation)
        assert status == expected, (case, body)
        assert "application/problem+json" in headers.lower(), case
        if expected == "401":
            assert "www-authenticate: basic" in headers.lower(), case
    # a malformed body: 400, with the right code (which stays usable)
    for body in ("not base64 at all!", "aGVsbG8="):
        status = _sh(est, tmp_path, f"""
curl -sS --cacert "$ROOT" -u 'x:{code}' -H 'Content-Type: application/pkcs10' \
  --data-binary '{body}' -o bad.json -w '%{{http_code}}' "$EST/simpleenroll"
""")  # fmt: skip
        assert status == "400", (tmp_path / "bad.json").read_text()
    status = _sh(est, tmp_path, f"""
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout x.key \
  -subj /CN=switch-2 -outform DER 2>/dev/null | openssl base64 > csr.b64
curl -sS --cacert "$ROOT" -u 'x:{code}' -H 'Content-Type: text/plain' \
  --data-binary @csr.b64 -o bad.json -w '%{{http_code}}' "$EST/simpleenroll"
""")  # fmt: skip
    assert status == "415", (tmp_path / "bad.json").read_text()
    assert est.count_certificates() == before
    # the refused requests did not spend the code
    status, _, _ = _enroll(est, tmp_path, "late", "switch-2", f"-u 'x:{code}'")
    assert status == "200"


def test_wrong_codes_are_limited_per_address_others_still_enroll(
    est: ScepServer, tmp_path: Path
) -> None:
    """Refused codes share the per-address limit on refused credentials (300, then 5 a
    second): past it an address gets 429 before its code is looked at; a request without a
    code (the 401 that makes a client send one) never counts, and another address enrolls.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "switch-9")]))
        .sign(key, hashes.SHA256())
    )
    body = base64.b64encode(csr.public_bytes(Encoding.DER))
    root = str(est.home / "certs" / "root.crt")
    transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=root),
                                    local_address="127.0.0.3")  # fmt: skip
    url = f"{est.serve.https_url}/.well-known/est/gear/simpleenroll"
    headers = {"content-type": "application/pkcs10"}
    with httpx.Client(transport=transport, timeout=30) as abuser:
        for _ in range(5):  # no code: a challenge, not a refusal
            assert abuser.post(url, content=body, headers=headers).status_code == 401

        answers = answers_until(
            lambda: abuser.post(url, content=body, headers=headers, auth=("x", "wrong")),
            429,
            most=4 * FAILED_CREDENTIALS_BURST,
        )
    statuses = [a.status_code for a in answers]
    assert 429 in statuses, statuses[-5:]
    refused = answers[statuses.index(429)]
    # the whole burst was refused 401 first (give or take the 4 requests in flight)
    assert statuses.index(429) >= FAILED_CREDENTIALS_BURST - 4
    assert set(statuses[: FAILED_CREDENTIALS_BURST - 4]) == {401}
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    code = _code(est, "switch-9")  # from 127.0.0.1: its own allowance
    status, _, _ = _enroll(est, tmp_path, "after", "switch-9", f"-u 'x:{code}'")
    assert status == "200"


def test_enrollment_is_refused_and_spends_nothing_while_the_audit_log_cannot_be_written(
    est: ScepServer, tmp_path: Path
) -> None:
    """Issue 19: a 503 ``audit-unavailable`` problem with Retry-After (RFC 7030 section
    4.2.3 lets an EST server answer 503 with Retry-After, which clients retry), no
    certificate, the code not spent; the same enrollment works once the fault is gone.
    """
    code = _code(est, "switch-fc")
    auth = f"-u 'switch-fc:{code}'"
    assert _enroll(est, tmp_path, "first", "switch-fc", auth)[0] == "200"
    code = _code(est, "switch-fc")
    auth = f"-u 'switch-fc:{code}'"
    mtls = "--cert first.crt --key first.key"
    _certificate(est, tmp_path, "first")
    url = sqlite_url_for(est.home / "ostiary.db")
    before = est.count_certificates()
    with audit_refused(url):
        for name, credentials, operation in (
            ("coded", auth, "simpleenroll"),
            ("renewed", mtls, "simplereenroll"),
        ):
            status, headers, body = _enroll(
                est, tmp_path, name, "switch-fc", credentials, operation=operation
            )
            assert status == "503", body
            assert "retry-after: " in headers.lower()
            assert json.loads(body)["type"] == AUDIT_UNAVAILABLE
        assert est.count_certificates() == before
    assert _enroll(est, tmp_path, "coded", "switch-fc", auth)[0] == "200"
    assert _enroll(est, tmp_path, "renewed", "switch-fc", mtls, "simplereenroll")[0] == "200"
    assert est.count_certificates() == before + 2
