"""Two ``ostiary ca serve`` processes on one PostgreSQL: one CA, whichever replica answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import func, select

from ostiary.authority.folder import CAMaterial, load_ca_folder
from ostiary.authority.ocsp_service import TRUST_FOR, WATCH_INTERVAL
from ostiary.authority.rollover import rotate_intermediate
from ostiary.client.api import OstiaryClient
from ostiary.store import AuditLog, CertificateRecord, Store
from tests.conftest import fresh_postgres_schema
from tests.server.conftest import PASSWORD, Provisioners, make_csr
from tests.server.processes import CAFolder, ServeProcess, make_ca_folder, serving

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ISSUANCES = 500
WORKERS = 24


@pytest.fixture
def ca_on_postgres(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    postgres_database_url: str,
    tmp_path: Path,
) -> Iterator[CAFolder]:
    with fresh_postgres_schema(postgres_database_url) as url:
        yield make_ca_folder(ca_material, provisioners, url, tmp_path / "ca")


@pytest.fixture
def replicas(ca_on_postgres: CAFolder, tmp_path: Path) -> Iterator[tuple[ServeProcess, ...]]:
    with (
        serving(ca_on_postgres, tmp_path / "a.log") as a,
        serving(ca_on_postgres, tmp_path / "b.log") as b,
    ):
        yield a, b


def sign_token(provisioners: Provisioners, ca: CAFolder, subject: str) -> str:
    return provisioners.ops.mint_sign_token(
        provisioners.ops_key, subject, ca=ca.identity, now=datetime.now(UTC)
    )


def test_concurrent_issuance_across_replicas_gives_unique_recorded_serials(
    replicas: tuple[ServeProcess, ...], ca_on_postgres: CAFolder, provisioners: Provisioners
) -> None:
    local = threading.local()
    opened: list[httpx.Client] = []

    def client(index: int) -> httpx.Client:
        """Each worker thread keeps one connection to each replica."""
        clients = getattr(local, "clients", None)
        if clients is None:
            clients = local.clients = [r.client() for r in replicas]
            opened.extend(clients)
        return clients[index % len(replicas)]

    requests = []
    for index in range(ISSUANCES):
        subject = f"device-{index}.example.com"
        csr, _ = make_csr(subject, [subject])
        requests.append((index, csr, sign_token(provisioners, ca_on_postgres, subject)))

    def issue(request: tuple[int, str, str]) -> tuple[int, int, str]:
        index, csr, token = request
        answer = client(index).post("/sign", json={"csr": csr, "token": token})
        return index, answer.status_code, answer.text

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(issue, requests))
    finally:
        for opened_client in opened:
            opened_client.close()
    elapsed = time.monotonic() - started
    print(f"\n{ISSUANCES} issuances over 2 replicas in {elapsed:.2f}s: {ISSUANCES / elapsed:.0f}/s")

    failures = [(i, status, text) for i, status, text in results if status != 201]
    assert failures == []
    certificates = [
        x509.load_pem_x509_certificate(
            httpx.Response(201, text=text).json()["certificate"].encode()
        )
        for _, _, text in results
    ]
    serials = {c.serial_number for c in certificates}
    assert len(serials) == ISSUANCES
    store = Store.from_url(ca_on_postgres.database_url)
    try:
        with store.transaction(read_only=True) as session:
            recorded = set(
                session.scalars(
                    select(CertificateRecord.fingerprint_sha256).where(
                        CertificateRecord.profile == "client"
                    )
                )
            )
            assert AuditLog(session).verify().ok
        assert {c.fingerprint(hashes.SHA256()).hex() for c in certificates} == recorded
    finally:
        store.dispose()


def test_a_token_is_accepted_once_across_replicas(
    replicas: tuple[ServeProcess, ...], ca_on_postgres: CAFolder, provisioners: Provisioners
) -> None:
    a, b = replicas
    csr, _ = make_csr("alice@example.com")
    token = sign_token(provisioners, ca_on_postgres, "alice@example.com")
    with a.client() as on_a, b.client() as on_b:
        assert on_a.post("/sign", json={"csr": csr, "token": token}).status_code == 201
        replay = on_b.post("/sign", json={"csr": csr, "token": token})
    assert replay.status_code == 409
    assert replay.json()["type"] == "urn:ostiary:error:token-reused"

    # The same fresh token sent to both at once: exactly one wins.
    for attempt in range(5):
        token = sign_token(provisioners, ca_on_postgres, "alice@example.com")
        barrier = threading.Barrier(2)

        def race(
            server: ServeProcess, token: str = token, barrier: threading.Barrier = barrier
        ) -> int:
            with server.client() as client:
                client.get("/health")  # connect first, so that the two posts start together
                barrier.wait()
                return client.post("/sign", json={"csr": csr, "token": token}).status_code

        with ThreadPoolExecutor(2) as pool:
            statuses = sorted(pool.map(race, replicas))
        assert statuses == [201, 409], f"attempt {attempt}: {statuses}"


def test_a_revocation_on_one_replica_shows_on_the_other_within_the_watch_bound(
    replicas: tuple[ServeProcess, ...], ca_on_postgres: CAFolder, provisioners: Provisioners
) -> None:
    """The CRL at once (it reads the revocation count); OCSP, whose answers B keeps in memory,
    as soon as B's revocation watch has read the audit log (every WATCH_INTERVAL)."""
    a, b = replicas
    csr, _ = make_csr("alice@example.com")
    token = sign_token(provisioners, ca_on_postgres, "alice@example.com")
    admin = provisioners.admins.mint_admin_token(
        provisioners.admins_key, ca=ca_on_postgres.identity, now=datetime.now(UTC)
    )
    with a.client() as on_a, b.plain() as b_plain:
        issued = on_a.post("/sign", json={"csr": csr, "token": token}).json()
        alice = x509.load_pem_x509_certificate(issued["certificate"].encode())
        ocsp_request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(alice, ca_on_postgres.intermediate, hashes.SHA1())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        headers = {"content-type": "application/ocsp-request"}

        def ocsp_on_b() -> ocsp.OCSPCertStatus:
            answer = b_plain.post("/ocsp", content=ocsp_request, headers=headers)
            return ocsp.load_der_ocsp_response(answer.content).certificate_status

        def crl_on_b() -> x509.CertificateRevocationList:
            return x509.load_der_x509_crl(b_plain.get("/crl").content)

        assert ocsp_on_b() is ocsp.OCSPCertStatus.GOOD
        before = crl_on_b()
        revoked = on_a.post(
            "/revoke",
            json={"serial_number": issued["serial_number"], "reason": "keyCompromise"},
            headers={"authorization": f"Bearer {admin}"},
        )
        assert revoked.status_code == 200
        after = crl_on_b()
        deadline = time.monotonic() + WATCH_INTERVAL + TRUST_FOR + 5  # + a loaded machine
        status = ocsp_on_b()
        while status is not ocsp.OCSPCertStatus.REVOKED and time.monotonic() < deadline:
            time.sleep(WATCH_INTERVAL / 5)
            status = ocsp_on_b()
        assert status is ocsp.OCSPCertStatus.REVOKED
    assert before.get_revoked_certificate_by_serial_number(alice.serial_number) is None
    assert after.get_revoked_certificate_by_serial_number(alice.serial_number) is not None
    number = lambda crl: crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number  # noqa: E731
    assert number(after) > number(before)
    store = Store.from_url(ca_on_postgres.database_url)
    try:
        with store.transaction(read_only=True) as session:
            revoked_rows = session.scalar(
                select(func.count())
                .select_from(CertificateRecord)
                .where(CertificateRecord.status == "revoked")
            )
        assert revoked_rows == 1
    finally:
        store.dispose()


def test_crl_numbers_never_go_back_across_replicas_and_a_rotation_reaches_both(
    replicas: tuple[ServeProcess, ...], ca_on_postgres: CAFolder, provisioners: Provisioners
) -> None:
    """One CRL number sequence: fetched from A and B in turn, with revocations between, a
    number never goes backwards and one number is always the same CRL. Then an intermediate
    rotation made offline reaches both running replicas (the audit watch): both issue from
    the new intermediate, renew an old leaf under it, and still answer OCSP for old leaves.
    """
    a, b = replicas
    admin = provisioners.admins.mint_admin_token(
        provisioners.admins_key, ca=ca_on_postgres.identity, now=datetime.now(UTC)
    )
    seen: dict[int, bytes] = {}
    numbers: list[int] = []
    with a.client() as on_a, a.plain() as a_plain, b.plain() as b_plain:

        def fetch_both() -> None:
            for plain in (a_plain, b_plain, a_plain, b_plain):
                der = plain.get("/crl").content
                crl = x509.load_der_x509_crl(der)
                number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
                assert seen.setdefault(number, der) == der, f"two CRLs numbered {number}"
                numbers.append(number)

        old_leaves = []
        for index in range(3):
            fetch_both()
            csr, key = make_csr(f"crl-{index}@example.com")
            token = sign_token(provisioners, ca_on_postgres, f"crl-{index}@example.com")
            issued = on_a.post("/sign", json={"csr": csr, "token": token}).json()
            old_leaves.append((x509.load_pem_x509_certificate(issued["certificate"].encode()), key))
            revoked = on_a.post(
                "/revoke",
                json={"serial_number": issued["serial_number"], "reason": "superseded"},
                headers={"authorization": f"Bearer {admin}"},
            )
            assert revoked.status_code == 200
        fetch_both()
        kept_leaves = []  # not revoked: renewed after the rotation
        for index in range(2):
            csr, key = make_csr(f"kept-{index}@example.com")
            token = sign_token(provisioners, ca_on_postgres, f"kept-{index}@example.com")
            issued = on_a.post("/sign", json={"csr": csr, "token": token}).json()
            kept_leaves.append(
                (x509.load_pem_x509_certificate(issued["certificate"].encode()), key)
            )
    assert numbers == sorted(numbers), numbers
    assert len(seen) >= 4  # each revocation made a new CRL, seen on both replicas

    # Rotation, offline, on the shared folder and database.
    material = load_ca_folder(ca_on_postgres.paths, PASSWORD)
    store = Store.from_url(ca_on_postgres.database_url)
    root_signer = material.load_root_signer(PASSWORD)
    try:
        new_intermediate = rotate_intermediate(
            material, store, root_signer, key_type=material.config.key_type,
            password=PASSWORD, now=datetime.now(UTC), actor="test",
        )  # fmt: skip
    finally:
        root_signer.close()
        store.dispose()
    old_intermediate = ca_on_postgres.intermediate
    for replica in (a, b):
        client = OstiaryClient(replica.https_url, [ca_on_postgres.root])
        with client:
            deadline = time.monotonic() + WATCH_INTERVAL + 30  # + a loaded machine
            while True:
                csr, _ = make_csr("after@example.com")
                token = sign_token(provisioners, ca_on_postgres, "after@example.com")
                issued = client.sign(x509.load_pem_x509_csr(csr.encode()), token)
                if issued.certificate.issuer == new_intermediate.subject:
                    break
                assert time.monotonic() < deadline, "the replica did not switch"
                time.sleep(WATCH_INTERVAL)
            assert issued.chain[0] == new_intermediate
            # A leaf of the retiring intermediate renews under the new one.
            kept, key = kept_leaves.pop()
            renewed = client.renew(kept, key, via="token")
            assert renewed.certificate.issuer == new_intermediate.subject
            leaf, _ = old_leaves.pop()  # revoked before the rotation
        with replica.plain() as plain:
            request = (
                ocsp.OCSPRequestBuilder()
                .add_certificate(leaf, old_intermediate, hashes.SHA1())
                .build()
                .public_bytes(serialization.Encoding.DER)
            )
            answer = ocsp.load_der_ocsp_response(
                plain.post(
                    "/ocsp", content=request, headers={"content-type": "application/ocsp-request"}
                ).content
            )
            assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
            # Answered for the old intermediate: by it, or by a responder it certified.
            signer = answer.certificates[0] if answer.certificates else old_intermediate
            if signer != old_intermediate:
                signer.verify_directly_issued_by(old_intermediate)
            key = signer.public_key()
            assert isinstance(key, ec.EllipticCurvePublicKey)  # the session CA's keys
            algorithm = answer.signature_hash_algorithm
            assert algorithm is not None
            key.verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(algorithm))
