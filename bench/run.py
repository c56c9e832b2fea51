"""Ostiary vs cfssl, same machine, same run: issuance, OCSP and CRL build.

    python bench/run.py [issuance] [ocsp] [crl] [gateway] [revocation] [acme] [scep] [--quick]
                        [--revoked 0,10000,100000] [--json FILE]

- Issuance: ``POST /sign`` (HTTPS, one-time JWK token per request, minted untimed
  beforehand) against ``cfssl serve`` ``POST /api/v1/cfssl/authsign`` (HMAC-authenticated,
  plain HTTP, certdb on SQLite), same pre-generated P-256 CSRs, concurrency 1, 8, 32;
  twice: each server pinned to the same one core (rows ``issuance``, ratios
  ``issuance_one_core@N``), then each server free to use every core, Ostiary as
  ``ca serve --workers <cores>`` (rows ``issuance-all-cores``, ratios ``issuance@N``: the
  machine as one would deploy on it; both servers up at once, taking turns three times, the
  median round kept).
- OCSP: ``POST /ocsp`` on Ostiary's plain-HTTP port against ``cfssl ocspserve`` (this
  cfssl, 1.2.0 from Debian, serves only pre-signed responses from a ``-responses`` file;
  the file is made with Python for the certificates cfssl issued). Driven by ``wrk`` (one
  thread, 32 connections, a Lua script for the POST bodies, no nonces: cfssl has none),
  as is nginx ``return 200`` for wrk's own ceiling and Ostiary's plain ``/health``.
- CRL: ``ostiary.core.crl.build_crl`` in-process on N revoked entries, CPU time and size;
  then a server whose database holds the largest N revoked certificates answers OCSP under
  wrk, idle and while its CRL is rebuilt over and over, once with the build in a thread of
  the server and once in its child process (``OSTIARY_CRL_PROCESS_FROM``).
- Gateway: ``ostiary gateway run`` vs nginx as mTLS reverse proxies (bench/gateway.py:
  wrk for proxied requests, ``openssl s_time`` for full and resumed handshakes); adds the
  ratios ``gateway_handshake`` and ``gateway_requests``, and
  ``gateway_handshake_vs_no_tickets`` (against nginx without session tickets). With
  ``--revoked N,M,...`` also full handshakes per second with that many revoked serials, the
  gateway following the revocation feed vs nginx scanning a CRL of that size
  (bench/revoked.py; ratios ``gateway_handshake_revoked@N``).
- Revocation: from ``ostiary ca revoke`` returning to the first refused handshake at our
  gateway, at nginx and at Mosquitto (each through ``ca crl-watch``), p50/p99 over 50
  revocations, and the old polling figures side by side (bench/revocation.py).
- ACME: whole orders (newOrder, http-01, finalize, download) per second at concurrency 1, 8
  and 32 against Caddy's ``acme_server`` (step-ca's ACME code) and pebble
  (bench/acme_orders.py; ratios ``acme@N``), then certbot's and lego's wall time per
  certificate against each (bench/acme_clients.py, ``acme.clients`` in the JSON).
- SCEP: enrollments per second at concurrency 1, 8 and 32 with the lean asyncio client
  (bench/scep_lean.py; micromdm's ``scepclient`` with bench/scep_enroll.py ``--client``),
  Ostiary (one-time challenges, SQLite, audit log) against micromdm's ``scepserver`` (its
  static challenge), both in a private network namespace, taking turns over 3 rounds
  (bench/scep_enroll.py; ratios ``scep@N``, the median of the rounds' ratios).

Both servers are pinned with ``taskset`` to the same core (the last one); the load generators
(a minimal asyncio HTTP/1.1 keep-alive client for issuance, wrk for OCSP) are pinned to the
other cores; except in the all-cores issuance part, where servers and client share them all.
Server CPU per operation comes from ``/proc/<pid>/stat`` (utime + stime, the whole process
tree), peak memory from ``VmHWM``. The client's ceiling is measured first against nginx
``return 200`` (pinned like the servers), then Ostiary's ``/health``: if those rates are not
far above the measured ones, the load generator (or the HTTP layer) is the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import hashlib
import hmac
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import insert, select

from ostiary.authority.folder import CAPaths, load_ca_public
from ostiary.authority.publisher import PROCESS_FROM, PROCESS_FROM_VARIABLE
from ostiary.core.ca import create_root_certificate, key_id_hex
from ostiary.core.crl import RevokedEntry, build_crl
from ostiary.core.keys import KeyType, generate_private_key
from ostiary.core.names import parse_subject
from ostiary.provisioners import CAIdentity
from ostiary.provisioners.manage import load_jwk_provisioner
from ostiary.store import CertificateRecord, Store

PASSWORD = "bench: correct horse battery staple"
OCSP_REQUEST = "application/ocsp-request"
PROVISIONER = "bench"
CORES = os.cpu_count() or 1
SERVER_CPUS = str(CORES - 1)
CLIENT_CPUS = {c for c in range(CORES - 1)} or {0}
#: The whole machine: the servers (and the client, unpinned) in the all-cores issuance part.
ALL_CPUS = ",".join(str(c) for c in range(CORES))
CFSSL_SCHEMA = """
CREATE TABLE certificates (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  ca_label                 blob,
  status                   blob NOT NULL,
  reason                   int,
  expiry                   timestamp,
  revoked_at               timestamp,
  pem                      blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier)
);
CREATE TABLE ocsp_responses (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  body                     blob NOT NULL,
  expiry                   timestamp,
  PRIMARY KEY(serial_number, authority_key_identifier)
);
"""


@dataclass
class Row:
    server: str
    operation: str
    concurrency: int
    requests: int
    errors: int
    rate: float
    p50_ms: float
    p99_ms: float
    server_cpu_us_per_op: float
    server_peak_rss_mb: float


# --------------------------------------------------------------------------- processes


def free_port() -> int:  # as in bench/gateway.py (not imported: it pulls in ostiary.gateway)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing on port {port}")


def tree_pids(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0
    for one in tree_pids(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def core_wait_seconds(pid: int) -> float:
    """Seconds the threads of ``pid`` and its children waited runnable for a core so far
    (``/proc/<pid>/task/<tid>/schedstat``, the scheduler's run delay).
    """
    waited = 0
    for one in tree_pids(pid):
        for task in Path(f"/proc/{one}/task").glob("*/schedstat"):
            try:
                waited += int(task.read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue  # a thread that ended meanwhile
    return waited / 1e9


def peak_rss_mb(pid: int) -> float:
    total = 0
    for one in tree_pids(pid):
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def start(
    argv: list[str], log: Path, port: int, *, patience: float = 1, cpus: str = SERVER_CPUS
) -> subprocess.Popen[bytes]:
    """``argv`` pinned to ``cpus`` (the server core), once it listens on ``port``
    (``patience`` multiplies the waits, for a server under valgrind)."""
    handle = log.open("wb")
    process = subprocess.Popen(
        ["taskset", "-c", cpus, *argv], stdout=handle, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, 30 * patience)
    except RuntimeError:
        process.kill()
        raise RuntimeError(f"{argv[0]} did not start: {log.read_text()[-2000:]}") from None
    return process


def stop(process: subprocess.Popen[bytes], *, patience: float = 1) -> None:
    process.terminate()
    try:
        process.wait(10 * patience)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --------------------------------------------------------------------------- load generator


@dataclass(frozen=True)
class Request:
    """One HTTP/1.1 request, encoded once before the timed part."""

    host: str
    port: int
    tls: bool
    raw: bytes


def request(method: str, url: str, body: bytes = b"", content_type: str = "") -> Request:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"{method} {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if body or method == "POST":
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return Request(host, port, parts.scheme == "https", head.encode() + b"\r\n" + body)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status of one response (body read and dropped), and whether the server closes."""
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head.split(b" ", 2)[1])
    lines = head.split(b"\r\n")
    length = next((int(h.split(b":", 1)[1]) for h in lines if h.startswith(b"content-length:")), 0)
    if b"transfer-encoding: chunked" in head:
        while size := int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    else:
        await reader.readexactly(length)
    return status, b"connection: close" in head


async def _drive(
    requests: list[Request], concurrency: int, expect: int, context: ssl.SSLContext | None
) -> tuple[list[float], int, float]:
    """``concurrency`` workers, each on its own keep-alive connection, share the requests.

    A minimal HTTP/1.1 client (asyncio streams): httpx's pool costs more client CPU than
    nginx's ``return 200`` costs server CPU, which made the client the limit.
    """
    queue = iter(requests)
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        for one in queue:
            started = time.perf_counter()
            ok, closing = False, True
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(
                        one.host, one.port, ssl=context if one.tls else None
                    )
                writer.write(one.raw)
                status, closing = await read_response(reader)
                ok = status == expect
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                pass
            latencies.append(time.perf_counter() - started)
            errors += not ok
            if closing and writer is not None:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - began


def measure(
    server: str,
    operation: str,
    pid: int,
    requests: list[Request],
    concurrency: int,
    *,
    cafile: Path | None = None,
    expect: int = 200,
) -> Row:
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    warm = min(concurrency, 4)

    async def go() -> tuple[list[float], int, float, float]:
        await _drive(requests[:warm], concurrency, expect, context)
        cpu_before = cpu_seconds(pid)
        latencies, errors, elapsed = await _drive(requests[warm:], concurrency, expect, context)
        return latencies, errors, elapsed, cpu_seconds(pid) - cpu_before

    latencies, errors, elapsed, cpu = asyncio.run(go())
    latencies.sort()
    count = len(latencies)
    return Row(
        server=server,
        operation=operation,
        concurrency=concurrency,
        requests=count,
        errors=errors,
        rate=round((count - errors) / elapsed, 1),
        p50_ms=round(latencies[count // 2] * 1000, 2),
        p99_ms=round(latencies[min(count - 1, int(count * 0.99))] * 1000, 2),
        server_cpu_us_per_op=round(cpu / count * 1e6, 1),
        server_peak_rss_mb=round(peak_rss_mb(pid), 1),
    )


def lua_string(data: bytes) -> str:
    """``data`` as a Lua string literal (every byte escaped: binary-safe)."""
    return '"' + "".join(f"\\{b:03d}" for b in data) + '"'


def wrk_script(work: Path, method: str, path: str, bodies: list[bytes], content_type: str) -> Path:
    """A wrk Lua script. One body: a static request (wrk formats it once and calls no Lua
    per request). Several: formatted once in ``init``, handed out in turn by a ``request()``
    function (a Lua call per request, which costs wrk more than some servers' whole answer).
    """
    script = work / f"wrk-{len(list(work.glob('wrk-*.lua')))}.lua"
    if len(bodies) == 1:
        script.write_text(
            f'wrk.method = "{method}"\nwrk.path = "{path}"\n'
            f'wrk.headers["Content-Type"] = "{content_type}"\nwrk.body = {lua_string(bodies[0])}\n'
        )
        return script
    script.write_text(
        "local bodies = {\n"
        + ",\n".join(lua_string(b) for b in bodies)
        + "\n}\nlocal requests = {}\nlocal i = 0\n"
        "init = function(args)\n"
        "  for k, body in ipairs(bodies) do\n"
        f'    requests[k] = wrk.format("{method}", "{path}", '
        f'{{["Content-Type"] = "{content_type}"}}, body)\n'
        "  end\nend\n"
        "request = function()\n  i = i % #requests + 1\n  return requests[i]\nend\n"
    )
    return script


def _wrk_ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(f"wrk latency {text!r}")


def run_wrk(
    url: str, *, seconds: float, connections: int, script: Path | None = None
) -> dict[str, float]:
    """One wrk run (one thread, pinned to the client cores): rate, p50, p99, errors, count."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    cpus = ",".join(str(c) for c in sorted(CLIENT_CPUS))
    result = subprocess.run(
        ["taskset", "-c", cpus, *argv, url], capture_output=True, text=True, check=True
    )
    out: dict[str, float] = {"errors": 0.0}
    for line in result.stdout.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            out["rate"] = float(parts[1])
        elif "requests in" in line:
            out["requests"] = float(parts[0])
        elif line.strip().startswith("50%"):
            out["p50_ms"] = _wrk_ms(parts[1])
        elif line.strip().startswith("99%"):
            out["p99_ms"] = _wrk_ms(parts[1])
        elif line.startswith("Non-2xx or 3xx responses:"):
            out["errors"] += float(parts[-1])
        elif line.strip().startswith("Socket errors:"):
            out["errors"] += sum(float(p.rstrip(",")) for p in parts[3::2])
    if "rate" not in out or "requests" not in out:
        raise RuntimeError(f"wrk said: {result.stdout[-2000:]} {result.stderr[-2000:]}")
    return out


def measure_wrk(
    server: str,
    operation: str,
    pid: int,
    url: str,
    *,
    seconds: float,
    connections: int = 32,
    script: Path | None = None,
) -> Row:
    """Like :func:`measure`, with wrk as the load generator (a warm-up second first)."""
    run_wrk(url, seconds=1, connections=connections, script=script)
    cpu_before = cpu_seconds(pid)
    got = run_wrk(url, seconds=seconds, connections=connections, script=script)
    cpu = cpu_seconds(pid) - cpu_before
    count = int(got["requests"])
    return Row(
        server=server,
        operation=operation,
        concurrency=connections,
        requests=count,
        errors=int(got["errors"]),
        rate=round(got["rate"], 1),
        p50_ms=round(got.get("p50_ms", 0.0), 2),
        p99_ms=round(got.get("p99_ms", 0.0), 2),
        server_cpu_us_per_op=round(cpu / max(count, 1) * 1e6, 1),
        server_peak_rss_mb=round(peak_rss_mb(pid), 1),
    )


# --------------------------------------------------------------------------- material


def make_csrs(count: int) -> list[str]:
    out = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"dev-{i}")]))
            .sign(key, hashes.SHA256())
        )
        out.append(csr.public_bytes(serialization.Encoding.PEM).decode())
    return out


def ocsp_request(certificate: x509.Certificate, issuer: x509.Certificate) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


def cli(*args: str, cwd: Path) -> str:
    ostiary = Path(sys.executable).with_name("ostiary")
    result = subprocess.run(
        [str(ostiary), *args], capture_output=True, text=True, cwd=cwd, check=False
    )
    if result.returncode:
        raise RuntimeError(f"ostiary {' '.join(args)}: {result.stderr.strip()[-1000:]}")
    return result.stdout


@dataclass
class Ostiary:
    folder: Path
    password_file: Path
    process: subprocess.Popen[bytes]
    https: str
    http: str
    root_pem: Path
    store: Store
    identity: CAIdentity
    issuer: x509.Certificate


@contextmanager
def ostiary_server(
    work: Path,
    prepare: Callable[[Store, x509.Certificate], None] | None = None,
    *,
    wrapper: Sequence[str] = (),
    patience: float = 1,
    workers: int = 1,
    cpus: str = SERVER_CPUS,
    serve_options: Sequence[str] = (),
) -> Iterator[Ostiary]:
    """An initialized CA, served; ``prepare`` gets its store and intermediate before start.

    ``wrapper`` goes before the server's command line (bench/instructions.py: valgrind and
    the Python interpreter), ``patience`` multiplies the waits for it to start and stop;
    ``workers`` is ``ca serve --workers``, ``cpus`` where the server may run,
    ``serve_options`` more options of ``ca serve`` (``--metrics-address``).
    """
    folder = work / "ostiary"
    password_file = work / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    port, http_port = free_port(), free_port()
    common = ("--dir", str(folder), "--password-file", str(password_file))
    cli("ca", "init", "--name", "Bench", "--key-type", "p256", *common,
        "--address", f"127.0.0.1:{port}", "--url", f"http://127.0.0.1:{http_port}",
        cwd=work)  # fmt: skip
    cli("ca", "provisioner", "add", PROVISIONER, "--type", "jwk", *common, cwd=work)
    paths = CAPaths(folder)
    config, root, intermediate = load_ca_public(paths)
    if prepare is not None:
        prepared = Store.from_url(paths.database_url(config))
        try:
            prepare(prepared, intermediate)
        finally:
            prepared.dispose()
    process = start(
        [*wrapper, str(Path(sys.executable).with_name("ostiary")), "ca", "serve", *common,
         "--address", f"127.0.0.1:{port}", "--http-address", f"127.0.0.1:{http_port}",
         "--workers", str(workers), *serve_options],
        work / "ostiary.log", port, patience=patience, cpus=cpus,
    )  # fmt: skip
    wait_for_port(http_port, 30 * patience)
    store = Store.from_url(paths.database_url(config))
    try:
        yield Ostiary(
            folder,
            password_file,
            process,
            f"https://127.0.0.1:{port}",
            f"http://127.0.0.1:{http_port}",
            paths.root_certificate,
            store,
            CAIdentity.from_certificates(root, intermediate, claims=config.claims),
            intermediate,
        )
    finally:
        store.dispose()
        stop(process, patience=patience)


def mint_tokens(server: Ostiary, count: int) -> list[str]:
    """One-time sign tokens for dev-0 .. dev-(count-1), minted in-process (untimed)."""
    with server.store.transaction(read_only=True) as session:
        provisioner = load_jwk_provisioner(session, PROVISIONER)
    key = provisioner.load_private_key(PASSWORD.encode())
    now = datetime.now(UTC)
    return [
        provisioner.mint_sign_token(
            key, f"dev-{i}", ca=server.identity, now=now, ttl=timedelta(hours=1)
        )
        for i in range(count)
    ]


@dataclass
class Cfssl:
    process: subprocess.Popen[bytes]
    url: str
    auth_key: bytes
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    work: Path


@contextmanager
def cfssl_server(work: Path, cpus: str = SERVER_CPUS) -> Iterator[Cfssl]:
    folder = work / "cfssl"
    folder.mkdir()
    ca_key = generate_private_key(KeyType.P256)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = datetime.now(UTC) - timedelta(hours=1)
    ca_cert = create_root_certificate(parse_subject("CN=Bench cfssl CA"), ca_key, now=now)
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (folder / "ca-key.pem").write_bytes(
        ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (folder / "ca-key.pem").chmod(0o600)
    auth_key = os.urandom(16)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "signing": {
                    "default": {
                        "auth_key": "bench",
                        "expiry": "24h",
                        "usages": ["digital signature", "client auth"],
                    }
                },
                "auth_keys": {"bench": {"type": "standard", "key": auth_key.hex()}},
            }
        )
    )
    (folder / "config.json").chmod(0o600)
    database = folder / "certdb.sqlite"
    with sqlite3.connect(database) as connection:
        connection.executescript(CFSSL_SCHEMA)
    (folder / "db.json").write_text(json.dumps({"driver": "sqlite3", "data_source": str(database)}))
    port = free_port()
    process = start(
        ["cfssl", "serve", "-address", "127.0.0.1", "-port", str(port),
         "-ca", str(folder / "ca.pem"), "-ca-key", str(folder / "ca-key.pem"),
         "-config", str(folder / "config.json"), "-db-config", str(folder / "db.json")],
        work / "cfssl.log", port, cpus=cpus,
    )  # fmt: skip
    try:
        yield Cfssl(process, f"http://127.0.0.1:{port}", auth_key, ca_cert, ca_key, folder)
    finally:
        stop(process)


def authsign_body(auth_key: bytes, csr: str) -> bytes:
    request = json.dumps({"certificate_request": csr}).encode()
    token = hmac.new(auth_key, request, hashlib.sha256).digest()
    return json.dumps(
        {"token": base64.b64encode(token).decode(), "request": base64.b64encode(request).decode()}
    ).encode()


def cfssl_ocsp_responses(peer: Cfssl, certificates: list[x509.Certificate]) -> Path:
    """The ``-responses`` file for ``cfssl ocspserve``: base64 DER responses, one a line."""
    now = datetime.now(UTC)
    lines = []
    for certificate in certificates:
        response = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=certificate,
                issuer=peer.ca_cert,
                algorithm=hashes.SHA1(),
                cert_status=ocsp.OCSPCertStatus.GOOD,
                this_update=now - timedelta(minutes=5),
                next_update=now + timedelta(days=1),
                revocation_time=None,
                revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, peer.ca_cert)
            .sign(peer.ca_key, hashes.SHA256())
        )
        lines.append(base64.b64encode(response.public_bytes(serialization.Encoding.DER)))
    path = peer.work / "responses"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


# --------------------------------------------------------------------------- the runs


def json_post(url: str, value: object) -> Request:
    return request("POST", url, json.dumps(value).encode(), "application/json")


@contextmanager
def nginx_trivial(work: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """nginx ``return 200`` on plain HTTP, pinned like the servers: the load generator's ceiling."""
    folder = work / "nginx"
    folder.mkdir()
    port = free_port()
    temps = " ".join(
        f"{k}_temp_path {folder}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (folder / "nginx.conf").write_text(
        f"daemon off; worker_processes 1; pid {folder}/nginx.pid; error_log {folder}/error.log;"
        f"events {{ worker_connections 1024; }}"
        f"http {{ access_log off; keepalive_requests 1000000; {temps}"
        f" server {{ listen 127.0.0.1:{port}; location / {{ return 200 'ok'; }} }} }}"
    )
    process = start(
        ["nginx", "-p", f"{folder}/", "-c", str(folder / "nginx.conf"),
         "-e", str(folder / "error.log")],
        work / "nginx.log", port,
    )  # fmt: skip
    try:
        yield process, f"http://127.0.0.1:{port}/"
    finally:
        stop(process)


def issuance(
    work: Path, levels: dict[int, int], ocsp_count: int, with_ocsp: bool, ocsp_seconds: float
) -> list[Row]:
    rows: list[Row] = []
    if shutil.which("nginx"):
        with nginx_trivial(work) as (process, url):
            trivial = [request("GET", url)] * 3000
            for concurrency in (1, 32):
                rows.append(measure("nginx", "trivial", process.pid, trivial, concurrency))
            if with_ocsp:  # wrk's own ceiling, for the OCSP rows
                rows.append(
                    measure_wrk("nginx", "trivial-wrk", process.pid, url, seconds=ocsp_seconds)
                )
    total = sum(levels.values())
    csrs = make_csrs(total)
    ostiary_certs: list[x509.Certificate] = []
    cfssl_certs: list[x509.Certificate] = []
    with ostiary_server(work) as server:
        pid = server.process.pid
        root = server.root_pem
        health = [request("GET", f"{server.https}/health")] * 2000
        for concurrency in (1, 32):
            rows.append(measure("ostiary", "health", pid, health, concurrency, cafile=root))
        rows += ostiary_issuance(server, "issuance", levels, csrs)
        with server.store.transaction(read_only=True) as session:
            ders = session.scalars(select(CertificateRecord.der).limit(ocsp_count)).all()
        ostiary_certs = [x509.load_der_x509_certificate(d) for d in ders]
        if with_ocsp and ostiary_certs:
            rows += ostiary_ocsp(work, server, ostiary_certs, ocsp_seconds)
    with cfssl_server(work) as peer:
        rows += cfssl_issuance(peer, "issuance", levels, csrs)
        with sqlite3.connect(peer.work / "certdb.sqlite") as connection:
            stored = connection.execute("SELECT pem FROM certificates LIMIT ?", (ocsp_count,))
            cfssl_certs = [
                x509.load_pem_x509_certificate(p[0] if isinstance(p[0], bytes) else p[0].encode())
                for p in stored
            ]
        responses = cfssl_ocsp_responses(peer, cfssl_certs) if with_ocsp and cfssl_certs else None
        ca_cert = peer.ca_cert
    if responses is not None:
        port = free_port()
        process = start(
            ["cfssl", "ocspserve", "-address", "127.0.0.1", "-port", str(port),
             "-responses", str(responses)],
            work / "ocspserve.log", port,
        )  # fmt: skip
        try:
            bodies = [ocsp_request(c, ca_cert) for c in cfssl_certs]
            url = f"http://127.0.0.1:{port}/"
            for operation, script in ocsp_scripts(work, "/", bodies):
                rows.append(
                    measure_wrk(
                        "cfssl", operation, process.pid, url, seconds=ocsp_seconds, script=script
                    )
                )
        finally:
            stop(process)
    return rows


def ostiary_issuance(
    server: Ostiary, operation: str, levels: dict[int, int], csrs: list[str]
) -> list[Row]:
    """``POST /sign`` at each concurrency of ``levels`` (level -> count), a fresh token each."""
    rows = []
    tokens = iter(mint_tokens(server, sum(levels.values())))
    csr = iter(csrs)
    for concurrency, count in levels.items():
        requests = [
            json_post(f"{server.https}/sign", {"csr": next(csr), "token": next(tokens)})
            for _ in range(count)
        ]
        rows.append(
            measure("ostiary", operation, server.process.pid, requests, concurrency,
                    cafile=server.root_pem, expect=201)
        )  # fmt: skip
    return rows


def cfssl_issuance(
    peer: Cfssl, operation: str, levels: dict[int, int], csrs: list[str]
) -> list[Row]:
    """``authsign`` at each concurrency of ``levels``, with the same CSRs as Ostiary's."""
    url = f"{peer.url}/api/v1/cfssl/authsign"
    rows = []
    csr = iter(csrs)
    for concurrency, count in levels.items():
        requests = [
            request("POST", url, authsign_body(peer.auth_key, next(csr)), "application/json")
            for _ in range(count)
        ]
        rows.append(measure("cfssl", operation, peer.process.pid, requests, concurrency))
    return rows


def issuance_all_cores(work: Path, levels: dict[int, int], rounds: int = 3) -> list[Row]:
    """Issuance as deployed on this machine: each server may use every core, Ostiary as
    ``ca serve --workers <cores>``, cfssl's Go runtime on all of them; the client runs
    unpinned beside them (its CPU is the same on both sides). Rows ``issuance-all-cores``.

    Both servers run at once and take turns, all levels each, ``rounds`` times (the order
    flipped every round); the row kept per server and level is the round with the median
    rate: single runs of the same code moved by 15 % and more on the shared VM.
    """
    work = work / "all-cores"
    work.mkdir()
    # Fresh keys each round, the same names (dev-0 ...) that each round's tokens are for.
    csrs = [make_csrs(sum(levels.values())) for _ in range(rounds)]
    measured: list[Row] = []
    os.sched_setaffinity(0, range(CORES))
    try:
        with (
            ostiary_server(work, workers=CORES, cpus=ALL_CPUS) as server,
            cfssl_server(work, cpus=ALL_CPUS) as peer,
        ):
            for turn in range(rounds):
                sides = [
                    functools.partial(ostiary_issuance, server, "issuance-all-cores"),
                    functools.partial(cfssl_issuance, peer, "issuance-all-cores"),
                ]
                for side in sides if turn % 2 == 0 else reversed(sides):
                    measured += side(levels, csrs[turn])
    finally:
        os.sched_setaffinity(0, CLIENT_CPUS)
    rows = []
    for name in ("ostiary", "cfssl"):
        for concurrency in levels:
            runs = sorted(
                (r for r in measured if (r.server, r.concurrency) == (name, concurrency)),
                key=lambda r: r.rate,
            )
            rows.append(runs[len(runs) // 2])
    return rows


def ostiary_ocsp(
    work: Path, server: Ostiary, certificates: list[x509.Certificate], seconds: float
) -> list[Row]:
    """``POST /ocsp`` (no nonce: cfssl has none) and ``GET /health`` on the plain listener."""
    pid = server.process.pid
    url = f"{server.http}/ocsp"
    bodies = [ocsp_request(c, server.issuer) for c in certificates]
    rows = [
        measure_wrk("ostiary", operation, pid, url, seconds=seconds, script=script)
        for operation, script in ocsp_scripts(work, "/ocsp", bodies)
    ]
    rows.append(
        measure_wrk("ostiary", "health-http", pid, f"{server.http}/health", seconds=seconds)
    )
    return rows


def ocsp_scripts(work: Path, path: str, bodies: list[bytes]) -> list[tuple[str, Path]]:
    """The OCSP loads, the same for both servers, no nonce (cfssl ocspserve has none): one
    certificate (a static wrk request: the lightest client); all of them in turn (a Lua
    call per request, which makes wrk the limit sooner). Not pipelined: Go's server answers
    a pipeline one request at a time, which would measure that, not the responders."""
    return [
        ("ocsp", wrk_script(work, "POST", path, bodies[:1], OCSP_REQUEST)),
        ("ocsp-many", wrk_script(work, "POST", path, bodies, OCSP_REQUEST)),
    ]


def crl_builds(sizes: list[int]) -> list[dict[str, Any]]:
    key = generate_private_key(KeyType.P256)
    now = datetime.now(UTC)
    issuer = create_root_certificate(parse_subject("CN=Bench CRL"), key, now=now)
    out = []
    for size in sizes:
        entries = [
            RevokedEntry(serial_number=(1 << 120) + i, revoked_at=now, reason=None)
            for i in range(size)
        ]
        cpu, wall = time.process_time(), time.perf_counter()
        der = build_crl(
            issuer,
            key,
            entries,
            crl_number=1,
            this_update=now,
            next_update=now + timedelta(days=1),
        )
        out.append(
            {
                "entries": size,
                "cpu_s": round(time.process_time() - cpu, 3),
                "wall_s": round(time.perf_counter() - wall, 3),
                "size_bytes": len(der),
            }
        )
    return out


def fill_revoked(count: int, offset: int = 0) -> Callable[[Store, x509.Certificate], None]:
    """Record ``count`` revoked certificates of the intermediate (rows only: no DER needed
    by the CRL, which lists serial, time and reason)."""

    def prepare(store: Store, intermediate: x509.Certificate) -> None:
        key_id = key_id_hex(intermediate)
        now = datetime.now(UTC).replace(microsecond=0)
        batch = 50_000
        for start_at in range(offset, offset + count, batch):
            rows = [
                {
                    "issuer_key_id": key_id,
                    "serial": f"{(1 << 100) + i:x}",
                    "subject": f"CN=revoked-{i}",
                    "sans": [],
                    "not_before": now - timedelta(hours=1),
                    "not_after": now + timedelta(days=1),
                    "profile": "client",
                    "provisioner": None,
                    "status": "revoked",
                    "revocation_reason": "keyCompromise",
                    "revoked_at": now,
                    "der": b"\x30\x00",
                    "created_at": now,
                    "fingerprint_sha256": f"{(1 << 100) + i:064x}",
                }
                for i in range(start_at, min(start_at + batch, offset + count))
            ]
            with store.transaction() as session:
                session.execute(insert(CertificateRecord), rows)

    return prepare


def ocsp_request_by_serial(issuer: x509.Certificate, serial: int) -> bytes:
    """An OCSP request for a serial of ``issuer`` with no certificate at hand (SHA-1 CertID)."""
    name_hash = hashlib.sha1(issuer.subject.public_bytes()).digest()
    key = issuer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key_bits = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    key_hash = hashlib.sha1(key_bits).digest()
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, key_hash, serial, hashes.SHA1()
    )
    return builder.build().public_bytes(serialization.Encoding.DER)


def wait_for_health(url: str) -> None:
    """Until ``GET url`` answers 200 (the server builds its first CRL before it answers)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def crl_stall(work: Path, entries: int, seconds: float, where: str) -> list[Row]:
    """OCSP p50/p99 on a server whose CRL has ``entries`` entries: idle, then while the
    CRL is rebuilt again and again (one revocation added, ``GET /crl``, repeat).

    ``where`` the server builds a big CRL: ``process`` (its default) or ``thread`` (the
    threshold moved out of reach through the environment), to see what the GIL costs.
    """
    folder = work / f"crl-stall-{where}"
    folder.mkdir()
    os.environ[PROCESS_FROM_VARIABLE] = str(PROCESS_FROM if where == "process" else 1 << 62)
    with ostiary_server(folder, fill_revoked(entries)) as server:
        wait_for_health(f"{server.http}/health")
        pid = server.process.pid
        body = ocsp_request_by_serial(server.issuer, 1 << 100)
        script = wrk_script(folder, "POST", "/ocsp", [body], OCSP_REQUEST)
        url = f"{server.http}/ocsp"
        rows = [
            measure_wrk("ostiary", f"ocsp-idle-{where}", pid, url, seconds=seconds, script=script)
        ]
        rebuilds: list[float] = []
        done = threading.Event()

        def rebuild() -> None:
            added = 0
            while not done.is_set():
                fill_revoked(1, offset=entries + added)(server.store, server.issuer)
                added += 1
                started = time.perf_counter()
                with urllib.request.urlopen(f"{server.http}/crl", timeout=600) as answer:
                    answer.read()
                rebuilds.append(time.perf_counter() - started)

        worker = threading.Thread(target=rebuild, daemon=True)
        worker.start()
        time.sleep(0.2)
        try:
            rows.append(
                measure_wrk(
                    "ostiary", f"ocsp-crl-{where}", pid, url, seconds=seconds, script=script
                )
            )
        finally:
            done.set()
            worker.join(600)
        rows.append(
            Row(
                server="ostiary",
                operation=f"crl-{where}-{entries}",
                concurrency=1,
                requests=len(rebuilds),
                errors=0,
                rate=round(len(rebuilds) / max(sum(rebuilds), 1e-9), 2),
                p50_ms=round(sorted(rebuilds)[len(rebuilds) // 2] * 1000, 1) if rebuilds else 0,
                p99_ms=round(max(rebuilds) * 1000, 1) if rebuilds else 0,
                server_cpu_us_per_op=0,
                server_peak_rss_mb=round(peak_rss_mb(pid), 1),
            )
        )
    return rows


def gateway_scenario(quick: bool, revoked: list[int] | None) -> dict[str, Any]:
    """``ostiary gateway`` vs nginx (bench/gateway.py does the measuring; same core layout),
    and with ``revoked`` the handshakes with that many revoked serials (bench/revoked.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import gateway as gateway_bench  # bench/gateway.py

    found = gateway_bench.measure(seconds=2 if quick else 5, rounds=2 if quick else 5)
    if revoked:
        import revoked as revoked_bench  # bench/revoked.py

        found["revoked"] = revoked_bench.measure(
            revoked, seconds=2 if quick else 5, rounds=2 if quick else 3
        )
    return found


def revocation_scenario(quick: bool) -> dict[str, Any]:
    """Revocation to refusal at our gateway, nginx and Mosquitto (bench/revocation.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import revocation as revocation_bench  # bench/revocation.py

    return revocation_bench.measure(count=5 if quick else 50, polling=0 if quick else 3)


def acme_scenario(quick: bool) -> dict[str, Any]:
    """Whole ACME orders: Ostiary vs Caddy's acme_server and pebble (bench/acme_orders.py);
    then certbot's and lego's wall time per certificate against each (bench/acme_clients.py).
    """
    sys.path.insert(0, str(Path(__file__).parent))
    import acme_clients  # bench/acme_clients.py
    import acme_orders  # bench/acme_orders.py

    levels = [1, 8, 32]
    orders = {n: (max(8, n) if quick else max(60, n * 8)) for n in levels}
    servers = ["ostiary", "caddy", "pebble"]
    found = acme_orders.measure(servers, levels, orders)
    if "caddy" in found.get("notes", {}):
        servers.remove("caddy")  # left out (no root): said in the notes already
    found["clients"] = acme_clients.measure(servers, 2 if quick else 5)
    return found


def scep_scenario(quick: bool) -> dict[str, Any]:
    """SCEP enrollments: Ostiary vs micromdm's scepserver (bench/scep_enroll.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import scep_enroll  # bench/scep_enroll.py

    levels = [1, 8, 32]
    return scep_enroll.measure(levels, scep_enroll.counts_for(levels, quick))


def ratio(rows: list[Row], operation: str, concurrency: int) -> float | None:
    rates = {
        r.server: r.rate for r in rows if r.operation == operation and r.concurrency == concurrency
    }
    if rates.get("cfssl") and "ostiary" in rates:
        return round(rates["ostiary"] / rates["cfssl"], 2)
    return None


def cpu_ratio(rows: list[Row], operation: str, concurrency: int) -> float | None:
    cpu = {
        r.server: r.server_cpu_us_per_op
        for r in rows
        if r.operation == operation and r.concurrency == concurrency
    }
    if cpu.get("ostiary") and "cfssl" in cpu:
        return round(cpu["cfssl"] / cpu["ostiary"], 2)
    return None


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    cfssl = subprocess.run(["cfssl", "version"], capture_output=True, text=True, check=False)
    return {
        "cpu": model,
        "cores": CORES,
        "server_cpus": SERVER_CPUS,
        "client_cpus": sorted(CLIENT_CPUS),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
        "cfssl": cfssl.stdout.strip().splitlines()[0] if cfssl.stdout else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "parts",
        nargs="*",
        help="issuance, ocsp, crl, gateway, revocation, acme, scep (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts (a few minutes)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--revoked", help="gateway: also handshakes with these many revoked serials (0,10000)"
    )
    args = parser.parse_args()
    every = ["issuance", "ocsp", "crl", "gateway", "revocation", "acme", "scep"]
    parts = set(args.parts or every)
    if unknown := parts - set(every):
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    if ("issuance" in parts or "ocsp" in parts) and not shutil.which("cfssl"):
        sys.exit("cfssl is not installed (Debian package golang-cfssl)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    os.sched_setaffinity(0, CLIENT_CPUS)
    description = machine()
    # Issuances per concurrency level: at several hundred a second, fewer than ~1,000 make
    # runs of a second or two, too short to say anything on a shared machine.
    levels = {1: 200, 8: 1000, 32: 1000} if args.quick else {1: 500, 8: 3000, 32: 3000}
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    ocsp_seconds = 4.0 if args.quick else 15.0
    rows: list[Row] = []
    crl: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ostiary-bench-") as temp:
        if parts & {"issuance", "ocsp"}:
            ocsp_count = 100 if args.quick else 500
            if "issuance" not in parts:  # only the certificates OCSP is asked about
                levels = {8: ocsp_count + 8}
            rows = issuance(Path(temp), levels, ocsp_count, "ocsp" in parts, ocsp_seconds)
            rows = [r for r in rows if r.operation != "issuance" or "issuance" in parts]
            if "issuance" in parts and CORES > 1:
                rows += issuance_all_cores(Path(temp), levels)
        if "crl" in parts:
            crl = crl_builds(sizes)
            for where in ("thread", "process"):
                rows += crl_stall(Path(temp), sizes[-1], ocsp_seconds, where)
    revoked = [int(n) for n in args.revoked.split(",")] if args.revoked else None
    gateway = gateway_scenario(args.quick, revoked) if "gateway" in parts else {}
    revocation = revocation_scenario(args.quick) if "revocation" in parts else {}
    acme = acme_scenario(args.quick) if "acme" in parts else {}
    scep = scep_scenario(args.quick) if "scep" in parts else {}
    ratios: dict[str, float | None] = {
        # The machine as deployed: every core for each server (Ostiary --workers <cores>).
        "issuance@1": ratio(rows, "issuance-all-cores", 1),
        "issuance@8": ratio(rows, "issuance-all-cores", 8),
        "issuance@32": ratio(rows, "issuance-all-cores", 32),
        # Per core: each server pinned to the same one core, one Ostiary process.
        "issuance_one_core@1": ratio(rows, "issuance", 1),
        "issuance_one_core@8": ratio(rows, "issuance", 8),
        "issuance_one_core@32": ratio(rows, "issuance", 32),
        "ocsp@32": ratio(rows, "ocsp", 32),
        # Server CPU per OCSP answer, cfssl's / Ostiary's: how many times more answers one
        # core gives, whichever side the load generator saturates first.
        "ocsp_cpu@32": cpu_ratio(rows, "ocsp", 32),
        "crl_1m_build_s": next((c["cpu_s"] for c in crl if c["entries"] == 1_000_000), None),
        # nginx's CPU per operation / ours (capacity per core); *_rate: the rates as driven.
        "gateway_handshake": gateway.get("gateway_handshake"),
        "gateway_requests": gateway.get("gateway_requests"),
        "gateway_handshake_vs_no_tickets": gateway.get("gateway_handshake_vs_no_tickets"),
        "gateway_handshake_rate": gateway.get("gateway_handshake_rate"),
        "gateway_requests_rate": gateway.get("gateway_requests_rate"),
        # Full handshakes with N revoked serials: the gateway's CPU per handshake vs nginx's
        # (and the rates as driven), nginx scanning a CRL of N entries.
        **{
            f"gateway_handshake_revoked@{n}": row.get("gateway_vs_nginx_cpu")
            for n, row in gateway.get("revoked", {}).items()
            if isinstance(row, dict)
        },
        **{
            f"gateway_handshake_revoked_rate@{n}": row.get("gateway_vs_nginx_rate")
            for n, row in gateway.get("revoked", {}).items()
            if isinstance(row, dict)
        },
        # Seconds from 'ostiary ca revoke' returning to the first refused handshake (p99).
        **{
            f"revocation_{door}_p99_s": found.get("p99_s")
            for door, found in revocation.items()
            if isinstance(found, dict)
        },
        # Whole ACME orders per second, ours over the faster of Caddy (step-ca) and pebble.
        **acme.get("ratios", {}),
        # SCEP enrollments per second, ours (one-time challenges) over scepserver's (static).
        **scep.get("ratios", {}),
    }
    report(rows, crl, ratios)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "ratios": ratios,
                    "rows": [asdict(r) for r in rows],
                    "crl": crl,
                    "gateway": gateway,
                    "revocation": revocation,
                    "acme": acme,
                    "scep": scep,
                    "machine": description,
                    "quick": args.quick,
                },
                indent=2,
            )
            + "\n"
        )


def report(rows: list[Row], crl: list[dict[str, Any]], ratios: dict[str, float | None]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    table = Table(title="Ostiary vs cfssl")
    for column in ("server", "operation", "conc.", "n", "err", "rate/s", "p50 ms", "p99 ms",
                   "CPU µs/op", "peak MB"):  # fmt: skip
        table.add_column(
            column, justify="right" if column not in ("server", "operation") else "left"
        )
    for r in rows:
        table.add_row(
            r.server, r.operation, str(r.concurrency), str(r.requests), str(r.errors),
            f"{r.rate:.0f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
            f"{r.server_cpu_us_per_op:.0f}", f"{r.server_peak_rss_mb:.0f}",
        )  # fmt: skip
    if rows:
        console.print(table)
    if crl:
        crl_table = Table(title="CRL build (in-process)")
        for column in ("entries", "CPU s", "wall s", "size bytes"):
            crl_table.add_column(column, justify="right")
        for c in crl:
            crl_table.add_row(
                str(c["entries"]), str(c["cpu_s"]), str(c["wall_s"]), str(c["size_bytes"])
            )
        console.print(crl_table)
    console.print("ratios:", ratios)


if __name__ == "__main__":
    main()
