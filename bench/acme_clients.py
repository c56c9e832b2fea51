"""certbot's and lego's wall time per certificate against each ACME server of the bench.

    python bench/acme_clients.py [--servers ostiary,caddy,pebble] [--certificates N]

What a person or a renewal timer waits for: per server and client, ``N`` certificates for
``localhost``, one after the other, each by a fresh client process as a cron job starts it:

- certbot 2.1 (Debian): ``certonly --standalone`` answering http-01 on 127.0.0.1:80,
  ``--force-renewal`` after the first (a new order each time, the account kept);
- lego (Debian): ``run`` with its own ``--http`` server on 127.0.0.1:80.

The servers are bench/acme_servers.py's (each from a fresh CA, pinned to the server core;
the clients run on the other cores, as ``taskset`` gives them). ``first_s`` is the first
certificate, the account's registration included; ``median_s`` and ``max_s`` are over the
others. A client's own waits count, since they are what its user waits for: certbot sleeps
between its polls of an authorization, lego polls with its own back-off, and both are
Python or Go processes started afresh. Port 80 needs root; without it the part is left
out and said so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import run as bench  # bench/run.py
from acme_servers import HTTP01_PORT, REFERENCES, SERVERS, Server, server_names

NAME = "localhost"
CLIENTS = ("certbot", "lego")
TIMEOUT = 120


@dataclass
class ClientRow:
    server: str
    client: str
    certificates: int
    failed: int
    first_s: float | None
    median_s: float | None
    max_s: float | None


def _certbot(server: Server, home: Path, port: int) -> list[str]:
    return [
        "certbot", "--server", server.directory, "--config-dir", str(home / "etc"),
        "--work-dir", str(home / "work"), "--logs-dir", str(home / "logs"), "--non-interactive",
        "certonly", "--standalone", "--http-01-address", "127.0.0.1", "--http-01-port",
        str(port), "-d", NAME, "--agree-tos", "--register-unsafely-without-email",
        "--force-renewal",
    ]  # fmt: skip


def _lego(server: Server, home: Path, port: int) -> list[str]:
    return [
        "lego", "--server", server.directory, "--path", str(home), "--accept-tos", "--email",
        "ops@example.com", "--http", "--http.port", f"127.0.0.1:{port}", "-d", NAME, "run",
    ]  # fmt: skip


COMMANDS: dict[str, Callable[[Server, Path, int], list[str]]] = {"certbot": _certbot, "lego": _lego}


def time_client(
    server: Server, client: str, count: int, home: Path, *, port: int = HTTP01_PORT
) -> tuple[ClientRow, str | None]:
    """``count`` certificates by ``client``, one process each, answering http-01 on
    127.0.0.1:``port``; the row and the first failure.
    """
    environment = {
        **os.environ,
        "REQUESTS_CA_BUNDLE": str(server.root_pem),  # certbot
        "LEGO_CA_CERTIFICATES": str(server.root_pem),
    }
    cpus = ",".join(str(c) for c in sorted(bench.CLIENT_CPUS))
    seconds: list[float] = []
    failures: list[str] = []
    for _ in range(count):
        began = time.perf_counter()
        try:
            done = subprocess.run(
                ["taskset", "-c", cpus, *COMMANDS[client](server, home, port)],
                capture_output=True,
                text=True,
                env=environment,
                timeout=TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            failures.append(f"{client} took over {TIMEOUT} s")
            continue
        if done.returncode != 0:
            failures.append(f"{client} exit {done.returncode}: {done.stderr.strip()[-300:]}")
            continue
        seconds.append(time.perf_counter() - began)
    rest = seconds[1:]
    row = ClientRow(
        server=server.name,
        client=client,
        certificates=len(seconds),
        failed=len(failures),
        first_s=round(seconds[0], 2) if seconds else None,
        median_s=round(statistics.median(rest), 2) if rest else None,
        max_s=round(max(rest), 2) if rest else None,
    )
    return row, failures[0] if failures else None


def measure(servers: list[str], count: int) -> dict[str, Any]:
    """Every client against every server; rows and the first failure of each row."""
    notes: dict[str, str] = {}
    if os.geteuid() != 0:
        return {"rows": [], "notes": {"clients": "left out: http-01 on port 80 needs root"}}
    clients = [c for c in CLIENTS if shutil.which(c)]
    for missing in sorted(set(CLIENTS) - set(clients)):
        notes[missing] = f"left out: {missing} is not installed"
    rows: list[ClientRow] = []
    for name in servers:
        with tempfile.TemporaryDirectory(prefix=f"acme-clients-{name}-") as work:
            with SERVERS[name](Path(work)) as server:
                for client in clients:
                    row, failure = time_client(server, client, count, Path(work) / client)
                    rows.append(row)
                    if failure:
                        notes[f"{name}/{client}"] = failure
    return {"rows": [asdict(r) for r in rows], "notes": notes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--servers",
        type=server_names,
        default="ostiary,caddy,pebble",
        help="comma-separated, of ostiary, caddy, pebble",
    )
    parser.add_argument(
        "--certificates", type=int, default=5, help="per client and server (the first apart)"
    )
    args = parser.parse_args()
    if args.certificates < 1:
        parser.error("--certificates must be at least 1")
    if references := REFERENCES & set(args.servers):
        parser.error(f"{', '.join(sorted(references))}: the floor serves the lean client only")
    print(json.dumps(measure(args.servers, args.certificates), indent=2))


if __name__ == "__main__":
    main()
