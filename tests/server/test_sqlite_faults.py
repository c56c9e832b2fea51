"""SQLite faults under a running server: a full disk, and the write lock held by another
process past the busy timeout. Each is a 503 problem with
``Retry-After``; nothing is stored half-way (no certificate, no spent token, no audit entry,
the chain verifies); and once the fault is gone the same server issues again.

The database lives on a small tmpfs mounted for the test (root only; a loop device would do
the same where tmpfs cannot be mounted). The busy timeout is shortened for the in-process
server (3 s instead of 30 s) so that "past the timeout" costs seconds.

Not here: a read-only database. Root writes through file modes, and the tmpfs cannot be
remounted read-only under a running server (the writer-lock file beside the database is
held open for writing); a loop device whose block device is set read-only would do it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from ostiary.authority.folder import CAMaterial
from ostiary.store import AuditLog, database
from ostiary.store.database import sqlite_url_for
from tests.figures import record
from tests.server.conftest import Provisioners, Running, make_csr, open_authority, run_server

BUSY_TIMEOUT = 3.0


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module")
def running(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("sqlite-faults")
    with (
        pytest.MonkeyPatch.context() as patch,
        tmpfs(folder / "disk", "4m") as disk,
    ):
        patch.setattr(database, "SQLITE_BUSY_TIMEOUT_SECONDS", BUSY_TIMEOUT)
        url = sqlite_url_for(disk / "ostiary.db")
        with (
            open_authority(ca_material, provisioners, url, folder / "ca") as authority,
            run_server(authority, provisioners) as running,
        ):
            yield running


def _state(running: Running) -> tuple[dict[str, int], int]:
    with running.authority.store.transaction(read_only=True) as session:
        assert AuditLog(session).verify().ok
    return running.counts(), running.audit_count()


def _sign(running: Running, subject: str) -> httpx.Response:
    csr, _ = make_csr(subject)
    with running.client() as client:
        return client.post("/sign", json={"csr": csr, "token": running.sign_token(subject)})


def _refused_then_issued(running: Running, fault: AbstractContextManager[None], case: str) -> None:
    """Under ``fault``: 503 with Retry-After, nothing changed; after it: 201."""
    subject = case.split()[0]
    assert _sign(running, f"before-{subject}").status_code == 201
    before = _state(running)
    with fault:
        answer = _sign(running, subject)
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"].isdigit()
    unchanged = _state(running) == before
    recovered = _sign(running, f"after-{subject}").status_code == 201
    record(
        "database-fault",
        backend="sqlite",
        case=case,
        requests=3,
        issued=2,
        refused_503=1,
        other_5xx=0,
        lost=0 if unchanged else 1,
    )
    assert unchanged
    assert recovered


@contextmanager
def full_disk(disk: Path) -> Iterator[None]:
    filler = disk / "filler"
    with filler.open("wb") as out, suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    try:
        yield
    finally:
        filler.unlink()


@contextmanager
def locked_by_another_process(path: Path) -> Iterator[None]:
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == b"held\n"
            yield
        finally:
            holder.kill()


def _disk(running: Running) -> Path:
    return Path(str(running.authority.store.engine.url.database)).parent


def test_a_full_disk_is_a_503_and_nothing_half_written(running: Running) -> None:
    _refused_then_issued(running, full_disk(_disk(running)), "full disk")


def test_a_write_lock_held_past_the_timeout_is_a_503(running: Running) -> None:
    database_file = Path(str(running.authority.store.engine.url.database))
    _refused_then_issued(
        running, locked_by_another_process(database_file), "write lock held past the timeout"
    )
