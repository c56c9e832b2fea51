"""The systemd units in contrib/ parse, and run the commands docs/client.md describes."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ostiary.client.config import ClientConfig
from tests.conftest import TestCA, require_tool

UNITS = Path(__file__).parents[2] / "contrib" / "systemd"


def _exec_start(unit: str) -> str:
    lines = (UNITS / unit).read_text().splitlines()
    return next(line for line in lines if line.startswith("ExecStart="))


def test_timer_service_runs_renew_all_and_template_runs_the_daemon() -> None:
    assert "ostiary cert renew-all ${OSTIARY_CERT_DIR}" in _exec_start("ostiary-renew.service")
    daemon = _exec_start("ostiary-renew@.service")
    assert "cert renew ${OSTIARY_CERT_DIR}/%i.crt ${OSTIARY_CERT_DIR}/%i.key --daemon" in daemon
    assert "ExecReload=/bin/kill -HUP $MAINPID" in (UNITS / "ostiary-renew@.service").read_text()


@pytest.mark.interop
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze")  # Debian 'systemd' (scripts/test installs it)
    for unit in UNITS.iterdir():
        shutil.copy(unit, tmp_path / unit.name)
    shutil.copy(UNITS / "ostiary-renew@.service", tmp_path / "ostiary-renew@laptop.service")
    names = ["ostiary-renew.service", "ostiary-renew.timer", "ostiary-renew@laptop.service"]
    result = subprocess.run(
        [tool, "verify", *(str(tmp_path / n) for n in names)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


# ------------------------------------------------- the units' ExecStart, as systemd runs it


def _unit_environment(unit: str, home: Path, instance: str) -> dict[str, str]:
    """The unit's own Environment= lines (all it gets besides HOME), %h and %i expanded."""
    env = {"HOME": str(home)}
    for line in (UNITS / unit).read_text().splitlines():
        if line.startswith("Environment="):
            for assignment in shlex.split(line.removeprefix("Environment=")):
                name, _, value = assignment.partition("=")
                env[name] = value.replace("%h", str(home)).replace("%i", instance)
    return env


def _exec_start_argv(unit: str, env: dict[str, str], home: Path, instance: str) -> list[str]:
    """ExecStart= split as systemd does: ${VAR} one word, $VAR split at whitespace."""
    argv: list[str] = []
    command = _exec_start(unit).removeprefix("ExecStart=")
    for word in shlex.split(command.replace("%h", str(home)).replace("%i", instance)):
        if word.startswith("$") and not word.startswith("${"):
            argv += env.get(word[1:], "").split()
        else:
            argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def _documented_install(home: Path) -> None:
    """README.md's step that puts the clone's ostiary on PATH, run in a clone's layout
    (~/ostiary with its .venv, here the venv these tests run in)."""
    readme = (UNITS.parents[1] / "README.md").read_text()
    step = re.search(r"```sh\n(mkdir -p ~/.local/bin[^`]*)```", readme)
    assert step is not None, "README.md says how to put ostiary on the units' PATH"
    clone = home / "ostiary"
    clone.mkdir()
    (clone / ".venv").symlink_to(Path(sys.executable).parents[1])
    subprocess.run(
        ["bash", "-euc", step.group(1)],
        cwd=clone,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=True,
    )


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        pytest.param("ostiary-renew.service", "0 renewed, 0 not due, 0 failed", id="renew-all"),
        pytest.param("ostiary-renew@.service", "error:", id="daemon-without-its-pair"),
    ],
)
def test_the_units_exec_start_finds_ostiary_installed_as_the_readme_says(
    tmp_path: Path, unit: str, expected: str, test_ca: TestCA
) -> None:
    home = tmp_path / "home"
    (home / ".certs").mkdir(parents=True)
    _documented_install(home)
    saved = ClientConfig("https://ca.test:8443", test_ca.root)  # as 'ostiary bootstrap' saves
    (home / ".config" / "ostiary").mkdir(parents=True)
    (home / ".config" / "ostiary" / "client.toml").write_text(saved.dump_settings())
    (home / ".config" / "ostiary" / "root.crt").write_bytes(saved.dump_root())
    env = _unit_environment(unit, home, "laptop")
    result = subprocess.run(
        _exec_start_argv(unit, env, home, "laptop"),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode != 127, result.stderr  # 127: env found no ostiary on PATH
    assert expected in result.stderr


def test_without_the_documented_step_the_units_cannot_find_ostiary(tmp_path: Path) -> None:
    """The rejected twin: a venv in the clone alone is not on the units' PATH."""
    home = tmp_path / "home"
    (home / ".certs").mkdir(parents=True)
    (home / "ostiary").mkdir()
    (home / "ostiary" / ".venv").symlink_to(Path(sys.executable).parents[1])
    env = _unit_environment("ostiary-renew.service", home, "")
    result = subprocess.run(
        _exec_start_argv("ostiary-renew.service", env, home, ""),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 127
