"""A PostgreSQL cluster of the test's own (Debian's ``initdb``/``pg_ctl``), never the
machine's service: on a free loopback port, in a folder of its own, that the test may kill,
stop and start again.

PostgreSQL refuses to run as root: as root, the cluster runs as the ``postgres`` user
(``runuser``), in a folder under the system temporary folder that user can reach.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "ostiary"
DATABASE = "ostiary"


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL ``bin`` folder, if the server package is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    return Path(found[-1]).parent if found else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Cluster:
    """One running PostgreSQL cluster: its folder, port and server log."""

    bin: Path
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, port: int | None = None) -> str:
        """The database URL, through ``port`` (a proxy) if given."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{port or self.port}/{DATABASE}"

    def _run(self, tool: str, *arguments: str, check: bool = True) -> int:
        command = [str(self.bin / tool), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, timeout=120, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.decode(errors='replace')}")
        return done.returncode

    def start(self) -> None:
        """Start the postmaster; retried while the old one's backends are still leaving."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        deadline = time.monotonic() + 60
        while True:
            code = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                "start", check=False,
            )  # fmt: skip
            if code == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL does not start:\n{self.log.read_text()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: sessions are ended, the cluster shuts down cleanly."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def kill(self) -> None:
        """SIGKILL to the postmaster: no shutdown code runs (its backends follow it)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)


@contextmanager
def own_cluster() -> Iterator[Cluster]:
    """A fresh cluster with a database ``ostiary`` owned by ``ostiary`` (trust on loopback);
    skipped without the PostgreSQL server package (a failure under ``CI=true``).
    """
    found = postgres_bin()
    if found is None:
        reason = "the PostgreSQL server package (postgresql) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="ostiary-pg-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = Cluster(found, root, free_port())
    try:
        cluster._run(
            "initdb", "-D", str(cluster.data), "-U", USER, "-A", "trust", "--no-sync",
            "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        cluster.start()
        cluster._run("createdb", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", USER, DATABASE)
        yield cluster
    finally:
        cluster._run("pg_ctl", "-D", str(cluster.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
