"""The issuing CA itself revoked: the gateway reads the root's CRL (named in the
intermediate's CRL distribution point) and refuses every client under it. A CA of its own,
made with its URL configured so that its intermediate names the root's CRL, as
``ca init --url`` does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509

from ostiary.authority.root_crl import publish_root_crl
from ostiary.core.ca import key_id_hex
from ostiary.store import CertificateRepository
from tests.gateway.conftest import (
    CA,
    EchoUpstream,
    gateway_config,
    run_gateway,
    running_ca_with_url,
)
from tests.gateway.test_gateway import refused
from tests.server.conftest import PASSWORD


@pytest.fixture(scope="module")
def ca(provisioners: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CA]:
    folder = tmp_path_factory.mktemp("issuer-revocation")
    with running_ca_with_url(provisioners, folder, "Revocable Issuer") as ca:
        yield ca


def test_client_under_a_revoked_issuing_ca_is_refused(ca: CA, upstream: EchoUpstream) -> None:
    live = ca.authority
    intermediate = live.ca.intermediate
    cdp = intermediate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [name.value for point in cdp for name in point.full_name or ()] == [f"{ca.url}/root.crl"]
    alice = ca.issue("alice", ("email:alice@example.com",))
    with run_gateway(gateway_config(ca, f"http://127.0.0.1:{upstream.port}")) as gateway:
        with ca.client(alice, gateway.port) as client:
            assert client.get("/").status_code == 200
        # The root revokes its intermediate (recorded like any certificate it issued) and
        # publishes a new root CRL, as 'ca serve' or an offline 'ca crl --root' would.
        with live.store.transaction() as session:
            repository = CertificateRepository(session)
            repository.add(intermediate, profile="intermediate", provisioner=None)
            repository.revoke(
                intermediate.serial_number,
                reason=x509.ReasonFlags.ca_compromise.value,
                at=datetime.now(UTC),
                issuer_key_id=key_id_hex(live.ca.root),
            )
        signer = live.ca.load_root_signer(PASSWORD)
        try:
            publish_root_crl(live.ca, live.store, signer, now=datetime.now(UTC), actor="test")
        finally:
            signer.close()
        deadline = time.monotonic() + 5
        while not refused(ca, alice, gateway.port):
            assert time.monotonic() < deadline, "still accepted 5 s after the CA was revoked"
            time.sleep(0.1)
        assert gateway.metrics.refused["issuer-revoked"] >= 1
        assert gateway.metrics.refused["revoked"] == 0  # alice herself is not revoked
