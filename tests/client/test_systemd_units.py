"""The systemd units in contrib/ parse, and run the commands docs/client.md describes."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
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


# ------------------------------------------------- the CA server's unit


def _ca_unit(venv_ostiary: Path) -> str:
    """ostiary-ca.service with the venv it documents replaced by the one these tests run in."""
    text = (UNITS / "ostiary-ca.service").read_text()
    return text.replace("/opt/ostiary/bin/ostiary", str(venv_ostiary))


def test_the_ca_unit_keeps_the_password_out_of_environment_and_command_line() -> None:
    text = (UNITS / "ostiary-ca.service").read_text()
    service = [line for line in text.splitlines() if not line.startswith("#")]
    assert "LoadCredential=ca-password:/etc/ostiary/ca.password" in service
    assert not any("PASSWORD" in line or "PIN=" in line for line in service)
    assert "UMask=0077" in service and "StateDirectoryMode=0700" in service


@pytest.mark.interop
def test_the_ca_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze")
    unit = tmp_path / "ostiary-ca.service"
    unit.write_text(_ca_unit(Path(sys.executable).with_name("ostiary")))
    result = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.interop
def test_the_ca_units_exec_start_serves_the_ca_with_the_credential(tmp_path: Path) -> None:
    """ExecStart as systemd runs it: OSTIARY_HOME from the unit, the password from
    $CREDENTIALS_DIRECTORY/ca-password; the server answers /health, and without the
    credential it refuses in one line instead of prompting."""
    from .conftest import free_port

    home, credentials = tmp_path / "ostiary", tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "ca-password").write_text("a long enough password for the CA\n")
    http_port = free_port()
    ostiary = str(Path(sys.executable).with_name("ostiary"))
    subprocess.run(
        [ostiary, "ca", "init", "--name", "Unit", "--dir", str(home),
         "--password-file", str(credentials / "ca-password"),
         "--address", f"127.0.0.1:{free_port()}", "--http-address", f"127.0.0.1:{http_port}"],
        check=True, capture_output=True,
    )  # fmt: skip
    text = _ca_unit(Path(ostiary))
    env = {"PATH": "/usr/bin:/bin"}
    for line in text.splitlines():
        if line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            env[name] = value.replace("/var/lib/ostiary", str(home))
    command = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(command.removeprefix("ExecStart=").replace(
        "${CREDENTIALS_DIRECTORY}", str(credentials)))  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/health").is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("the unit's ca serve did not answer /health")
    finally:
        server.terminate()
        server.wait(20)
    missing = [*argv[: argv.index("--password-file")], "--password-file", "absent"]
    refused = subprocess.run(missing, env=env, capture_output=True, text=True, check=False)
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
