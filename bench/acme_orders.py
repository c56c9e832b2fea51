"""Whole ACME orders per second: Ostiary against Caddy's ``acme_server`` and pebble, one run.

    python bench/acme_orders.py [--quick] [--servers ostiary,caddy,pebble] [--levels 1,8,32]
                                [--client lean|acme-lib]

``--servers`` may add the references ``floor`` and ``floor-durable`` (bench/acme_floor.py:
the least a Python ACME server spends per order, in memory and durable; lean client only).

Each server issues from a fresh CA of its own and is pinned to the same core (the last one;
bench/acme_servers.py starts them); the client runs on the others. One order is what a
renewing device does: ``newOrder`` (one ``ip`` identifier, 127.0.0.1), the authorization
fetched, the http-01 challenge POSTed and answered by an in-process responder on
127.0.0.1:80 (Caddy validates there only: the bench needs root, else Caddy is left out and
said so), the authorization polled until valid, ``finalize`` with a fresh P-256 CSR (made
before the clock starts), the order polled until valid, the chain downloaded. Accounts are
made beforehand, one per concurrent client (untimed), as a fleet of devices has them. Polls
come every 10 ms for every server alike.

The client (``--client``):
- ``lean`` (the default; bench/acme_lean.py): one asyncio loop, a keep-alive HTTP/1.1
  connection per worker (answers parsed by httptools), JWS ES256 made with
  pyca/cryptography, the responder in the same loop. It spends ~1-2 ms of CPU per order
  at 8 and 32, so on its one core the servers set the rate. It does not poll the
  authorization when the challenge POST already answered ``valid`` (Ostiary within
  ``--acme-challenge-wait``, step-ca), nor POST the challenge of an authorization the
  server reused (pebble, in up to ~5 % of orders).
- ``acme-lib``: certbot's ``acme`` library (its messages, JWS and nonce handling) in one
  thread per worker, the responder a thread server. It spends ~8-12 ms of CPU per order
  (more at 32 against pebble), so it caps every server near ~100 orders/s; the ACME
  figures in docs/BENCHMARKS.md before branch ``acmeclient`` were made with it, and
  bench/acme_instructions.py still drives it.

Per server and concurrency: orders/s, p50/p99 per order, failed orders, the server's CPU
per order (``/proc/<pid>/stat`` of the process tree), the client's, which client made the
row, HTTP requests per order (lean client), and whether the server's core was the limit:
``server_core_busy`` (its CPU seconds per second) and ``server_core_wait`` (seconds its
threads waited runnable for a core, per second; ``/proc/<pid>/task/*/schedstat``). Busy
near 1.0: CPU-bound. Busy well below 1.0 with little wait: it waited on something else (a
lock, the disk, the client). A large wait with busy below 1.0: other work on the machine
had its core, and the rate says little. Ratios: Ostiary's orders/s over the faster
peer's, at each concurrency (target: at least 1.5 at 8 and 32); with a reference measured,
its own ratio over the faster peer and Ostiary's over it (``ratios``).
"""

from __future__ import annotations

import argparse
import http.server
import ipaddress
import json
import os
import socketserver
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import josepy
from acme import challenges, client, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).parent))
import acme_lean as lean  # bench/acme_lean.py
import run as bench  # bench/run.py
from acme_servers import (
    HTTP01_PORT,
    REFERENCES,
    SERVERS,
    Server,
    caddy,
    ostiary,
    pebble,
    server_names,
)

# Also imported from here by bench/acme_instructions.py and helpers' scripts (the servers
# moved to bench/acme_servers.py).
__all__ = [
    "HTTP01_PORT",
    "SERVERS",
    "Server",
    "account",
    "caddy",
    "measure",
    "measure_level",
    "measure_level_lean",
    "ostiary",
    "pebble",
    "responder",
]

POLL = 0.01
ORDER_DEADLINE = 30.0


@dataclass
class AcmeRow:
    server: str
    concurrency: int
    orders: int
    failed: int
    orders_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_order: float
    client_cpu_ms_per_order: float
    # The server's CPU seconds per second of the level: near 1.0, its one core is the limit.
    server_core_busy: float = 0.0
    # Seconds its threads waited, runnable, for the core, per second of the level. Busy plus
    # wait near 1.0 or above: the core is the limit (shared with other work when wait is
    # large); well below 1.0: the server waited on something else (a lock, the disk, the
    # client).
    server_core_wait: float = 0.0
    client: str = "acme-lib"  # which bench client made the row: "lean" or "acme-lib"
    requests_per_order: float | None = None  # counted by the lean client (polls included)


# --------------------------------------------------------------------------- http-01 responder


class _Tokens:
    def __init__(self) -> None:
        self._answers: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, token: str, answer: str) -> None:
        with self._lock:
            self._answers[token] = answer.encode("ascii")

    def get(self, token: str) -> bytes | None:
        with self._lock:
            return self._answers.get(token)


class _Responder(http.server.BaseHTTPRequestHandler):
    tokens: _Tokens
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        prefix = "/.well-known/acme-challenge/"
        answer = self.tokens.get(self.path[len(prefix) :]) if self.path.startswith(prefix) else None
        self.send_response(200 if answer is not None else 404)
        body = answer or b""
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Listener(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    # socketserver's default backlog is 5: when eight validations connect at once while
    # the accept thread waits for the GIL (the client threads hold it), the kernel drops
    # the SYNs past it and the validator's connect is retried after the initial 1 s RTO.
    # That was the ~1.2 s p99 of the first orders at concurrency 8 (a server opening a
    # connection per validation saw it, one keeping its connections alive did not); a
    # real responder (nginx, Go, uvicorn) listens with a backlog of hundreds.
    request_queue_size = 1024
    daemon_threads = True


@contextmanager
def responder(port: int) -> Iterator[_Tokens]:
    tokens = _Tokens()
    handler = type("Handler", (_Responder,), {"tokens": tokens})
    server = _Listener(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tokens
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- the client


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))  # a CN would be read as a DNS identifier
        .add_extension(san, critical=True)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def account(server: Server) -> client.ClientV2:
    """A new account on ``server`` (ES256), with its own connection and nonces."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = josepy.JWKEC(key=key)
    network = client.ClientNetwork(
        jwk, alg=josepy.ES256, verify_ssl=str(server.root_pem), user_agent="ostiary-bench"
    )
    directory = client.ClientV2.get_directory(server.directory, network)
    acme = client.ClientV2(directory, network)
    registration = messages.NewRegistration.from_data(terms_of_service_agreed=True)
    acme.new_account(registration)
    return acme


def _poll(acme: client.ClientV2, url: str, done: set[str], deadline: float) -> dict[str, Any]:
    while True:
        body: dict[str, Any] = acme._post_as_get(url).json()
        if body.get("status") in done:
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} still {body.get('status')}")
        time.sleep(POLL)


def one_order(acme: client.ClientV2, tokens: _Tokens, csr_pem: bytes) -> None:
    """newOrder, http-01, finalize, download; raises unless a certificate came back."""
    deadline = time.monotonic() + ORDER_DEADLINE
    order = acme.new_order(csr_pem)
    for authorization in order.authorizations:
        http01 = next(
            c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01)
        )
        response, validation = http01.response_and_validation(acme.net.key)
        tokens.put(http01.chall.encode("token"), validation)
        acme.answer_challenge(http01, response)
        state = _poll(acme, authorization.uri, {"valid", "invalid"}, deadline)
        if state["status"] != "valid":
            raise RuntimeError(f"authorization {state['status']}: {state}")
    acme.begin_finalization(order)
    final = _poll(acme, order.uri, {"valid", "invalid"}, deadline)
    if final["status"] != "valid":
        raise RuntimeError(f"order {final['status']}: {final.get('error')}")
    chain = acme._post_as_get(final["certificate"]).text
    if "BEGIN CERTIFICATE" not in chain:
        raise RuntimeError("no certificate in the download")


def measure_level(
    server: Server, tokens: _Tokens, concurrency: int, orders: int
) -> tuple[AcmeRow, str | None]:
    clients = [account(server) for _ in range(concurrency)]
    csrs = [_csr() for _ in range(orders)]
    times: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        acme = clients[index % concurrency]
        for number in range(index, orders, concurrency):
            began = time.perf_counter()
            try:
                one_order(acme, tokens, csrs[number])
            except Exception as exc:  # counted and reported: a bench run goes on
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            with lock:
                times.append(time.perf_counter() - began)

    before, client_before = _meter(server), time.process_time()
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(work, range(concurrency)))
    outcome = lean.Outcome(
        times,
        failures,
        elapsed=time.perf_counter() - began,
        client_cpu=time.process_time() - client_before,
    )
    after = _meter(server)
    outcome.server_cpu, outcome.server_core_wait = after[0] - before[0], after[1] - before[1]
    return _row(server, concurrency, outcome, "acme-lib"), failures[0] if failures else None


def _meter(server: Server) -> tuple[float, float]:
    """The server's CPU seconds so far, and the seconds its threads waited runnable for a
    core.
    """
    return bench.cpu_seconds(server.pid), bench.core_wait_seconds(server.pid)


def measure_level_lean(server: Server, concurrency: int, orders: int) -> tuple[AcmeRow, str | None]:
    """As ``measure_level``, with the lean client (bench/acme_lean.py) and its own responder."""
    csrs = [
        x509.load_pem_x509_csr(_csr()).public_bytes(serialization.Encoding.DER)
        for _ in range(orders)
    ]
    outcome = lean.run_orders(
        server.directory,
        server.root_pem,
        concurrency,
        csrs,
        port=HTTP01_PORT,
        meter=lambda: _meter(server),
    )
    failure = outcome.failures[0] if outcome.failures else None
    return _row(server, concurrency, outcome, "lean"), failure


def _row(server: Server, concurrency: int, outcome: lean.Outcome, client_name: str) -> AcmeRow:
    figures = outcome.figures()
    done = figures["done"]
    return AcmeRow(
        server=server.name,
        concurrency=concurrency,
        orders=done,
        failed=len(outcome.failures),
        orders_per_s=figures["per_s"],
        p50_ms=figures["p50_ms"],
        p99_ms=figures["p99_ms"],
        server_cpu_ms_per_order=figures["server_cpu_ms"],
        client_cpu_ms_per_order=figures["client_cpu_ms"],
        server_core_busy=figures["server_core_busy"],
        server_core_wait=figures["server_core_wait"],
        client=client_name,
        requests_per_order=round(outcome.requests / done, 2) if done and outcome.requests else None,
    )


CLIENTS = ("lean", "acme-lib")


def measure(
    servers: list[str],
    levels: list[int],
    orders_per_level: dict[int, int],
    client_name: str = "lean",
) -> dict[str, Any]:
    """Every server in turn at every level; rows, first failure per row, ratios."""
    rows: list[AcmeRow] = []
    notes: dict[str, str] = {}
    if "caddy" in servers and os.geteuid() != 0:
        servers = [s for s in servers if s != "caddy"]
        notes["caddy"] = "left out: its acme_server validates http-01 on port 80 (needs root)"
    if client_name != "lean":
        for name in REFERENCES & set(servers):
            notes[name] = "left out: the floor answers the lean client's requests only"
        servers = [s for s in servers if s not in REFERENCES]
    os.sched_setaffinity(0, bench.CLIENT_CPUS)
    with ExitStack() as stack:
        # The library's client answers http-01 from a thread; the lean one from its own loop.
        tokens = stack.enter_context(responder(HTTP01_PORT)) if client_name == "acme-lib" else None
        for name in servers:
            with tempfile.TemporaryDirectory(prefix=f"acme-bench-{name}-") as work:
                with SERVERS[name](Path(work)) as server:
                    if name not in REFERENCES:  # the floor answers the lean client only
                        account(server)  # warm: the first request pays for imports and caches
                    for level in levels:
                        count = orders_per_level[level]
                        if tokens is None:
                            row, failure = measure_level_lean(server, level, count)
                        else:
                            row, failure = measure_level(server, tokens, level, count)
                        rows.append(row)
                        if failure:
                            notes[f"{name}@{level}"] = failure
    return {
        "client": client_name,
        "rows": [asdict(r) for r in rows],
        "notes": notes,
        "ratios": ratios(rows, levels),
    }


def ratios(rows: list[AcmeRow], levels: list[int]) -> dict[str, float | None]:
    """``acme@N``: Ostiary's orders/s over the faster peer's (the references are no peers);
    with a reference measured, ``<reference>@N`` is its orders/s over the same peer's (what
    Python's floor reaches) and ``acme_of_<reference>@N`` Ostiary's over the reference's.
    """
    found: dict[str, float | None] = {}
    for level in levels:
        at = {r.server: r for r in rows if r.concurrency == level and r.failed == 0}
        peers = [r for r in rows if r.concurrency == level and r.server not in REFERENCES]
        best = max((r.orders_per_s for r in peers if r.server != "ostiary"), default=0.0)
        ours = at.get("ostiary")
        found[f"acme@{level}"] = _ratio(ours, best)
        for name in sorted(REFERENCES & at.keys()):
            found[f"{name}@{level}"] = _ratio(at[name], best)
            found[f"acme_of_{name}@{level}"] = _ratio(ours, at[name].orders_per_s)
    return found


def _ratio(row: AcmeRow | None, over: float) -> float | None:
    return round(row.orders_per_s / over, 2) if row is not None and over > 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few orders per level")
    parser.add_argument(
        "--servers",
        type=server_names,
        default="ostiary,caddy,pebble",
        help=f"comma-separated, of {', '.join(SERVERS)}",
    )
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default="lean",
        help="lean: asyncio, httptools, JWS by hand (default); acme-lib: certbot's acme in threads",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    orders = {level: (max(8, level) if args.quick else max(60, level * 8)) for level in levels}
    result = measure(args.servers, levels, orders, args.client)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
