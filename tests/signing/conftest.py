"""A CA server with remote signing on loopback, signing keys, callers and a movable clock.

Builds on ``tests/server/conftest.py`` (the session's CA folder and provisioners): each
module gets one server (per database backend) whose :class:`RemoteSigning` has two keys:

- ``billing`` (RSA 2048): callers ``cn:billing-*`` and ``admin:*``; audience :data:`AUDIENCE`
- ``edge`` (P-256): callers ``uri:spiffe://lab/edge``; audience :data:`AUDIENCE`
- ``strict`` (P-256): callers ``cn:billing-*``; assertions only (no bare digests)

``billing`` and ``edge`` also sign bare digests.

The authority's clock is real time plus an offset that tests may move forward
(:class:`OffsetClock`), so rate baselines can be built minute by minute without waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509

from ostiary.authority.authority import Authority
from ostiary.authority.folder import CAMaterial
from ostiary.authority.remote_signing import RemoteSigning
from ostiary.authority.signing_alerts import SigningAlerts
from ostiary.authority.signing_keys import create_signing_key
from ostiary.signers.signing_keys import FileSigningKeyStore
from ostiary.store import Store, migrate
from ostiary.tls import TLSIdentity, client_context
from tests.server.conftest import (  # noqa: F401 - fixtures
    PASSWORD,
    Provisioners,
    Running,
    ca_material,
    make_csr,
    material_for,
    module_database_url,
    provisioners,
    run_server,
)

AUDIENCE = "https://login.example.test/tenant-1/oauth2/v2.0/token"
OTHER_AUDIENCE = "https://evil.example.test/token"
CLIENT_ID = "6f1c2c7e-0000-4000-8000-00000000b111"


class OffsetClock:
    """Real UTC time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self.frozen: datetime | None = None

    def __call__(self) -> datetime:
        if self.frozen is not None:
            return self.frozen
        return datetime.now(UTC) + self.offset


@dataclass
class SigningRunning:
    """The running server, its signing service, and helpers."""

    running: Running
    signing: RemoteSigning
    clock: OffsetClock
    certificates: dict[str, x509.Certificate]

    @property
    def authority(self) -> Authority:
        return self.running.authority

    @property
    def url(self) -> str:
        return self.running.server.https_url

    def client(
        self, identity: TLSIdentity | None = None, *, source: str | None = None
    ) -> httpx.Client:
        """An HTTPS client trusting our root, presenting ``identity``, from ``source``."""
        context = client_context([self.running.root], identity=identity)
        transport = httpx.HTTPTransport(verify=context, local_address=source)
        return httpx.Client(base_url=self.url, transport=transport, timeout=30)

    def caller(self, name: str, sans: tuple[str, ...] = ()) -> TLSIdentity:
        """A caller certificate (common name ``name``) enrolled through ``POST /sign``."""
        return self.running.enroll(name, sans)


@pytest.fixture(scope="module")
def signing_server(
    ca_material: CAMaterial,  # noqa: F811
    provisioners: Provisioners,  # noqa: F811
    module_database_url: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SigningRunning]:
    folder = tmp_path_factory.mktemp("signing") / "ca"
    migrate(module_database_url)
    store = Store.from_url(module_database_url)
    provisioners.record(store)
    clock = OffsetClock()
    authority = Authority(
        material_for(ca_material, module_database_url, folder), store, clock=clock
    )
    key_store = FileSigningKeyStore(folder, PASSWORD)
    certificates = {}
    for name, key_type, callers, digests in (
        ("billing", "rsa-2048", ["cn:billing-*", "admin:*"], True),
        ("edge", "p256", ["uri:spiffe://lab/edge"], True),
        ("strict", "p256", ["cn:billing-*"], False),
    ):
        _, certificates[name] = create_signing_key(
            authority,
            key_store,
            name,
            key_type=key_type,
            audiences=[AUDIENCE],
            callers=callers,
            actor="test",
            allow_digest_signing=digests,
        )
    signing = RemoteSigning(authority, key_store, SigningAlerts())
    try:
        with run_server(authority, provisioners, signing=signing) as running:
            yield SigningRunning(running, signing, clock, certificates)
    finally:
        store.dispose()


@pytest.fixture
def fresh_alerts(signing_server: SigningRunning) -> Iterator[SigningAlerts]:
    """New alert state (baselines, known sources) for one test."""
    alerts = SigningAlerts()
    previous = signing_server.signing.alerts
    signing_server.signing.alerts = alerts
    try:
        yield alerts
    finally:
        signing_server.signing.alerts = previous
        signing_server.clock.offset = timedelta()
        alerts.close()
