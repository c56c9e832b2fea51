"""Limits: orders per account per hour, pending authorizations, new accounts per address."""

from __future__ import annotations

import httpx
import pytest

from ostiary.server.limits import Limits
from tests.acme.conftest import AcmeServer, RawClient, problem_type

pytestmark = pytest.mark.slow

#: New accounts one address may make at once (the server's default).
ACCOUNT_BURST = Limits.default().acme_accounts.burst


def order(raw: RawClient, *names: str) -> httpx.Response:
    return raw.post(
        raw.directory["newOrder"], {"identifiers": [{"type": "dns", "value": n} for n in names]}
    )


def test_orders_per_account_per_hour(own_acme_server: AcmeServer) -> None:
    raw = RawClient(own_acme_server, "limited")
    raw.register()
    try:
        assert order(raw, "vm").status_code == 201
        assert order(raw, "vm").status_code == 201
        third = order(raw, "vm")
        assert third.status_code == 429
        assert problem_type(third) == "rateLimited"
        assert 3000 < int(third.headers["Retry-After"]) <= 3600
        listed = raw.post(raw.post(str(raw.kid), None).json()["orders"], None).json()
        assert len(listed["orders"]) == 2
    finally:
        raw.close()


def test_pending_authorizations_per_account(own_acme_server: AcmeServer) -> None:
    raw = RawClient(own_acme_server, "limited")
    raw.register()
    try:
        first = order(raw, "vm", "localhost")
        assert first.status_code == 201
        over = order(raw, "runsc", "127.0.0.1.nip.example")
        assert problem_type(over) == "rateLimited"
        # Deactivating one leaves room for two more.
        authz = first.json()["authorizations"][0]
        assert raw.post(authz, {"status": "deactivated"}).status_code == 200
        assert order(raw, "runsc", "other.example").status_code == 201
    finally:
        raw.close()


def test_new_accounts_per_address(own_acme_server: AcmeServer) -> None:
    first = RawClient(own_acme_server)
    first.register()
    made = [first]
    try:
        for _ in range(ACCOUNT_BURST + 1):
            raw = RawClient(own_acme_server)
            made.append(raw)
            answer = raw.post(raw.directory["newAccount"], {"termsOfServiceAgreed": True})
            if answer.status_code != 201:
                break
        assert problem_type(answer) == "rateLimited"
        assert int(answer.headers["Retry-After"]) >= 1
        # Looking up an existing account is not limited.
        first.kid = None
        again = first.post(first.directory["newAccount"], {"onlyReturnExisting": True})
        assert again.status_code == 200
    finally:
        for raw in made:
            raw.close()
