"""A real OpenSSH server on loopback for the SSH tests, and an ssh client call.

sshd runs as the user running the tests (``sshd -D -e -f <own config>``), with its own host
key, ``UsePAM no`` and ``StrictModes no``: as root it needs ``/run/sshd`` (privilege
separation); as another user it runs unprivileged and accepts logins to that user only,
which is the account the tests log in to either way.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.client.conftest import free_port
from tests.conftest import require_tool

LOGIN_USER = getpass.getuser()


def keygen(*args: str | Path) -> str:
    result = subprocess.run(
        [require_tool("ssh-keygen"), *map(str, args)], check=True, capture_output=True, text=True
    )
    return result.stdout


def new_key(path: Path, key_type: str = "ed25519", *, bits: int | None = None) -> Path:
    """A new key pair (``path``, ``path.pub``); returns the public key's path."""
    size = ["-b", str(bits)] if bits else []
    keygen("-q", "-t", key_type, *size, "-N", "", "-C", path.name, "-f", path)
    return path.with_name(path.name + ".pub")


@contextmanager
def ssh_agent(folder: Path) -> Iterator[Path]:
    """An ssh-agent in the foreground on a socket in ``folder``; stopped on exit."""
    socket_path = folder / "agent.sock"
    process = subprocess.Popen(
        [require_tool("ssh-agent"), "-D", "-a", str(socket_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("ssh-agent did not start")
            time.sleep(0.02)
        yield socket_path
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class Sshd:
    """One sshd process; ``settings`` are sshd_config lines added to the base ones."""

    folder: Path
    settings: Sequence[str]
    host_key: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.folder / "sshd.log"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def start(self) -> None:
        sshd = "/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else require_tool("sshd")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        config = self.folder / "sshd_config"
        lines = [
            f"ListenAddress 127.0.0.1:{self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.folder / 'sshd.pid'}",
            "AuthorizedKeysFile none",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "UsePAM no",
            "StrictModes no",
            "LogLevel DEBUG2",
            *self.settings,
        ]
        config.write_text("\n".join(lines) + "\n")
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {self.log()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def login(
        self,
        key: Path | None,
        *,
        agent: Path | None = None,
        certificate: Path | None = None,
        known_hosts: Path | None = None,
        user: str = LOGIN_USER,
    ) -> subprocess.CompletedProcess[str]:
        """``ssh ... true`` with ``key`` (and its certificate) or the keys in the ``agent``
        listening on that socket, never prompting."""
        options = ["-F", "/dev/null", "-p", str(self.port), "-o", "BatchMode=yes"]
        if key is not None:
            options += ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]
        if agent is not None:
            options += ["-o", f"IdentityAgent={agent}"]
        options += ["-o", "ConnectTimeout=10"]
        if certificate is not None:
            options += ["-o", f"CertificateFile={certificate}"]
        if known_hosts is None:
            options += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        else:
            options += [
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={known_hosts}",
            ]
            options += ["-o", "GlobalKnownHostsFile=/dev/null"]
        return subprocess.run(
            [require_tool("ssh"), *options, f"{user}@127.0.0.1", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            env={k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"},
        )
