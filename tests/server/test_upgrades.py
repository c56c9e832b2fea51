"""Upgrades from every earlier schema revision, and a database newer than the code.

For each revision the Alembic script directory holds (but head), a database is built at that
revision, filled with rows of that era through its own tables (reflected, so a column that
revision lacks is never written and a required one it has is never missed), upgraded to head,
then read back and served: the certificates and their revocation read, the spent token stays
spent, the audit chain verifies and the OCSP responder answers for both certificates.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import Connection, MetaData, Table, update

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAMaterial
from ostiary.authority.ocsp_service import OcspService
from ostiary.config import dump_config, load_config
from ostiary.core.errors import TokenReused
from ostiary.core.issuance import Authorization, issue_certificate
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import parse_san, parse_subject
from ostiary.store import (
    GENESIS_HASH,
    AuditLog,
    CertificateRepository,
    Store,
    TokenRepository,
    certificate_values,
    create_engine_for,
    migrate,
    sqlite_url_for,
)
from ostiary.store.audit import new_entry_values
from ostiary.store.migrate import alembic_config, all_revisions
from tests.server.conftest import PASSWORD, material_for, ocsp_request

EARLIER = [r.revision for r in all_revisions()[:-1]]
NOW = datetime.now(UTC).replace(microsecond=0)
TOKEN_ID = "upgrade-test-token-0001"


def leaf(material: CAMaterial, name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(parse_subject(name))
        .sign(key, hashes.SHA256())
    )
    authorization = Authorization(
        subject=parse_subject(name),
        names=(parse_san(f"{name}.example.com"),),
        profile="client",
        lifetime=Lifetime(default=timedelta(days=1), maximum=timedelta(days=2)),
    )
    return issue_certificate(csr, authorization, material.issuer, now=NOW)


def insert(connection: Connection, table: Table, values: dict[str, Any]) -> None:
    """Insert the columns ``table`` has at this revision; every required one must be given."""
    row = {k: v for k, v in values.items() if k in table.c}
    required = {
        c.name
        for c in table.c
        if not c.nullable and c.server_default is None and c.autoincrement is not True
        and not c.primary_key
    }  # fmt: skip
    assert required <= set(row), f"{table.name}: no value for {required - set(row)}"
    connection.execute(table.insert().values(**row))


def fill_era_rows(connection: Connection, good: x509.Certificate, bad: x509.Certificate) -> None:
    tables = MetaData()
    tables.reflect(connection)
    certificates = tables.tables["certificates"]
    insert(connection, certificates, certificate_values(good, profile="client", provisioner="ops"))
    revoked = certificate_values(bad, profile="client", provisioner="ops")
    revoked.update(status="revoked", revocation_reason="keyCompromise", revoked_at=NOW)
    insert(connection, certificates, revoked)
    insert(
        connection,
        tables.tables["used_tokens"],
        {
            "provisioner": "ops",
            "token_id": TOKEN_ID,
            "used_at": NOW,
            "expires_at": NOW + timedelta(days=1),
        },
    )
    entry = new_entry_values(
        "certificate.revoked",
        at=NOW,
        actor="cli",
        target=f"{bad.serial_number:x}",
        details={"reason": "keyCompromise"},
        prev_hash=GENESIS_HASH,
    )
    insert(connection, tables.tables["audit_entries"], entry)
    head = tables.tables["audit_head"]
    connection.execute(update(head).values(last_entry_id=1, hash=entry["hash"]))


def ocsp_status(service: OcspService, material: CAMaterial, certificate: x509.Certificate) -> str:
    request = ocsp_request(certificate, material.intermediate)
    return ocsp.load_der_ocsp_response(service.respond(request)).certificate_status.name


@pytest.mark.parametrize("revision", EARLIER)
def test_a_database_of_every_earlier_revision_upgrades_and_serves(
    revision: str, database_url: str, ca_material: CAMaterial, tmp_path: Path
) -> None:
    good, bad = leaf(ca_material, "good"), leaf(ca_material, "bad")
    engine = create_engine_for(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)
            fill_era_rows(connection, good, bad)
    finally:
        engine.dispose()

    migrate(database_url)

    store = Store.from_url(database_url)
    try:
        with store.transaction() as session:
            records = CertificateRepository(session)
            assert records.get(good.serial_number).certificate() == good
            assert records.get(bad.serial_number).revocation_reason == "keyCompromise"
            with pytest.raises(TokenReused):
                TokenRepository(session).use(TOKEN_ID, "ops", NOW + timedelta(days=1), NOW)
            verification = AuditLog(session).verify()
            assert verification.ok and verification.checked == 1
        authority = Authority(material_for(ca_material, database_url, tmp_path / "ca"), store)
        service = OcspService(authority)
        assert ocsp_status(service, ca_material, good) == "GOOD"
        assert ocsp_status(service, ca_material, bad) == "REVOKED"
    finally:
        store.dispose()


def ca_folder_at(ca_material: CAMaterial, revision: str, folder: Path) -> Path:
    """A copy of the session CA whose SQLite database is at ``revision``."""
    url = sqlite_url_for(folder / "db" / "ostiary.db")
    (folder / "db").mkdir(parents=True)
    engine = create_engine_for(url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)
    finally:
        engine.dispose()
    return material_for(ca_material, url, folder / "ca").paths.root


def write_database_url(home: Path, url: str) -> None:
    config = load_config(home / "ostiary.toml").model_copy(update={"database_url": url})
    (home / "ostiary.toml").write_text(dump_config(config), encoding="utf-8")


def ostiary(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command_line = [sys.executable, "-c", "from ostiary.cli.main import main; main()"]
    return subprocess.run(
        [*command_line, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_migrate_dry_run_lists_what_would_change(ca_material: CAMaterial, tmp_path: Path) -> None:
    known = all_revisions()
    home = ca_folder_at(ca_material, known[-3].revision, tmp_path)
    write_database_url(home, sqlite_url_for(tmp_path / "db" / "ostiary.db"))
    dry = ostiary("ca", "migrate", "--dry-run", "--dir", home)
    assert dry.returncode == 0, dry.stderr
    listed = dry.stdout.splitlines()
    assert listed[0].startswith(f"The database is at revision {known[-3].revision}")
    assert listed[1:] == [f"  {r.revision}: {r.message}" for r in known[-2:]]
    assert ostiary("ca", "migrate", "--dry-run", "--dir", home).stdout == dry.stdout  # unchanged
    assert ostiary("ca", "migrate", "--dir", home).returncode == 0
    done = ostiary("ca", "migrate", "--dry-run", "--dir", home)
    assert (
        done.stdout.strip() == f"The database schema is up to date (revision {known[-1].revision})"
    )


def test_the_server_refuses_a_database_newer_than_it_knows(
    ca_material: CAMaterial, tmp_path: Path
) -> None:
    home = ca_folder_at(ca_material, "head", tmp_path)
    url = sqlite_url_for(tmp_path / "db" / "ostiary.db")
    write_database_url(home, url)
    engine = create_engine_for(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    finally:
        engine.dispose()
    password = tmp_path / "password"
    password.write_bytes(PASSWORD + b"\n")
    for args in (
        ("ca", "serve", "--address", "127.0.0.1:0", "--http-address", "127.0.0.1:0"),
        ("ca", "migrate", "--dry-run"),
        ("ca", "migrate"),
    ):
        refused = ostiary(*args, "--dir", home, "--password-file", password)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert lines[0].startswith("error: the database schema is at revision '9999_future'")
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            version = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            assert version.scalar_one() == "9999_future"
    finally:
        engine.dispose()
