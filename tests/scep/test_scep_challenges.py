"""SCEP challenges an MDM asks for (``dynamic``) and a service decides (``webhook``).

The webhook is a real HTTPS server in this module, its certificate verified against the
provisioner's CA file: an allow answer issues with the webhook's names (not the CSR's); a
deny, a timeout and malformed answers refuse with failInfo badRequest, nothing issued.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import require_tool
from tests.loopback_tls import loopback_tls_files
from tests.pkilint_helper import lint_certificate
from tests.scep.client import Request, make_csr, self_signed, send
from tests.scep.conftest import ScepServer, ostiary, start_ca

SUCCESS, FAILURE = 0, 2
BAD_REQUEST = 2
PKCS_REQ = 19
UPN = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")

#: The webhook's answer for each challenge the tests send (the challenge picks the case).
ANSWERS: dict[str, bytes] = {
    "allow": json.dumps(
        {
            "allow": True,
            "subject": "CN=Alice Example",
            "san": ["email:alice@corp.example", "upn:alice@corp.example"],
        }
    ).encode(),
    "deny": json.dumps({"allow": False, "reason": "unknown device"}).encode(),
    "garbage": b"<html>not json</html>",
    "no-subject": json.dumps({"allow": True}).encode(),
    "huge": json.dumps({"allow": True, "pad": "x" * 70_000}).encode(),
}


@dataclass
class Webhook:
    url: str
    ca_file: Path
    received: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    folder = tmp_path_factory.mktemp("webhook")
    ca_file, certificate, key = loopback_tls_files(folder)
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            facts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(facts)
            challenge = facts.get("challenge", "")
            if challenge == "slow":
                time.sleep(3)  # past the provisioner's 1 s timeout
            body = ANSWERS.get(challenge, ANSWERS["deny"])
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the CA gave up waiting

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Webhook(f"https://127.0.0.1:{server.server_port}/validate", ca_file, received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class Served:
    ca: ScepServer
    mdm_secret: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, webhook: Webhook) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("scep-challenges")
    ca = start_ca(
        tmp,
        "p256",
        [
            ("intune", "--type", "scep", "--profile", "user", "--challenge", "webhook",
             "--webhook-url", webhook.url, "--webhook-ca-file", str(webhook.ca_file),
             "--webhook-timeout", "1"),
            # the same webhook, but its certificate checked against the system's roots
            ("untrusted", "--type", "scep", "--challenge", "webhook", "--webhook-url",
             webhook.url),
            ("devices", "--type", "scep"),
        ],
    )  # fmt: skip
    try:
        added = ostiary(
            ca.home, "ca", "provisioner", "add", "mdm", "--type", "scep", "--challenge",
            "dynamic", "--allow-name", "*.corp.example", "--password-file", str(ca.password_file),
        )  # fmt: skip
        yield Served(ca, added.strip().splitlines()[-1])
    finally:
        ca.serve.stop()


def _enroll(ca: ScepServer, provisioner: str, cn: str, challenge: str) -> Any:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = make_csr(key, cn, challenge).public_bytes(serialization.Encoding.DER)
    ra = ca.ca_certs(provisioner)[0]
    request = Request(key, self_signed(key, cn), PKCS_REQ, csr, [ra])
    with ca.plain() as http:
        return request, send(http, f"/scep/{provisioner}", request, ra)


def _verify_sslclient(ca: ScepServer, certificate: x509.Certificate, folder: Path) -> None:
    require_tool("openssl")
    (folder / "leaf.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.home / "certs" / "root.crt"), "-untrusted",
         str(ca.home / "certs" / "intermediate.crt"), "-purpose", "sslclient",
         str(folder / "leaf.pem")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert lint_certificate(certificate.public_bytes(serialization.Encoding.DER)) == []


def test_webhook_allow_issues_with_the_webhooks_names(
    served: Served, webhook: Webhook, tmp_path: Path
) -> None:
    request, reply = _enroll(served.ca, "intune", "alice@corp.example", "allow")
    assert reply.status == SUCCESS, reply
    issued = reply.certificate
    assert issued.subject.rfc4514_string() == "CN=Alice Example"  # not the CSR's CN
    sans = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.RFC822Name) == ["alice@corp.example"]
    assert [n.type_id for n in sans.get_values_for_type(x509.OtherName)] == [UPN]
    _verify_sslclient(served.ca, issued, tmp_path)
    facts = webhook.received[-1]
    assert facts["provisioner"] == "intune"
    assert facts["transaction_id"] == request.transaction_id
    assert facts["challenge"] == "allow"
    assert facts["subject"] == "CN=alice@corp.example"
    assert (facts["key_type"], facts["key_size"]) == ("RSA", 2048)
    assert facts["csr"].startswith("-----BEGIN CERTIFICATE REQUEST-----")
    # a CSR asking for a name the webhook did not grant is refused
    _, refused = _enroll(served.ca, "intune", "mallory@corp.example", "allow")
    assert (refused.status, refused.fail_info, refused.certificate) == (FAILURE, BAD_REQUEST, None)


@pytest.mark.parametrize(
    ("provisioner", "challenge"),
    [
        pytest.param("intune", "deny", id="deny"),
        pytest.param("intune", "slow", id="timeout"),
        pytest.param("intune", "garbage", id="not-json"),
        pytest.param("intune", "no-subject", id="allow-without-subject"),
        pytest.param("intune", "huge", id="answer-too-large"),
        pytest.param("untrusted", "allow", id="tls-not-verified"),
    ],
)
def test_webhook_refusals_issue_nothing(served: Served, provisioner: str, challenge: str) -> None:
    before = served.ca.count_certificates()
    _, reply = _enroll(served.ca, provisioner, "alice@corp.example", challenge)
    assert (reply.status, reply.fail_info, reply.certificate) == (FAILURE, BAD_REQUEST, None)
    assert served.ca.count_certificates() == before


def _ask(served: Served, secret: str | None, body: dict[str, Any], name: str = "mdm") -> Any:
    auth = ("jamf", secret) if secret is not None else None
    with served.ca.serve.client() as https:
        return https.post(f"/scep/{name}/challenge", json=body, auth=auth)


def test_dynamic_challenges_for_the_mdm(served: Served, tmp_path: Path) -> None:
    names = {"subject": "ipad-7.corp.example", "san": ["dns:ipad-7.corp.example"]}
    answer = _ask(served, served.mdm_secret, names)
    assert answer.status_code == 201, answer.text
    made = answer.json()
    assert (made["subject"], made["san"]) == ("CN=ipad-7.corp.example", names["san"])
    _, reply = _enroll(served.ca, "mdm", "ipad-7.corp.example", made["challenge"])
    assert reply.status == SUCCESS
    sans = reply.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["ipad-7.corp.example"]
    _verify_sslclient(served.ca, reply.certificate, tmp_path)
    _, again = _enroll(served.ca, "mdm", "ipad-7.corp.example", made["challenge"])
    assert (again.status, again.fail_info) == (FAILURE, BAD_REQUEST)  # one-time

    before = served.ca.count_certificates()
    for secret, name, status in [
        (served.mdm_secret + "x", "mdm", 401),  # wrong secret
        (None, "mdm", 401),  # no credentials
        (served.mdm_secret, "devices", 401),  # not a dynamic provisioner
        (served.mdm_secret, "nobody", 401),  # no such provisioner: the same answer
    ]:
        refused = _ask(served, secret, names, name)
        assert refused.status_code == status, (name, refused.text)
        assert refused.headers["www-authenticate"].startswith("Basic realm=")
        assert refused.headers["content-type"] == "application/problem+json"
    outside = _ask(
        served, served.mdm_secret, {"subject": "evil.example", "san": ["dns:evil.example"]}
    )
    assert outside.status_code == 403, outside.text
    malformed = _ask(served, served.mdm_secret, {"subject": 7})
    assert malformed.status_code == 400
    with served.ca.plain() as http:  # the MDM's secret never travels in clear
        assert http.post("/scep/mdm/challenge", json=names).status_code == 404
    assert served.ca.count_certificates() == before


def _config(ca: ScepServer, name: str) -> dict[str, Any]:
    from ostiary.store import ProvisionerRepository

    with ca.store() as store, store.transaction(read_only=True) as session:
        return dict(ProvisionerRepository(session).get(name).config)


def test_provisioner_update_changes_a_scep_provisioner_in_place(served: Served) -> None:
    ca = served.ca
    pw = ("--password-file", str(ca.password_file))
    ra = ca.ca_certs("devices")[0]
    ostiary(ca.home, "ca", "provisioner", "update", "devices", "--require-approval", *pw)
    _, pending = _enroll(ca, "devices", "kiosk-2", ca.challenge("devices", "kiosk-2"))
    assert (pending.status, pending.certificate) == (3, None)  # PENDING: an officer decides
    ostiary(ca.home, "ca", "provisioner", "update", "devices", "--no-require-approval", *pw)
    _, issued = _enroll(ca, "devices", "kiosk-3", ca.challenge("devices", "kiosk-3"))
    assert issued.status == SUCCESS
    assert ca.ca_certs("devices")[0] == ra  # the same RA: devices keep encrypting to it
    ostiary(ca.home, "ca", "provisioner", "update", "intune", "--webhook-timeout", "5", *pw)
    assert _config(ca, "intune")["webhook_timeout"] == 5
    # a leaked MDM secret is replaced: the old one is refused at once, the new one works
    old = served.mdm_secret
    rotated = ostiary(ca.home, "ca", "provisioner", "update", "mdm", "--new-secret", *pw)
    served.mdm_secret = rotated.strip().splitlines()[-1]
    names = {"subject": "ipad-8.corp.example", "san": ["dns:ipad-8.corp.example"]}
    assert _ask(served, old, names).status_code == 401
    assert _ask(served, served.mdm_secret, names).status_code == 201

    before = {name: _config(ca, name) for name in ("devices", "intune")}
    for args in (
        ["devices", "--webhook-url", "https://validator.example/"],  # not a webhook provisioner
        ["intune", "--webhook-url", "http://validator.example/"],  # not https
        ["intune", "--webhook-timeout", "0"],
        ["intune", "--webhook-ca-file", str(ca.home / "missing.pem")],
        ["intune", "--webhook-ca-file", str(ca.password_file)],  # no PEM in it
        ["devices", "--profile", "ocsp"],
        ["devices", "--admin"],  # a jwk setting
        ["intune", "--new-secret"],  # a webhook has no secret of ours
    ):
        done = subprocess.run(
            [sys.executable, "-c", "from ostiary.cli.main import main; main()", "ca",
             "provisioner", "update", *args, *pw],
            env={**os.environ, "OSTIARY_HOME": str(ca.home), "NO_COLOR": "1"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode != 0, args
        assert "Traceback" not in done.stderr and done.stderr.strip(), (args, done.stderr)
    assert {name: _config(ca, name) for name in ("devices", "intune")} == before
