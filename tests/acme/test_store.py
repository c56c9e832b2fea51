"""ACME rows on SQLite and PostgreSQL: nonces spent once, expired rows purged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from joserfc.jwk import ECKey
from sqlalchemy import func, select

from ostiary.acme.account_keys import AccountCache
from ostiary.acme.nonces import NONCE_TTL, new_nonce
from ostiary.store import (
    AcmeAccount,
    AcmeAuthorization,
    AcmeChallenge,
    AcmeNonce,
    AcmeOrder,
    AcmeRepository,
    Store,
    migrate,
)
from ostiary.store.acme_writes import ACCOUNT_CHANGED, exchange_nonce

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    migrate(database_url)
    store = Store.from_url(database_url)
    try:
        yield store
    finally:
        store.dispose()


def spend(store: Store, nonce: str, now: datetime) -> bool:
    with store.transaction() as session:
        return AcmeRepository(session).spend_nonce(nonce, now=now)


def test_a_nonce_is_spent_once_and_not_after_it_expired(store: Store) -> None:
    first = new_nonce(store, now=NOW)
    assert spend(store, first, NOW)
    assert not spend(store, first, NOW)
    second = new_nonce(store, now=NOW)
    assert not spend(store, second, NOW + NONCE_TTL)
    assert not spend(store, "never-handed-out", NOW)


def add_order(store: Store, order_id: str, *, expires_at: datetime, serial: str | None) -> None:
    with store.transaction() as session:
        if session.get(AcmeAccount, "account") is None:
            session.add(
                AcmeAccount(
                    id="account", provisioner="acme", jwk={}, thumbprint="t", status="valid",
                    contact=[], created_at=NOW,
                )
            )  # fmt: skip
            session.flush()
        session.add(
            AcmeOrder(
                id=order_id, account_id="account", provisioner="acme", status="pending",
                identifiers=[{"type": "dns", "value": "vm"}], profile="server", not_before=None,
                not_after=None, expires_at=expires_at, created_at=NOW, error=None, serial=serial,
            )
        )  # fmt: skip
        session.flush()
        session.add(
            AcmeAuthorization(
                id=f"authz-{order_id}", order_id=order_id, account_id="account",
                identifier_type="dns", identifier_value="vm", wildcard=False, status="pending",
                expires_at=expires_at, token="token", attested_spki=None, hardware_key=False,
            )
        )  # fmt: skip
        session.flush()
        session.add(
            AcmeChallenge(
                id=f"chall-{order_id}", authorization_id=f"authz-{order_id}", type="http-01",
                status="pending", validated_at=None, error=None,
            )
        )  # fmt: skip


def count(store: Store, model: type) -> int:
    with store.transaction(read_only=True) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_expired_nonces_and_unfinished_orders_are_purged(store: Store) -> None:
    new_nonce(store, now=NOW - 2 * NONCE_TTL)
    kept_nonce = new_nonce(store, now=NOW)
    add_order(store, "expired", expires_at=NOW - timedelta(minutes=1), serial=None)
    add_order(store, "issued", expires_at=NOW - timedelta(minutes=1), serial="1a")
    add_order(store, "open", expires_at=NOW + timedelta(hours=1), serial=None)
    with store.transaction() as session:
        AcmeRepository(session).purge_expired(NOW)
    assert count(store, AcmeNonce) == 1
    assert spend(store, kept_nonce, NOW)
    with store.transaction(read_only=True) as session:
        assert set(session.scalars(select(AcmeOrder.id))) == {"issued", "open"}
        assert set(session.scalars(select(AcmeAuthorization.order_id))) == {"issued", "open"}
    assert count(store, AcmeChallenge) == 2


def add_account(store: Store, account_id: str, key: ECKey, *, status: str = "valid") -> None:
    with store.transaction() as session:
        session.add(
            AcmeAccount(
                id=account_id,
                provisioner="acme",
                jwk=key.as_dict(private=False),
                thumbprint=key.thumbprint(),
                status=status,
                contact=[],
                created_at=NOW,
            )
        )


def test_the_account_cache_keeps_valid_accounts_and_no_more_than_its_limit(store: Store) -> None:
    keys = [ECKey.generate_key("P-256") for _ in range(3)]
    for number, key in enumerate(keys):
        add_account(store, f"a{number}", key)
    add_account(store, "gone", ECKey.generate_key("P-256"), status="deactivated")
    cache = AccountCache(store, limit=2)
    for number in range(3):
        found = cache.read(f"a{number}")
        assert found is not None
        assert found.key.thumbprint() == keys[number].thumbprint()
    assert len(cache) == 2
    assert cache.get("a0") is None  # the least recently used went
    deactivated = cache.read("gone")
    assert deactivated is not None and deactivated.status == "deactivated"
    assert cache.get("gone") is None  # read, never kept
    assert cache.read("nobody") is None


def test_a_nonce_is_not_spent_for_an_account_that_changed(store: Store) -> None:
    """The nonce's transaction checks the account (ostiary.acme.account_keys)."""
    key = ECKey.generate_key("P-256")
    add_account(store, "acc", key)
    nonce = new_nonce(store, now=NOW)
    expires = NOW + NONCE_TTL
    stale = exchange_nonce(nonce, "n2", now=NOW, expires_at=expires, account=("acc", "other"))
    assert store.write(stale) == ACCOUNT_CHANGED
    with store.transaction() as session:
        session.get(AcmeAccount, "acc").status = "deactivated"  # type: ignore[union-attr]
    current = ("acc", key.thumbprint())
    changed = exchange_nonce(nonce, "n3", now=NOW, expires_at=expires, account=current)
    assert store.write(changed) == ACCOUNT_CHANGED
    assert spend(store, nonce, NOW)  # nothing above spent it
