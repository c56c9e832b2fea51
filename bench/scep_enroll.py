"""SCEP enrollments per second: Ostiary against micromdm's ``scepserver``, one run.

    python bench/scep_enroll.py [--quick] [--levels 1,8,32] [--json FILE]

Both servers run inside a private network namespace (``unshare -n``, loopback only, so
root): ``scepserver`` takes only ``-port`` and listens on every interface. Each server issues
from a fresh RSA CA of its own (Debian's scepclient encrypts to every certificate of
GetCACert and cannot use an EC one) and is pinned to the same core (the last one); the
client runs on the others.

One enrollment is what a device does: micromdm's ``scepclient`` (Debian ``scep``, the same
binary for both servers) in a fresh folder with a pre-made RSA 2048 key (made untimed, as a
phone makes its key before it enrolls): GetCACaps, GetCACert, PKCSReq (single DES, SHA-1,
POST), the CertRep decrypted. The peers:

- Ostiary ``ca serve`` (one process, SQLite, durable, audit log written) with a ``scep``
  provisioner and a **one-time** challenge per device, each bound to its device's name,
  made beforehand (untimed) and spent by a conditional UPDATE in the enrollment's
  transaction;
- ``scepserver`` (micromdm 2.1.0 from Debian) with its **static** challenge, its CA and
  serial in a file depot.

Per server and concurrency: enrollments/s, p50/p99, failures, the server's CPU per
enrollment (``/proc/<pid>/stat``) and the client's (the scepclient processes': when it times
the rate nears the client's cores, the client is the limit). Ratios ``scep@N``: Ostiary's
rate over scepserver's (target: at least 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).parent))
import run as bench  # bench/run.py

STATIC_CHALLENGE = "bench-static-challenge"
SCEPSERVER_KEY_PASSWORD = "bench-depot"


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    pid: int
    #: The challenge for enrollment ``n``.
    challenges: list[str]


@dataclass
class ScepRow:
    server: str
    concurrency: int
    enrollments: int
    failed: int
    enrollments_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_enrollment: float
    client_cpu_ms_per_enrollment: float


def _keys(work: Path, count: int) -> list[Path]:
    """``count`` folders, each with an RSA 2048 key in ``key.pem`` (PKCS#1, as scepclient
    writes it), made before the timed part.
    """
    folders = []
    for n in range(count):
        folder = work / f"device-{n}"
        folder.mkdir(parents=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (folder / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        folders.append(folder)
    return folders


def enroll(server: Server, folder: Path, number: int) -> None:
    result = subprocess.run(
        ["scepclient", "-server-url", server.url, "-challenge", server.challenges[number],
         "-private-key", "key.pem", "-certificate", "cert.pem", "-cn", f"device-{number}"],
        cwd=folder, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if result.returncode != 0 or not (folder / "cert.pem").exists():
        raise RuntimeError((result.stdout + result.stderr).strip()[-300:])


def measure_level(
    server: Server, work: Path, first: int, concurrency: int, count: int
) -> tuple[ScepRow, str | None]:
    folders = _keys(work / f"{server.name}-{concurrency}", count)
    times: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def work_on(index: int) -> None:
        for n in range(index, count, concurrency):
            began = time.perf_counter()
            try:
                enroll(server, folders[n], first + n)
            except Exception as exc:  # counted and reported: a bench run goes on
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            with lock:
                times.append(time.perf_counter() - began)

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_before = children.ru_utime + children.ru_stime
    cpu_before = bench.cpu_seconds(server.pid)
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(work_on, range(concurrency)))
    elapsed = time.perf_counter() - began
    cpu = bench.cpu_seconds(server.pid) - cpu_before
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = children.ru_utime + children.ru_stime - client_before
    times.sort()
    done = len(times)
    row = ScepRow(
        server=server.name,
        concurrency=concurrency,
        enrollments=done,
        failed=len(failures),
        enrollments_per_s=round(done / elapsed, 2),
        p50_ms=round(statistics.median(times) * 1000, 1) if times else 0.0,
        p99_ms=round(times[min(done - 1, int(done * 0.99))] * 1000, 1) if times else 0.0,
        server_cpu_ms_per_enrollment=round(cpu / done * 1000, 2) if done else 0.0,
        client_cpu_ms_per_enrollment=round(client_cpu / done * 1000, 2) if done else 0.0,
    )
    return row, failures[0] if failures else None


# --------------------------------------------------------------------------- the servers


@contextmanager
def ostiary(work: Path, total: int) -> Iterator[Server]:
    from ostiary.authority.folder import CAPaths
    from ostiary.config import load_config
    from ostiary.provisioners.scep import make_challenge
    from ostiary.store import Store

    folder, password = work / "ostiary", work / "password"
    password.write_text(bench.PASSWORD + "\n")
    password.chmod(0o600)
    port, http_port = bench.free_port(), bench.free_port()
    common = ("--dir", str(folder), "--password-file", str(password))
    bench.cli("ca", "init", "--name", "Bench", "--key-type", "rsa2048", *common, "--address",
              f"127.0.0.1:{port}", "--url", f"http://127.0.0.1:{http_port}", cwd=work)  # fmt: skip
    bench.cli("ca", "provisioner", "add", "devices", "--type", "scep", "--profile", "client",
              *common, cwd=work)  # fmt: skip
    paths = CAPaths(folder)
    store = Store.from_url(paths.database_url(load_config(paths.config)))
    now = datetime.now(UTC)
    try:
        challenges = [
            make_challenge(store, "devices", subject=f"device-{n}", ttl=timedelta(hours=6),
                           now=now, actor="bench").value
            for n in range(total)
        ]  # fmt: skip
    finally:
        store.dispose()
    process = bench.start(
        [str(Path(sys.executable).with_name("ostiary")), "ca", "serve", *common,
         "--address", f"127.0.0.1:{port}", "--http-address", f"127.0.0.1:{http_port}"],
        work / "ostiary.log", http_port,
    )  # fmt: skip
    try:
        yield Server("ostiary", f"http://127.0.0.1:{http_port}/scep/devices", process.pid,
                     challenges)  # fmt: skip
    finally:
        bench.stop(process)


@contextmanager
def scepserver(work: Path, total: int) -> Iterator[Server]:
    depot = work / "depot"
    subprocess.run(
        ["scepserver", "ca", "-init", "-depot", str(depot), "-keySize", "2048",
         "-key-password", SCEPSERVER_KEY_PASSWORD],
        capture_output=True, check=True, cwd=work,
    )  # fmt: skip
    port = bench.free_port()
    process = bench.start(
        ["scepserver", "-depot", str(depot), "-port", str(port), "-capass",
         SCEPSERVER_KEY_PASSWORD, "-challenge", STATIC_CHALLENGE],
        work / "scepserver.log", port,
    )  # fmt: skip
    try:
        yield Server("scepserver", f"http://127.0.0.1:{port}/scep", process.pid,
                     [STATIC_CHALLENGE] * total)  # fmt: skip
    finally:
        bench.stop(process)


SERVERS = {"ostiary": ostiary, "scepserver": scepserver}


def measure_here(levels: list[int], counts: dict[int, int]) -> dict[str, Any]:
    """Both servers in turn at every level (inside the private network namespace)."""
    rows: list[ScepRow] = []
    notes: dict[str, str] = {}
    os.sched_setaffinity(0, bench.CLIENT_CPUS)
    total = sum(counts[level] for level in levels) + 1
    for name, make in SERVERS.items():
        with tempfile.TemporaryDirectory(prefix=f"scep-bench-{name}-") as temp:
            work = Path(temp)
            with make(work, total) as server:
                enroll(server, _keys(work / "warm", 1)[0], 0)  # imports, caches, RA key
                first = 1
                for level in levels:
                    row, failure = measure_level(server, work, first, level, counts[level])
                    first += counts[level]
                    rows.append(row)
                    if failure:
                        notes[f"{name}@{level}"] = failure
    return {"rows": [asdict(r) for r in rows], "notes": notes, "ratios": ratios(rows, levels)}


def measure(levels: list[int], counts: dict[int, int]) -> dict[str, Any]:
    """:func:`measure_here` in a private network namespace (``unshare -n``, needs root)."""
    missing = [tool for tool in ("scepclient", "scepserver", "unshare") if not shutil.which(tool)]
    if missing:
        return {"notes": {"skipped": f"not installed: {', '.join(missing)} (Debian scep)"}}
    if os.geteuid() != 0:
        return {"notes": {"skipped": "needs root for a private network namespace"}}
    with tempfile.TemporaryDirectory(prefix="scep-bench-") as temp:
        out = Path(temp) / "result.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--inner", "--json", str(out),
                "--levels", ",".join(map(str, levels)),
                "--counts", ",".join(str(counts[level]) for level in levels)]  # fmt: skip
        script = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in argv)
        subprocess.run(["unshare", "-n", "sh", "-c", script], check=True)
        result: dict[str, Any] = json.loads(out.read_text())
    return result


def ratios(rows: list[ScepRow], levels: list[int]) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    for level in levels:
        ours = next((r for r in rows if r.server == "ostiary" and r.concurrency == level), None)
        peer = next((r for r in rows if r.server == "scepserver" and r.concurrency == level), None)
        usable = ours is not None and peer is not None and peer.enrollments_per_s > 0
        if usable and ours is not None and peer is not None and ours.failed == 0:
            found[f"scep@{level}"] = round(ours.enrollments_per_s / peer.enrollments_per_s, 2)
        else:
            found[f"scep@{level}"] = None
    return found


def counts_for(levels: list[int], quick: bool) -> dict[int, int]:
    return {level: (max(8, level) if quick else max(40, level * 6)) for level in levels}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--counts", help="enrollments per level (default from --quick)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    counts = counts_for(levels, args.quick)
    if args.counts:
        counts = dict(zip(levels, (int(x) for x in args.counts.split(",")), strict=True))
    result = measure_here(levels, counts) if args.inner else measure(levels, counts)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
