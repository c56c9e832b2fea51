"""SCEP enrollments per second: Ostiary against micromdm's ``scepserver``, in rounds.

    python bench/scep_enroll.py [--quick] [--levels 1,8,32] [--counts 40,48,192]
                                [--rounds 3] [--client lean|scepclient] [--json FILE]

Both servers run inside a private network namespace (``unshare -n``, loopback only, so
root): ``scepserver`` takes only ``-port`` and listens on every interface. Each server issues
from a fresh RSA CA of its own (Debian's scepclient encrypts to every certificate of
GetCACert and cannot use an EC one) and is pinned to the same core (the last one); the
client runs on the others.

One enrollment is what a device does: GetCACaps, GetCACert, PKCSReq (single DES, SHA-1,
POST), the CertRep checked and decrypted, with an RSA 2048 key made beforehand (untimed, as
a phone makes its key before it enrolls). The client (``--client``):

- ``lean`` (the default; bench/scep_lean.py): one asyncio process, a keep-alive HTTP/1.1
  connection per concurrent worker (bench/http_lean.py), the PKCSReq written as DER with
  the server's writer (``ostiary.scep.der``) and pyca/cryptography, the CertRep read
  (status, signature, digest, envelope, certificate) with asn1crypto; the device's
  self-signed certificate and its CSR with its challenge also made before the clock starts.
  ~1.5-2.2 ms of client CPU per enrollment at 8 and 32, so on its one core the servers set
  the rate;
- ``scepclient``: micromdm's (Debian ``scep``, the same binary for both servers), a process
  per enrollment in a fresh folder holding the key. ~10 ms of client CPU per enrollment: it
  capped both servers near ~90 enrollments/s at 8 and 32, the client core's limit. The
  SCEP figures in docs/BENCHMARKS.md before session 11's lean client were made with it, and
  bench/scep_instructions.py still drives it.

Before each level, the disk is synced (``os.sync``), so that what the setup wrote is not
flushed by the first durable commits of the timed part. The peers:

- Ostiary ``ca serve`` (one process, SQLite, durable, audit log written) with a ``scep``
  provisioner and a **one-time** challenge per device, each bound to its device's name,
  made beforehand (untimed) and spent by a conditional UPDATE in the enrollment's
  transaction;
- ``scepserver`` (micromdm 2.1.0 from Debian) with its **static** challenge, its CA and
  serial in a file depot. Its file depot races on its serial file under concurrent
  PKCSReqs (micromdm/scep issue 184, fixed by PR 185 after 2.1.0): at 8 and 32 with the
  lean client it answers a few FAILURE/badRequest ("failed to sign CSR": "serial: file
  exists", "could not convert  to serial number"), counted as failed enrollments.

Both servers are up at once and take turns at each level, ``--rounds`` times (3), the order
flipped every round, as the issuance-all-cores part of bench/run.py does: single runs of the
same code moved by 10-20 % on the shared machine (docs/BENCHMARKS.md). Each round's two
measurements of a level are seconds apart, on the same keys (each key enrolls once with
each server), so a drift of the machine's load touches both.

Per server and concurrency: enrollments/s, p50/p99, failures, the server's CPU per
enrollment (``/proc/<pid>/stat``), the client's (the lean client's process CPU, or the
scepclient processes'), whether the server's core was the limit (``server_core_busy``: its
CPU seconds per second, near 1.0 when CPU-bound; ``server_core_wait``: seconds its threads
waited runnable for a core, per second, large when other work had the core) and which client
made the row; the row kept is the round with the median rate. Ratios ``scep@N``: the median
of the rounds' ratios, Ostiary's rate over scepserver's in the same round (target: at least
1.0); None when Ostiary failed an enrollment in any round.
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
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).parent))
import http_lean as lean  # bench/http_lean.py
import run as bench  # bench/run.py
import scep_lean  # bench/scep_lean.py

STATIC_CHALLENGE = "bench-static-challenge"
#: Rounds per level: each server measured once per round, the order flipped every round.
ROUNDS = 3
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
    # The server's CPU seconds per second of the level: near 1.0, its one core is the limit.
    server_core_busy: float = 0.0
    # Seconds its threads waited, runnable, for the core, per second of the level (large:
    # other work on the machine had the core).
    server_core_wait: float = 0.0
    client: str = "lean"  # which bench client made the row: "lean" or "scepclient"


def _keys(count: int) -> list[rsa.RSAPrivateKey]:
    """``count`` RSA 2048 keys, made before the timed part (a phone makes its key before it
    enrolls); each enrolls once with each server.
    """
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(count)]


def _folders(keys: list[rsa.RSAPrivateKey], into: Path) -> list[Path]:
    """A fresh folder per key under ``into`` with the key in ``key.pem`` (PKCS#1, as
    scepclient writes it), for scepclient, which writes its certificate beside the key.
    """
    folders = []
    for n, key in enumerate(keys):
        folder = into / f"device-{n}"
        folder.mkdir(parents=True)
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
    server: Server, folders: list[Path], first: int, concurrency: int
) -> tuple[ScepRow, str | None]:
    """Enroll one device per folder with scepclient, ``concurrency`` at a time, device
    ``first + n`` in the ``n``-th folder.
    """
    count = len(folders)
    outcome = lean.Outcome()
    lock = threading.Lock()

    def work_on(index: int) -> None:
        for n in range(index, count, concurrency):
            began = time.perf_counter()
            try:
                enroll(server, folders[n], first + n)
            except Exception as exc:  # counted and reported: a bench run goes on
                with lock:
                    outcome.failures.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            with lock:
                outcome.times.append(time.perf_counter() - began)

    _sync()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_before = children.ru_utime + children.ru_stime
    server_before = _meter(server)
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(work_on, range(concurrency)))
    outcome.elapsed = time.perf_counter() - began
    server_after = _meter(server)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    outcome.client_cpu = children.ru_utime + children.ru_stime - client_before
    outcome.server_cpu = server_after[0] - server_before[0]
    outcome.server_core_wait = server_after[1] - server_before[1]
    return _row(server, concurrency, outcome, "scepclient")


def measure_level_lean(
    server: Server, keys: list[rsa.RSAPrivateKey], first: int, concurrency: int
) -> tuple[ScepRow, str | None]:
    """As :func:`measure_level`, with the lean client (bench/scep_lean.py): device ``first +
    n`` holds ``keys[n]``, its self-signed certificate and its CSR with its challenge, all
    made here, before the clock starts.
    """
    devices = [
        scep_lean.make_device(key, f"device-{first + n}", server.challenges[first + n])
        for n, key in enumerate(keys)
    ]
    _sync()
    outcome = scep_lean.run_enrollments(
        server.url, concurrency, devices, meter=lambda: _meter(server)
    )
    return _row(server, concurrency, outcome, "lean")


def _sync() -> None:
    """Untimed: what the setup wrote (keys, challenges, the database at init) goes to the disk
    now, not in the first durable commits of the level (an fsync on ext4 commits the
    journal, with every pending change of the file system).
    """
    os.sync()


def _meter(server: Server) -> tuple[float, float]:
    """The server's CPU seconds so far, and the seconds its threads waited for a core."""
    return bench.cpu_seconds(server.pid), bench.core_wait_seconds(server.pid)


def _row(
    server: Server, concurrency: int, outcome: lean.Outcome, client: str
) -> tuple[ScepRow, str | None]:
    figures = outcome.figures()
    row = ScepRow(
        server=server.name,
        concurrency=concurrency,
        enrollments=figures["done"],
        failed=len(outcome.failures),
        enrollments_per_s=figures["per_s"],
        p50_ms=figures["p50_ms"],
        p99_ms=figures["p99_ms"],
        server_cpu_ms_per_enrollment=figures["server_cpu_ms"],
        client_cpu_ms_per_enrollment=figures["client_cpu_ms"],
        server_core_busy=figures["server_core_busy"],
        server_core_wait=figures["server_core_wait"],
        client=client,
    )
    return row, outcome.failures[0] if outcome.failures else None


# --------------------------------------------------------------------------- the servers


@contextmanager
def ostiary(
    work: Path, total: int, *, wrapper: tuple[str, ...] = (), patience: float = 1
) -> Iterator[Server]:
    """``ostiary ca serve`` with a ``scep`` provisioner and ``total`` one-time challenges;
    under ``wrapper`` (valgrind: bench/scep_instructions.py) if given.
    """
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
    program = [str(Path(sys.executable).with_name("ostiary"))]
    if wrapper:
        program = [*wrapper, sys.executable, "-c", "from ostiary.cli.main import main; main()"]
    process = bench.start(
        [*program, "ca", "serve", *common,
         "--address", f"127.0.0.1:{port}", "--http-address", f"127.0.0.1:{http_port}"],
        work / "ostiary.log", http_port, patience=patience,
    )  # fmt: skip
    try:
        yield Server("ostiary", f"http://127.0.0.1:{http_port}/scep/devices", process.pid,
                     challenges)  # fmt: skip
    finally:
        bench.stop(process, patience=patience)


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


def measure_here(
    levels: list[int], counts: dict[int, int], rounds: int, client: str = "lean"
) -> dict[str, Any]:
    """Both servers up at once, taking turns at every level, ``rounds`` times, the order
    flipped every round (inside the private network namespace).
    """
    measured: list[tuple[int, ScepRow]] = []
    notes: dict[str, str] = {}
    os.sched_setaffinity(0, bench.CLIENT_CPUS)
    total = rounds * sum(counts[level] for level in levels) + 1
    with tempfile.TemporaryDirectory(prefix="scep-bench-") as temp, ExitStack() as stack:
        work = Path(temp)

        def level_of(
            server: Server, keys: list[rsa.RSAPrivateKey], first: int, concurrency: int, at: str
        ) -> tuple[ScepRow, str | None]:
            if client == "scepclient":
                folders = _folders(keys, work / f"{server.name}-{at}")
                return measure_level(server, folders, first, concurrency)
            return measure_level_lean(server, keys, first, concurrency)

        servers = [stack.enter_context(make(work, total)) for make in SERVERS.values()]
        warm = _keys(1)
        for server in servers:  # imports, caches, RA key
            _, failure = level_of(server, warm, 0, 1, "warm")
            if failure:
                raise RuntimeError(f"{server.name}: the warm-up enrollment failed: {failure}")
        first = 1
        for turn in range(rounds):
            for level in levels:
                keys = _keys(counts[level])
                for server in servers if turn % 2 == 0 else reversed(servers):
                    row, failure = level_of(server, keys, first, level, f"{turn}-{level}")
                    measured.append((turn, row))
                    if failure:
                        notes.setdefault(f"{server.name}@{level}", failure)
                first += counts[level]
    per_round = round_ratios(measured, levels, rounds)
    return {
        "client": client,
        "rows": [asdict(r) for r in median_rows(measured, levels)],
        "rounds": [{"round": turn, **asdict(r)} for turn, r in measured],
        "notes": notes,
        "round_ratios": per_round,
        "ratios": ratios(per_round),
    }


def median_rows(measured: list[tuple[int, ScepRow]], levels: list[int]) -> list[ScepRow]:
    """Per server and level, the round with the median rate."""
    rows = []
    for name in SERVERS:
        for level in levels:
            runs = sorted(
                (r for _, r in measured if (r.server, r.concurrency) == (name, level)),
                key=lambda r: r.enrollments_per_s,
            )
            rows.append(runs[len(runs) // 2])
    return rows


def measure(
    levels: list[int], counts: dict[int, int], rounds: int = ROUNDS, client: str = "lean"
) -> dict[str, Any]:
    """:func:`measure_here` in a private network namespace (``unshare -n``, needs root)."""
    tools = ("scepserver", "unshare", *(("scepclient",) if client == "scepclient" else ()))
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        return {"notes": {"skipped": f"not installed: {', '.join(missing)} (Debian scep)"}}
    if os.geteuid() != 0:
        return {"notes": {"skipped": "needs root for a private network namespace"}}
    with tempfile.TemporaryDirectory(prefix="scep-bench-") as temp:
        out = Path(temp) / "result.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--inner", "--json", str(out),
                "--levels", ",".join(map(str, levels)),
                "--counts", ",".join(str(counts[level]) for level in levels),
                "--rounds", str(rounds), "--client", client]  # fmt: skip
        script = "ip link set lo up && exec " + " ".join(f"'{a}'" for a in argv)
        subprocess.run(["unshare", "-n", "sh", "-c", script], check=True)
        result: dict[str, Any] = json.loads(out.read_text())
    return result


def round_ratios(
    measured: list[tuple[int, ScepRow]], levels: list[int], rounds: int
) -> dict[str, list[float | None]]:
    """Per level, each round's Ostiary rate over scepserver's (None: Ostiary failed one)."""
    found: dict[str, list[float | None]] = {}
    for level in levels:
        found[f"scep@{level}"] = []
        for turn in range(rounds):
            rows = {r.server: r for t, r in measured if t == turn and r.concurrency == level}
            ours, peer = rows.get("ostiary"), rows.get("scepserver")
            usable = ours is not None and peer is not None and peer.enrollments_per_s > 0
            if usable and ours is not None and peer is not None and not ours.failed:
                found[f"scep@{level}"].append(
                    round(ours.enrollments_per_s / peer.enrollments_per_s, 2)
                )
            else:
                found[f"scep@{level}"].append(None)
    return found


def ratios(per_round: dict[str, list[float | None]]) -> dict[str, float | None]:
    """``scep@N``: the median of the rounds' ratios. A ratio of two measurements seconds
    apart cancels the machine's slower drifts, which the median-rate rows, picked for each
    server on its own, may not pair alike. None if Ostiary failed an enrollment in any
    round (the target is then not shown).
    """
    found: dict[str, float | None] = {}
    for key, values in per_round.items():
        usable = [v for v in values if v is not None]
        found[key] = round(statistics.median(usable), 2) if len(usable) == len(values) else None
    return found


CLIENTS = ("lean", "scepclient")


def counts_for(levels: list[int], quick: bool) -> dict[int, int]:
    return {level: (max(8, level) if quick else max(40, level * 6)) for level in levels}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--counts", help="enrollments per level (default from --quick)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds per level (3)")
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default="lean",
        help="lean: bench/scep_lean.py, asyncio in one process (default); scepclient: "
        "micromdm's, a process per enrollment",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    counts = counts_for(levels, args.quick)
    if args.counts:
        counts = dict(zip(levels, (int(x) for x in args.counts.split(",")), strict=True))
    if args.inner:
        result = measure_here(levels, counts, args.rounds, args.client)
    else:
        result = measure(levels, counts, args.rounds, args.client)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
