"""``ca serve --workers N``: worker processes on the same ports, one CA, stopped together."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ostiary.authority.folder import CAMaterial
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
