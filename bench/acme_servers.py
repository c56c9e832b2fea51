"""The ACME servers of bench/acme_orders.py, each started from a fresh CA of its own.

Each is pinned to the server core (bench/run.py's ``SERVER_CPUS``) and validates http-01 by
connecting to 127.0.0.1:``HTTP01_PORT`` (80: Caddy's ``acme_server`` has no setting for it).

- Caddy 2 (Debian) ``acme_server``, which embeds step-ca's ACME package, its CA in Caddy's
  file storage.
- pebble (Debian) with ``PEBBLE_VA_NOSLEEP=1``, no injected bad nonces, no authorization
  reuse; it keeps everything in memory (a test server, not a durable one).
- Ostiary ``ca serve`` (SQLite, durable, audit log written) with an ``acme`` provisioner.

And two references, not peers (never in a ratio's "faster peer"): bench/acme_floor.py, the
least an ACME server in Python spends on the bench's order, in memory (``floor``) and
writing durably to SQLite before it answers (``floor-durable``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).parent))
import run as bench  # bench/run.py

HTTP01_PORT = 80


@dataclass(frozen=True)
class Server:
    name: str
    directory: str
    root_pem: Path
    pid: int


def _tls_pair(work: Path, name: str) -> tuple[Path, Path, Path]:
    """A private root and a 127.0.0.1 server certificate from it, for pebble's own HTTPS."""

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


def _floor(work: Path, durable: bool) -> Iterator[Server]:
    tls_root, tls_cert, tls_key = _tls_pair(work, "floor")
    _, ca_cert, ca_key = _tls_pair(work, "floor-ca")  # its leaf is the issuing CA here
    port = bench.free_port()
    database = ["--database", str(work / "floor.sqlite")] if durable else []
    process = bench.start(
        [sys.executable, str(Path(__file__).with_name("acme_floor.py")), "--port", str(port),
         "--http01-port", str(HTTP01_PORT), "--tls-cert", str(tls_cert), "--tls-key",
         str(tls_key), "--ca-cert", str(ca_cert), "--ca-key", str(ca_key), *database],
        work / "floor.log", port,
    )  # fmt: skip
    try:
        name = "floor-durable" if durable else "floor"
        yield Server(name, f"https://127.0.0.1:{port}/directory", tls_root, process.pid)
    finally:
        bench.stop(process)


@contextmanager
def floor(work: Path) -> Iterator[Server]:
    yield from _floor(work, durable=False)


@contextmanager
def floor_durable(work: Path) -> Iterator[Server]:
    yield from _floor(work, durable=True)


SERVERS = {
    "ostiary": ostiary,
    "caddy": caddy,
    "pebble": pebble,
    "floor": floor,
    "floor-durable": floor_durable,
}
#: The references: measured beside the others, never the "faster peer" of a ratio.
REFERENCES = frozenset({"floor", "floor-durable"})


def server_names(value: str) -> list[str]:
    """``--servers``: comma-separated names of :data:`SERVERS` (an argparse ``type``)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SERVERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown server {', '.join(unknown) or '(none)'}: choose from {', '.join(SERVERS)}"
        )
    return names
