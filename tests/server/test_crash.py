"""``kill -9`` under load: what clients got is recorded, the audit chain holds, it restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select

from ostiary.authority.folder import CAMaterial
from ostiary.store import AuditLog, CertificateRecord, Store
from tests.conftest import BACKENDS, empty_database
from tests.server.conftest import Provisioners, make_csr
from tests.server.processes import CAFolder, ServeProcess, make_ca_folder, serving, start_serve

pytestmark = pytest.mark.slow

WORKERS = 8


@pytest.fixture(params=BACKENDS)
def ca_folder(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    ca_material: CAMaterial,
    provisioners: Provisioners,
    tmp_path: Path,
) -> Iterator[CAFolder]:
    with empty_database(request, tmp_path_factory) as url:
        yield make_ca_folder(ca_material, provisioners, url, tmp_path / "ca")


def issue_until(
    server: ServeProcess, ca: CAFolder, provisioners: Provisioners, stop: threading.Event
) -> tuple[list[x509.Certificate], list[str], list[threading.Thread]]:
    """Issue from several threads until ``stop``: the certificates received, errors, threads."""
    received: list[x509.Certificate] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        with server.client() as client:
            count = 0
            while not stop.is_set():
                subject = f"w{worker}-{count}.example.com"
                count += 1
                csr, _ = make_csr(subject, [subject])
                token = provisioners.ops.mint_sign_token(
                    provisioners.ops_key, subject, ca=ca.identity, now=datetime.now(UTC)
                )
                try:
                    answer = client.post("/sign", json={"csr": csr, "token": token})
                except httpx.TransportError:
                    return  # the server is gone: this request's outcome is unknown
                with lock:
                    if answer.status_code == 201:
                        pem = answer.json()["certificate"].encode()
                        received.append(x509.load_pem_x509_certificate(pem))
                    else:
                        errors.append(f"{answer.status_code} {answer.text}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(WORKERS)]
    for thread in threads:
        thread.start()
    return received, errors, threads


def recorded_fingerprints(ca: CAFolder) -> set[str]:
    store = Store.from_url(ca.database_url)
    try:
        with store.transaction(read_only=True) as session:
            assert AuditLog(session).verify().ok
            return set(session.scalars(select(CertificateRecord.fingerprint_sha256)))
    finally:
        store.dispose()


def test_kill_9_under_load_loses_nothing_a_client_received(
    ca_folder: CAFolder, provisioners: Provisioners, tmp_path: Path
) -> None:
    server = start_serve(ca_folder, tmp_path / "first.log")
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        received, errors, threads = issue_until(server, ca_folder, provisioners, stop)
        deadline = time.monotonic() + 60
        while len(received) < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()  # mid-flight: requests are being processed right now
    finally:
        stop.set()
        server.stop()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert len(received) >= 40
    recorded = recorded_fingerprints(ca_folder)
    missing = [c for c in received if c.fingerprint(hashes.SHA256()).hex() not in recorded]
    assert missing == []

    # It starts again on the same folder and database, and works.
    with serving(ca_folder, tmp_path / "second.log") as again, again.client() as client:
        csr, _ = make_csr("after@example.com")
        token = provisioners.ops.mint_sign_token(
            provisioners.ops_key, "after@example.com", ca=ca_folder.identity, now=datetime.now(UTC)
        )
        assert client.post("/sign", json={"csr": csr, "token": token}).status_code == 201
    recorded_fingerprints(ca_folder)  # the audit chain still verifies


def test_serve_points_certificates_at_itself_makes_the_root_crl_and_stops_on_sigterm(
    ca_folder: CAFolder, provisioners: Provisioners, tmp_path: Path
) -> None:
    server = start_serve(ca_folder, tmp_path / "serve.log")
    try:
        with server.plain() as plain, server.client() as client:
            root_crl = x509.load_der_x509_crl(plain.get("/root.crl").content)
            csr, _ = make_csr("alice@example.com")
            token = provisioners.ops.mint_sign_token(
                provisioners.ops_key, "alice@example.com", ca=ca_folder.identity,
                now=datetime.now(UTC),
            )  # fmt: skip
            issued = client.post("/sign", json={"csr": csr, "token": token}).json()
    finally:
        status = server.stop()
    assert status == 0
    assert "Stopped." in (tmp_path / "serve.log").read_text()
    assert root_crl.is_signature_valid(ca_folder.root.public_key())  # type: ignore[arg-type]
    assert ca_folder.paths.root_crl.read_bytes() == root_crl.public_bytes(
        serialization.Encoding.DER
    )
    certificate = x509.load_pem_x509_certificate(issued["certificate"].encode())
    cdp = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == f"{server.http_url}/crl"
