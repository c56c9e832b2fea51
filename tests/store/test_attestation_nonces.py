"""Attestation nonces: made by the CA, spent once on every replica, refused when stale."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from ostiary.core.errors import Conflict, Unauthorized
from ostiary.store import AttestationNonce, AttestationNonceRepository
from tests.store.conftest import race

NONCE = "n0nce-made-by-the-ca-for-one-attestation"


def test_nonce_is_spent_once_and_a_replay_is_a_conflict(store, replica, now):
    with store.transaction() as session:
        AttestationNonceRepository(session).add(
            NONCE, now=now, expires_at=now + timedelta(minutes=5)
        )
    with store.transaction() as session:
        AttestationNonceRepository(session).check_usable(NONCE, now=now)
        AttestationNonceRepository(session).spend(NONCE, now=now)
    for where in (store, replica):
        with pytest.raises(Conflict, match="already used"), where.transaction() as session:
            AttestationNonceRepository(session).spend(NONCE, now=now)
        with pytest.raises(Conflict, match="already used"), where.transaction() as session:
            AttestationNonceRepository(session).check_usable(NONCE, now=now)


@pytest.mark.parametrize(
    ("nonce", "age", "message"),
    [
        pytest.param(
            "never-made-by-this-ca-000", timedelta(), "not made by this CA", id="fail/unknown"
        ),
        pytest.param(NONCE, timedelta(minutes=6), "expired", id="fail/expired"),
    ],
)
def test_unknown_or_expired_nonce_is_unauthorized(store, now, nonce, age, message):
    with store.transaction() as session:
        AttestationNonceRepository(session).add(
            NONCE, now=now, expires_at=now + timedelta(minutes=5)
        )
    for step in ("check_usable", "spend"):
        with pytest.raises(Unauthorized, match=message), store.transaction() as session:
            getattr(AttestationNonceRepository(session), step)(nonce, now=now + age)


def test_nonce_raced_on_two_replicas_is_accepted_exactly_once(store, replica, now):
    with store.transaction() as session:
        AttestationNonceRepository(session).add(
            NONCE, now=now, expires_at=now + timedelta(minutes=5)
        )

    def spend(session) -> None:
        AttestationNonceRepository(session).spend(NONCE, now=now)

    assert race([store, replica], spend, Conflict) == ["accepted"] + ["refused"] * 7


def test_only_the_digest_is_stored_and_old_nonces_are_purged(store, now):
    with store.transaction() as session:
        nonces = AttestationNonceRepository(session)
        nonces.add(NONCE, now=now, expires_at=now + timedelta(minutes=5))
        nonces.add("a-second-nonce-0000000", now=now, expires_at=now + timedelta(minutes=5))
    with store.transaction(read_only=True) as session:
        stored = list(session.scalars(select(AttestationNonce.nonce_sha256)))
    assert NONCE not in stored and all(len(d) == 64 for d in stored)
    with store.transaction() as session:
        assert AttestationNonceRepository(session).purge_expired(now + timedelta(minutes=6)) == 2
    with store.transaction(read_only=True) as session:
        assert session.scalar(select(func.count()).select_from(AttestationNonce)) == 0
