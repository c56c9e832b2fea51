"""SSH user certificates for a signed-in identity, logged in to a real sshd.

- an OIDC sign-in (oidc-provider-mock) through ``ostiary ssh login``, into a real ssh-agent
  with ``ssh-add -t`` (the agent's debug log shows the lifetime);
- an X.509 client certificate of this CA exchanged over mTLS (a revoked one is refused);
- the rejected twins at the API: a sign-in made for another key, a principal that is not
  the identity's, no client certificate, a token mixed with a sign-in. Nothing is issued.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ostiary.client.ssh import SSHClient
from ostiary.core.encoding import load_certificate_chain
from ostiary.core.errors import (
    BadRequest,
    LifetimeNotAllowed,
    NameNotAuthorized,
    TokenReused,
    Unauthorized,
)
from ostiary.provisioners.oidc_binding import nonce_for_key
from ostiary.store import AuditEntry, Store, sqlite_url_for
from tests.client.conftest import OSTIARY, PROVISIONER, ok, refused, run_cli
from tests.conftest import require_tool
from tests.oidc.conftest import CLIENT_ID, SECRET, Provider, _start_provider
from tests.ssh.conftest import SSHCA
from tests.ssh.sshd import LOGIN_USER, Sshd, keygen, new_key

CORP = "ssh-corp"  # oidc: principals from the e-mail's local part and the groups
X509 = "ssh-x509"  # jwk for X.509 certificates: principals from the e-mail's local part


@dataclass
class Setup:
    ssh_ca: SSHCA
    provider: Provider
    sshd: Sshd


@pytest.fixture(scope="module")
def setup(ssh_ca: SSHCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """The shared CA plus an oidc and a jwk provisioner mapping identities, an OpenID
    provider and one sshd letting ``first.last`` and the group ``ops`` in."""
    folder = tmp_path_factory.mktemp("identity")
    providers = _start_provider(folder / "provider.log")
    provider = next(providers)
    ca = ssh_ca.ca
    secret_file = folder / "client-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    ca.ca("provisioner", "add", CORP, "--type", "oidc", "--client-id", CLIENT_ID,
          "--configuration-endpoint", provider.configuration_endpoint,
          "--domains", "corp.example", "--client-secret-file", secret_file)  # fmt: skip
    ca.ca("ssh", "policy", CORP, "--principals-from", "email-local",
          "--principals-from", "groups", "--user-lifetime", "2h")  # fmt: skip
    ca.ca("provisioner", "add", X509, "--max-lifetime", "1d")
    ca.ca("ssh", "policy", X509, "--principals-from", "email-local")
    host_key = folder / "host_key"
    new_key(host_key)
    (folder / "principals").mkdir()
    (folder / "principals" / LOGIN_USER).write_text("first.last\nops\n")
    sshd = Sshd(
        folder,
        [
            f"TrustedUserCAKeys {ssh_ca.user_ca}",
            f"AuthorizedPrincipalsFile {folder}/principals/%u",
        ],
        host_key,
    )
    sshd.start()
    try:
        yield Setup(ssh_ca, provider, sshd)
    finally:
        sshd.stop()
        providers.close()


@pytest.fixture
def client(ssh_ca: SSHCA) -> Iterator[SSHClient]:
    roots = load_certificate_chain(ssh_ca.ca.root_file.read_bytes())
    with SSHClient(ssh_ca.ca.url, roots) as opened:
        yield opened


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A real ssh-agent in debug mode: (its socket, its log)."""
    socket_path, log = tmp_path / "agent.sock", tmp_path / "agent.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [require_tool("ssh-agent"), "-d", "-a", str(socket_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            time.sleep(0.02)
        yield socket_path, log
    finally:
        process.terminate()
        process.wait(timeout=10)


def _listed(ssh_ca: SSHCA) -> list[str]:
    return ssh_ca.ca.ca("ssh", "list", "--limit", "10000").stdout.splitlines()


def _x509(setup: Setup, folder: Path, name: str) -> tuple[Path, Path]:
    """An X.509 client certificate from provisioner X509 naming ``name``@corp.example."""
    ca = setup.ssh_ca.ca
    token = ca.ca("token", name, "--provisioner", X509, "--san",
                  f"{name}@corp.example").stdout.strip()  # fmt: skip
    crt, key = folder / f"{name}.crt", folder / f"{name}.key"
    ok("cert", "request", name, crt, key, "--token", token, "--not-after", "3h",
       "--ca-url", ca.url, "--root", ca.root_file)  # fmt: skip
    return crt, key


def test_oidc_sign_in_puts_a_dotted_principal_certificate_into_the_agent_and_logs_in(
    setup: Setup, tmp_path: Path, agent: tuple[Path, Path]
) -> None:
    socket_path, agent_log = agent
    setup.provider.set_user(
        "first.last",
        email="first.last@corp.example",
        email_verified=True,
        groups=["ops", "has space", "Domain Users"],
    )
    ca = setup.ssh_ca.ca
    env = {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
    process = subprocess.Popen(
        [
            *OSTIARY,
            "ssh",
            "login",
            "--provisioner",
            CORP,
            "--no-browser",
            "--ca-url",
            ca.url,
            "--root",
            str(ca.root_file),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    url = ""
    while not url.startswith("http"):
        url = process.stdout.readline()
        assert url or process.poll() is None, process.communicate()
    assert parse_qs(urlsplit(url).query)["nonce"][0]
    setup.provider.sign_in(url.strip(), "first.last")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    listed = subprocess.run(
        [require_tool("ssh-add"), "-L"], env=env, capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in listed.splitlines() if "-cert-v01@openssh.com" in x)
    certificate = tmp_path / "agent-cert.pub"
    certificate.write_text(line + "\n")
    fields = keygen("-L", "-f", certificate)
    # The e-mail's local part (dots kept) and the groups OpenSSH can carry, in order.
    assert "Principals: \n                first.last\n                ops\n" in fields
    assert "Domain Users" not in fields and "has space" not in fields
    # ssh-add -t: the agent holds the key for the certificate's remaining life (2 h).
    life = int(agent_log.read_text().split("(life: ")[1].split(")")[0])
    assert 7000 < life <= 7200, agent_log.read_text()
    result = setup.sshd.login(None, agent=socket_path)
    assert result.returncode == 0, result.stderr + setup.sshd.log()
    assert "ID first.last@corp.example" in setup.sshd.log()


def test_sign_in_refusals_at_the_api_issue_nothing(
    setup: Setup, tmp_path: Path, client: SSHClient
) -> None:
    setup.provider.set_user("first.last", email="first.last@corp.example", email_verified=True)
    public = new_key(tmp_path / "id").read_text()
    other = new_key(tmp_path / "other").read_text()
    key = serialization.load_ssh_public_key(public.encode())
    before = _listed(setup.ssh_ca)
    id_token = setup.provider.id_token("first.last", nonce=nonce_for_key(key))
    with pytest.raises(Unauthorized, match="nonce does not match"):
        client.ssh_sign_in_certificate(other, CORP, id_token)  # made for another key
    with pytest.raises(NameNotAuthorized, match="not yours"):
        client.ssh_sign_in_certificate(public, CORP, id_token, principals=["root"])
    with pytest.raises(BadRequest, match="a token names the principals"):
        client._call(client._http, "POST", "/ssh/certificate",
                     json={"public_key": public, "token": "x", "id_token": id_token})  # fmt: skip
    with pytest.raises(Unauthorized):
        client._call(client._http, "POST", "/ssh/exchange", json={"public_key": public})
    assert _listed(setup.ssh_ca) == before
    # The refused requests left the sign-in unspent: it still works once, for its own key.
    answer = client.ssh_sign_in_certificate(public, CORP, id_token, principals=["first.last"])
    assert answer["serial"]
    assert len(_listed(setup.ssh_ca)) == len(before) + 1
    with pytest.raises(TokenReused):  # and only once
        client.ssh_sign_in_certificate(public, CORP, id_token)
    fresh = setup.provider.id_token("first.last", nonce=nonce_for_key(key))
    with pytest.raises(LifetimeNotAllowed):  # longer than the policy's 2 h
        client.ssh_sign_in_certificate(public, CORP, fresh, lifetime="3h")
    assert len(_listed(setup.ssh_ca)) == len(before) + 1


def test_x509_certificate_exchanges_for_an_ssh_certificate_and_a_revoked_one_is_refused(
    setup: Setup, tmp_path: Path
) -> None:
    crt, key = _x509(setup, tmp_path, "first.last")
    ca = setup.ssh_ca.ca
    out = tmp_path / "id_x509"
    ok("ssh", "login", "--x509-cert", crt, "--x509-key", key, "--key-store", "file",
       "--out", out, "--ca-url", ca.url, "--root", ca.root_file)  # fmt: skip
    assert (out.stat().st_mode & 0o777) == 0o600
    fields = keygen("-L", "-f", tmp_path / "id_x509-cert.pub")
    assert "Principals: \n                first.last\n" in fields
    # It ends with the X.509 certificate (3 h), not after the policy's 16 h.
    valid_to = fields.split(" to ")[1].split()[0]
    x509_end = load_certificate_chain(crt.read_bytes())[0].not_valid_after_utc
    assert abs(datetime.fromisoformat(valid_to).replace(tzinfo=UTC) - x509_end).seconds < 120
    result = setup.sshd.login(out, certificate=tmp_path / "id_x509-cert.pub")
    assert result.returncode == 0, result.stderr + setup.sshd.log()
    serial = format(load_certificate_chain(crt.read_bytes())[0].serial_number, "x")
    ssh_serial = keygen("-L", "-f", tmp_path / "id_x509-cert.pub").split("Serial: ")[1].split()[0]
    store = Store.from_url(sqlite_url_for(ca.home / "ostiary.db"))
    try:
        with store.transaction(read_only=True) as session:
            entry = session.scalars(select(AuditEntry).where(AuditEntry.target == ssh_serial)).one()
    finally:
        store.dispose()
    assert entry.event == "ssh_certificate.issued" and entry.details["via"] == "x509"
    assert entry.details["x509_serial"].replace(":", "").lower().lstrip("0") == serial.lstrip("0")
    ca.ca("revoke", serial)
    before = _listed(setup.ssh_ca)
    failed = refused("ssh", "login", "--x509-cert", crt, "--x509-key", key,
                     "--key-store", "file", "--out", tmp_path / "again",
                     "--ca-url", ca.url, "--root", ca.root_file)  # fmt: skip
    assert "revoked" in failed.stderr
    assert _listed(setup.ssh_ca) == before
    assert not (tmp_path / "again-cert.pub").exists()


def test_x509_certificate_of_a_provisioner_without_a_mapping_is_refused(
    setup: Setup, tmp_path: Path
) -> None:
    ca = setup.ssh_ca.ca
    token = ca.token("plain", "plain@corp.example", not_after="1h")
    crt, key = tmp_path / "plain.crt", tmp_path / "plain.key"
    ok("cert", "request", "plain", crt, key, "--token", token, "--not-after", "1h",
       "--ca-url", ca.url, "--root", ca.root_file)  # fmt: skip
    failed = refused("ssh", "login", "--x509-cert", crt, "--x509-key", key,
                     "--key-store", "file", "--out", tmp_path / "id",
                     "--ca-url", ca.url, "--root", ca.root_file)  # fmt: skip
    assert f"provisioner {PROVISIONER!r} maps no identity" in failed.stderr


def test_login_without_an_agent_says_so(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    result = run_cli("ssh", "login", "--token", "t", *setup.ssh_ca.client_args())
    assert result.exit_code != 0
    assert "no ssh-agent" in result.stderr
