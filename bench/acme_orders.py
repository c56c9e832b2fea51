"""Whole ACME orders per second: Ostiary against Caddy's ``acme_server`` and pebble, one run.

    python bench/acme_orders.py [--quick] [--servers ostiary,caddy,pebble] [--levels 1,8,32]

Each server issues from a fresh CA of its own and is pinned to the same core (the last one);
the client runs on the others. One order is what a renewing device does: ``newOrder`` (one
``ip`` identifier, 127.0.0.1), the http-01 challenge answered by an in-process responder,
the authorization polled, ``finalize`` with a fresh P-256 CSR, the order polled, the chain
downloaded. Accounts are made beforehand, one per client thread (untimed), as a fleet of
devices has them. The client is certbot's ``acme`` library (its messages, JWS and nonce
handling) with its own polling every 10 ms for every server alike: the library's fixed
one-second sleeps would measure the library, not the server.

The peers:
- Caddy 2 (Debian) ``acme_server``, which embeds step-ca's ACME package, its CA in Caddy's
  file storage; it validates http-01 on port 80 (no setting), so the responder listens on
  127.0.0.1:80 and the bench needs root for Caddy (else Caddy is left out, and said so).
- pebble (Debian) with ``PEBBLE_VA_NOSLEEP=1``, no injected bad nonces, no authorization
  reuse. Pebble keeps everything in memory: it is a test server, not a durable one.
- Ostiary ``ca serve`` (SQLite, durable, audit log written) with an ``acme`` provisioner.

Per server and concurrency: orders/s, p50/p99 per order, failed orders, the server's CPU
per order (``/proc/<pid>/stat`` of the process tree) and the client's (when the client's CPU
per order times the rate nears its cores, the client is the limit, not the server). Ratios:
Ostiary's orders/s over the faster peer's, at each concurrency (target: at least 1.5 at 8
and 32).
"""

from __future__ import annotations

import argparse
import http.server
import ipaddress
import json
import os
import socketserver
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
from pathlib import Path
from typing import Any

import josepy
from acme import challenges, client, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).parent))
import run as bench  # bench/run.py

HTTP01_PORT = 80
POLL = 0.01
ORDER_DEADLINE = 30.0


@dataclass(frozen=True)
class Server:
    name: str
    directory: str
    root_pem: Path
    pid: int


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

    cpu_before, client_before = bench.cpu_seconds(server.pid), time.process_time()
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(work, range(concurrency)))
    elapsed = time.perf_counter() - began
    cpu = bench.cpu_seconds(server.pid) - cpu_before
    client_cpu = time.process_time() - client_before
    times.sort()
    done = len(times)
    row = AcmeRow(
        server=server.name,
        concurrency=concurrency,
        orders=done,
        failed=len(failures),
        orders_per_s=round(done / elapsed, 2),
        p50_ms=round(statistics.median(times) * 1000, 1) if times else 0.0,
        p99_ms=round(times[min(done - 1, int(done * 0.99))] * 1000, 1) if times else 0.0,
        server_cpu_ms_per_order=round(cpu / done * 1000, 2) if done else 0.0,
        client_cpu_ms_per_order=round(client_cpu / done * 1000, 2) if done else 0.0,
    )
    return row, failures[0] if failures else None


# --------------------------------------------------------------------------- the servers


def _tls_pair(work: Path, name: str) -> tuple[Path, Path, Path]:
    """A private root and a 127.0.0.1 server certificate from it, for pebble's own HTTPS."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} bench TLS root")])
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(root_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    paths = work / f"{name}-root.pem", work / f"{name}-cert.pem", work / f"{name}-key.pem"
    paths[0].write_bytes(root.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


@contextmanager
def pebble(work: Path) -> Iterator[Server]:
    root, cert, key = _tls_pair(work, "pebble")
    port = bench.free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{bench.free_port()}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": HTTP01_PORT,
            "tlsPort": bench.free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (work / "pebble.json").write_text(json.dumps(config))
    env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
    os.environ.update(env)  # bench.start passes the environment on
    try:
        process = bench.start(
            ["pebble", "-config", str(work / "pebble.json")], work / "pebble.log", port
        )
    finally:
        for variable in env:
            os.environ.pop(variable, None)
    try:
        yield Server("pebble", f"https://127.0.0.1:{port}/dir", root, process.pid)
    finally:
        bench.stop(process)


@contextmanager
def caddy(work: Path) -> Iterator[Server]:
    port = bench.free_port()
    storage = work / "caddy-data"
    caddyfile = work / "Caddyfile"
    caddyfile.write_text(
        "{\n\tadmin off\n\tskip_install_trust\n\tlocal_certs\n"
        f"\tstorage file_system {storage}\n\thttp_port {bench.free_port()}\n"
        f"\thttps_port {port}\n}}\n"
        f"https://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n\tacme_server\n}}\n"
    )
    env = dict(os.environ, HOME=str(work), XDG_DATA_HOME=str(work), XDG_CONFIG_HOME=str(work))
    log = (work / "caddy.log").open("wb")
    process = subprocess.Popen(
        ["taskset", "-c", bench.SERVER_CPUS, "caddy", "run", "--config", str(caddyfile)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        bench.wait_for_port(port)
        root = storage / "pki" / "authorities" / "local" / "root.crt"
        for _ in range(100):
            if root.exists():
                break
            time.sleep(0.05)
        directory = f"https://127.0.0.1:{port}/acme/local/directory"
        _wait_until_served(directory, root)
        yield Server("caddy", directory, root, process.pid)
    finally:
        bench.stop(process)


def _wait_until_served(url: str, root: Path, patience: float = 20.0) -> None:
    """Until ``url`` answers over TLS: Caddy writes its root before it has issued its own
    server certificate, and a handshake meanwhile fails (an internal-error alert).
    """
    import requests

    deadline = time.monotonic() + patience
    while True:
        try:
            requests.get(url, verify=str(root), timeout=5).raise_for_status()
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def ostiary(work: Path) -> Iterator[Server]:
    folder, password = work / "ostiary", work / "password"
    password.write_text(bench.PASSWORD + "\n")
    password.chmod(0o600)
    port, http_port = bench.free_port(), bench.free_port()
    common = ("--dir", str(folder), "--password-file", str(password))
    bench.cli("ca", "init", "--name", "Bench", *common, "--address", f"127.0.0.1:{port}",
              "--url", f"http://127.0.0.1:{http_port}", cwd=work)  # fmt: skip
    bench.cli("ca", "provisioner", "add", "acme", "--type", "acme", "--challenges", "http-01",
              "--profiles", "server", "--default-profile", "server", *common, cwd=work)  # fmt: skip
    process = bench.start(
        [str(Path(sys.executable).with_name("ostiary")), "ca", "serve", *common,
         "--address", f"127.0.0.1:{port}", "--http-address", f"127.0.0.1:{http_port}",
         "--acme-http-port", str(HTTP01_PORT)],
        work / "ostiary.log", port,
    )  # fmt: skip
    try:
        yield Server(
            "ostiary",
            f"https://127.0.0.1:{port}/acme/acme/directory",
            folder / "certs" / "root.crt",
            process.pid,
        )
    finally:
        bench.stop(process)


SERVERS = {"ostiary": ostiary, "caddy": caddy, "pebble": pebble}


def measure(
    servers: list[str], levels: list[int], orders_per_level: dict[int, int]
) -> dict[str, Any]:
    """Every server in turn at every level; rows, first failure per row, ratios."""
    rows: list[AcmeRow] = []
    notes: dict[str, str] = {}
    if "caddy" in servers and os.geteuid() != 0:
        servers = [s for s in servers if s != "caddy"]
        notes["caddy"] = "left out: its acme_server validates http-01 on port 80 (needs root)"
    os.sched_setaffinity(0, bench.CLIENT_CPUS)
    with responder(HTTP01_PORT) as tokens:
        for name in servers:
            with tempfile.TemporaryDirectory(prefix=f"acme-bench-{name}-") as work:
                with SERVERS[name](Path(work)) as server:
                    account(server)  # warm: the first request pays for imports and caches
                    for level in levels:
                        row, failure = measure_level(server, tokens, level, orders_per_level[level])
                        rows.append(row)
                        if failure:
                            notes[f"{name}@{level}"] = failure
    return {"rows": [asdict(r) for r in rows], "notes": notes, "ratios": ratios(rows, levels)}


def ratios(rows: list[AcmeRow], levels: list[int]) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    for level in levels:
        ours = next((r for r in rows if r.server == "ostiary" and r.concurrency == level), None)
        peers = [r for r in rows if r.server != "ostiary" and r.concurrency == level]
        best = max((r.orders_per_s for r in peers), default=0.0)
        usable = ours is not None and best > 0 and ours.failed == 0
        found[f"acme@{level}"] = round(ours.orders_per_s / best, 2) if usable and ours else None
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--servers", default="ostiary,caddy,pebble")
    parser.add_argument("--levels", default="1,8,32")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    orders = {level: (max(8, level) if args.quick else max(60, level * 8)) for level in levels}
    result = measure(args.servers.split(","), levels, orders)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
