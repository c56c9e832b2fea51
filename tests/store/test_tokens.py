"""One-time token ids are spent once, on every replica."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from ostiary.core.errors import BadRequest, TokenReused
from ostiary.store import (
    ProvisionerRepository,
    TokenRepository,
    TokenSpend,
    TokenUse,
    UsedToken,
    spend_tokens,
)
from tests.store.conftest import race


def test_token_used_twice_is_refused_and_the_transaction_still_commits(store, now):
    expires_at = now + timedelta(minutes=5)
    with store.transaction() as session:
        TokenRepository(session).use("jti-1", "otp", expires_at, now)

    with store.transaction() as session:
        with pytest.raises(TokenReused):
            TokenRepository(session).use("jti-1", "otp", expires_at, now)
        # The refusal rolled back only its SAVEPOINT: other work in the transaction commits.
        ProvisionerRepository(session).add("after-refusal", type="token", config={}, now=now)

    with store.transaction(read_only=True) as session:
        assert ProvisionerRepository(session).get("after-refusal").type == "token"
        assert session.scalar(select(func.count()).select_from(UsedToken)) == 1


def test_same_token_id_at_another_provisioner_is_a_different_token(store, now):
    with store.transaction() as session:
        tokens = TokenRepository(session)
        tokens.use("jti-1", "otp", now + timedelta(minutes=5), now)
        tokens.use("jti-1", "laptops", now + timedelta(minutes=5), now)


def test_token_spent_on_one_replica_is_refused_on_the_other(store, replica, now):
    with store.transaction() as session:
        TokenRepository(session).use("jti-1", "otp", now + timedelta(minutes=5), now)
    with pytest.raises(TokenReused), replica.transaction() as session:
        TokenRepository(session).use("jti-1", "otp", now + timedelta(minutes=5), now)


def test_token_raced_on_two_replicas_is_accepted_exactly_once(store, replica, now):
    def spend(session) -> None:
        TokenRepository(session).use("raced", "otp", now + timedelta(minutes=5), now)

    assert race([store, replica], spend, TokenReused) == ["accepted"] + ["refused"] * 7


def test_purge_forgets_only_expired_token_ids(store, now):
    with store.transaction() as session:
        tokens = TokenRepository(session)
        tokens.use("old", "otp", now - timedelta(seconds=1), now - timedelta(minutes=5))
        tokens.use("current", "otp", now + timedelta(minutes=5), now)
    with store.transaction() as session:
        assert TokenRepository(session).purge_expired(now) == 1
    with store.transaction() as session:
        tokens = TokenRepository(session)
        tokens.use("old", "otp", now - timedelta(seconds=1), now)  # forgotten: its exp refuses it
        with pytest.raises(TokenReused):
            tokens.use("current", "otp", now + timedelta(minutes=5), now)


@pytest.mark.parametrize(
    "token_id",
    [pytest.param("", id="fail/empty"), pytest.param("x" * 256, id="fail/too-long")],
)
def test_unusable_token_ids_are_a_bad_request(store, now, token_id):
    with pytest.raises(BadRequest), store.transaction() as session:
        TokenRepository(session).use(token_id, "otp", now + timedelta(minutes=5), now)


def test_tokens_spent_together_are_answered_one_by_one(store, now):
    """One statement for a batch's tokens: a token spent before, or earlier in the same
    list, is refused; the others are spent."""
    expires_at = now + timedelta(minutes=5)
    with store.transaction() as session:
        TokenRepository(session).use("old", "otp", expires_at, now)

    def use(token_id: str, provisioner: str = "otp") -> TokenUse:
        return TokenUse(TokenSpend(provisioner, token_id, expires_at), now)

    uses = [use("a"), use("old"), use("b"), use("a"), use("a", "laptops")]
    with store.engine.begin() as connection:
        assert spend_tokens(connection, uses) == [True, False, True, False, True]
        assert spend_tokens(connection, []) == []
    with store.transaction(read_only=True) as session:
        spent = set(session.execute(select(UsedToken.provisioner, UsedToken.token_id)))
    assert spent == {("otp", "old"), ("otp", "a"), ("otp", "b"), ("laptops", "a")}


def test_an_unusable_token_id_in_a_batch_is_a_bad_request(store, now):
    bad = TokenUse(TokenSpend("otp", "", now + timedelta(minutes=5)), now)
    with store.engine.begin() as connection, pytest.raises(BadRequest):
        spend_tokens(connection, [bad])
