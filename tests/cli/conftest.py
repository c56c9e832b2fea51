"""Running the ``ostiary`` command in-process, and a CA folder made by it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from ostiary.cli.main import app

PASSWORD = "correct horse battery staple"


@dataclass
class CLI:
    runner: CliRunner
    home: Path

    def __call__(self, *args: str | Path, input: str | None = None) -> Result:
        return self.runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    def ok(self, *args: str | Path) -> Result:
        result = self(*args)
        assert result.exit_code == 0, result.stderr + result.stdout
        return result

    def refused(self, *args: str | Path) -> Result:
        """A refusal: non-zero exit, exactly one line on stderr, no traceback."""
        result = self(*args)
        assert result.exit_code != 0, result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr
        return result


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CLI:
    home = tmp_path / "ca"
    monkeypatch.setenv("OSTIARY_HOME", str(home))
    monkeypatch.delenv("OSTIARY_PASSWORD", raising=False)
    return CLI(CliRunner(), home)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture
def ca_dir(cli: CLI, password_file: Path) -> Path:
    """A CA folder made by ``ostiary ca init`` with CDP/AIA URLs."""
    cli.ok(
        "ca",
        "init",
        "--name",
        "Test",
        "--password-file",
        password_file,
        "--url",
        "http://ca.test:8080",
    )
    return cli.home


@pytest.fixture
def make_csr(cli: CLI, tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    def make(subject: str = "alice", *sans: str, kty: str = "p256") -> tuple[Path, Path]:
        csr, key = tmp_path / f"{subject}.csr", tmp_path / f"{subject}.key"
        args: list[str | Path] = [
            "cert",
            "create",
            subject,
            csr,
            key,
            "--csr",
            "--kty",
            kty,
            "--force",
        ]
        for san in sans:
            args += ["--san", san]
        cli.ok(*args)
        return csr, key

    return make
