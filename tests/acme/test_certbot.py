"""certbot (Debian) against Ostiary's ACME: http-01 standalone, renew, revoke, unregister."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select

from ostiary.store import AcmeAccount, AcmeEabKey, CertificateRecord, Store
from tests.acme.conftest import AcmeServer
from tests.conftest import require_tool

pytestmark = pytest.mark.slow


class Certbot:
    def __init__(self, server: AcmeServer, home: Path, provisioner: str = "acme") -> None:
        self.binary = require_tool("certbot")
        self.server = server
        self.home = home
        self.provisioner = provisioner

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [
            self.binary,
            "--server",
            self.server.directory(self.provisioner),
            "--config-dir",
            str(self.home / "etc"),
            "--work-dir",
            str(self.home / "work"),
            "--logs-dir",
            str(self.home / "logs"),
            "--non-interactive",
            *args,
        ]
        environment = {**os.environ, "REQUESTS_CA_BUNDLE": str(self.server.root_file)}
        done = subprocess.run(
            command, capture_output=True, text=True, env=environment, timeout=120, check=False
        )
        if check and done.returncode != 0:
            pytest.fail(f"certbot {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def certonly(self, name: str) -> x509.Certificate:
        self.run(
            "certonly",
            "--standalone",
            "--http-01-address",
            "127.0.0.1",
            "--http-01-port",
            str(self.server.http_port),
            "-d",
            name,
            "--agree-tos",
            "-m",
            "ops@example.com",
            "--no-eff-email",
        )
        return self.certificate(name)

    def certificate(self, name: str) -> x509.Certificate:
        pem = (self.home / "etc" / "live" / name / "cert.pem").read_bytes()
        return x509.load_pem_x509_certificate(pem)


def status_of(server: AcmeServer, certificate: x509.Certificate) -> str:
    store = Store.from_url(server.folder.database_url)
    try:
        with store.transaction(read_only=True) as session:
            return str(
                session.scalars(
                    select(CertificateRecord.status).where(
                        CertificateRecord.serial == f"{certificate.serial_number:x}"
                    )
                ).one()
            )
    finally:
        store.dispose()


def test_certbot_issues_renews_revokes_and_unregisters(
    own_acme_server: AcmeServer, tmp_path: Path
) -> None:
    certbot = Certbot(own_acme_server, tmp_path)
    first = certbot.certonly("localhost")
    assert first.issuer == own_acme_server.folder.intermediate.subject
    sans = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]

    certbot.run("renew", "--force-renewal", "--no-random-sleep-on-renew")
    renewed = certbot.certificate("localhost")
    assert renewed.serial_number != first.serial_number

    # Revoked with the account key.
    live = tmp_path / "etc" / "live" / "localhost"
    certbot.run("revoke", "--cert-path", str(live / "cert.pem"), "--no-delete-after-revoke")
    assert status_of(own_acme_server, renewed) == "revoked"

    # Revoked with the certificate's own key (no account involved).
    other = certbot.certonly("vm")
    other_live = tmp_path / "etc" / "live" / "vm"
    keyholder = Certbot(own_acme_server, tmp_path / "keyholder")
    keyholder.run(
        "revoke",
        "--cert-path",
        str(other_live / "cert.pem"),
        "--key-path",
        str(other_live / "privkey.pem"),
        "--reason",
        "keycompromise",
        "--no-delete-after-revoke",
    )
    assert status_of(own_acme_server, other) == "revoked"

    certbot.run("unregister")
    store = Store.from_url(own_acme_server.folder.database_url)
    try:
        with store.transaction(read_only=True) as session:
            statuses = set(session.scalars(select(AcmeAccount.status)))
    finally:
        store.dispose()
    assert "deactivated" in statuses
    # The deactivated account's key is refused from now on.
    refused = certbot.run(
        "certonly",
        "--standalone",
        "-d",
        "runsc",
        "--http-01-port",
        str(own_acme_server.http_port),
        check=False,
    )
    assert refused.returncode != 0


def test_certbot_registers_with_an_eab_key_once(
    own_acme_server: AcmeServer, tmp_path: Path
) -> None:
    made = own_acme_server.eab_key()
    eab = ("--eab-kid", made.kid, "--eab-hmac-key", made.hmac_key)
    register = ("register", "--agree-tos", "-m", "ops@example.com", "--no-eff-email")
    Certbot(own_acme_server, tmp_path / "first", "eab").run(*register, *eab)
    store = Store.from_url(own_acme_server.folder.database_url)
    try:
        with store.transaction(read_only=True) as session:
            key = session.get(AcmeEabKey, made.kid)
            assert key is not None
            assert key.account_id is not None
            assert key.sealed_key == b""  # spent: its HMAC key is wiped
            assert session.get(AcmeAccount, key.account_id) is not None
    finally:
        store.dispose()
    # The key is spent: another certbot (another account key) is refused with it.
    second = Certbot(own_acme_server, tmp_path / "second", "eab").run(*register, *eab, check=False)
    assert second.returncode != 0
    assert "bound" in second.stdout + second.stderr
