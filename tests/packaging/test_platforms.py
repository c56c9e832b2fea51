"""Ostiary installs on the devices users have: its dependency list (ours is pure Python)
resolves to binary wheels on PyPI for Windows and macOS on Apple silicon, as pip resolves it
for those platforms (``--platform``, binaries only, Python 3.11). The server extra does not
(uvloop has no Windows build): that is why it is an extra."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI

pytestmark = pytest.mark.packaging  # run by .ci/run (OSTIARY_PACKAGING=1), not by scripts/test

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def resolve(platform: str, requirements: list[str], folder: Path) -> tuple[int, str, list[str]]:
    """pip's resolution for ``platform`` (nothing installed): status, stderr, wheel names."""
    report = folder / f"{platform}.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--only-binary=:all:",
            "--platform",
            platform,
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--target",
            folder / platform,
            "--quiet",
            "--disable-pip-version-check",
            "--report",
            report,
            *requirements,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    wheels = []
    if result.returncode == 0:
        wheels = [
            entry["download_info"]["url"].rsplit("/", 1)[-1]
            for entry in json.loads(report.read_text())["install"]
        ]
    return result.returncode, result.stderr, wheels


@pytest.fixture(scope="module")
def pypi() -> None:
    try:
        httpx.head("https://pypi.org/simple/", timeout=10)
    except httpx.TransportError as exc:
        if IN_CI:
            pytest.fail(f"PyPI is unreachable: {exc}")
        pytest.skip(f"PyPI is unreachable: {exc}")


@pytest.mark.usefixtures("pypi")
def test_dependencies_resolve_for_windows_and_macos_but_the_server_extra_not_for_windows(
    tmp_path: Path,
) -> None:
    cases = {
        "win_amd64": PROJECT["dependencies"],
        "macosx_11_0_arm64": PROJECT["dependencies"],
        "server/win_amd64": PROJECT["optional-dependencies"]["server"],
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {
            name: pool.submit(resolve, name.rpartition("/")[2], requirements, tmp_path)
            for name, requirements in cases.items()
        }
        outcomes = {name: future.result() for name, future in futures.items()}
    for platform in ("win_amd64", "macosx_11_0_arm64"):
        code, stderr, wheels = outcomes[platform]
        assert code == 0, stderr
        assert any(w.startswith("cryptography-") and platform.split("_")[0] in w for w in wheels)
    code, stderr, _ = outcomes["server/win_amd64"]
    assert code != 0 and "uvloop" in stderr
