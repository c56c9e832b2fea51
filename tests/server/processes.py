"""``ostiary ca serve`` as a real subprocess: a CA folder for it, start, wait, stop, kill."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509

from ostiary.authority.folder import CAMaterial, CAPaths
from ostiary.config import dump_config
from ostiary.provisioners import CAIdentity
from ostiary.store import Store, migrate
from ostiary.tls import client_context
from tests.server.conftest import PASSWORD, Provisioners

_URL = re.compile(r"(HTTPS|Plain HTTP) \([^)]*\):\s+(\S+)")


@dataclass(frozen=True)
class CAFolder:
    """A CA folder on disk for subprocesses: the session CA, its own database."""

    paths: CAPaths
    password_file: Path
    database_url: str
    root: x509.Certificate
    intermediate: x509.Certificate

    @property
    def identity(self) -> CAIdentity:
        return CAIdentity.from_certificates(self.root, self.intermediate)


def make_ca_folder(
    template: CAMaterial, provisioners: Provisioners, database_url: str, folder: Path
) -> CAFolder:
    """Copy the session CA to ``folder``, point it at ``database_url``, record provisioners."""
    shutil.copytree(template.paths.root, folder)
    paths = CAPaths(folder)
    config = template.config.model_copy(update={"database_url": database_url})
    paths.config.write_text(dump_config(config), encoding="utf-8")
    password_file = folder / "password"
    password_file.write_bytes(PASSWORD + b"\n")
    migrate(database_url)
    store = Store.from_url(database_url)
    try:
        provisioners.record(store)
    finally:
        store.dispose()
    return CAFolder(paths, password_file, database_url, template.root, template.intermediate)


@dataclass
class ServeProcess:
    """One ``ostiary ca serve`` process and where it listens."""

    process: subprocess.Popen[bytes]
    log: Path
    https_url: str
    http_url: str
    root: x509.Certificate

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.https_url, verify=client_context([self.root]), timeout=60)

    def plain(self) -> httpx.Client:
        return httpx.Client(base_url=self.http_url, timeout=60)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode


def start_serve(
    ca: CAFolder, log: Path, *, timeout: float = 60, options: Sequence[str] = ()
) -> ServeProcess:
    """Start ``ostiary ca serve [options]`` on free loopback ports and wait until it answers."""
    command = [
        sys.executable,
        "-c",
        "from ostiary.cli.main import main; main()",
        "ca",
        "serve",
        "--dir",
        str(ca.paths.root),
        "--password-file",
        str(ca.password_file),
        "--address",
        "127.0.0.1:0",
        "--http-address",
        "127.0.0.1:0",
        *options,
    ]
    environment = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    environment.pop("OSTIARY_PASSWORD", None)
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=environment
        )
    deadline = time.monotonic() + timeout
    urls: dict[str, str] = {}
    while len(urls) < 2:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"ca serve did not start:\n{log.read_text(errors='replace')}")
        urls = {m.group(1): m.group(2) for m in _URL.finditer(log.read_text(errors="replace"))}
        time.sleep(0.05)
    server = ServeProcess(process, log, urls["HTTPS"], urls["Plain HTTP"], ca.root)
    while True:
        try:
            with server.plain() as plain:
                if plain.get("/health").status_code == 200:
                    return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"ca serve does not answer:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


@contextmanager
def serving(ca: CAFolder, log: Path) -> Iterator[ServeProcess]:
    server = start_serve(ca, log)
    try:
        yield server
    finally:
        server.stop()
