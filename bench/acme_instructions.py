"""Instructions per whole ACME order of Ostiary's server, counted by valgrind (callgrind).

    python bench/acme_instructions.py [--orders N] [--concurrency C] [--source DIR]

The ACME twin of bench/instructions.py, for A/B of our own changes on a machine whose CPU
time is noise: ``ostiary ca serve`` with an ``acme`` provisioner runs under callgrind, an
account is made and a few orders warm it up, the counters are zeroed, ``N`` orders run as
bench/acme_orders.py runs them (newOrder, http-01 answered on 127.0.0.1:80, so root,
finalize, download) at concurrency ``C``, and callgrind dumps every instruction of every
thread of the server in that time, divided by ``N``. ``--source DIR`` serves the ostiary
package in ``DIR`` (e.g. ``git archive HEAD~1 src | tar -x -C /tmp/before``, then
``--source /tmp/before/src``). Under valgrind an order takes seconds: 30 orders take a few
minutes, most of them the server's start.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import acme_orders as orders
import instructions
from run import PASSWORD, cli, free_port, start, stop


def count(total: int, concurrency: int) -> tuple[float, int]:
    """Instructions per order, and the orders that failed."""
    with orders.responder(orders.HTTP01_PORT) as tokens, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder, password = work / "ostiary", work / "password"
        password.write_text(PASSWORD + "\n")
        password.chmod(0o600)
        port, http_port = free_port(), free_port()
        common = ("--dir", str(folder), "--password-file", str(password))
        cli("ca", "init", "--name", "Bench", *common, "--address", f"127.0.0.1:{port}",
            "--url", f"http://127.0.0.1:{http_port}", cwd=work)  # fmt: skip
        cli("ca", "provisioner", "add", "acme", "--type", "acme", "--challenges", "http-01",
            "--profiles", "server", "--default-profile", "server", *common, cwd=work)  # fmt: skip
        out = work / "callgrind.out"
        process = start(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", sys.executable,
             "-c", "from ostiary.cli.main import main; main()", "ca", "serve", *common,
             "--address", f"127.0.0.1:{port}", "--http-address", f"127.0.0.1:{http_port}",
             "--acme-http-port", str(orders.HTTP01_PORT)],
            work / "ostiary.log", port, patience=20,
        )  # fmt: skip
        try:
            directory = f"https://127.0.0.1:{port}/acme/acme/directory"
            server = orders.Server("ostiary", directory, folder / "certs" / "root.crt", process.pid)
            orders.account(server)
            orders.measure_level(server, tokens, concurrency, 8)
            instructions._control("--zero", process.pid)
            row, _ = orders.measure_level(server, tokens, concurrency, total)
            instructions._control("--dump", process.pid)
            dumped = instructions._wait_for_dump(out, process.pid)
            return instructions._instructions(dumped) / total, row.failed
        finally:
            stop(process, patience=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--source", type=Path, help="serve the ostiary package in this folder")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the http-01 responder listens on port 80: run as root")
    instructions.use_source(args.source)
    os.sched_setaffinity(0, orders.bench.CLIENT_CPUS)
    per_order, failed = count(args.orders, args.concurrency)
    print(
        f"{args.source or 'this checkout'}: {per_order:,.0f} instructions per order "
        f"({args.orders} orders at concurrency {args.concurrency}, {failed} failed)"
    )


if __name__ == "__main__":
    main()
