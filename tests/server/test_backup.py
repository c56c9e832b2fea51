"""``ca backup`` while a real ``ca serve`` issues, then ``ca restore`` and serve the copy.

On SQLite (restored into the new folder) and on PostgreSQL (restored into another schema).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from sqlalchemy import select
from typer.testing import CliRunner, Result

from ostiary.authority.folder import CAMaterial, CAPaths
from ostiary.cli.main import app
from ostiary.config import load_config
from ostiary.store import CertificateRecord, Store, migrate, sqlite_url_for
from tests.conftest import fresh_postgres_schema
from tests.server.conftest import Provisioners, make_csr, ocsp_request
from tests.server.processes import CAFolder, ServeProcess, make_ca_folder, serving

CONCURRENT = 32
BACKUP_PASSWORD = "backup tests: a long archive password"
OSTIARY = [sys.executable, "-c", "from ostiary.cli.main import main; main()"]


def ostiary(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OSTIARY, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def issue(
    server: ServeProcess, provisioners: Provisioners, ca: CAFolder, name: str
) -> tuple[x509.Certificate, str]:
    """A certificate from ``/sign``, and the token it spent."""
    csr, _ = make_csr(name, [name])
    token = provisioners.ops.mint_sign_token(
        provisioners.ops_key, name, ca=ca.identity, now=datetime.now(UTC)
    )
    with server.client() as client:
        answer = client.post("/sign", json={"csr": csr, "token": token})
    assert answer.status_code == 201, answer.text
    return x509.load_pem_x509_certificate(answer.json()["certificate"].encode()), token


def ocsp_status(server: ServeProcess, ca: CAFolder, certificate: x509.Certificate) -> str:
    request = ocsp_request(certificate, ca.intermediate)
    with server.plain() as plain:
        answer = plain.post(
            "/ocsp", content=request, headers={"content-type": "application/ocsp-request"}
        )
    assert answer.status_code == 200
    return ocsp.load_der_ocsp_response(answer.content).certificate_status.name


def crl_number(server: ServeProcess) -> int:
    with server.plain() as plain:
        crl = x509.load_der_x509_crl(plain.get("/crl").content)
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def recorded_serials(database_url: str) -> set[int]:
    store = Store.from_url(database_url)
    try:
        with store.transaction(read_only=True) as session:
            return {int(s, 16) for s in session.scalars(select(CertificateRecord.serial))}
    finally:
        store.dispose()


@pytest.fixture
def restore_target(request: pytest.FixtureRequest, database_url: str) -> Iterator[str | None]:
    """For a CA on PostgreSQL, a second empty schema to restore into; else None (SQLite)."""
    if database_url.startswith("sqlite"):
        yield None
        return
    with fresh_postgres_schema(request.getfixturevalue("postgres_database_url")) as url:
        yield url


@pytest.mark.slow
def test_a_backup_taken_under_load_restores_to_a_ca_that_continues(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    database_url: str,
    restore_target: str | None,
    tmp_path: Path,
) -> None:
    ca = make_ca_folder(ca_material, provisioners, database_url, tmp_path / "ca")
    password = tmp_path / "backup-password"
    password.write_text(BACKUP_PASSWORD + "\n")
    archive = tmp_path / "ca.backup"
    new_dir = tmp_path / "restored"
    with serving(ca, tmp_path / "serve.log") as server:
        before = [issue(server, provisioners, ca, f"before-{i}.example.com") for i in range(4)]
        revoked = before[0][0]
        admin = provisioners.admins.mint_admin_token(
            provisioners.admins_key, ca=ca.identity, now=datetime.now(UTC)
        )
        with server.client() as client:
            answer = client.post(
                "/revoke",
                json={"serial_number": f"{revoked.serial_number:x}"},
                headers={"authorization": f"Bearer {admin}"},
            )
        assert answer.status_code == 200, answer.text
        crl_before = crl_number(server)

        with ThreadPoolExecutor(CONCURRENT) as pool:
            running: list[Future[tuple[x509.Certificate, str]]] = [
                pool.submit(issue, server, provisioners, ca, f"load-{i}.example.com")
                for i in range(CONCURRENT)
            ]
            returned_before = [f.result() for f in running if f.done()]
            made = ostiary(
                "ca", "backup", "--out", archive, "--password-file", password,
                "--dir", ca.paths.root,
            )  # fmt: skip
            during = [f.result() for f in running]
        assert made.returncode == 0, made.stderr
        assert archive.stat().st_mode & 0o777 == 0o600
        statuses = {c.serial_number: ocsp_status(server, ca, c) for c, _ in before}
        assert statuses[revoked.serial_number] == "REVOKED"

        args: list[str | Path] = ["ca", "restore", archive, "--dir", new_dir]
        args += ["--password-file", password]
        if restore_target is not None:
            args += ["--database-url", restore_target]
        restored = ostiary(*args)
        assert restored.returncode == 0, restored.stderr

    paths = CAPaths(new_dir)
    restored_url = paths.database_url(load_config(paths.config))
    if restore_target is None:
        assert paths.database.is_file()
    else:
        assert restored_url == restore_target
    verified = ostiary("ca", "audit", "verify", "--dir", new_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK: ")
    assert {c.serial_number for c, _ in [*before, *returned_before]} <= recorded_serials(
        restored_url
    )

    copy_ca = replace(ca, paths=paths, database_url=restored_url)
    with serving(copy_ca, tmp_path / "restored.log") as copy:
        assert {c.serial_number: ocsp_status(copy, ca, c) for c, _ in before} == statuses
        # Spent tokens stay spent: a token used before the snapshot is refused.
        csr, _ = make_csr("before-1.example.com", ["before-1.example.com"])
        with copy.client() as client:
            reused = client.post("/sign", json={"csr": csr, "token": before[1][1]})
        assert reused.status_code == 409, reused.text
        fresh, _ = issue(copy, provisioners, copy_ca, "after.example.com")
        assert fresh.serial_number not in {c.serial_number for c, _ in [*before, *during]}
        # The restored CA serves the newest CRL kept in the database (the same number), and
        # its next CRL, after a revocation, continues the sequence.
        assert crl_number(copy) >= crl_before
        with copy.client() as client:
            answer = client.post(
                "/revoke",
                json={"serial_number": f"{fresh.serial_number:x}"},
                headers={"authorization": f"Bearer {admin}"},
            )
        assert answer.status_code == 200, answer.text
        assert crl_number(copy) > crl_before


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def refused_with(result: Result, text: str) -> None:
    """Exit 1 and one ``error:`` line naming the fault; no traceback."""
    assert result.exit_code == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and text in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_archive_or_password_restores_nothing(
    ca_material: CAMaterial, provisioners: Provisioners, tmp_path: Path
) -> None:
    ca = make_ca_folder(
        ca_material, provisioners, sqlite_url_for(tmp_path / "ca.db"), tmp_path / "ca"
    )
    password, wrong = tmp_path / "password", tmp_path / "wrong"
    password.write_text(BACKUP_PASSWORD + "\n")
    wrong.write_text(BACKUP_PASSWORD + "!\n")
    archive = tmp_path / "ca.backup"
    made = cli(
        "ca", "backup", "--out", archive, "--password-file", password, "--dir", ca.paths.root
    )
    assert made.exit_code == 0, made.stderr
    refused_with(
        cli("ca", "backup", "--out", archive, "--password-file", password, "--dir", ca.paths.root),
        "exists already",
    )
    sealed = archive.read_bytes()
    middle = len(sealed) // 2
    broken = {
        "truncated.backup": sealed[: len(sealed) - 1000],
        "altered.backup": sealed[:middle] + bytes([sealed[middle] ^ 1]) + sealed[middle + 1 :],
        "header.backup": sealed[:40],
        "other.backup": b"PK\x03\x04 not a backup at all",
    }
    expected = {
        "truncated.backup": "damaged",
        "altered.backup": "damaged",
        "header.backup": "truncated",
        "other.backup": "not an Ostiary backup",
    }
    target = tmp_path / "restored"
    refused_with(
        cli("ca", "restore", archive, "--dir", target, "--password-file", wrong),
        "wrong password",
    )
    assert not target.exists()
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
        refused_with(
            cli("ca", "restore", tmp_path / name, "--dir", target, "--password-file", password),
            expected[name],
        )
        assert not target.exists()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    refused_with(
        cli("ca", "restore", archive, "--dir", occupied, "--password-file", password),
        "not empty",
    )
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    restored = cli("ca", "restore", archive, "--dir", target, "--password-file", password)
    assert restored.exit_code == 0, restored.stderr
    assert (target / "secrets" / "intermediate.key").read_bytes() == (
        ca.paths.intermediate_key.read_bytes()
    )
    assert (target / "secrets" / "intermediate.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.postgres
def test_a_restore_never_merges_into_a_database_that_holds_tables(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    postgres_database_url: str,
    tmp_path: Path,
) -> None:
    ca = make_ca_folder(
        ca_material, provisioners, sqlite_url_for(tmp_path / "ca.db"), tmp_path / "ca"
    )
    password = tmp_path / "password"
    password.write_text(BACKUP_PASSWORD + "\n")
    archive = tmp_path / "ca.backup"
    made = cli(
        "ca", "backup", "--out", archive, "--password-file", password, "--dir", ca.paths.root
    )
    assert made.exit_code == 0, made.stderr
    with fresh_postgres_schema(postgres_database_url) as occupied:
        migrate(occupied)
        target = tmp_path / "restored"
        refused_with(
            cli(
                "ca", "restore", archive, "--dir", target, "--password-file", password,
                "--database-url", occupied,
            ),
            "is not empty",
        )  # fmt: skip
        assert not target.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
