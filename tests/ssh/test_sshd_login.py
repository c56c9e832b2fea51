"""SSH certificates from the CA against a real sshd on loopback: accepted and refused."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ostiary.authority.folder import CAPaths, load_ca_folder
from ostiary.authority.ssh import SSHAuthority, SSHAuthorization
from ostiary.authority.ssh_keys import load_ssh_ca
from ostiary.ssh import SSHCertificateType, load_ssh_public_key_line
from ostiary.store import Store, sqlite_url_for
from tests.client.conftest import PASSWORD, ok
from tests.conftest import require_tool
from tests.ssh.conftest import RESTRICTED, SSHCA
from tests.ssh.sshd import LOGIN_USER, Sshd, keygen, new_key, ssh_agent

MakeSshd = Callable[..., Sshd]


@pytest.fixture
def make_sshd(tmp_path: Path, ssh_ca: SSHCA) -> Iterator[MakeSshd]:
    """Start sshds trusting the CA's user CA key; each is stopped at the end of the test."""
    started: list[Sshd] = []

    def make(
        *settings: str,
        host_key: Path | None = None,
        principals: str = "",
        trusted: Path | None = None,
    ) -> Sshd:
        folder = tmp_path / f"sshd{len(started)}"
        folder.mkdir()
        if host_key is None:
            host_key = folder / "host_key"
            new_key(host_key)
        (folder / "principals").mkdir()
        (folder / "principals" / LOGIN_USER).write_text(principals + "\n")
        krl = folder / "revoked.krl"
        ok("ssh", "krl-watch", "--once", "--out", krl, *ssh_ca.client_args())
        sshd = Sshd(
            folder,
            [
                f"TrustedUserCAKeys {trusted or ssh_ca.user_ca}",
                f"RevokedKeys {krl}",
                *settings,
                *(
                    []
                    if any("Principals" in s for s in settings)
                    else [f"AuthorizedPrincipalsFile {folder}/principals/%u"]
                ),
            ],
            host_key,
        )
        started.append(sshd)
        sshd.start()
        return sshd

    yield make
    for sshd in started:
        sshd.stop()


def _serial(certificate: Path) -> int:
    listing = keygen("-L", "-f", certificate)
    return int(listing.split("Serial: ")[1].split()[0])


def test_token_certificate_logs_in_with_its_dotted_principal(
    tmp_path: Path, ssh_ca: SSHCA, make_sshd: MakeSshd
) -> None:
    sshd = make_sshd(principals="first.last")
    key, certificate = ssh_ca.certificate(tmp_path, "first.last")
    assert "Principals: \n                first.last\n" in keygen("-L", "-f", certificate)
    result = sshd.login(key, certificate=certificate)
    assert result.returncode == 0, result.stderr + sshd.log()
    assert f"ID first.last (serial {_serial(certificate)})" in sshd.log()


def test_key_without_its_certificate_is_refused(
    tmp_path: Path, ssh_ca: SSHCA, make_sshd: MakeSshd
) -> None:
    sshd = make_sshd(principals="first.last")
    key, certificate = ssh_ca.certificate(tmp_path, "first.last")
    certificate.unlink()  # ssh would load KEY-cert.pub by itself
    result = sshd.login(key)
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


def test_principal_not_in_the_certificate_is_refused(
    tmp_path: Path, ssh_ca: SSHCA, make_sshd: MakeSshd
) -> None:
    sshd = make_sshd(principals="first.last")
    key, certificate = ssh_ca.certificate(tmp_path, "someone.else")
    assert sshd.login(key, certificate=certificate).returncode == 255
    assert "Certificate does not contain an authorized principal" in sshd.log()


def test_expired_certificate_is_refused(tmp_path: Path, ssh_ca: SSHCA, make_sshd: MakeSshd) -> None:
    sshd = make_sshd(principals="first.last")
    home = ssh_ca.ca.home
    keys = load_ssh_ca(load_ca_folder(CAPaths(home), PASSWORD.encode()), PASSWORD.encode())
    assert keys is not None
    store = Store.from_url(sqlite_url_for(home / "ostiary.db"))
    yesterday = datetime.now(UTC) - timedelta(days=1)
    authority = SSHAuthority(keys, store, clock=lambda: yesterday)
    public = new_key(tmp_path / "old")
    issued = authority.issue(
        load_ssh_public_key_line(public.read_text()),
        SSHAuthorization(
            SSHCertificateType.USER, ("first.last",), "first.last", timedelta(hours=1), "test"
        ),
        actor="test",
    )
    store.dispose()
    certificate = tmp_path / "old-cert.pub"
    certificate.write_text(issued.line + "\n")
    assert sshd.login(tmp_path / "old", certificate=certificate).returncode == 255
    assert "Certificate invalid: expired" in sshd.log()


def test_certificate_in_the_krl_is_refused(
    tmp_path: Path, ssh_ca: SSHCA, make_sshd: MakeSshd
) -> None:
    key, certificate = ssh_ca.certificate(tmp_path, "first.last")
    kept_key, kept = ssh_ca.certificate(tmp_path, "first.last", name="kept")
    ssh_ca.ca.ca("ssh", "revoke", str(_serial(certificate)))
    sshd = make_sshd(principals="first.last")  # its KRL is fetched now
    krl = sshd.folder / "revoked.krl"
    checked = keygen("-Q", "-f", krl, kept)
    assert checked.strip().endswith("ok"), checked
    with pytest.raises(Exception, match="exit status 1"):
        keygen("-Q", "-f", krl, certificate)
    assert sshd.login(key, certificate=certificate).returncode == 255
    assert "revoked by file" in sshd.log()
    assert sshd.login(kept_key, certificate=kept).returncode == 0


def test_revoked_certificate_stops_at_the_next_login_under_principals_command(
    tmp_path: Path, ssh_ca: SSHCA, make_sshd: MakeSshd
) -> None:
    printed = ok("ssh", "config", "server", *ssh_ca.client_args()).stdout.splitlines()
    command = next(line for line in printed if line.startswith("AuthorizedPrincipalsCommand "))
    assert " -m ostiary.cli.ssh_principals " in command
    sshd = make_sshd(command, f"AuthorizedPrincipalsCommandUser {LOGIN_USER}")
    key, certificate = ssh_ca.certificate(tmp_path, LOGIN_USER)
    first = sshd.login(key, certificate=certificate)
    assert first.returncode == 0, first.stderr + sshd.log()
    ssh_ca.ca.ca("ssh", "revoke", str(_serial(certificate)))
    revoked_at = time.monotonic()
    # What sshd runs, as sshd runs it (the words of the printed line, %u and %s filled in).
    words = command.split()[1:]
    asked = subprocess.run(
        [*(w.replace("%u", LOGIN_USER).replace("%s", str(_serial(certificate))) for w in words)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    answered = time.monotonic() - revoked_at
    assert asked.stdout == "" and "is revoked" in asked.stderr
    second = sshd.login(key, certificate=certificate)  # the next login, no KRL refresh
    refused_after = time.monotonic() - revoked_at
    assert second.returncode == 255
    print(f"revocation to a refusing principals-command: {answered:.2f} s, "
          f"to the refused login: {refused_after:.2f} s")  # fmt: skip
    # The issue's "within one second of the revocation", measured on the principals
    # command's answer: a whole ssh login (key exchange, two command runs) takes longer
    # than a second by itself on this shared 2-core machine.
    assert answered < 1.0
    log = sshd.log()
    assert f"certificate {_serial(certificate)} is revoked" in log
    assert "Certificate does not contain an authorized principal" in log


def test_certificate_from_a_foreign_ca_is_refused(
    tmp_path: Path, ssh_ca: SSHCA, make_sshd: MakeSshd
) -> None:
    sshd = make_sshd(principals="first.last")
    new_key(tmp_path / "foreign_ca")
    public = new_key(tmp_path / "id")
    keygen("-s", tmp_path / "foreign_ca", "-I", "first.last", "-n", "first.last", public)
    result = sshd.login(tmp_path / "id", certificate=tmp_path / "id-cert.pub")
    assert result.returncode == 255
    assert "is not listed in" in sshd.log() and str(ssh_ca.user_ca) in sshd.log()


def test_source_address_mismatch_is_refused(
    tmp_path: Path, ssh_ca: SSHCA, make_sshd: MakeSshd
) -> None:
    sshd = make_sshd(principals="first.last")
    key, certificate = ssh_ca.certificate(tmp_path, "first.last", provisioner=RESTRICTED)
    assert "source-address 192.0.2.0/24" in keygen("-L", "-f", certificate)
    assert sshd.login(key, certificate=certificate).returncode == 255
    assert "not from a permitted source address" in sshd.log()


def test_host_certificate_presented_as_user_certificate_is_refused(
    tmp_path: Path, ssh_ca: SSHCA, make_sshd: MakeSshd
) -> None:
    # Even trusted as a user CA, the host CA's certificate is no user certificate. ssh skips
    # a host certificate given as CertificateFile, so it is offered from an agent.
    sshd = make_sshd(trusted=ssh_ca.host_ca, principals="first.last")
    key, _ = ssh_ca.certificate(tmp_path, "first.last", host=True)
    with ssh_agent(tmp_path) as agent:
        added = subprocess.run(
            [require_tool("ssh-add"), str(key)],
            env={**os.environ, "SSH_AUTH_SOCK": str(agent)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert "Certificate added" in added.stderr
        assert sshd.login(None, agent=agent).returncode == 255
    assert "Certificate invalid: not a user certificate" in sshd.log()


def test_host_certificate_is_trusted_through_the_cert_authority_line(
    tmp_path: Path, ssh_ca: SSHCA, make_sshd: MakeSshd
) -> None:
    host_key, host_certificate = ssh_ca.certificate(
        tmp_path, "127.0.0.1", "localhost", host=True, name="host"
    )
    sshd = make_sshd(
        f"HostCertificate {host_certificate}", host_key=host_key, principals="first.last"
    )
    known_hosts = tmp_path / "known_hosts"
    client = ok("ssh", "config", "client", "--hosts", "127.0.0.1", *ssh_ca.client_args())
    known_hosts.write_text(client.stdout.splitlines()[1] + "\n")
    key, certificate = ssh_ca.certificate(tmp_path, "first.last")
    result = sshd.login(key, certificate=certificate, known_hosts=known_hosts)
    assert result.returncode == 0, result.stderr + sshd.log()


def test_foreign_host_certificate_is_refused(
    tmp_path: Path, ssh_ca: SSHCA, make_sshd: MakeSshd
) -> None:
    new_key(tmp_path / "foreign_ca")
    host_public = new_key(tmp_path / "host")
    keygen("-s", tmp_path / "foreign_ca", "-h", "-I", "host", "-n", "127.0.0.1", host_public)
    sshd = make_sshd(
        f"HostCertificate {tmp_path / 'host-cert.pub'}",
        host_key=tmp_path / "host",
        principals="first.last",
    )
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"@cert-authority 127.0.0.1 {ssh_ca.host_ca.read_text()}")
    key, certificate = ssh_ca.certificate(tmp_path, "first.last")
    result = sshd.login(key, certificate=certificate, known_hosts=known_hosts)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr
