"""SSH user certificates through the approval queue: an officer approves, the requester
collects, sshd lets the principal in. Refused: a principal outside the policy at submission,
an approval with a wrong code, an X.509 poll or approve path for an SSH request.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from ostiary.store import AuditEntry, Store, sqlite_url_for
from tests.client.conftest import ok, refused
from tests.ssh.conftest import SSHCA
from tests.ssh.sshd import LOGIN_USER, Sshd, keygen, new_key

DOORS = "ssh-doors"


def _officer(ssh_ca: SSHCA, folder: Path) -> list[str | Path]:
    """An officer certificate bound with ``ca officer add``: the options of ``ca requests``."""
    ca = ssh_ca.ca
    token = ca.token("ssh-officer")
    crt, key = folder / "officer.crt", folder / "officer.key"
    ok("cert", "request", "ssh-officer", crt, key, "--token", token, "--not-after", "1h",
       *ssh_ca.client_args())  # fmt: skip
    ca.ca("officer", "add", "ssh-officer", "--cert", crt)
    return ["--cert", crt, "--key", key, *ssh_ca.client_args()]


def test_officer_approved_request_is_collected_and_logs_in(tmp_path: Path, ssh_ca: SSHCA) -> None:
    ca = ssh_ca.ca
    ca.ca("provisioner", "add", DOORS, "--type", "approval", "--require-code")
    ca.ca("ssh", "policy", DOORS, "--principal", "*.ops", "--principal", "first.last",
          "--user-lifetime", "1h")  # fmt: skip
    officer = _officer(ssh_ca, tmp_path)
    public = new_key(tmp_path / "id")
    # Outside the policy's principal patterns: refused at submission, nothing queued.
    outside = refused("ssh", "request", public, "--provisioner", DOORS, "--principal", "root",
                      *ssh_ca.client_args())  # fmt: skip
    assert "outside the provisioner's allowed principals" in outside.stderr
    submitted = ok("ssh", "request", public, "--provisioner", DOORS, "--principal", "first.last",
                   "--note", "laptop of first.last", *ssh_ca.client_args())  # fmt: skip
    request_id = submitted.stdout.strip()
    code = submitted.stderr.split("one-time code: ")[1].split()[0]
    waiting = ok("ca", "requests", "list", *officer).stdout
    assert request_id[:8] in waiting and "ssh-principal:first.last" in waiting
    early = refused("ssh", "request", public, "--collect", request_id, *ssh_ca.client_args())
    assert "is pending" in early.stderr
    wrong = refused("ca", "requests", "approve", request_id, "--code", "WRONGCOD", *officer)
    assert "does not match" in wrong.stderr
    approved = ok("ca", "requests", "approve", request_id, "--code", code, *officer)
    serial = approved.stderr.split("issued serial ")[1].split()[0]
    ok("ssh", "request", public, "--collect", request_id, *ssh_ca.client_args())
    certificate = tmp_path / "id-cert.pub"
    fields = keygen("-L", "-f", certificate)
    assert f"Serial: {serial}" in fields
    assert "Principals: \n                first.last\n" in fields
    listed = ca.ca("ssh", "list", "first.last").stdout
    assert any(line.startswith(f"{serial}\tuser\tvalid\t") for line in listed.splitlines())
    store = Store.from_url(sqlite_url_for(ca.home / "ostiary.db"))
    try:
        with store.transaction(read_only=True) as session:
            issued = session.scalars(select(AuditEntry).where(AuditEntry.target == serial)).one()
            decided = session.scalars(
                select(AuditEntry).where(AuditEntry.target == request_id)
            ).all()
    finally:
        store.dispose()
    assert issued.event == "ssh_certificate.issued" and issued.actor == "officer:ssh-officer"
    assert issued.details["via"] == "approval" and issued.details["request_id"] == request_id
    events = [e.event for e in decided]
    assert events == ["request.submitted", "request.denied", "request.approved"]
    twice = refused("ca", "requests", "approve", request_id, "--code", code, *officer)
    assert "not pending" in twice.stderr
    (tmp_path / "principals").mkdir()
    (tmp_path / "principals" / LOGIN_USER).write_text("first.last\n")
    host_key = tmp_path / "host_key"
    new_key(host_key)
    sshd = Sshd(
        tmp_path,
        [
            f"TrustedUserCAKeys {ssh_ca.user_ca}",
            f"AuthorizedPrincipalsFile {tmp_path}/principals/%u",
        ],
        host_key,
    )
    sshd.start()
    try:
        result = sshd.login(tmp_path / "id", certificate=certificate)
        assert result.returncode == 0, result.stderr + sshd.log()
    finally:
        sshd.stop()
