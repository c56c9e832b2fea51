"""``ca serve --workers N``: worker processes on the same ports, one CA, stopped together."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ostiary.authority.folder import CAMaterial
from ostiary.tls import client_context
from tests.server.conftest import Provisioners, make_csr
from tests.server.processes import CAFolder, ServeProcess, make_ca_folder, start_serve
from tests.server.test_crash import recorded_fingerprints

pytestmark = pytest.mark.slow

ISSUANCES = 40


@pytest.fixture
def ca_folder(ca_material: CAMaterial, provisioners: Provisioners, tmp_path: Path) -> CAFolder:
    url = f"sqlite:///{tmp_path / 'ca.db'}"
    return make_ca_folder(ca_material, provisioners, url, tmp_path / "ca")


def workers_of(server: ServeProcess, expected: int | None = None, timeout: float = 10) -> set[int]:
    """The server's child processes; with ``expected``, once that many have been forked (the
    first worker may answer the health check before the parent has forked the others)."""
    pid = server.process.pid
    deadline = time.monotonic() + timeout
    while True:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if expected is None or len(children) >= expected or time.monotonic() > deadline:
            return {int(child) for child in children}
        time.sleep(0.05)


def wait_gone(pids: set[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, f"still running: {pids}"
        time.sleep(0.05)


def issue(
    server: ServeProcess, ca: CAFolder, provisioners: Provisioners, n: int
) -> x509.Certificate:
    subject = f"worker-{n}.example.com"
    csr, _ = make_csr(subject, [subject])
    token = provisioners.ops.mint_sign_token(
        provisioners.ops_key, subject, ca=ca.identity, now=datetime.now(UTC)
    )
    with server.client() as client:
        answer = client.post("/sign", json={"csr": csr, "token": token})
    assert answer.status_code == 201, answer.text
    return x509.load_pem_x509_certificate(answer.json()["certificate"].encode())


def test_workers_share_the_ports_and_every_certificate_they_issue_is_recorded(
    ca_folder: CAFolder, provisioners: Provisioners, tmp_path: Path
) -> None:
    server = start_serve(ca_folder, tmp_path / "serve.log", options=("--workers", "3"))
    try:
        workers = workers_of(server, expected=3)
        assert len(workers) == 3
        with ThreadPoolExecutor(8) as pool:
            issued = list(
                pool.map(lambda n: issue(server, ca_folder, provisioners, n), range(ISSUANCES))
            )
        assert server.stop() == 0
    finally:
        server.stop()
    wait_gone(workers)
    fingerprints = {c.fingerprint(hashes.SHA256()).hex() for c in issued}
    assert len(fingerprints) == ISSUANCES
    assert fingerprints <= recorded_fingerprints(ca_folder)  # the audit chain verifies too
    log = (tmp_path / "serve.log").read_text()
    assert "serving with 3 worker processes" in log


CONNECTIONS = 24


def sockets_of(pids: set[int], port: int, state: str) -> dict[int, set[str]]:
    """Per process, the sockets on local ``port`` in TCP ``state`` ("0A" listening, "01"
    established) it holds (read from /proc: whose descriptors name the socket)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(f"socket:[{fields[9]}]")
    held: dict[int, set[str]] = {}
    for pid in pids:
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(descriptor)
            except OSError:  # closed meanwhile
                continue
            if target in inodes:
                held.setdefault(pid, set()).add(target)
    return held


@contextmanager
def open_connections(url: str, context: ssl.SSLContext | None) -> Iterator[None]:
    """``CONNECTIONS`` keep-alive connections opened at once, each answered once (so that a
    worker has accepted it), kept open until the block ends."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with ExitStack() as stack:
        connections = []
        for _ in range(CONNECTIONS):
            raw = socket.create_connection((parts.hostname, parts.port), timeout=30)
            one = context.wrap_socket(raw, server_hostname=parts.hostname) if context else raw
            connections.append(stack.enter_context(one))
        for one in connections:
            one.sendall(b"GET /health HTTP/1.1\r\nHost: ca\r\n\r\n")
        for one in connections:
            answer = b""
            while not answer.endswith(b"}"):
                answer += one.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200"), answer
        yield


def test_each_worker_listens_on_its_own_sockets_and_connections_reach_them_all(
    ca_folder: CAFolder, tmp_path: Path
) -> None:
    """A SO_REUSEPORT group, a socket per worker: with one listening socket shared, the
    first worker awake took every connection of a burst (the bench's 8 and 32)."""
    server = start_serve(ca_folder, tmp_path / "serve.log", options=("--workers", "2"))
    try:
        workers = workers_of(server, expected=2)
        for url, context in (
            (server.http_url, None),
            (server.https_url, client_context([server.root])),
        ):
            port = urlsplit(url).port or 0
            listening = sockets_of({server.process.pid, *workers}, port, "0A")
            assert set(listening) == workers, listening  # the parent holds none
            assert [len(inodes) for inodes in listening.values()] == [1, 1]
            assert len(set.union(*listening.values())) == 2  # not one shared socket
            with open_connections(url, context):
                held = sockets_of(workers, port, "01")
            assert sum(len(inodes) for inodes in held.values()) == CONNECTIONS, held
            assert set(held) == workers, held  # all on one: 2 in 2**24 by chance
    finally:
        server.stop()
    wait_gone(workers)


def test_a_worker_that_dies_stops_the_whole_server(
    ca_folder: CAFolder, provisioners: Provisioners, tmp_path: Path
) -> None:
    server = start_serve(ca_folder, tmp_path / "serve.log", options=("--workers", "2"))
    try:
        workers = workers_of(server, expected=2)
        issue(server, ca_folder, provisioners, 0)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        assert server.process.wait(30) == 1
    finally:
        server.stop()
    wait_gone(workers)
    assert f"worker {victim} ended on its own" in (tmp_path / "serve.log").read_text()


def test_more_workers_than_allowed_are_refused_before_anything_starts(
    ca_folder: CAFolder, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="--workers"):
        start_serve(ca_folder, tmp_path / "serve.log", timeout=30, options=("--workers", "65"))
