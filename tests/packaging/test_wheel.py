"""What a user installs: the wheel and the sdist built by ``python -m build`` from a copy of
the project, the wheel installed into a fresh virtualenv outside the checkout, then the
device side alone (``--version``; the CA's commands name the extra), then with the ``server``
extra: ``ca init``, ``ca serve`` up to ``/health``, and one enrollment with a token."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.client.conftest import free_port

pytestmark = pytest.mark.packaging  # run by .ci/run (OSTIARY_PACKAGING=1), not by scripts/test

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` (isolated, as a user or CI builds it) on a copy of the project."""
    copy = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    shutil.copytree(
        ROOT / "src",
        copy / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    out = copy / "dist"
    run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out, copy, cwd=copy)
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (no pip of its own: ours installs into it) with the plain wheel."""
    folder = tmp_path_factory.mktemp("user")
    run(sys.executable, "-m", "venv", "--without-pip", folder / "venv", cwd=folder)
    python = folder / "venv" / "bin" / "python"
    (wheel,) = dist.glob("ostiary-*.whl")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q"]
    run(*pip, "--disable-pip-version-check", wheel, cwd=folder)
    return folder


def test_the_sdist_holds_the_package_and_its_data(dist: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (sdist,) = dist.glob("ostiary-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert f"ostiary-{version}/src/ostiary/py.typed" in names
    assert any(n.endswith("store/migrations/alembic.ini") for n in names)
    assert any(n.endswith(".html") for n in names)  # the console's templates


def test_installed_wheel_runs_the_device_side_then_a_ca_with_the_server_extra(
    dist: Path, venv: Path
) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    bin_dir = venv / "venv" / "bin"
    ostiary = bin_dir / "ostiary"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(venv),
        "OSTIARY_HOME": str(venv / "ca"),
        "OSTIARY_CLIENT_CONFIG": str(venv / "client"),
    }
    assert run(ostiary, "--version", cwd=venv, env=env).strip() == f"ostiary {version}"
    where = run(bin_dir / "python", "-c", "import ostiary; print(ostiary.__file__)", cwd=venv)
    assert Path(where.strip()).is_relative_to(venv / "venv")  # not the checkout
    refused = subprocess.run(
        [ostiary, "ca", "init", "--name", "Smoke"], cwd=venv, env=env, capture_output=True
    )
    assert refused.returncode == 1 and b"pip install 'ostiary[server]'" in refused.stderr

    (wheel,) = dist.glob("ostiary-*.whl")
    pip = [sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "-q"]
    run(*pip, "--disable-pip-version-check", f"{wheel}[server]", cwd=venv)
    password = venv / "password"
    password.write_text("smoke test password\n")
    https_port, http_port = free_port(), free_port()
    ca = ("--password-file", password)
    printed = run(
        ostiary,
        "ca",
        "init",
        "--name",
        "Smoke",
        *ca,
        "--address",
        f"127.0.0.1:{https_port}",
        cwd=venv,
        env=env,
    )
    fingerprint = printed.strip().splitlines()[-1]
    run(ostiary, "ca", "provisioner", "add", "laptops", "--type", "jwk", *ca, cwd=venv, env=env)
    with (venv / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [ostiary, "ca", "serve", *ca, "--http-address", f"127.0.0.1:{http_port}"],
            cwd=venv,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/health").json() == {"status": "ok"}:
                    break
            except httpx.TransportError:
                pass
            alive = server.poll() is None and time.monotonic() < deadline
            assert alive, (venv / "serve.log").read_text()
            time.sleep(0.1)
        url = f"https://127.0.0.1:{https_port}"
        run(ostiary, "bootstrap", "--ca-url", url, "--fingerprint", fingerprint, cwd=venv, env=env)
        token = run(
            ostiary, "ca", "token", "alice", "--provisioner", "laptops", *ca, cwd=venv, env=env
        ).strip()
        run(
            ostiary,
            "cert",
            "request",
            "alice",
            "alice.crt",
            "alice.key",
            "--token",
            token,
            cwd=venv,
            env=env,
        )
        shown = run(ostiary, "cert", "inspect", "alice.crt", "--short", cwd=venv, env=env)
        assert "CN=alice" in shown
    finally:
        server.terminate()
        server.wait(15)
