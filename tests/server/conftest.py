"""A CA server on loopback for each test: real sockets, real TLS, a fresh database per backend.

The CA folder and the provisioners' keys are made once per session (their keys are
encrypted with a deliberately slow KDF); each test gets its own database (SQLite file or
PostgreSQL schema, see ``database_url``) with the provisioners recorded in it, and its own
server (``running``) in a thread, stopped at the end.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import func, select

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAMaterial, CAPaths, init_ca_folder
from ostiary.authority.ocsp_service import OcspService
from ostiary.config import CAConfig
from ostiary.core.issuance import Authorization, issue_certificate
from ostiary.core.keys import signature_hash_for
from ostiary.core.lifetime import Lifetime
from ostiary.core.names import parse_san, parse_subject
from ostiary.provisioners import CAIdentity, JWKProvisioner, ProvisionerClaims
from ostiary.provisioners.holder import mint_holder_token
from ostiary.provisioners.jwk import JWK_TYPE
from ostiary.scep import ScepResponder
from ostiary.server.context import ServerContext
from ostiary.server.runner import CAServer, bind, public_url, with_url
from ostiary.store import (
    AuditEntry,
    CertificateRecord,
    ProvisionerRepository,
    Store,
    UsedToken,
    migrate,
)
from ostiary.tls import TLSIdentity, client_context
from tests.conftest import BACKENDS, empty_database

PASSWORD = b"server tests: correct horse battery staple"
OPS = "ops"
ADMINS = "admins"


@dataclass(frozen=True)
class Provisioners:
    """Provisioners made once per session, with their private keys already unlocked."""

    ops: JWKProvisioner
    ops_key: ec.EllipticCurvePrivateKey
    admins: JWKProvisioner
    admins_key: ec.EllipticCurvePrivateKey

    def record(self, store: Store) -> None:
        with store.transaction() as session:
            repository = ProvisionerRepository(session)
            for provisioner in (self.ops, self.admins):
                repository.add(provisioner.name, type=JWK_TYPE, config=provisioner.to_config())


@pytest.fixture(scope="session")
def ca_material(tmp_path_factory: pytest.TempPathFactory) -> CAMaterial:
    """One CA folder (root + intermediate, P-256) for the session; no URL configured.

    Made a month ago, so that tests can issue certificates that have already expired.
    """
    paths = CAPaths(tmp_path_factory.mktemp("ca-template") / "ca")
    made = datetime.now(UTC) - timedelta(days=30)
    return init_ca_folder(paths, CAConfig(name="Server Test"), PASSWORD, now=made)


@pytest.fixture(scope="session")
def provisioners() -> Provisioners:
    return make_provisioners()


def make_provisioners() -> Provisioners:
    """The ``ops`` (holders) and ``admins`` JWK provisioners, keys unlocked."""
    claims = ProvisionerClaims(
        lifetime=Lifetime(timedelta(minutes=5), timedelta(hours=24), timedelta(days=30)),
        allow_renewal_after_expiry=True,
        renew_after_expiry_window=timedelta(days=1),
    )
    ops = JWKProvisioner.create(OPS, password=PASSWORD, claims=claims)
    admins = JWKProvisioner.create(ADMINS, password=PASSWORD, claims=claims, admin=True)
    return Provisioners(
        ops, ops.load_private_key(PASSWORD), admins, admins.load_private_key(PASSWORD)
    )


def material_for(template: CAMaterial, database_url: str, folder: Path) -> CAMaterial:
    """The session's CA in a folder of its own (a copy: the root CRL goes there) and database."""
    shutil.copytree(template.paths.root, folder)
    config = template.config.model_copy(update={"database_url": database_url})
    return replace(template, paths=CAPaths(folder), config=config)


@contextmanager
def open_authority(
    ca_material: CAMaterial, provisioners: Provisioners, database_url: str, folder: Path
) -> Iterator[Authority]:
    """An authority on a fresh, migrated database holding the session's provisioners."""
    migrate(database_url)
    store = Store.from_url(database_url)
    try:
        provisioners.record(store)
        yield Authority(material_for(ca_material, database_url, folder), store)
    finally:
        store.dispose()


@pytest.fixture
def authority(
    ca_material: CAMaterial, provisioners: Provisioners, database_url: str, tmp_path: Path
) -> Iterator[Authority]:
    with open_authority(ca_material, provisioners, database_url, tmp_path / "ca") as authority:
        yield authority


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database on each backend, shared by one test module."""
    with empty_database(request, tmp_path_factory) as url:
        yield url


@dataclass
class Running:
    """A CA server running in a thread, and helpers to talk to it."""

    server: CAServer
    context: ServerContext
    provisioners: Provisioners

    @property
    def authority(self) -> Authority:
        return self.context.authority

    @property
    def ca(self) -> CAIdentity:
        return self.context.ca

    @property
    def root(self) -> x509.Certificate:
        return self.authority.ca.root

    def client(self, identity: TLSIdentity | None = None) -> httpx.Client:
        """An HTTPS client trusting only our root, presenting ``identity`` if given."""
        return httpx.Client(
            base_url=self.server.https_url,
            verify=client_context([self.root], identity=identity),
            timeout=30,
        )

    def plain(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.http_url, timeout=30)

    def sign_token(
        self,
        subject: str = "alice@example.com",
        sans: Sequence[str] = (),
        *,
        profile: str | None = None,
        now: datetime | None = None,
        ttl: timedelta = timedelta(minutes=5),
        not_after: str | None = None,
    ) -> str:
        return self.provisioners.ops.mint_sign_token(
            self.provisioners.ops_key,
            subject,
            ca=self.ca,
            now=now or datetime.now(UTC),
            sans=sans,
            profile=profile,
            ttl=ttl,
            not_after=not_after,
        )

    def admin_token(self, *, now: datetime | None = None) -> str:
        return self.provisioners.admins.mint_admin_token(
            self.provisioners.admins_key, ca=self.ca, now=now or datetime.now(UTC)
        )

    def holder_token(
        self, identity: TLSIdentity, purpose: str, *, now: datetime | None = None
    ) -> str:
        return mint_holder_token(
            identity.certificate,
            identity.private_key,
            purpose=purpose,  # type: ignore[arg-type]
            ca=self.ca,
            now=now or datetime.now(UTC),
        )

    def enroll(self, subject: str = "alice@example.com", sans: Sequence[str] = ()) -> TLSIdentity:
        """A certificate through ``POST /sign``, with a fresh key."""
        csr, key = make_csr(subject, sans)
        with self.client() as client:
            answer = client.post(
                "/sign", json={"csr": csr, "token": self.sign_token(subject, sans)}
            )
        assert answer.status_code == 201, answer.text
        return identity_of(answer.json(), key)

    def count(self, model: type) -> int:
        with self.authority.store.transaction(read_only=True) as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

    def counts(self) -> dict[str, int]:
        """Rows that a refused request must not add (the audit log may grow: refusals are
        audited)."""
        return {
            "certificates": self.count(CertificateRecord),
            "used_tokens": self.count(UsedToken),
        }

    def audit_count(self) -> int:
        return self.count(AuditEntry)


def ocsp_request(certificate: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """A DER OCSP request (SHA-1 CertID, as most clients send) for ``certificate``."""
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate(certificate, issuer, hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )


def make_csr(
    subject: str = "alice@example.com",
    sans: Sequence[str] = (),
    key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[str, ec.EllipticCurvePrivateKey]:
    """A PEM CSR for ``subject`` (a common name) and ``sans``, with a fresh P-256 key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(parse_subject(subject))
    names = [parse_san(s) for s in sans]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    csr = builder.sign(key, signature_hash_for(key))
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii"), key


def unrecorded_certificate(authority: Authority, subject: str) -> x509.Certificate:
    """A certificate our intermediate signed but the store never recorded (as if issued by
    another replica a moment ago, or forged with a stolen key)."""
    csr, _ = make_csr(subject)
    return issue_certificate(
        x509.load_pem_x509_csr(csr.encode()),
        Authorization(subject=parse_subject(subject), names=()),
        authority.issuer,
        now=datetime.now(UTC),
    )


def identity_of(answer: dict[str, object], key: ec.EllipticCurvePrivateKey) -> TLSIdentity:
    certificate = x509.load_pem_x509_certificate(str(answer["certificate"]).encode())
    chain = [x509.load_pem_x509_certificate(str(p).encode()) for p in answer["chain"]]  # type: ignore[attr-defined]
    return TLSIdentity(chain=(certificate, *chain), private_key=key)


@contextmanager
def run_server(
    authority: Authority,
    provisioners: Provisioners,
    *,
    signing: Any = None,
    ocsp_options: dict[str, Any] | None = None,
    http_address: str = "127.0.0.1:0",
    scep: bool = False,
    **options: Any,
) -> Iterator[Running]:
    """Bind loopback ports, start the server in a thread, stop it on the way out.

    ``signing`` (a ``RemoteSigning``) adds the remote-signing service, bound to the authority;
    ``ocsp_options`` go to its ``OcspService`` (e.g. the revocation watch's interval).
    ``http_address`` fixes the plain-HTTP port (for a CA whose configured URL names it).
    ``scep`` serves SCEP (``/scep/NAME``), as ``ca serve`` does given the CA password.
    """
    https_socket = bind("127.0.0.1:0")
    http_socket = bind(http_address)
    authority = with_url(authority, public_url(authority.ca.config, http_socket))
    ocsp = OcspService(authority, **ocsp_options) if ocsp_options is not None else None
    context = ServerContext.for_authority(authority, ocsp=ocsp)
    if signing is not None:
        signing.authority = authority
        context = replace(context, signing=signing)
    if scep:
        context = replace(context, scep=ScepResponder(authority, context.ca, PASSWORD))
    server = CAServer(
        context,
        https_socket=https_socket,
        http_socket=http_socket,
        access_log=False,
        log_config=None,
        **options,
    )
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the CA server did not start")
        time.sleep(0.01)
    try:
        yield Running(server, context, provisioners)
    finally:
        server.request_stop()
        thread.join(30)


@pytest.fixture
def running(authority: Authority, provisioners: Provisioners) -> Iterator[Running]:
    """A server of its own for the test."""
    with run_server(authority, provisioners) as running:
        yield running


@pytest.fixture(scope="module")
def shared_running(
    ca_material: CAMaterial,
    provisioners: Provisioners,
    module_database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    """One server for a whole module, for tables of independent requests."""
    folder = tmp_path_factory.mktemp("shared") / "ca"
    with (
        open_authority(ca_material, provisioners, module_database_url, folder) as authority,
        run_server(authority, provisioners) as running,
    ):
        yield running
