"""SSH certificates while the audit log cannot be written (issue 19): ``POST /ssh/certificate``
is a 503 ``audit-unavailable`` problem with Retry-After and ``ca ssh revoke`` one ``error:``
line; no certificate is recorded, the token is not spent, nothing is revoked, and the same
token and revocation work once the fault is gone.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
from sqlalchemy import func, select

from ostiary.store import SSHCertificateRecord, Store, UsedToken, sqlite_url_for
from tests.client.conftest import ok, refused
from tests.server.audit_fault import REFUSE, assert_audit_unavailable, audit_refused
from tests.ssh.conftest import SSHCA
from tests.ssh.sshd import new_key


def _client(ssh_ca: SSHCA) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(ssh_ca.ca.root_file))
    return httpx.Client(base_url=ssh_ca.ca.url, verify=context)


def _counts(url: str) -> tuple[int, int, int]:
    """(SSH certificates, revoked ones, spent tokens)."""
    store = Store.from_url(url)
    try:
        with store.transaction(read_only=True) as session:
            return (
                int(session.scalar(select(func.count()).select_from(SSHCertificateRecord)) or 0),
                int(
                    session.scalar(
                        select(func.count())
                        .select_from(SSHCertificateRecord)
                        .where(SSHCertificateRecord.revoked_at.is_not(None))
                    )
                    or 0
                ),
                int(session.scalar(select(func.count()).select_from(UsedToken)) or 0),
            )
    finally:
        store.dispose()


def test_ssh_certificates_are_neither_issued_nor_revoked_while_the_audit_log_cannot_be_written(
    ssh_ca: SSHCA, tmp_path: Path
) -> None:
    _, old = ssh_ca.certificate(tmp_path, "fc-old")
    serial = next(
        line.split("\t")[0]
        for line in ssh_ca.ca.ca("ssh", "list", "--limit", "10000").stdout.splitlines()
        if line.endswith("fc-old")
    )
    assert old.exists()
    public = new_key(tmp_path / "fc").read_text()
    body = {"public_key": public, "token": ssh_ca.token("fc-new")}
    url = sqlite_url_for(ssh_ca.ca.home / "ostiary.db")
    before = _counts(url)
    with audit_refused(url), _client(ssh_ca) as http:
        assert_audit_unavailable(http.post("/ssh/certificate", json=body))
        cli = refused(
            "ca", "ssh", "revoke", serial, "--dir", ssh_ca.ca.home,
            "--password-file", ssh_ca.ca.password_file,
        )  # fmt: skip
        assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr
        assert "audit log cannot be written" in cli.stderr and REFUSE not in cli.stderr
        assert _counts(url) == before
    with _client(ssh_ca) as http:
        answer = http.post("/ssh/certificate", json=body)
    assert answer.status_code == 200, answer.text
    ssh_ca.ca.ca("ssh", "revoke", serial)
    assert _counts(url) == (before[0] + 1, before[1] + 1, before[2] + 1)


def test_an_ssh_approval_whose_request_cannot_be_marked_issues_nothing(
    ssh_ca: SSHCA, tmp_path: Path
) -> None:
    """The SSH certificate, the request marked issued and both audit entries are one
    transaction: with only ``request.approved`` refused, the approval is refused and no
    certificate is left behind a request stuck half-approved."""
    ca = ssh_ca.ca
    ca.ca("provisioner", "add", "fc-ssh-doors", "--type", "approval", "--no-require-code")
    ca.ca("ssh", "policy", "fc-ssh-doors", "--principal", "fc.user", "--user-lifetime", "1h")
    crt, key = tmp_path / "officer.crt", tmp_path / "officer.key"
    ok("cert", "request", "fc-officer", crt, key, "--token", ca.token("fc-officer"),
       "--not-after", "1h", *ssh_ca.client_args())  # fmt: skip
    ca.ca("officer", "add", "fc-officer", "--cert", crt)
    officer = ["--cert", crt, "--key", key, *ssh_ca.client_args()]
    public = new_key(tmp_path / "id")
    request_id = ok("ssh", "request", public, "--provisioner", "fc-ssh-doors", "--principal",
                    "fc.user", *ssh_ca.client_args()).stdout.strip()  # fmt: skip
    url = sqlite_url_for(ca.home / "ostiary.db")
    before = _counts(url)
    with audit_refused(url, event="request.approved"):
        cli = refused("ca", "requests", "approve", request_id, *officer)
        assert "audit log cannot be written" in cli.stderr, cli.stderr
        assert _counts(url) == before
    assert request_id in ok("ca", "requests", "list", *officer).stdout  # still waiting
    ok("ca", "requests", "approve", request_id, *officer)
    assert _counts(url)[0] == before[0] + 1


def test_a_host_renewal_issues_nothing_while_the_audit_log_cannot_be_written(
    ssh_ca: SSHCA, tmp_path: Path
) -> None:
    """``ostiary ssh renew`` (POST /ssh/renew) is refused in one line: the host keeps its
    certificate, nothing is recorded, and the same renewal works once the fault is gone."""
    host_key, certificate = ssh_ca.certificate(tmp_path, "fc.lab", host=True, name="fc-host")
    kept = certificate.read_bytes()
    url = sqlite_url_for(ssh_ca.ca.home / "ostiary.db")
    before = _counts(url)
    with audit_refused(url):
        cli = refused("ssh", "renew", "--host-key", host_key, "--cert", certificate,
                      *ssh_ca.client_args())  # fmt: skip
        assert "audit log cannot be written" in cli.stderr, cli.stderr
        assert "Traceback" not in cli.stderr and REFUSE not in cli.stderr
        assert certificate.read_bytes() == kept
        assert _counts(url) == before
    ok("ssh", "renew", "--host-key", host_key, "--cert", certificate, *ssh_ca.client_args())
    assert certificate.read_bytes() != kept
    assert _counts(url)[0] == before[0] + 1
