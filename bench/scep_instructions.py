"""Instructions per SCEP enrollment of Ostiary's server, counted by valgrind (callgrind).

    python bench/scep_instructions.py [--enrollments N] [--concurrency C] [--source DIR]

The SCEP twin of bench/instructions.py, for A/B of our own changes on a machine whose CPU
time is noise: ``ostiary ca serve`` with a ``scep`` provisioner and one-time challenges (as
bench/scep_enroll.py sets it up) runs under callgrind, a few enrollments warm it up, the
counters are zeroed, ``N`` devices enroll with micromdm's ``scepclient`` (GetCACaps,
GetCACert, PKCSReq) at concurrency ``C`` (1 by default: one device at a time, the case
where every instruction of the answer is latency), and callgrind dumps every instruction
of every thread of the server in that time (the listener, the worker, SQLite, OpenSSL,
the revocation watch), divided by ``N``. ``--source DIR`` serves the ostiary package in
``DIR`` (e.g. ``git archive HEAD~1 src | tar -x -C /tmp/before``, then ``--source
/tmp/before/src``). Under valgrind an enrollment takes a few tenths of a second; the
server's start takes most of a run's minute.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import instructions
import scep_enroll

WARM_UP = 4


def count(total: int, concurrency: int) -> tuple[float, int]:
    """Instructions per enrollment, and the enrollments that failed."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = work / "callgrind.out"
        wrapper = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p")
        keys = scep_enroll._folders(scep_enroll._keys(WARM_UP + total), work / "keys")
        with scep_enroll.ostiary(work, WARM_UP + total, wrapper=wrapper, patience=20) as server:
            warm, timed = keys[:WARM_UP], keys[WARM_UP:]
            scep_enroll.measure_level(server, warm, 0, 1)
            instructions._control("--zero", server.pid)
            row, failure = scep_enroll.measure_level(server, timed, WARM_UP, concurrency)
            print(f"{row.enrollments_per_s} enrollments/s under valgrind", file=sys.stderr)
            instructions._control("--dump", server.pid)
            dumped = instructions._wait_for_dump(out, server.pid)
            counted = instructions._instructions(dumped)
    if failure:
        print(f"failed: {failure}", file=sys.stderr)
    return counted / total, row.failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enrollments", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--source", type=Path, help="serve the ostiary package in this folder")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "taskset", "scepclient"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: valgrind, scep)")
    instructions.use_source(args.source)
    os.sched_setaffinity(0, scep_enroll.bench.CLIENT_CPUS)
    per_enrollment, failed = count(args.enrollments, args.concurrency)
    print(
        f"{args.source or 'this checkout'}: {per_enrollment:,.0f} instructions per enrollment "
        f"({args.enrollments} enrollments at concurrency {args.concurrency}, {failed} failed)"
    )


if __name__ == "__main__":
    main()
