"""``ca password change``: every key re-sealed, a wrong password changes nothing, and an
interrupted change leaves a CA that opens with one of the two passwords."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from ostiary.authority.folder import CAPaths, load_ca_folder
from ostiary.core.errors import WrongPassword
from ostiary.signers.files import FileSigner
from ostiary.store import ProvisionerRecord, Store, sqlite_url_for
from tests.cli.conftest import CLI, PASSWORD

NEW_PASSWORD = "a new and longer CA password"


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs, no cleanup."""


def key_files(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((home / "secrets").rglob("*"))}


def provisioner_configs(home: Path) -> dict[str, object]:
    store = Store.from_url(sqlite_url_for(home / "ostiary.db"))
    try:
        with store.transaction(read_only=True) as session:
            return {r.name: r.config for r in session.scalars(select(ProvisionerRecord))}
    finally:
        store.dispose()


def opens_with(home: Path, password: str) -> bool:
    try:
        load_ca_folder(CAPaths(home), password.encode()).signer.close()
    except WrongPassword:
        return False
    return True


@pytest.fixture
def passwords(tmp_path: Path, password_file: Path) -> tuple[Path, Path, Path]:
    new, wrong = tmp_path / "new-password", tmp_path / "wrong-password"
    new.write_text(NEW_PASSWORD + "\n")
    wrong.write_text(PASSWORD + "?\n")
    return password_file, new, wrong


@pytest.fixture
def ca_with_provisioner(cli: CLI, ca_dir: Path, password_file: Path) -> Path:
    cli.ok("ca", "provisioner", "add", "laptops", "--password-file", password_file)
    return ca_dir


def test_a_wrong_old_password_changes_nothing(
    cli: CLI, ca_with_provisioner: Path, passwords: tuple[Path, Path, Path]
) -> None:
    _, new, wrong = passwords
    files, configs = key_files(ca_with_provisioner), provisioner_configs(ca_with_provisioner)
    result = cli.refused(
        "ca", "password", "change", "--password-file", wrong, "--new-password-file", new
    )
    assert "wrong password" in result.stderr
    assert key_files(ca_with_provisioner) == files
    assert provisioner_configs(ca_with_provisioner) == configs
    same = cli.refused(
        "ca", "password", "change", "--password-file", new, "--new-password-file", new
    )
    assert "nothing to change" in same.stderr


def test_every_key_moves_to_the_new_password(
    cli: CLI, ca_with_provisioner: Path, passwords: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    old, new, _ = passwords
    before = provisioner_configs(ca_with_provisioner)
    cli.ok("ca", "password", "change", "--password-file", old, "--new-password-file", new)
    assert not opens_with(ca_with_provisioner, PASSWORD)
    assert opens_with(ca_with_provisioner, NEW_PASSWORD)
    FileSigner.load(ca_with_provisioner / "secrets" / "root.key", NEW_PASSWORD.encode())
    assert sorted(p.name for p in (ca_with_provisioner / "secrets").iterdir()) == [
        "intermediate.key",
        "root.key",
    ]
    for path in (ca_with_provisioner / "secrets").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
    after = provisioner_configs(ca_with_provisioner)
    assert after["laptops"]["key"] == before["laptops"]["key"]  # type: ignore[index]
    assert after["laptops"]["encrypted_key"] != before["laptops"]["encrypted_key"]  # type: ignore[index]
    # The provisioner's key opens with the new password: a token can be made.
    assert cli.ok("ca", "token", "alice", "--password-file", new).stdout.strip().count(".") == 2
    cli.refused("ca", "token", "alice", "--password-file", old)
    cli.ok("ca", "crl", "--root", "--out", tmp_path / "root.crl", "--password-file", new)
    cli.ok("ca", "audit", "verify")


def test_a_change_interrupted_between_files_opens_and_finishes(
    cli: CLI,
    ca_with_provisioner: Path,
    passwords: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new, _ = passwords
    renamed: list[str] = []
    real_replace = os.replace

    def crash_after_first(source: str | Path, target: str | Path) -> None:
        if renamed:
            raise Crash
        real_replace(source, target)
        renamed.append(str(target))

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", crash_after_first)
        with pytest.raises(Crash):
            cli("ca", "password", "change", "--password-file", old, "--new-password-file", new)
    assert len(renamed) == 1
    # Every file is whole: the CA opens with exactly one of the two passwords.
    assert opens_with(ca_with_provisioner, PASSWORD) != opens_with(
        ca_with_provisioner, NEW_PASSWORD
    )
    cli.ok("ca", "password", "change", "--password-file", old, "--new-password-file", new)
    assert opens_with(ca_with_provisioner, NEW_PASSWORD)
    for path in (ca_with_provisioner / "secrets").iterdir():
        FileSigner.load(path, NEW_PASSWORD.encode())
    cli.ok("ca", "token", "alice", "--password-file", new)
