"""SSH certificates appear in the console's certificate list, for an officer."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from ostiary.client.ssh import SSHClient
from ostiary.core.encoding import load_certificate_chain
from tests.client.conftest import ok
from tests.ssh.conftest import SSHCA
from tests.ssh.sshd import new_key


def test_console_lists_ssh_certificates(tmp_path: Path, ssh_ca: SSHCA) -> None:
    roots = load_certificate_chain(ssh_ca.ca.root_file.read_bytes())
    with SSHClient(ssh_ca.ca.url, roots) as client:
        token = ssh_ca.token("console.viewer", "ops.team")
        serial = client.ssh_certificate(new_key(tmp_path / "id").read_text(), token)["serial"]
    crt, key = tmp_path / "officer.crt", tmp_path / "officer.key"
    officer_token = ssh_ca.ca.token("officer-ssh", not_after="1h")
    ok(
        "cert",
        "request",
        "officer-ssh",
        crt,
        key,
        "--token",
        officer_token,
        "--not-after",
        "1h",
        *ssh_ca.client_args(),
    )
    ssh_ca.ca.ca("officer", "add", "officer-ssh", "--cert", crt)
    context = ssl.create_default_context(cafile=str(ssh_ca.ca.root_file))
    context.load_cert_chain(crt, key)
    with httpx.Client(
        base_url=ssh_ca.ca.url, verify=context, headers={"Accept": "text/html"}
    ) as officer:
        page = officer.get("/console/certificates", params={"q": "console.viewer"})
        assert page.status_code == 200, page.text
        assert "SSH certificates" in page.text
        assert "console.viewer, ops.team" in page.text and serial in page.text
        revoked_only = officer.get(
            "/console/certificates", params={"q": "console.viewer", "status": "revoked"}
        )
        assert serial not in revoked_only.text
    ssh_ca.ca.ca("ssh", "revoke", serial)
    with httpx.Client(
        base_url=ssh_ca.ca.url, verify=context, headers={"Accept": "text/html"}
    ) as officer:
        revoked = officer.get(
            "/console/certificates", params={"q": "console.viewer", "status": "revoked"}
        )
        assert serial in revoked.text
