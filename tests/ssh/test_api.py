"""``POST /ssh/certificate`` and friends: what is issued, recorded and audited; rejected twins."""

from __future__ import annotations

import base64
import itertools
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from ostiary.cli.ssh_principals import principal_for
from ostiary.client.ssh import SSHClient
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import (
    BadRequest,
    LifetimeNotAllowed,
    NameNotAuthorized,
    PolicyDenied,
    TokenReused,
    Unauthorized,
    WeakKey,
)
from ostiary.server.limits import Limits
from ostiary.store import AuditEntry, Store, sqlite_url_for
from tests.abuse import answers_until
from tests.client.conftest import OSTIARY, PROVISIONER, ok, refused
from tests.conftest import require_tool
from tests.ssh.conftest import RESTRICTED, SSHCA
from tests.ssh.sshd import keygen, new_key


@pytest.fixture
def client(ssh_ca: SSHCA) -> Iterator[SSHClient]:
    roots = load_certificate_chain(ssh_ca.ca.root_file.read_bytes())
    with SSHClient(ssh_ca.ca.url, roots) as opened:
        yield opened


def _reissued(token: str, **claims: str) -> str:
    """``token`` with some claims changed (its signature no longer matches them)."""
    header, body, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    encoded = base64.urlsafe_b64encode(json.dumps({**decoded, **claims}).encode())
    return f"{header}.{encoded.decode().rstrip('=')}.{signature}"


def _listed(ssh_ca: SSHCA) -> list[str]:
    return ssh_ca.ca.ca("ssh", "list", "--limit", "10000").stdout.splitlines()


def test_issued_certificate_is_recorded_audited_and_listed(
    tmp_path: Path, ssh_ca: SSHCA, client: SSHClient
) -> None:
    public = new_key(tmp_path / "id").read_text()
    answer = client.ssh_certificate(public, ssh_ca.token("first.last", "deploy"))
    assert answer["certificate"].startswith("ssh-ed25519-cert-v01@openssh.com ")
    (tmp_path / "id-cert.pub").write_text(answer["certificate"] + "\n")
    listing = keygen("-L", "-f", tmp_path / "id-cert.pub")
    assert f"Serial: {answer['serial']}" in listing
    assert "Principals: \n                first.last\n                deploy" in listing
    for extension in ("permit-pty", "permit-agent-forwarding", "permit-X11-forwarding"):
        assert extension in listing
    row = next(line for line in _listed(ssh_ca) if line.startswith(answer["serial"] + "\t"))
    assert row.split("\t")[1:3] == ["user", "valid"] and row.endswith("first.last,deploy")
    store = Store.from_url(sqlite_url_for(ssh_ca.ca.home / "ostiary.db"))
    try:
        with store.transaction(read_only=True) as session:
            entry = session.scalars(
                select(AuditEntry).where(AuditEntry.target == answer["serial"])
            ).one()
            assert entry.event == "ssh_certificate.issued"
            assert entry.details["principals"] == ["first.last", "deploy"]
    finally:
        store.dispose()
    ssh_ca.ca.ca("audit", "verify")


def test_default_lifetimes_are_16h_for_users_and_30d_for_hosts(
    tmp_path: Path, ssh_ca: SSHCA, client: SSHClient
) -> None:
    public = new_key(tmp_path / "id").read_text()
    user = client.ssh_certificate(public, ssh_ca.token("first.last"))
    host = client.ssh_certificate(public, ssh_ca.token("web.example", host=True), cert_type="host")
    user_status = client.ssh_status("user", int(user["serial"]))
    assert user_status == {"status": "valid", "principals": ["first.last"], "key_id": "first.last"}
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    user_left = datetime.fromisoformat(user["not_after"]) - now
    host_left = datetime.fromisoformat(host["not_after"]) - now
    assert 15.9 * 3600 < user_left.total_seconds() <= 16 * 3600
    assert 29.9 * 86400 < host_left.total_seconds() <= 30 * 86400


@pytest.mark.parametrize(
    ("case", "error"),
    [
        pytest.param("host-through-user-token", PolicyDenied, id="fail/host-through-user-token"),
        pytest.param("over-long-lifetime", LifetimeNotAllowed, id="fail/over-long-lifetime"),
        pytest.param("malformed-key", BadRequest, id="fail/malformed-key"),
        pytest.param("weak-key", WeakKey, id="fail/weak-rsa"),
        pytest.param("x509-token", Unauthorized, id="fail/x509-sign-token"),
        pytest.param("garbage-token", Unauthorized, id="fail/garbage-token"),
        pytest.param("unknown-issuer", Unauthorized, id="fail/unknown-provisioner"),
    ],
)
def test_refused_requests_issue_nothing(
    tmp_path: Path, ssh_ca: SSHCA, client: SSHClient, case: str, error: type[Exception]
) -> None:
    public = new_key(tmp_path / "id").read_text()
    token = ssh_ca.token("first.last")
    options: dict[str, str] = {}
    if case == "host-through-user-token":
        options["cert_type"] = "host"
    elif case == "over-long-lifetime":
        options["lifetime"] = "17h"
    elif case == "malformed-key":
        public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== broken"
    elif case == "weak-key":
        public = new_key(tmp_path / "weak", "rsa", bits=1024).read_text()
    elif case == "x509-token":
        token = ssh_ca.ca.token("first.last")
    elif case == "garbage-token":
        token = "not.a.token"
    elif case == "unknown-issuer":
        token = _reissued(token, iss="nobody")
    before = _listed(ssh_ca)
    with pytest.raises(error):
        client.ssh_certificate(public, token, **options)
    assert _listed(ssh_ca) == before
    if case not in ("x509-token", "garbage-token", "unknown-issuer"):  # the token stays usable
        assert client.ssh_certificate(new_key(tmp_path / "ok").read_text(), token)["serial"]


def test_token_for_principals_outside_the_policy_is_refused(
    tmp_path: Path, ssh_ca: SSHCA, client: SSHClient
) -> None:
    token = ssh_ca.token("root", provisioner=RESTRICTED)
    ssh_ca.ca.ca("ssh", "policy", RESTRICTED, "--principal", "*.ops")
    try:
        before = _listed(ssh_ca)
        with pytest.raises(NameNotAuthorized, match="'root' is outside"):
            client.ssh_certificate(new_key(tmp_path / "id").read_text(), token)
        assert _listed(ssh_ca) == before
        refused(
            "ca",
            "token",
            "--ssh",
            "--provisioner",
            RESTRICTED,
            "--principal",
            "root",
            "--dir",
            ssh_ca.ca.home,
            "--password-file",
            ssh_ca.ca.password_file,
        )
        ok_token = ssh_ca.token("alice.ops", provisioner=RESTRICTED)
        assert client.ssh_certificate(new_key(tmp_path / "ok").read_text(), ok_token)
    finally:
        ssh_ca.ca.ca("ssh", "policy", RESTRICTED, "--principal", "*")


def test_host_token_from_a_user_only_provisioner_is_refused(ssh_ca: SSHCA) -> None:
    result = refused(
        "ca",
        "token",
        "--ssh",
        "--host",
        "--provisioner",
        RESTRICTED,
        "--principal",
        "web",
        "--dir",
        ssh_ca.ca.home,
        "--password-file",
        ssh_ca.ca.password_file,
    )
    assert "user certificates only" in result.stderr


def test_replayed_token_is_refused(tmp_path: Path, ssh_ca: SSHCA, client: SSHClient) -> None:
    token = ssh_ca.token("first.last")
    client.ssh_certificate(new_key(tmp_path / "a").read_text(), token)
    before = _listed(ssh_ca)
    with pytest.raises(TokenReused):
        client.ssh_certificate(new_key(tmp_path / "b").read_text(), token)
    assert _listed(ssh_ca) == before


def test_ssh_token_is_no_x509_sign_token(tmp_path: Path, ssh_ca: SSHCA) -> None:
    key = tmp_path / "x.key"
    crt = tmp_path / "x.crt"
    result = refused(
        "cert",
        "request",
        "first.last",
        crt,
        key,
        "--token",
        ssh_ca.token("first.last"),
        "--ca-url",
        ssh_ca.ca.url,
        "--root",
        ssh_ca.ca.root_file,
    )
    assert "audience" in result.stderr or "token" in result.stderr
    assert not crt.exists()


def test_krl_is_served_over_plain_http(ssh_ca: SSHCA) -> None:
    answer = httpx.get(f"http://127.0.0.1:{ssh_ca.ca.http_port}/ssh/krl")
    assert answer.status_code == 200
    assert answer.content.startswith(b"SSHKRL\n\0")
    assert httpx.post(f"http://127.0.0.1:{ssh_ca.ca.http_port}/ssh/krl").status_code == 405


def test_principals_command_answers_only_for_a_valid_certificate_naming_the_user(
    tmp_path: Path, ssh_ca: SSHCA, client: SSHClient
) -> None:
    serial = client.ssh_certificate(
        new_key(tmp_path / "id").read_text(), ssh_ca.token("first.last")
    )["serial"]
    where = {"ca_url": ssh_ca.ca.url, "root_file": str(ssh_ca.ca.root_file), "timeout": 5.0}
    assert principal_for("first.last", serial, **where)[0] == "first.last"
    refusals = [
        ("root", serial, "does not name 'root'"),
        ("first.last", "12345", "answered 404"),
        ("first.last", "12a", "not a decimal number"),
    ]
    for user, asked, reason in refusals:
        line, why = principal_for(user, asked, **where)
        assert line is None and reason in why
    unreachable = {**where, "ca_url": "https://127.0.0.1:9"}
    line, why = principal_for("first.last", serial, **unreachable)
    assert line is None and "could not be asked" in why
    ssh_ca.ca.ca("ssh", "revoke", serial)
    line, why = principal_for("first.last", serial, **where)
    assert line is None and why == f"certificate {serial} is revoked"


def test_krl_watch_runs_its_command_only_when_the_krl_changes(
    tmp_path: Path, ssh_ca: SSHCA, client: SSHClient
) -> None:
    krl, marker = tmp_path / "revoked.krl", tmp_path / "reloaded"
    watch = ["ssh", "krl-watch", "--once", "--out", krl, "--exec", f"echo x >> {marker}"]
    ok(*watch, *ssh_ca.client_args())
    ok(*watch, *ssh_ca.client_args())
    assert marker.read_text() == "x\n"  # written once: the second KRL was the same
    answer = client.ssh_certificate(
        new_key(tmp_path / "id").read_text(), ssh_ca.token("first.last")
    )
    ssh_ca.ca.ca("ssh", "revoke", answer["serial"])
    ok(*watch, *ssh_ca.client_args())
    assert marker.read_text() == "x\nx\n"
    (tmp_path / "id-cert.pub").write_text(answer["certificate"] + "\n")
    with pytest.raises(subprocess.CalledProcessError):
        keygen("-Q", "-f", krl, tmp_path / "id-cert.pub")


def test_krl_watch_rewrites_within_a_second_of_a_revocation(
    tmp_path: Path, ssh_ca: SSHCA, client: SSHClient
) -> None:
    krl, log_file = tmp_path / "revoked.krl", tmp_path / "watch.log"
    answer = client.ssh_certificate(new_key(tmp_path / "id").read_text(), ssh_ca.token("x.y"))
    certificate = tmp_path / "id-cert.pub"
    certificate.write_text(answer["certificate"] + "\n")
    args = ["ssh", "krl-watch", "--out", krl, "--interval", "60", *ssh_ca.client_args()]
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [*OSTIARY, *map(str, args)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        while not krl.exists():
            assert time.monotonic() < deadline and process.poll() is None, log_file.read_text()
            time.sleep(0.05)
        time.sleep(1)  # krl-watch now holds its next request at the CA
        ssh_ca.ca.ca("ssh", "revoke", answer["serial"])
        revoked_at = time.monotonic()
        while (
            subprocess.run(
                [require_tool("ssh-keygen"), "-Q", "-f", str(krl), str(certificate)],
                capture_output=True,
            ).returncode
            == 0
        ):
            assert time.monotonic() - revoked_at < 30, log_file.read_text()
            time.sleep(0.05)
        rewritten = time.monotonic() - revoked_at
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(f"revocation to the rewritten KRL file: {rewritten:.2f} s")
    # Not the 60 s --interval: the CA held krl-watch's request and answered the revocation.
    assert rewritten < 5


def test_refused_ssh_tokens_and_id_tokens_are_limited_per_address(
    tmp_path: Path, ssh_ca: SSHCA, client: SSHClient
) -> None:
    """SSH tokens and OIDC ID tokens refused on ``POST /ssh/certificate`` share the per-address
    limit on refused credentials with ``/sign``: past it, 429 before the token is looked at;
    another address still gets its certificate.
    """
    public = new_key(tmp_path / "id").read_text()
    burst = Limits.default().failed_tokens.burst
    transport = httpx.HTTPTransport(
        verify=ssl.create_default_context(cafile=str(ssh_ca.ca.root_file)),
        local_address="127.0.0.3",
    )
    bodies = [
        {"public_key": public, "token": "not-a-token"},
        {"public_key": public, "provisioner": PROVISIONER, "id_token": "not-an-id-token"},
    ]
    turn = itertools.count()
    with httpx.Client(base_url=ssh_ca.ca.url, transport=transport, timeout=30) as abuser:
        answers = answers_until(
            lambda: abuser.post("/ssh/certificate", json=bodies[next(turn) % 2]),
            429,
            most=4 * burst,
        )
    statuses = [a.status_code for a in answers]
    assert 429 in statuses, statuses[-5:]
    past = answers[statuses.index(429)]
    # the whole burst was refused (401/403) before the first 429
    assert statuses.index(429) >= burst - 4  # give or take the 4 requests in flight
    assert set(statuses[: burst - 4]) <= {401, 403}, set(statuses)
    assert past.headers["content-type"] == "application/problem+json"
    assert int(past.headers["retry-after"]) >= 1
    answer = client.ssh_certificate(public, ssh_ca.token("first.last"))  # from 127.0.0.1
    assert answer["certificate"].startswith("ssh-ed25519-cert-v01@openssh.com ")
