"""The device side (``bootstrap``, ``cert ...``, ``sign assertion``) runs without the
``server`` extra: each command here runs in a Python where the server-only modules cannot be
imported, as on a machine that installed plain ``ostiary`` (Windows, macOS). The server's
commands then say in one line which extra to install."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from ostiary.cli.main import SERVER_MODULES

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = (
    "uvloop",
    "httptools",
    "psycopg",
    "pkcs11",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "jinja2",
    "dns",
    "prometheus_client",
)

#: Runs each ``ostiary ARGS`` of a JSON list in turn, with the modules in BLOCKED unimportable
#: (as if not installed); after each, a line ``@@ <exit status>`` on stderr.
RUNNER = """
import json, sys
from importlib.abc import MetaPathFinder

BLOCKED = set(sys.argv[1].split(","))

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
from ostiary.cli.main import main
for args in json.loads(sys.argv[2]):
    sys.argv = ["ostiary", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    print(f"@@ {code}", file=sys.stderr, flush=True)
loaded = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
print("loaded:", loaded, file=sys.stderr)
"""


def without_server(*commands: tuple[str, ...], cwd: Path | None = None) -> list[tuple[int, str]]:
    """Each command's exit status and stderr; checks that no blocked module was loaded."""
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, ",".join(BLOCKED), json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.rstrip().endswith("loaded: []"), result.stderr
    parts = result.stderr.split("@@ ")
    outcomes = []
    for before, after in itertools.pairwise(parts):
        code, _, _ = after.partition("\n")
        outcomes.append((int(code), before.split("\n", 1)[-1] if outcomes else before))
    assert len(outcomes) == len(commands), result.stderr
    return outcomes


def test_the_blocked_modules_are_the_server_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    server = {d.split(">")[0].split("[")[0] for d in project["optional-dependencies"]["server"]}
    # distribution name -> module name
    distributions = {"python-pkcs11": "pkcs11", "dnspython": "dns"}
    assert {distributions.get(name, name) for name in server} <= set(BLOCKED)
    assert set(BLOCKED) <= SERVER_MODULES
    base = {d.split(">")[0].split("[")[0] for d in project["dependencies"]}
    assert not base & set(BLOCKED) and not base & set(distributions)


DEVICE_COMMANDS = [
    ("--version",),
    ("--help",),
    ("bootstrap", "--help"),
    ("cert", "request", "--help"),
    ("cert", "renew", "--help"),
    ("cert", "renew-all", "--help"),
    ("cert", "p12", "--help"),
    ("cert", "verify", "--help"),
    ("sign", "assertion", "--help"),
    ("cert", "create", "alice", "a.csr", "a.key", "--csr"),
    ("cert", "inspect", "a.csr"),
]
SERVER_COMMANDS = [
    ("ca", "init", "--name", "X"),
    ("ca", "serve"),
    ("ca", "--help"),
    ("gateway", "run", "--listen", "127.0.0.1:0"),
]


def test_device_commands_run_without_the_server_extra(tmp_path: Path) -> None:
    outcomes = without_server(*DEVICE_COMMANDS, cwd=tmp_path)
    for command, (code, stderr) in zip(DEVICE_COMMANDS, outcomes, strict=True):
        assert code == 0, (command, stderr)
    assert (tmp_path / "a.key").exists()


def test_server_commands_name_the_extra_in_one_line(tmp_path: Path) -> None:
    outcomes = without_server(*SERVER_COMMANDS, cwd=tmp_path)
    for command, (code, stderr) in zip(SERVER_COMMANDS, outcomes, strict=True):
        lines = stderr.strip().splitlines()
        assert code == 1 and len(lines) == 1, (command, stderr)
        assert lines[0].startswith("error: ") and "pip install 'ostiary[server]'" in lines[0]
    assert not list(tmp_path.iterdir())  # nothing was made


def test_root_help_lists_the_server_groups_with_the_extra_to_install(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, ",".join(BLOCKED), json.dumps([["--help"]])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "ca" in result.stdout and "ostiary[server]" in result.stdout


def test_shell_completion_completes_subcommands() -> None:
    env = {**os.environ, "_OSTIARY_COMPLETE": "complete_bash"}
    env.update(COMP_WORDS="ostiary cert re", COMP_CWORD="2")
    result = subprocess.run(
        [Path(sys.executable).with_name("ostiary")],  # the installed script: its name counts
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.split() == ["request", "renew", "renew-all", "revoke"], result.stderr
    # the script a user installs, for bash (others: zsh, fish, PowerShell)
    shown = subprocess.run(
        [Path(sys.executable).with_name("ostiary"), "--show-completion", "bash"],
        env={**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1", "SHELL": "bash"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "_OSTIARY_COMPLETE" in shown.stdout or "_ostiary_completion" in shown.stdout
