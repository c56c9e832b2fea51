"""Per-provisioner limits on ACME: new accounts and new orders of one ACME provisioner, from
all addresses together. Many addresses, each within its own per-address limit, are refused
429 ``rateLimited`` with ``Retry-After`` once the provisioner's budget is spent; another
provisioner is untouched; a provisioner name that does not exist keeps no limiter state.

In process, with the server's limiters made small (the defaults are 1,000 accounts and 2,000
orders at once).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ostiary.authority.folder import CAMaterial
from ostiary.provisioners.acme import AcmeProvisioner, add_acme_provisioner
from ostiary.store import sqlite_url_for
from ostiary.tls import client_context
from tests.acme.conftest import CLAIMS, RawClient, problem_type
from tests.server.conftest import Provisioners, Running, open_authority, run_server

BURST = 3


class _Source:
    """The running server as :class:`RawClient` wants it, reached from loopback ``address``."""

    def __init__(self, running: Running, address: str) -> None:
        self.running = running
        self.address = address

    def client(self) -> httpx.Client:
        transport = httpx.HTTPTransport(
            verify=client_context([self.running.root]), local_address=self.address
        )
        return httpx.Client(base_url=self.running.server.https_url, transport=transport, timeout=30)

    def directory(self, provisioner: str = "acme") -> str:
        return f"{self.running.server.https_url}/acme/{provisioner}/directory"


@pytest.fixture
def running(
    ca_material: CAMaterial, provisioners: Provisioners, tmp_path: Path
) -> Iterator[Running]:
    url = sqlite_url_for(tmp_path / "ca.db")
    with open_authority(ca_material, provisioners, url, tmp_path / "ca") as authority:
        for name in ("fleet", "other"):
            acme = AcmeProvisioner(name=name, claims=CLAIMS, challenges=("http-01",))
            add_acme_provisioner(authority.store, acme, now=datetime.now(UTC))
        with run_server(authority, provisioners) as running:
            limits = running.context.limits
            for limiter in (
                limits.acme_accounts_per_provisioner,
                limits.acme_orders_per_provisioner,
            ):
                limiter.burst, limiter.interval = BURST, 3600.0
            yield running


def _raw(running: Running, address: str, provisioner: str = "fleet") -> RawClient:
    source: Any = _Source(running, address)
    return RawClient(source, provisioner)


def _new_account(raw: RawClient) -> httpx.Response:
    answer = raw.post(raw.directory["newAccount"], {"termsOfServiceAgreed": True})
    if answer.status_code == 201:
        raw.kid = answer.headers["Location"]
    return answer


def test_new_accounts_from_many_addresses_share_the_provisioners_budget(
    running: Running,
) -> None:
    clients = [_raw(running, f"127.0.0.{n}") for n in range(2, 3 + BURST)]
    try:
        made = [_new_account(raw).status_code for raw in clients[:BURST]]
        past = _new_account(clients[BURST])  # a fresh address, within its own limit
        elsewhere = _raw(running, "127.0.0.9", "other")
        assert _new_account(elsewhere).status_code == 201
        elsewhere.close()
    finally:
        for raw in clients:
            raw.close()
    assert made == [201] * BURST
    assert past.status_code == 429, past.text
    assert problem_type(past) == "rateLimited"
    assert int(past.headers["Retry-After"]) >= 1
    assert "fleet" in past.json()["detail"]


def test_new_orders_share_the_provisioners_budget(running: Running) -> None:
    first, second = _raw(running, "127.0.0.2"), _raw(running, "127.0.0.3")
    try:
        assert _new_account(first).status_code == 201
        assert _new_account(second).status_code == 201

        def order(raw: RawClient, name: str) -> httpx.Response:
            identifiers = [{"type": "dns", "value": name}]
            return raw.post(raw.directory["newOrder"], {"identifiers": identifiers})

        made = [
            order(raw, f"host{n}.example").status_code
            for n, raw in enumerate([first, second, first])
        ]
        past = order(second, "late.example")
    finally:
        first.close()
        second.close()
    assert made == [201] * BURST
    assert past.status_code == 429, past.text
    assert problem_type(past) == "rateLimited"
    assert int(past.headers["Retry-After"]) >= 1


def test_a_provisioner_name_that_does_not_exist_keeps_no_limiter_state(
    running: Running,
) -> None:
    limits = running.context.limits
    for name in ("nobody", "x" * 200, "fleet-not"):
        raw = _raw(running, "127.0.0.2", "fleet")
        try:
            url = raw.directory["newAccount"].replace("/acme/fleet/", f"/acme/{name}/")
            answer = raw.post(url, {"termsOfServiceAgreed": True})
        finally:
            raw.close()
        assert answer.status_code in (400, 404), answer.text  # a bad name, or no such one
    assert len(limits.acme_accounts_per_provisioner) == 0
    assert len(limits.acme_orders_per_provisioner) == 0
