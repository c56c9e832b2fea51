"""Fixtures for the store tests: a database URL per backend, stores on it, and a tiny CA.

``database_url`` (in ``tests/conftest.py``, shared with the server tests) runs a test on
SQLite (a file in ``tmp_path``) and on PostgreSQL (a fresh schema in a database created for
this test session).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session

from ostiary.store import Store, migrate, sqlite_url_for


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A migrated store."""
    store = Store.from_url(database_url)
    migrate(store.engine)
    yield store
    store.dispose()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A migrated store on a SQLite file, ``ca.db`` in ``tmp_path`` (SQLite-only tests)."""
    store = Store.from_url(sqlite_url_for(tmp_path / "ca.db"))
    migrate(store.engine)
    yield store
    store.dispose()


@pytest.fixture
def replica(store: Store, database_url: str) -> Iterator[Store]:
    """A second store on the same database: another CA replica (its own engine and pool)."""
    other = Store.from_url(database_url)
    yield other
    other.dispose()


NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class MiniCA:
    """A self-signed CA that issues leaf certificates with the fields the store reads."""

    name: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str = "Ostiary Test CA") -> MiniCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(name, key, certificate, ec.generate_private_key(ec.SECP256R1()))

    @property
    def key_id(self) -> str:
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return ski.value.digest.hex()

    def issue(
        self,
        *,
        serial: int | None = None,
        common_name: str = "device-1",
        names: Sequence[x509.GeneralName] = (x509.DNSName("device-1.example.com"),),
        not_before: datetime = NOW,
        lifetime: timedelta = timedelta(days=30),
        authority_key_id: bool = True,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(self.leaf_key.public_key())
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(list(names)), critical=False
            )
        if authority_key_id:
            ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)
            builder = builder.add_extension(aki, critical=False)
        return builder.sign(self.key, hashes.SHA256())


def race(
    stores: Sequence[Store],
    attempt: Callable[[Session], None],
    refused: type[Exception],
    *,
    threads: int = 8,
) -> list[str]:
    """Run ``attempt`` in ``threads`` transactions at once, spread over ``stores``; the
    outcomes, sorted: "accepted" or "refused" (``refused`` raised).
    """
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []

    def run(store: Store) -> None:
        barrier.wait()
        try:
            with store.transaction() as session:
                attempt(session)
            outcomes.append("accepted")
        except refused:
            outcomes.append("refused")

    workers = [
        threading.Thread(target=run, args=(stores[i % len(stores)],)) for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sorted(outcomes)


@pytest.fixture
def now() -> datetime:
    """A fixed "now": the tests never read the clock."""
    return NOW


@pytest.fixture(scope="session")
def ca() -> MiniCA:
    return MiniCA.create()


@pytest.fixture(scope="session")
def other_ca() -> MiniCA:
    return MiniCA.create("Ostiary Other CA")
