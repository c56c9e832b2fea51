"""The CA owner's day from the shell (issue 21): tokens, lifetimes, finding and revoking a
certificate, where the CA listens, caller patterns, and output that survives a pipe.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import sqlite3
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ..client.conftest import free_port
from .conftest import CLI, PASSWORD

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "password"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, password_file: Path) -> Path:
    """A CA folder made once by ``ca init`` with one jwk provisioner, ``laptops`` (max 30d),
    and an approval one, ``gates``; tests work on copies (key sealing is the slow part).
    """
    folder = tmp_path_factory.mktemp("template") / "ca"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("OSTIARY_PASSWORD", raising=False)
        cli = CLI(CliRunner(), folder)
        pw = ("--dir", folder, "--password-file", password_file)
        cli.ok("ca", "init", "--name", "Test", "--url", "http://ca.test:8080", *pw)
        cli.ok("ca", "provisioner", "add", "laptops", *pw)
        cli.ok("ca", "provisioner", "add", "gates", "--type", "approval", *pw)
    return folder


@pytest.fixture
def ca(cli: CLI, template: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch) -> CLI:
    """A copy of the template at ``$OSTIARY_HOME``, the password in ``$OSTIARY_PASSWORD``."""
    shutil.copytree(template, cli.home)
    monkeypatch.setenv("OSTIARY_PASSWORD", PASSWORD)
    return cli


def claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def audit_count(home: Path) -> int:
    with sqlite3.connect(home / "ostiary.db") as db:
        return int(db.execute("select count(*) from audit_entries").fetchone()[0])


# --------------------------------------------------------------------------- ca token


def test_token_without_provisioner_uses_the_only_one_that_issues_tokens(ca: CLI) -> None:
    token = ca.ok("ca", "token", "alice@example.com").stdout.strip()
    assert claims_of(token)["iss"] == "laptops"  # 'gates' (approval) issues no tokens


def test_token_without_provisioner_is_refused_when_several_issue_tokens(ca: CLI) -> None:
    ca.ok("ca", "provisioner", "add", "phones")
    before = audit_count(ca.home)
    error = ca.refused("ca", "token", "alice@example.com").stderr
    assert "laptops, phones" in error and "--provisioner" in error
    assert audit_count(ca.home) == before
    token = ca.ok("ca", "token", "alice@example.com", "--provisioner", "phones").stdout
    assert claims_of(token.strip())["iss"] == "phones"


def test_token_without_any_token_provisioner_says_how_to_add_one(ca: CLI) -> None:
    ca.ok("ca", "provisioner", "remove", "laptops")
    error = ca.refused("ca", "token", "alice@example.com").stderr
    assert "ostiary ca provisioner add NAME --type jwk" in error


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("laptop", "no provisioner 'laptop'", id="fail/unknown-name"),
        pytest.param("gates", "'approval', which issues no tokens", id="fail/approval-type"),
    ],
)
def test_token_from_a_provisioner_that_cannot_lists_those_that_can(
    ca: CLI, name: str, expected: str
) -> None:
    error = ca.refused("ca", "token", "alice", "--provisioner", name).stderr
    assert expected in error
    assert "the ones that issue tokens: laptops" in error


def test_admin_token_defaults_to_the_only_admin_provisioner(ca: CLI) -> None:
    assert "no provisioner issues admin tokens" in ca.refused("ca", "token", "--admin").stderr
    ca.ok("ca", "provisioner", "add", "admins", "--admin")
    assert claims_of(ca.ok("ca", "token", "--admin").stdout.strip())["iss"] == "admins"


@pytest.mark.parametrize(
    "not_after",
    [
        pytest.param("365d", id="fail/duration"),
        pytest.param("2099-01-01T00:00:00Z", id="fail/absolute-time"),
        pytest.param("1m", id="fail/below-minimum"),
    ],
)
def test_token_not_after_outside_the_provisioners_lifetime_is_refused_when_made(
    ca: CLI, not_after: str
) -> None:
    before = audit_count(ca.home)
    args = ("ca", "token", "alice", "--provisioner", "laptops", "--not-after", not_after)
    error = ca.refused(*args).stderr
    assert "provisioner 'laptops'" in error
    assert "30d" in error or "5m" in error
    assert audit_count(ca.home) == before


def test_token_not_after_within_the_lifetime_is_carried(ca: CLI) -> None:
    args = ("ca", "token", "alice", "--provisioner", "laptops", "--not-after", "30d")
    token = ca.ok(*args).stdout.strip()
    assert claims_of(token)["not_after"] == "30d"


# --------------------------------------------------------------------------- certs list, revoke


@pytest.fixture(scope="module")
def issued_template(
    template: Path, password_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    """The template with three certificates signed offline: alice's laptop and phone, and
    bob's phone (revoked); with their serials (hex), by subject.
    """
    work = tmp_path_factory.mktemp("issued")
    folder = work / "ca"
    shutil.copytree(template, folder)
    cli = CLI(CliRunner(), folder)
    pw = ("--dir", folder, "--password-file", password_file)
    serials = {}
    for subject, san in (
        ("alice-laptop", "alice@example.com"),
        ("alice-phone", "dns:alice-phone.lab.example"),
        ("bob-phone", "bob@example.com"),
    ):
        csr, key, crt = (work / f"{subject}.{ext}" for ext in ("csr", "key", "crt"))
        cli.ok("cert", "create", subject, csr, key, "--csr")
        cli.ok("ca", "sign", csr, "--out", crt, "--subject", subject, "--san", san, *pw)
        found = json.loads(cli.ok("cert", "inspect", crt, "--format", "json").stdout)[0]
        serials[subject] = found["serial_number"].replace(":", "").lower().lstrip("0")
    cli.ok("ca", "revoke", serials["bob-phone"], *pw)
    return folder, serials


@pytest.fixture
def issued(
    cli: CLI, issued_template: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """A copy of the issued template at ``$OSTIARY_HOME``; the serials by subject."""
    shutil.copytree(issued_template[0], cli.home)
    monkeypatch.setenv("OSTIARY_PASSWORD", PASSWORD)
    return issued_template[1]


def listed(ca: CLI, *args: str) -> list[dict[str, object]]:
    return list(json.loads(ca.ok("ca", "certs", "list", "--format", "json", *args).stdout))


def test_certs_list_finds_a_lost_phone_by_subject_glob(
    cli: CLI, issued: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = cli
    monkeypatch.delenv("OSTIARY_PASSWORD")  # listing never unlocks the CA key
    phones = listed(ca, "--subject", "*PHONE")
    assert [(c["subject"], c["serial"], c["status"]) for c in phones] == [
        ("CN=bob-phone", issued["bob-phone"], "revoked"),
        ("CN=alice-phone", issued["alice-phone"], "valid"),
    ]
    assert [c["serial"] for c in listed(ca, "--subject", "*phone", "--status", "valid")] == [
        issued["alice-phone"]
    ]
    assert [c["serial"] for c in listed(ca, "--subject", "alice@example.com")] == [
        issued["alice-laptop"]
    ]
    assert listed(ca, "--subject", "carol*") == []
    assert len(listed(ca)) == 3
    assert [c["subject"] for c in listed(ca, "--status", "revoked")] == ["CN=bob-phone"]
    assert listed(ca, "--status", "expired") == []
    table = ca.ok("ca", "certs", "list", "--subject", "alice-*").stdout
    assert issued["alice-phone"] in table and issued["alice-laptop"] in table
    assert "bob" not in table


def test_certs_list_refuses_an_unknown_status_or_format(ca: CLI) -> None:
    assert "valid, revoked or expired" in ca.refused("ca", "certs", "list", "--status", "x").stderr
    ca.refused("ca", "certs", "list", "--format", "yaml")


def test_revoke_by_subject_revokes_the_one_valid_match(cli: CLI, issued: dict[str, str]) -> None:
    ca = cli
    result = ca.ok("ca", "revoke", "--subject", "*phone", "--reason", "keyCompromise")
    assert f"Revoked {issued['alice-phone']} (CN=alice-phone)" in result.stderr
    assert listed(ca, "--subject", "alice-phone")[0]["status"] == "revoked"


def test_revoke_by_subject_refuses_several_matches_and_lists_them(
    cli: CLI, issued: dict[str, str]
) -> None:
    ca = cli
    before = audit_count(ca.home)
    error = ca.refused("ca", "revoke", "--subject", "alice*").stderr
    assert "2 valid certificates match" in error
    assert issued["alice-phone"] in error and issued["alice-laptop"] in error
    assert "no valid certificate" in ca.refused("ca", "revoke", "--subject", "carol*").stderr
    assert ca.refused("ca", "revoke").stderr.startswith("error: give the SERIAL")
    assert audit_count(ca.home) == before
    assert {c["status"] for c in listed(ca, "--subject", "alice*")} == {"valid"}


# --------------------------------------------------------------------------- where the CA listens


def config_of(home: Path) -> dict[str, object]:
    return tomllib.loads((home / "ostiary.toml").read_text())


def test_init_stores_the_plain_http_address_its_url_names(
    cli: CLI, password_file: Path, tmp_path: Path
) -> None:
    pw = ("--password-file", password_file)
    cli.ok("ca", "init", "--name", "A", "--url", "http://127.0.0.1:9080", *pw)
    assert config_of(cli.home)["http_address"] == "127.0.0.1:9080"
    other = tmp_path / "other"
    cli.ok("ca", "init", "--name", "B", "--dir", other, "--http-address", "0.0.0.0:8081", *pw)
    assert config_of(other)["http_address"] == "0.0.0.0:8081"
    bad = tmp_path / "bad"
    cli.refused("ca", "init", "--name", "C", "--dir", bad, "--http-address", "nowhere", *pw)
    assert not (bad / "ostiary.toml").exists()


def test_serve_refuses_certificates_pointing_at_another_local_port(ca: CLI) -> None:
    config = (ca.home / "ostiary.toml").read_text()
    config = re.sub(r'url = "[^"]*"', 'url = "http://127.0.0.1:9080"', config)
    (ca.home / "ostiary.toml").write_text(config)
    listen = f"127.0.0.1:{free_port()}"
    args = ("ca", "serve", "--address", "127.0.0.1:0", "--http-address", listen)
    error = ca.refused(*args).stderr
    assert "http://127.0.0.1:9080" in error and "--http-address 127.0.0.1:9080" in error


def test_init_warns_that_https_crl_urls_break_relying_parties(
    cli: CLI, password_file: Path, tmp_path: Path
) -> None:
    pw = ("--password-file", password_file)
    result = cli.ok("ca", "init", "--name", "A", "--url", "https://pki.example", *pw)
    assert "warning: --url https://pki.example puts https://" in result.stderr
    assert "--http-address" in result.stderr
    plain = cli.ok("ca", "init", "--name", "B", "--dir", tmp_path / "b", "--url", "http://x", *pw)
    assert "warning" not in plain.stderr


# --------------------------------------------------------------------------- caller patterns


@pytest.mark.parametrize(
    "caller",
    [
        pytest.param("app1-caller", id="fail/no-kind"),
        pytest.param("CN:app1", id="fail/kind-not-lower-case"),
        pytest.param("app:1", id="fail/unknown-kind"),
        pytest.param("cn:", id="fail/empty-glob"),
    ],
)
def test_key_create_refuses_a_caller_pattern_without_a_kind(
    ca: CLI, tmp_path: Path, caller: str
) -> None:
    before = audit_count(ca.home)
    args = ("ca", "key", "create", "app1", "--cert-out", tmp_path / "app1.crt")
    error = ca.refused(*args, "--audience", "https://login.example/token", "--caller", caller)
    assert "kind:glob" in error.stderr and "cn:" in error.stderr
    assert audit_count(ca.home) == before
    assert not (tmp_path / "app1.crt").exists()


def test_key_create_keeps_caller_patterns_with_a_kind(ca: CLI, tmp_path: Path) -> None:
    args = ("ca", "key", "create", "app1", "--cert-out", tmp_path / "app1.crt", "--type", "p256")
    ca.ok(*args, "--audience", "https://login.example/token", "--caller", "cn:app1-*")
    assert "callers:   cn:app1-*" in ca.ok("ca", "key", "list").stdout


# --------------------------------------------------------------------------- output in a pipe


def test_help_in_a_pipe_shows_every_option_name_whole(
    ca: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = ca.ok("ca", "provisioner", "add", "--help").stdout
    assert "…" not in text
    for name in ("--configuration-endpoint", "--allow-renewal-after-expiry", "--attestation-roots"):
        assert name in text
    flat = " ".join(text.split())
    for kind in ("jwk", "oidc", "approval", "attest"):
        assert re.search(rf"--type \S+ .*\b{kind}\b", flat), kind


def test_key_rotate_help_says_the_new_version_signs_at_once(cli: CLI) -> None:
    flat = " ".join(cli.ok("ca", "key", "rotate", "--help").stdout.split())
    assert "signs every assertion from now on, at once" in flat
    assert "right away" in flat and "upload its certificate first" not in flat


def test_inspect_in_a_pipe_prints_entra_strings_whole_on_their_lines(
    ca: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    csr, key, crt = tmp_path / "a.csr", tmp_path / "a.key", tmp_path / "a.crt"
    ca.ok("cert", "create", "alice", csr, key, "--csr")
    ca.ok("ca", "sign", csr, "--out", crt, "--profile", "user", "--upn", "alice@corp.example")
    described = json.loads(ca.ok("cert", "inspect", crt, "--format", "json").stdout)[0]
    text = ca.ok("cert", "inspect", crt).stdout
    lines = [line.strip() for line in text.splitlines()]
    for value in described["entra_certificate_user_ids"]:
        assert any(line == value or line.endswith(f"  {value}") for line in lines), value
    assert any(line.endswith(described["fingerprint_sha256"]) for line in lines)
    assert "│" not in text


def test_certs_list_folds_no_cell_in_a_pipe_nor_in_a_narrow_terminal(
    cli: CLI, issued: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # a pipe: Rich alone would lay out 80 columns
    piped = cli.ok("ca", "certs", "list").stdout
    rows = [line for line in piped.splitlines() if issued["alice-phone"] in line]
    assert len(rows) == 1 and "CN=alice-phone" in rows[0] and "valid" in rows[0]
    monkeypatch.setenv("COLUMNS", "80")  # a narrow terminal: one block per certificate
    narrow = cli.ok("ca", "certs", "list").stdout.splitlines()
    head = narrow.index(next(line for line in narrow if line.startswith(issued["alice-phone"])))
    assert narrow[head].split() == [
        issued["alice-phone"],
        "valid",
        "until",
        *narrow[head].split()[3:],
    ]
    assert narrow[head + 1].strip() == "CN=alice-phone"
    for serial in issued.values():  # every serial whole at the start of its block
        assert any(line.startswith(f"{serial}  ") for line in narrow), serial


# --------------------------------------------------------------------------- the docs


def _shell_commands(markdown: str, prefix: str) -> list[list[str]]:
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, flags=re.DOTALL):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            if line.strip().startswith(prefix):
                commands.append(shlex.split(line, comments=True))
    return commands


def test_console_doc_provisioner_command_runs_as_pasted(ca: CLI) -> None:
    commands = _shell_commands((DOCS / "console.md").read_text(), "ostiary ca provisioner add")
    approval = [c for c in commands if "approval" in c]
    assert approval
    for command in approval:
        ca.ok(*command[1:])
