"""``ostiary ca provisioner|token|audit|migrate``, in-process against a CA folder made by init."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from ostiary.authority.folder import CAPaths, load_ca_public
from ostiary.core.names import format_general_name
from ostiary.provisioners import CAIdentity, authorize_sign, verify_admin_token
from ostiary.store import Store, sqlite_url_for

from ..cli.conftest import CLI, PASSWORD
from .conftest import make_csr


def _runner_cli(home: Path) -> CLI:
    return CLI(CliRunner(), home)


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "password"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory, password_file: Path) -> dict[str, Path]:
    """CA folders made once per module by ``ca init``: ``blank``, and ``ci`` with a provisioner.

    Each test works on a copy: making keys and sealing them (600,000 PBKDF2 rounds each)
    is the slow part of every command.
    """
    blank = tmp_path_factory.mktemp("blank") / "ca"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("OSTIARY_PASSWORD", raising=False)
        cli = _runner_cli(blank)
        cli.ok("ca", "init", "--name", "Test", "--dir", blank, "--password-file", password_file)
        ci = tmp_path_factory.mktemp("ci") / "ca"
        shutil.copytree(blank, ci)
        add = "ca provisioner add ci --allow-name *.lab.example".split()
        cli.ok(*add, "--dir", ci, "--password-file", password_file)
    return {"blank": blank, "ci": ci}


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CLI:
    home = tmp_path / "ca"
    monkeypatch.setenv("OSTIARY_HOME", str(home))
    monkeypatch.delenv("OSTIARY_PASSWORD", raising=False)
    return _runner_cli(home)


@pytest.fixture
def ca_dir(cli: CLI, templates: dict[str, Path]) -> Path:
    """A copy of the blank CA folder at ``$OSTIARY_HOME``."""
    shutil.copytree(templates["blank"], cli.home)
    return cli.home


@pytest.fixture
def ci_dir(cli: CLI, templates: dict[str, Path]) -> Path:
    """A copy of the CA folder with the ``ci`` provisioner (``*.lab.example``)."""
    shutil.copytree(templates["ci"], cli.home)
    return cli.home


@pytest.fixture
def store(ca_dir: Path) -> Iterator[Store]:
    store = Store.from_url(sqlite_url_for(ca_dir / "ostiary.db"))
    yield store
    store.dispose()


def identity(ca_dir: Path) -> CAIdentity:
    config, root, intermediate = load_ca_public(CAPaths(ca_dir))
    return CAIdentity.from_certificates(root, intermediate, claims=config.claims)


def snapshot(ca_dir: Path) -> tuple[object, ...]:
    """What a refused command must leave as it was: provisioners, used tokens, audit log."""
    with sqlite3.connect(ca_dir / "ostiary.db") as db:
        return tuple(
            db.execute(query).fetchall()
            for query in (
                "select name, type, config from provisioners order by name",
                "select count(*) from used_tokens",
                "select count(*), max(hash) from audit_entries",
            )
        )


def test_add_list_token_remove(cli: CLI, ca_dir: Path, password_file: Path, store: Store) -> None:
    pw = ("--password-file", password_file)
    add = "ca provisioner add laptops --type jwk --allow-name *.lab.example --max-lifetime 7d"
    cli.ok(*add.split(), "--profile", "client", *pw)
    listed = json.loads(cli.ok("ca", "provisioner", "list", "--format", "json", *pw).stdout)
    assert [(p["name"], p["type"], p["profiles"]) for p in listed] == [
        ("laptops", "jwk", ["client"])
    ]
    assert listed[0]["claims"]["max_lifetime"] == "7d"
    assert listed[0]["claims"]["allowed_names"] == ["dns:*.lab.example"]
    assert "encrypted_key" not in json.dumps(listed)
    assert "laptops" in cli.ok("ca", "provisioner", "list", *pw).stdout

    result = cli.ok(
        "ca", "token", "host.lab.example", "--provisioner", "laptops", "--not-after", "2h", *pw
    )
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and token.count(".") == 2
    now = datetime.now(UTC)
    authorization = authorize_sign(store, token, make_csr(), ca=identity(ca_dir), now=now)
    assert [format_general_name(n) for n in authorization.names] == ["dns:host.lab.example"]

    cli.ok("ca", "provisioner", "remove", "laptops", *pw)
    assert json.loads(cli.ok("ca", "provisioner", "list", "--format", "json", *pw).stdout) == []
    cli.refused("ca", "token", "host.lab.example", "--provisioner", "laptops", *pw)

    events = [
        row[0]
        for row in sqlite3.connect(ca_dir / "ostiary.db").execute(
            "select event from audit_entries order by id"
        )
    ]
    assert events == [
        "ca.initialized",
        "provisioner.added",
        "token.minted",
        "token.used",
        "provisioner.removed",
    ]


def test_admin_tokens_from_the_command_line(
    cli: CLI, ca_dir: Path, password_file: Path, store: Store
) -> None:
    pw = ("--password-file", password_file)
    cli.ok("ca", "provisioner", "add", "ops", "--admin", *pw)
    token = cli.ok("ca", "token", "--admin", "--provisioner", "ops", *pw).stdout.strip()
    actor = verify_admin_token(store, token, ca=identity(ca_dir), now=datetime.now(UTC))
    assert actor == "admin@ops"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("provisioner", "add", "x", "--type", "oidc"), id="fail/unknown-type"),
        pytest.param(("provisioner", "add", "bad name"), id="fail/bad-name"),
        pytest.param(("provisioner", "add", "offline"), id="fail/reserved-name"),
        pytest.param(("provisioner", "add", "ci"), id="fail/duplicate-name"),
        pytest.param(("provisioner", "add", "x", "--max-lifetime", "90d"), id="fail/over-ca-max"),
        pytest.param(("provisioner", "add", "x", "--max-lifetime", "soon"), id="fail/bad-duration"),
        pytest.param(
            ("provisioner", "add", "x", "--min-lifetime", "2d", "--max-lifetime", "1d"),
            id="fail/min-over-max",
        ),
        pytest.param(("provisioner", "add", "x", "--allow-name", "dns:"), id="fail/bad-pattern"),
        pytest.param(("provisioner", "add", "x", "--profile", "ocsp"), id="fail/ocsp-profile"),
        pytest.param(("provisioner", "list", "--format", "xml"), id="fail/list-format"),
        pytest.param(("provisioner", "remove", "nobody"), id="fail/remove-unknown"),
        pytest.param(("token", "h.lab.example", "--provisioner", "nobody"), id="fail/unknown"),
        pytest.param(
            ("token", "h.lab.example", "--provisioner", "ci", "--not-after", "365d"),
            id="fail/not-after-beyond-max",
        ),
        pytest.param(("token", "--provisioner", "ci"), id="fail/no-subject"),
        pytest.param(
            ("token", "h.lab.example", "--provisioner", "ci", "--san", "evil.example"),
            id="fail/name-outside-patterns",
        ),
        pytest.param(
            ("token", "h.lab.example", "--provisioner", "ci", "--san", "bad..name"),
            id="fail/malformed-san",
        ),
        pytest.param(
            ("token", "h.lab.example", "--provisioner", "ci", "--ttl", "2h"), id="fail/ttl-over-1h"
        ),
        pytest.param(
            ("token", "h.lab.example", "--provisioner", "ci", "--not-after", "later"),
            id="fail/bad-not-after",
        ),
        pytest.param(
            ("token", "h.lab.example", "--provisioner", "ci", "--profile", "ocsp"),
            id="fail/ocsp-token",
        ),
        pytest.param(("token", "--admin", "--provisioner", "ci"), id="fail/admin-from-non-admin"),
        pytest.param(
            ("token", "h.lab.example", "--admin", "--provisioner", "ci"),
            id="fail/admin-with-subject",
        ),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    cli: CLI, ci_dir: Path, password_file: Path, args: tuple[str, ...]
) -> None:
    before = snapshot(ci_dir)
    cli.refused("ca", *args, "--password-file", password_file)
    assert snapshot(ci_dir) == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("provisioner", "add", "x"), id="fail/add"),
        pytest.param(("provisioner", "remove", "ci"), id="fail/remove"),
        pytest.param(("token", "h.lab.example", "--provisioner", "ci"), id="fail/token"),
    ],
)
def test_a_wrong_password_changes_nothing(
    cli: CLI, ci_dir: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    before = snapshot(ci_dir)
    cli.refused("ca", *args, "--password-file", wrong)
    assert snapshot(ci_dir) == before


def test_audit_verify_reports_ok_then_the_first_edited_entry(cli: CLI, ci_dir: Path) -> None:
    assert cli.ok("ca", "audit", "verify").stdout.startswith("OK: 2 audit entries")

    with sqlite3.connect(ci_dir / "ostiary.db") as db:
        db.execute("update audit_entries set actor = 'mallory' where id = 2")
    result = cli.refused("ca", "audit", "verify")
    assert "entry 2" in result.stderr and "edited" in result.stderr


def test_migrate_is_safe_to_repeat(cli: CLI, ca_dir: Path) -> None:
    cli.ok("ca", "migrate")
    cli.ok("ca", "migrate", "--dir", ca_dir)


def test_commands_refuse_a_missing_ca(cli: CLI, tmp_path: Path) -> None:
    for args in (("audit", "verify"), ("migrate",), ("provisioner", "list")):
        cli.refused("ca", *args, "--dir", tmp_path / "nothing")


def test_token_names_its_subject_as_san(
    cli: CLI, ca_dir: Path, password_file: Path, store: Store
) -> None:
    pw = ("--password-file", password_file)
    cli.ok("ca", "provisioner", "add", "people", "--allow-name", "*@example.com", *pw)
    token = cli.ok(
        "ca", "token", "alice@example.com", "--provisioner", "people", "--profile", "user", *pw
    ).stdout.strip()
    csr = make_csr("alice@example.com")
    authorization = authorize_sign(store, token, csr, ca=identity(ca_dir), now=datetime.now(UTC))
    assert authorization.profile == "user"
    assert authorization.names == (x509.RFC822Name("alice@example.com"),)
