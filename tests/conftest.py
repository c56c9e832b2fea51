"""Shared fixtures: a test CA made with Ostiary's own core, and external-tool lookup."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from ostiary.core.ca import create_intermediate_certificate, create_root_certificate
from ostiary.core.issuance import Authorization, CAUrls, IssuingCA, issue_certificate
from ostiary.core.keys import KeyType, generate_private_key
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import parse_san, parse_subject
from ostiary.store import sqlite_url_for

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TEST_URLS = CAUrls(
    crl="http://ca.test/crl", ocsp="http://ca.test/ocsp", ca_issuers="http://ca.test/ca.crt"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> str:
    """The path of an external tool; skip without it, but fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (the test command installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class TestCA:
    """A root + intermediate made by Ostiary's core, with a helper to issue leaves."""

    __test__ = False  # not a test class, despite its name
    root: x509.Certificate
    root_key: CertificateIssuerPrivateKeyTypes
    intermediate: x509.Certificate
    intermediate_key: CertificateIssuerPrivateKeyTypes
    issuer: IssuingCA

    def issue(
        self,
        common_name: str = "alice",
        sans: tuple[str, ...] = ("alice@example.com",),
        *,
        profile: str = "client",
        key: CertificateIssuerPrivateKeyTypes | None = None,
        now: datetime = NOW,
        lifetime: timedelta = timedelta(days=7),
    ) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
        """A leaf through the real pipeline, with a fresh P-256 key unless one is given."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(parse_subject(common_name))
            .sign(key, _hash_for(key))
        )
        authz = Authorization(
            subject=parse_subject(common_name),
            names=tuple(parse_san(s) for s in sans),
            profile=profile,
            lifetime=Lifetime(default=lifetime, maximum=max(lifetime, timedelta(days=30))),
        )
        return issue_certificate(csr, authz, self.issuer, now=now), key


def _hash_for(key: CertificateIssuerPrivateKeyTypes):  # type: ignore[no-untyped-def]
    from ostiary.core.keys import signature_hash_for

    return signature_hash_for(key)


def make_test_ca(
    key_type: KeyType = KeyType.P256,
    *,
    now: datetime = NOW,
    urls: CAUrls = TEST_URLS,
) -> TestCA:
    root_key = generate_private_key(key_type)
    root = create_root_certificate(
        parse_subject("CN=Test Root CA,O=Ostiary Tests"), root_key, now=now
    )
    intermediate_key = generate_private_key(key_type)
    intermediate = create_intermediate_certificate(
        parse_subject("CN=Test Issuing CA,O=Ostiary Tests"),
        intermediate_key.public_key(),
        root_certificate=root,
        root_key=root_key,
        now=now,
    )
    issuer = IssuingCA(
        certificate=intermediate,
        private_key=intermediate_key,
        chain=(intermediate, root),
        urls=urls,
    )
    return TestCA(root, root_key, intermediate, intermediate_key, issuer)


@pytest.fixture(scope="session")
def test_ca() -> TestCA:
    """One P-256 root + intermediate with CRL/OCSP/caIssuers URLs, shared by the session."""
    return make_test_ca()


@pytest.fixture
def ca_factory() -> Callable[..., TestCA]:
    return make_test_ca


# --------------------------------------------------------------------------- databases
# ``database_url`` runs a test on SQLite (a file) and on PostgreSQL (a fresh schema in a
# database created for this test session). PostgreSQL comes from OSTIARY_TEST_POSTGRES_DSN;
# when it cannot be reached the PostgreSQL cases are skipped, except under CI=true.

POSTGRES_DSN_ENV = "OSTIARY_TEST_POSTGRES_DSN"
DEFAULT_POSTGRES_DSN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _psycopg_url(dsn: str) -> URL:
    return make_url(dsn).set(drivername="postgresql+psycopg")


def _url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@contextmanager
def fresh_postgres_database(server_dsn: str) -> Iterator[str]:
    """Create a uniquely named database on the server of ``server_dsn``; yield its URL.

    The database is dropped (connections and all) on the way out. Raises
    :class:`sqlalchemy.exc.OperationalError` if the server cannot be reached.
    """
    server_url = _psycopg_url(server_dsn)
    admin = create_engine(
        server_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    name = f"ostiary_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield _url_string(server_url.set(database=name))
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@contextmanager
def fresh_postgres_schema(database_url: str) -> Iterator[str]:
    """Create a fresh schema in ``database_url``; yield a URL whose connections use it."""
    url = _psycopg_url(database_url)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            yield _url_string(url.update_query_dict({"options": f"-csearch_path={schema}"}))
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        admin.dispose()


def postgres_unreachable(dsn: str, error: OperationalError) -> None:
    """Skip the test, or fail it under ``CI=true``: PostgreSQL cases must run in CI."""
    shown = make_url(dsn).render_as_string(hide_password=True)
    reason = (
        f"PostgreSQL at {shown} is unreachable ({type(error.orig).__name__}); "
        f"start it or set {POSTGRES_DSN_ENV}"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A database of its own for this test session (one per xdist worker)."""
    dsn = os.environ.get(POSTGRES_DSN_ENV, DEFAULT_POSTGRES_DSN)
    with ExitStack() as stack:
        try:
            url = stack.enter_context(fresh_postgres_database(dsn))
        except OperationalError as error:
            postgres_unreachable(dsn, error)
        yield url


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def empty_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The URL of an empty database on the backend ``request.param`` names."""
    if request.param == "sqlite":
        yield sqlite_url_for(tmp_path_factory.mktemp("db") / "ostiary.db")
        return
    with fresh_postgres_schema(request.getfixturevalue("postgres_database_url")) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database on each backend."""
    with empty_database(request, tmp_path_factory) as url:
        yield url
