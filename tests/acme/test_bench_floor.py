"""bench/acme_floor.py, the floor the ACME bench measures Ostiary against, serves the lean
client's orders for real: signatures and nonces checked, http-01 fetched, certificates signed
by its CA, and, durable, written to SQLite before the answer.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.acme.conftest import free_port
from tests.acme.test_bench_client import _csr

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import acme_lean  # bench/acme_lean.py
import acme_servers  # bench/acme_servers.py
import run as bench  # bench/run.py

BENCH = Path(__file__).parents[2] / "bench"


@pytest.fixture(params=[False, True], ids=["in-memory", "durable"])
def floor(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, int, Path]]:
    """The floor on free ports: its directory URL, TLS root, http-01 port and database."""
    tls_root, tls_cert, tls_key = acme_servers._tls_pair(tmp_path, "floor")
    _, ca_cert, ca_key = acme_servers._tls_pair(tmp_path, "floor-ca")
    port, http01_port, database = free_port(), free_port(), tmp_path / "floor.sqlite"
    argv = [
        sys.executable, str(BENCH / "acme_floor.py"), "--port", str(port), "--http01-port",
        str(http01_port), "--tls-cert", str(tls_cert), "--tls-key", str(tls_key),
        "--ca-cert", str(ca_cert), "--ca-key", str(ca_key),
    ]  # fmt: skip
    if request.param:
        argv += ["--database", str(database)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bench.wait_for_port(port)
        yield f"https://127.0.0.1:{port}/directory", tls_root, http01_port, database
    finally:
        bench.stop(process)


def test_the_floor_serves_the_lean_clients_orders(floor: tuple[str, Path, int, Path]) -> None:
    directory, root, http01_port, database = floor
    outcome = acme_lean.run_orders(
        directory, root, 2, [_csr() for _ in range(4)], port=http01_port, meter=lambda: (0, 0)
    )
    assert outcome.failures == []
    assert len(outcome.times) == 4
    # Each order is newOrder, the authorization, the challenge, finalize, the order, the
    # chain (the challenge answers valid: no poll).
    assert outcome.requests == 4 * 6
    if database.exists():
        with sqlite3.connect(database) as db:
            (certificates,) = db.execute("select count(*) from certificate").fetchone()
            (issued,) = db.execute("select count(*) from audit").fetchone()
        assert (certificates, issued) == (4, 4)


def test_the_floor_refuses_a_csr_for_another_name(floor: tuple[str, Path, int, Path]) -> None:
    directory, root, http01_port, _ = floor
    outcome = acme_lean.run_orders(
        directory, root, 1, [_csr("127.0.0.2")], port=http01_port, meter=lambda: (0, 0)
    )
    assert outcome.times == []
    assert len(outcome.failures) == 1
    assert "400" in outcome.failures[0] and "CSR names" in outcome.failures[0]


def test_the_floor_signs_with_its_ca(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(san, critical=True)
        .sign(key, hashes.SHA256())
    )
    _, ca_cert_file, ca_key_file = acme_servers._tls_pair(tmp_path, "ca")
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_file.read_bytes())
    import acme_floor  # bench/acme_floor.py

    floor = acme_floor.Floor("https://127.0.0.1:1", 80, ca_key, ca_cert)
    rows: acme_floor.Rows = []
    chain = floor.issue(csr.public_bytes(serialization.Encoding.DER), rows)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    leaf.verify_directly_issued_by(ca_cert)
    assert leaf.public_key() == key.public_key()
    assert [statement.split()[2] for statement, _ in rows] == ["certificate"]
