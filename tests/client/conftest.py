"""A real CA server for the client tests, and helpers to drive the client against it.

The CA folder, its provisioners and tokens are made with the ``ostiary`` command in-process
(fast); ``ostiary ca serve`` and the renewal daemon run as subprocesses, so that they own
their signals and the server can be stopped and started again on the same ports.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import tomli_w
from click.testing import Result
from typer.testing import CliRunner

from ostiary.cli.main import app

PASSWORD = "client tests password"
#: Provisioner for holders: short certificates by default (20 s + the 1 min backdate).
PROVISIONER = "laptops"
ADMIN_PROVISIONER = "admins"
OSTIARY = [sys.executable, "-c", "from ostiary.cli.main import main; main()"]


def free_port() -> int:
    """A free loopback port below Linux's ephemeral range (32768-60999), so that no
    outgoing connection takes it while a test has stopped the server that listens on it."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


def run_cli(*args: str | Path, input: str | None = None) -> Result:
    """``ostiary ARGS`` in-process (exceptions other than OstiaryError propagate)."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


def ok(*args: str | Path) -> Result:
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr + result.stdout
    return result


def refused(*args: str | Path, code: int = 1) -> Result:
    """A refusal: the exit status, exactly one ``error:`` line on stderr, no traceback."""
    result = run_cli(*args)
    assert result.exit_code == code, result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return result


@dataclass
class RunningCA:
    """A CA folder and its server (a subprocess on fixed loopback ports)."""

    home: Path
    password_file: Path
    https_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    fingerprint: str = ""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def root_file(self) -> Path:
        return self.home / "certs" / "root.crt"

    def init(self) -> None:
        result = ok(
            "ca",
            "init",
            "--name",
            "Client Tests",
            "--dir",
            self.home,
            "--password-file",
            self.password_file,
            "--address",
            f"127.0.0.1:{self.https_port}",
        )
        self.fingerprint = result.stdout.strip().splitlines()[-1]
        self._allow_short_lifetimes()
        self.ca(
            "provisioner",
            "add",
            PROVISIONER,
            "--min-lifetime",
            "10s",
            "--default-lifetime",
            "20s",
            "--max-lifetime",
            "1d",
        )
        self.ca("provisioner", "add", ADMIN_PROVISIONER, "--admin")

    def _allow_short_lifetimes(self) -> None:
        config_file = self.home / "ostiary.toml"
        config = tomllib.loads(config_file.read_text())
        config["claims"]["min_lifetime"] = "10s"
        config_file.write_text(tomli_w.dumps(config))

    def ca(self, *args: str | Path) -> Result:
        return ok("ca", *args, "--dir", self.home, "--password-file", self.password_file)

    def token(self, subject: str, *sans: str, not_after: str | None = None) -> str:
        args: list[str | Path] = ["token", subject, "--provisioner", PROVISIONER]
        for san in sans:
            args += ["--san", san]
        if not_after:
            args += ["--not-after", not_after]
        return self.ca(*args).stdout.strip()

    def admin_token(self) -> str:
        return self.ca("token", "--admin", "--provisioner", ADMIN_PROVISIONER).stdout.strip()

    def start(self) -> None:
        log = (self.home.parent / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                *OSTIARY,
                "ca",
                "serve",
                "--dir",
                str(self.home),
                "--password-file",
                str(self.password_file),
                "--address",
                f"127.0.0.1:{self.https_port}",
                "--http-address",
                f"127.0.0.1:{self.http_port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 90  # only a failing start waits this long
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ca serve exited: {self.log_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/health").is_success:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"ca serve did not start: {self.log_text()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log_text(self) -> str:
        return (self.home.parent / "server.log").read_text(errors="replace")[-3000:]


def _running_ca(folder: Path) -> Iterator[RunningCA]:
    password_file = folder / "password"
    password_file.write_text(PASSWORD + "\n")
    ca = RunningCA(folder / "ca", password_file)
    ca.init()
    ca.start()
    try:
        yield ca
    finally:
        ca.stop()


@pytest.fixture(scope="session")
def running_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCA]:
    """One CA server shared by the client tests."""
    yield from _running_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def own_ca(tmp_path: Path) -> Iterator[RunningCA]:
    """A CA server for one test, which may stop and start it."""
    yield from _running_ca(tmp_path)


@pytest.fixture
def client_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty client configuration folder for this test (never the real one)."""
    folder = tmp_path / "client-config"
    monkeypatch.setenv("OSTIARY_CLIENT_CONFIG", str(folder))
    return folder


@pytest.fixture
def bootstrapped(running_ca: RunningCA, client_config: Path) -> RunningCA:
    """The shared CA, trusted through ``ostiary bootstrap``."""
    ok("bootstrap", "--ca-url", running_ca.url, "--fingerprint", running_ca.fingerprint)
    return running_ca


@pytest.fixture
def enroll(bootstrapped: RunningCA, tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """``ostiary cert request`` for a new certificate; returns (CRT, KEY)."""

    def make(
        name: str = "alice", *, not_after: str | None = None, folder: Path = tmp_path
    ) -> tuple[Path, Path]:
        crt, key = folder / f"{name}.crt", folder / f"{name}.key"
        token = bootstrapped.token(name, not_after=not_after)
        args: list[str | Path] = ["cert", "request", name, crt, key, "--token", token]
        if not_after:
            args += ["--not-after", not_after]
        ok(*args)
        return crt, key

    return make


@dataclass
class Daemon:
    """``ostiary cert renew --daemon`` in a subprocess, its log in a file."""

    process: subprocess.Popen[bytes]
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_for(self, text: str, *, count: int = 1, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if log.count(text) >= count:
                return log
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {count} x {text!r} in the daemon's log:\n{self.log()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(*args: str | Path) -> Daemon:
        log_file = tmp_path / f"daemon-{len(started)}.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                [*OSTIARY, "cert", "renew", *map(str, args), "--daemon"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=dict(os.environ),
            )
        daemon = Daemon(process, log_file)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
