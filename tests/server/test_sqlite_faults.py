"""SQLite faults under a running server: a full disk, and the write lock held by another
process past the busy timeout. Each is a 503 problem with
``Retry-After``; nothing is stored half-way (no certificate, no spent token, no audit entry,
the chain verifies); and once the fault is gone the same server issues again.

The database lives on a small tmpfs mounted for the test (root only; a loop device would do
the same where tmpfs cannot be mounted). The busy timeout is shortened for the in-process
server (3 s instead of 30 s) so that "past the timeout" costs seconds.

A read-only database, two ways. Under a running server a file's mode changes nothing (the
server holds the database, its -wal and -shm open for writing, and Linux refuses to remount
a file system read-only while files on it are open for writing), so the file system turns
read-only the way a failing disk's does: ext4 on a loop device mounted ``errors=remount-ro``,
an error triggered through ``/sys/fs/ext4/DEV/trigger_fs_error``. Issuance is then a 503
with Retry-After, nothing is half-written, and reads (health, OCSP) are still served; such
a file system comes back writable only after an unmount and a file system check, so that
recovery is a restart (docs/operations.md). And a database file that is read-only before a
command starts (0444, the command run as root without CAP_DAC_OVERRIDE, as a CA folder
restored by the wrong user would be): ``ca serve``, ``ca sign`` and ``ca revoke`` say so in
one line and exit 1, while reading commands work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp

from ostiary.authority.folder import CAMaterial
from ostiary.store import AuditLog, database
from ostiary.store.database import sqlite_url_for
from tests.client.conftest import OSTIARY
from tests.figures import record
from tests.server.conftest import (
    Provisioners,
    Running,
    make_csr,
    ocsp_request,
    open_authority,
    run_server,
)
from tests.server.processes import make_ca_folder

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


@contextmanager
def ext4_loop(folder: Path, size_mb: int = 32) -> Iterator[Path]:
    """An ext4 file system on a loop device of our own, mounted ``errors=remount-ro``."""
    if shutil.which("mkfs.ext4") is None or not Path("/dev/loop-control").exists():
        pytest.skip("no mkfs.ext4 or loop devices here")
    image = folder.parent / f"{folder.name}.img"
    with image.open("wb") as out:
        out.truncate(size_mb * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    folder.mkdir()
    attached = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=False
    )
    if attached.returncode != 0:
        pytest.skip(f"cannot attach a loop device here: {attached.stderr.strip()}")
    device = attached.stdout.strip()
    try:
        mount = ["mount", "-o", "errors=remount-ro", device, str(folder)]
        subprocess.run(mount, check=True, capture_output=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def make_read_only(folder: Path) -> None:
    """The file system under ``folder`` turns read-only, as a failing disk's does."""
    device = os.path.basename(
        subprocess.run(
            ["findmnt", "-no", "SOURCE", str(folder)], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("test: read-only disk\n")
    options = subprocess.run(
        ["findmnt", "-no", "OPTIONS", str(folder)], capture_output=True, text=True, check=True
    ).stdout
    assert "emergency_ro" in options or options.startswith("ro"), options


def test_a_file_system_turned_read_only_is_a_503_while_reads_are_served(
    ca_material: CAMaterial, provisioners: Provisioners, tmp_path: Path
) -> None:
    with (
        ext4_loop(tmp_path / "disk") as disk,
        open_authority(
            ca_material, provisioners, sqlite_url_for(disk / "ostiary.db"), tmp_path / "ca"
        ) as authority,
        run_server(authority, provisioners) as running,
    ):
        alice = running.enroll("alice@example.com")
        before = _state(running)
        make_read_only(disk)
        answers = [_sign(running, f"ro-{n}@example.com") for n in range(3)]
        with running.client(identity=alice) as client:
            answers.append(client.post("/renew", json={}))
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["retry-after"].isdigit()
        assert _state(running) == before
        with running.plain() as plain:
            assert plain.get("/health").status_code == 200
            ocsp = plain.post(
                "/ocsp",
                content=ocsp_request(alice.certificate, running.authority.issuer.certificate),
                headers={"Content-Type": "application/ocsp-request"},
            )
            assert ocsp.status_code == 200
            status = x509_ocsp.load_der_ocsp_response(ocsp.content).certificate_status
            assert status == x509_ocsp.OCSPCertStatus.GOOD
        record(
            "database-fault",
            backend="sqlite",
            case="file system turned read-only",
            requests=len(answers) + 1,
            issued=1,
            refused_503=len(answers),
            other_5xx=0,
            lost=0,
        )


def _without_dac_override(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``ostiary ARGS`` as root without CAP_DAC_OVERRIDE: file modes hold for it."""
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv here")
    drop = "-dac_override,-dac_read_search"
    command = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", *OSTIARY]
    return subprocess.run(
        [*command, *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        check=False,
    )


def test_commands_on_a_read_only_database_say_so_in_one_line(
    ca_material: CAMaterial, provisioners: Provisioners, tmp_path: Path
) -> None:
    ca = make_ca_folder(
        ca_material, provisioners, sqlite_url_for(tmp_path / "ostiary.db"), tmp_path / "ca"
    )
    csr_file = tmp_path / "x.csr"
    csr_file.write_text(make_csr("x@example.com")[0])
    home = ("--dir", ca.paths.root, "--password-file", ca.password_file)
    assert _without_dac_override("ca", "sign", csr_file, "--out", tmp_path / "x.crt", *home)
    serial = f"{x509.load_pem_x509_certificate((tmp_path / 'x.crt').read_bytes()).serial_number:x}"
    for name in ("ostiary.db", "ostiary.db-wal", "ostiary.db-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).chmod(0o444)
    before = (tmp_path / "ostiary.db").read_bytes()
    for args in (
        ("ca", "sign", csr_file, "--out", tmp_path / "y.crt", *home),
        ("ca", "revoke", serial, *home),
        ("ca", "serve", *home, "--address", "127.0.0.1:0", "--http-address", "127.0.0.1:0"),
    ):
        done = _without_dac_override(*args)
        assert done.returncode == 1, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert "read-only" in lines[0] or "readonly" in lines[0], lines[0]
    assert not (tmp_path / "y.crt").exists()
    assert (tmp_path / "ostiary.db").read_bytes() == before
    listed = _without_dac_override("ca", "certs", "list", "--dir", ca.paths.root)
    assert listed.returncode == 0 and serial in listed.stdout, listed.stderr
