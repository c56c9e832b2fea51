"""``ca provisioner add --type oidc`` checks the provider's discovery document (a real
oidc-provider-mock); ``ca provisioner update NAME ...`` changes any type in place.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ostiary.provisioners.manage import claims_for_certificate
from ostiary.store import AuditEntry, AuditLog, ProvisionerRepository, Store
from tests.cli.conftest import CLI, ca_dir, cli, password_file  # noqa: F401 - fixtures

from ..client.conftest import free_port
from .conftest import CLIENT_ID, Provider


@pytest.fixture
def common_endpoint(provider: Provider) -> Iterator[str]:
    """A loopback stand-in for Entra's ``common`` endpoint: the provider's real document,
    served under another path, so the issuer it names is not the URL it came from.
    """
    document = httpx.get(provider.configuration_endpoint).json()
    body = json.dumps(document).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/common/v2.0/.well-known/openid-configuration"
    finally:
        server.shutdown()
        server.server_close()


def _store(ca_dir: Path) -> Store:  # noqa: F811
    return Store.from_url(f"sqlite:///{ca_dir / 'ostiary.db'}")


def _config(ca_dir: Path, name: str) -> dict[str, Any]:  # noqa: F811
    store = _store(ca_dir)
    try:
        with store.transaction(read_only=True) as session:
            return dict(ProvisionerRepository(session).get(name).config)
    finally:
        store.dispose()


def test_oidc_provisioner_add_fetches_the_discovery_document_and_checks_its_issuer(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
    provider: Provider,
    common_endpoint: str,
) -> None:
    pw = ["--password-file", password_file]
    add = ["ca", "provisioner", "add", "--type", "oidc", "--client-id", CLIENT_ID, *pw]
    added = cli.ok(*add, "corp", "--configuration-endpoint", provider.configuration_endpoint)
    assert f"issuer: {provider.issuer}" in added.stderr

    mistyped = provider.configuration_endpoint.replace("configuration", "configuraton")
    refused = cli.refused(*add, "typo", "--configuration-endpoint", mistyped)
    assert "answered 404" in refused.stderr and "--no-check" in refused.stderr
    refused = cli.refused(*add, "common", "--configuration-endpoint", common_endpoint)
    assert f"names issuer '{provider.issuer}'" in refused.stderr
    nowhere = f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration"
    refused = cli.refused(*add, "away", "--configuration-endpoint", nowhere)
    assert "cannot be reached" in refused.stderr
    listed = json.loads(cli.ok("ca", "provisioner", "list", "--format", "json", *pw).stdout)
    assert [p["name"] for p in listed] == ["corp"]

    # --no-check: a provider that is offline now may still be added.
    offline = cli.ok(*add, "away", "--configuration-endpoint", nowhere, "--no-check")
    assert "not checked (--no-check)" in offline.stderr
    assert _config(ca_dir, "away")["configuration_endpoint"] == nowhere


def test_provisioner_update_changes_an_oidc_provisioner_in_place_and_audits_it(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
    provider: Provider,
    tmp_path: Path,
) -> None:
    pw = ["--password-file", password_file]
    cli.ok("ca", "provisioner", "add", "entra", "--type", "oidc", "--client-id", CLIENT_ID,
           "--configuration-endpoint", provider.configuration_endpoint, "--admins",
           "old@corp.example", "--domains", "corp.example", *pw)  # fmt: skip
    before = _config(ca_dir, "entra")
    update = ["ca", "provisioner", "update", "entra"]
    cli.ok(*update, "--admins", "alice@corp.example,bob@corp.example", "--tenant-id", "t-1",
           "--default-lifetime", "2h", "--groups", "pki", *pw)  # fmt: skip
    after = _config(ca_dir, "entra")
    assert after["admins"] == ["alice@corp.example", "bob@corp.example"]
    assert after["tenant_id"] == "t-1" and after["groups"] == ["pki"]
    assert after["claims"]["default_lifetime"] == "2h"
    unchanged = ("domains", "client_id", "configuration_endpoint", "profile")
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}
    assert after["claims"]["max_lifetime"] == before["claims"]["max_lifetime"]
    cli.ok(*update, "--tenant-id", "", *pw)
    assert _config(ca_dir, "entra")["tenant_id"] is None

    store = _store(ca_dir)
    try:
        with store.transaction(read_only=True) as session:
            # Its certificates still have a provisioner to renew under (no remove, re-add).
            claims = claims_for_certificate(session, "entra", ca=None)
            assert claims.lifetime.default.total_seconds() == 7200
            assert AuditLog(session).verify().ok
            entries = list(
                session.scalars(select(AuditEntry).where(AuditEntry.event == "provisioner.updated"))
            )
    finally:
        store.dispose()
    assert len(entries) == 2
    assert entries[0].details["changed"]["admins"] == {
        "before": ["old@corp.example"],
        "after": ["alice@corp.example", "bob@corp.example"],
    }

    # Rejected twins: one line each, nothing changed.
    current = _config(ca_dir, "entra")
    mistyped = provider.configuration_endpoint.replace("configuration", "configuraton")
    for args in (
        ["nosuch", "--admins", "a@corp.example"],
        ["entra"],  # nothing to change
        ["entra", "--admin"],  # a jwk setting
        ["entra", "--require-code"],  # an approval setting
        ["entra", "--profile", "server"],
        ["entra", "--uri-claim", "email"],
        ["entra", "--policy-oid", "not-an-oid"],
        ["entra", "--max-lifetime", "100000d"],  # beyond the CA's claims
        ["entra", "--min-lifetime", "3h"],  # above the default
        ["entra", "--configuration-endpoint", mistyped],
        [
            "entra",
            "--configuration-endpoint",
            "http://idp.example/.well-known/openid-configuration",
        ],
        ["entra", "--client-secret-file", str(tmp_path / "missing")],
    ):
        cli.refused(*update, *args, *pw)
    assert _config(ca_dir, "entra") == current


def test_provisioner_update_changes_jwk_and_approval_settings(
    cli: CLI,  # noqa: F811
    ca_dir: Path,  # noqa: F811
    password_file: Path,  # noqa: F811
) -> None:
    pw = ["--password-file", password_file]
    cli.ok("ca", "provisioner", "add", "laptops", "--type", "jwk", *pw)
    cli.ok("ca", "provisioner", "add", "doors", "--type", "approval", *pw)
    kid = _config(ca_dir, "laptops")["key"]
    cli.ok("ca", "provisioner", "update", "laptops", "--admin", "--profile", "user",
           "--profile", "client", "--allow-name", "*@corp.example", *pw)  # fmt: skip
    laptops = _config(ca_dir, "laptops")
    assert laptops["admin"] is True and laptops["profiles"] == ["user", "client"]
    assert laptops["claims"]["allowed_names"] == ["email:*@corp.example"]
    assert laptops["key"] == kid  # same key: its tokens and certificates stay valid
    cli.ok("ca", "provisioner", "update", "doors", "--no-require-code", "--profile", "client",
           *pw)  # fmt: skip
    doors = _config(ca_dir, "doors")
    assert doors["require_code"] is False and doors["profile"] == "client"

    for args in (
        ["laptops", "--profile", "ocsp"],
        ["laptops", "--admins", "a@corp.example"],  # an oidc setting
        ["doors", "--profile", "client", "--profile", "user"],  # one profile
        ["doors", "--admin"],
        ["doors", "--require-attestation", "nosuch"],
    ):
        cli.refused("ca", "provisioner", "update", *args, *pw)
    assert _config(ca_dir, "laptops") == laptops and _config(ca_dir, "doors") == doors
