"""Hosts renew their host certificate over the current one, with no provisioner.

The host key signs the CA's single-use challenge; the renewed certificate has the same key
id and principals, and sshd serves it to a client that trusts only the host CA
(``StrictHostKeyChecking yes``). Refused: another key's signature, a replayed challenge, a
user certificate, a revoked or foreign host certificate; none issues anything.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from ostiary.authority.folder import CAPaths, load_ca_folder
from ostiary.authority.ssh import SSHAuthority, SSHAuthorization
from ostiary.authority.ssh_keys import load_ssh_ca
from ostiary.client.ssh import SSHClient
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import Conflict, InvalidCertificate, Unauthorized
from ostiary.ssh import SSHCertificateType, load_ssh_public_key_line, renewal_message, ssh_signature
from ostiary.store import Store, sqlite_url_for
from tests.client.conftest import OSTIARY, PASSWORD, Daemon, ok, refused
from tests.ssh.conftest import SSHCA
from tests.ssh.sshd import LOGIN_USER, Sshd, keygen, new_key


@pytest.fixture
def client(ssh_ca: SSHCA) -> Iterator[SSHClient]:
    roots = load_certificate_chain(ssh_ca.ca.root_file.read_bytes())
    with SSHClient(ssh_ca.ca.url, roots) as opened:
        yield opened


def _fields(certificate: Path) -> tuple[int, str]:
    listing = keygen("-L", "-f", certificate)
    serial = int(listing.split("Serial: ")[1].split()[0])
    return serial, listing.split("Principals:")[1].split("Critical")[0]


def _listed(ssh_ca: SSHCA) -> list[str]:
    return ssh_ca.ca.ca("ssh", "list", "--limit", "10000").stdout.splitlines()


def _signer(key_file: Path) -> Callable[[bytes], bytes]:
    """What the host key (``key_file``) signs with, as ``ostiary ssh renew`` does."""
    key: Any = serialization.load_ssh_private_key(key_file.read_bytes(), None)
    return lambda message: ssh_signature(key, message)


def test_renewed_host_certificate_keeps_its_principals_and_is_trusted_by_strict_ssh(
    tmp_path: Path, ssh_ca: SSHCA
) -> None:
    host_key, host_certificate = ssh_ca.certificate(
        tmp_path, "127.0.0.1", "localhost", host=True, name="host"
    )
    old_serial, old_principals = _fields(host_certificate)
    ok("ssh", "renew", "--host-key", host_key, "--cert", host_certificate,
       *ssh_ca.client_args())  # fmt: skip
    serial, principals = _fields(host_certificate)
    assert serial != old_serial and principals == old_principals
    assert "127.0.0.1" in principals and "localhost" in principals
    listed = next(line for line in _listed(ssh_ca) if line.startswith(f"{serial}\t"))
    assert "\thost\tvalid\t" in listed
    (tmp_path / "principals").mkdir()
    (tmp_path / "principals" / LOGIN_USER).write_text("first.last\n")
    sshd = Sshd(
        tmp_path,
        [
            f"HostCertificate {host_certificate}",
            f"TrustedUserCAKeys {ssh_ca.user_ca}",
            f"AuthorizedPrincipalsFile {tmp_path}/principals/%u",
        ],
        host_key,
    )
    sshd.start()
    try:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(f"@cert-authority 127.0.0.1 {ssh_ca.host_ca.read_text()}")
        key, certificate = ssh_ca.certificate(tmp_path, "first.last")
        result = sshd.login(key, certificate=certificate, known_hosts=known_hosts)
        assert result.returncode == 0, result.stderr + sshd.log()
    finally:
        sshd.stop()


def test_renewal_refusals_issue_nothing(tmp_path: Path, ssh_ca: SSHCA, client: SSHClient) -> None:
    host_key, host_certificate = ssh_ca.certificate(tmp_path, "web.lab", host=True, name="h")
    line = host_certificate.read_text().strip()
    other = new_key(tmp_path / "other").with_suffix("")
    user_key, user_certificate = ssh_ca.certificate(tmp_path, "first.last", name="u")
    new_key(tmp_path / "foreign_ca")
    foreign_public = new_key(tmp_path / "f")
    keygen("-s", tmp_path / "foreign_ca", "-h", "-I", "f", "-n", "web.lab", foreign_public)
    before = _listed(ssh_ca)
    with pytest.raises(Unauthorized, match="does not verify"):
        client.ssh_renew(line, _signer(other))  # not the host key
    user_line = user_certificate.read_text().strip()
    with pytest.raises(InvalidCertificate, match="only host certificates"):
        client.ssh_renew(user_line, _signer(user_key))
    with pytest.raises(InvalidCertificate, match="not a host certificate of this CA"):
        client.ssh_renew((tmp_path / "f-cert.pub").read_text(), _signer(tmp_path / "f"))
    # A challenge is good once.
    nonce = client._call(client._http, "POST", "/ssh/renew/nonce")["nonce"]
    blob = base64.b64decode(line.split()[1])
    body = {
        "certificate": line,
        "nonce": nonce,
        "signature": base64.b64encode(_signer(host_key)(renewal_message(nonce, blob))).decode(),
    }
    client._call(client._http, "POST", "/ssh/renew", json=body)
    after_one = _listed(ssh_ca)
    assert len(after_one) == len(before) + 1
    with pytest.raises(Conflict, match="already used"):
        client._call(client._http, "POST", "/ssh/renew", json=body)
    # A revoked host certificate renews no more.
    serial, _ = _fields(host_certificate)
    ssh_ca.ca.ca("ssh", "revoke", str(serial))
    failed = refused("ssh", "renew", "--host-key", host_key, "--cert", host_certificate,
                     *ssh_ca.client_args())  # fmt: skip
    assert "revoked" in failed.stderr
    assert len(_listed(ssh_ca)) == len(after_one)
    # The CA owner stops a provisioner's host certificates: they renew no more either.
    ssh_ca.ca.ca("provisioner", "add", "hosts-off")
    ssh_ca.ca.ca("ssh", "policy", "hosts-off", "--host")
    key, current = ssh_ca.certificate(
        tmp_path, "db.lab", host=True, name="d", provisioner="hosts-off"
    )
    ssh_ca.ca.ca("ssh", "policy", "hosts-off", "--no-host")
    stopped = refused("ssh", "renew", "--host-key", key, "--cert", current,
                      *ssh_ca.client_args())  # fmt: skip
    assert "no longer issues host certificates" in stopped.stderr


def test_renew_daemon_renews_once_two_thirds_of_the_life_have_passed(
    tmp_path: Path, ssh_ca: SSHCA
) -> None:
    home = ssh_ca.ca.home
    keys = load_ssh_ca(load_ca_folder(CAPaths(home), PASSWORD.encode()), PASSWORD.encode())
    assert keys is not None
    store = Store.from_url(sqlite_url_for(home / "ostiary.db"))
    earlier = datetime.now(UTC) - timedelta(minutes=50)
    public = new_key(tmp_path / "host")
    issued = SSHAuthority(keys, store, clock=lambda: earlier).issue(
        load_ssh_public_key_line(public.read_text()),
        SSHAuthorization(
            SSHCertificateType.HOST, ("db.lab",), "db.lab", timedelta(hours=1), "test"
        ),
        actor="test",
    )
    store.dispose()
    certificate = tmp_path / "host-cert.pub"
    certificate.write_text(issued.line + "\n")
    log_file = tmp_path / "daemon.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                *OSTIARY,
                "ssh",
                "renew",
                "--daemon",
                "--host-key",
                str(tmp_path / "host"),
                "--cert",
                str(certificate),
                "--check-interval",
                "1",
                "--exec",
                "echo reloaded",
                *map(str, ssh_ca.client_args()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=dict(os.environ),
        )
    daemon = Daemon(process, log_file)
    try:
        daemon.wait_for("reloaded", timeout=60)
    finally:
        daemon.stop()
    serial, principals = _fields(certificate)
    assert serial != issued.serial and "db.lab" in principals
    assert daemon.log().count("renewed ") == 1  # the new one is not due for 20 days
