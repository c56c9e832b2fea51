"""Instructions per issuance of Ostiary's server, counted by valgrind (callgrind).

    python bench/instructions.py [--requests N] [--concurrency C] [--source DIR] [--json FILE]

On a shared virtual machine the CPU time of the same code varies by a factor of two or more
from one hour to the next (docs/BENCHMARKS.md), so timed A/B runs of a small change drown
in the noise. An instruction count does not: it is the same for the same code and inputs,
whatever else the machine does. This runs ``ostiary ca serve`` under
``valgrind --tool=callgrind`` (with the bench's CA, tokens and CSRs, pinned like bench/run.py),
warms it up, zeroes the counters, drives ``N`` issuances at concurrency ``C`` over HTTPS,
and has callgrind dump: every instruction the server process ran in that time, in every
thread (request handling, the group-commit thread, SQLite, OpenSSL), divided by ``N``.

``--source DIR`` serves the Ostiary package found in ``DIR`` (it goes first on
``PYTHONPATH``), to compare revisions in one run::

    git worktree add /tmp/before HEAD~1
    python bench/instructions.py --source /tmp/before/src
    python bench/instructions.py

Instructions are not time (a cache miss costs more than an add), so this is for A/B of our
own changes, not for the ratios against cfssl. Under valgrind the server runs some 50 times
slower: the default 200 issuances take a minute or two. Needs valgrind (Debian package
``valgrind``) and its ``callgrind_control``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import json_post, machine, make_csrs, measure, mint_tokens, ostiary_server

#: How much longer the server takes to start and stop under valgrind.
PATIENCE = 30
WARM_UP = 16


def count_instructions(requests: int, concurrency: int) -> dict[str, Any]:
    """Serve under callgrind, drive ``requests`` issuances, return the counts."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = work / "callgrind.out"
        wrapper = (
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}.%p",
            sys.executable,
        )
        with ostiary_server(work, wrapper=wrapper, patience=PATIENCE) as server:
            pid = server.process.pid
            total = WARM_UP + requests
            csrs = make_csrs(total)
            tokens = mint_tokens(server, total)
            posts = [
                json_post(f"{server.https}/sign", {"csr": csrs[i], "token": tokens[i]})
                for i in range(total)
            ]
            warm, timed = posts[:WARM_UP], posts[WARM_UP:]
            measure(
                "ostiary", "warm-up", pid, warm, concurrency, cafile=server.root_pem, expect=201
            )
            # taskset execs valgrind, which runs Python in its own process: one pid.
            _control("--zero", pid)
            row = measure(
                "ostiary",
                "issuance",
                pid,
                timed,
                concurrency,
                cafile=server.root_pem,
                expect=201,
            )
            _control("--dump", pid)
            dumped = _wait_for_dump(out, pid)
        instructions = _instructions(dumped)
    if row.errors:
        raise SystemExit(f"{row.errors} of {requests} issuances failed under valgrind")
    return {
        "requests": requests,
        "concurrency": concurrency,
        "instructions": instructions,
        "instructions_per_issuance": round(instructions / requests),
    }


def _control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


def _wait_for_dump(out: Path, pid: int) -> Path:
    """The first dump file of ``pid`` (callgrind writes it a moment after being asked)."""
    dumped = Path(f"{out}.{pid}.1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if dumped.exists() and "totals:" in dumped.read_text(errors="replace"):
            return dumped
        time.sleep(0.2)
    raise SystemExit(f"callgrind wrote no dump to {dumped}")


def _instructions(dumped: Path) -> int:
    for line in dumped.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {dumped}")


def use_source(source: Path | None) -> None:
    """Have the servers started from now on run the ostiary package in ``source``."""
    if source is None:
        return
    if not (source / "ostiary").is_dir():
        raise SystemExit(f"{source} holds no ostiary package")
    paths = [str(source.resolve()), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--source", type=Path, help="serve the ostiary package in this folder")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install valgrind)")
    use_source(args.source)
    result = count_instructions(args.requests, args.concurrency)
    result["source"] = str(args.source or "this checkout")
    result["machine"] = machine()
    print(
        f"{result['instructions_per_issuance']:,} instructions per issuance "
        f"({args.requests} at concurrency {args.concurrency}, {result['source']})"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
