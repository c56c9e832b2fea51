"""Group commit: concurrent write units share transactions, and one unit's failure is its own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Connection, event, func, select

from ostiary.store import (
    AuditEntry,
    AuditLog,
    Batch,
    GroupCommit,
    Store,
    TokenSpend,
    UsedToken,
    spend_token,
)

SPENDERS = 10


def spender(token_id: str, now: datetime, *, fail: bool = False) -> Callable[[Batch], bool]:
    """A unit like an issuance's: spend a token, audit the outcome."""

    def unit(batch: Batch) -> bool:
        spent = spend_token(
            batch.connection, TokenSpend("ci", token_id, now + timedelta(hours=1)), now
        )
        batch.audit.append("token.used" if spent else "token.reused", at=now, target=token_id)
        if fail:
            raise ValueError(f"unit {token_id} is broken")
        return spent

    return unit


def count_commits(store: Store) -> list[int]:
    commits = [0]

    @event.listens_for(store.engine, "commit")
    def _count(_connection: Connection) -> None:
        commits[0] += 1

    return commits


def audit_events(store: Store) -> list[tuple[str, str | None]]:
    with store.transaction(read_only=True) as session:
        assert AuditLog(session).verify().ok
        rows = session.execute(select(AuditEntry.event, AuditEntry.target).order_by(AuditEntry.id))
        return [(event, target) for event, target in rows]


def run_queued_behind_a_slow_unit(
    store: Store, group: GroupCommit, units: list[Callable[[Batch], bool]]
) -> list[bool | BaseException]:
    """Run ``units`` from threads while a first unit holds its batch open until all queued."""
    started, release = threading.Event(), threading.Event()

    def first(batch: Batch) -> bool:
        started.set()
        assert release.wait(30)
        return True

    def call(unit: Callable[[Batch], bool]) -> bool | BaseException:
        try:
            return group.submit(unit)
        except Exception as error:  # the outcome under test
            return error

    with ThreadPoolExecutor(len(units) + 1) as pool:
        blocker = pool.submit(group.submit, first)
        assert started.wait(30)
        futures = [pool.submit(call, unit) for unit in units]
        deadline = time.monotonic() + 30
        while group.pending < len(units):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        release.set()
        assert blocker.result() is True
        return [future.result() for future in futures]


def test_units_that_queue_meanwhile_share_one_transaction(store: Store, now: datetime) -> None:
    group = GroupCommit(store.engine)
    commits = count_commits(store)
    outcomes = run_queued_behind_a_slow_unit(
        store, group, [spender(f"jti-{i}", now) for i in range(SPENDERS)]
    )
    assert outcomes == [True] * SPENDERS
    assert commits[0] == 2  # the slow unit's batch, then all the others together
    assert sorted(audit_events(store)) == sorted(
        ("token.used", f"jti-{i}") for i in range(SPENDERS)
    )


def test_a_failing_unit_fails_alone_and_the_others_commit(store: Store, now: datetime) -> None:
    group = GroupCommit(store.engine)
    units = [spender(f"jti-{i}", now, fail=i == 3) for i in range(SPENDERS)]
    outcomes = run_queued_behind_a_slow_unit(store, group, units)
    assert isinstance(outcomes[3], ValueError)
    assert outcomes[:3] + outcomes[4:] == [True] * (SPENDERS - 1)
    with store.transaction(read_only=True) as session:
        spent = set(session.scalars(select(UsedToken.token_id)))
    assert spent == {f"jti-{i}" for i in range(SPENDERS)} - {"jti-3"}
    assert ("token.used", "jti-3") not in audit_events(store)  # rolled back with its unit


def test_the_same_token_twice_in_one_batch_is_spent_once(store: Store, now: datetime) -> None:
    group = GroupCommit(store.engine)
    outcomes = run_queued_behind_a_slow_unit(store, group, [spender("jti-x", now)] * 2)
    assert sorted(outcomes) == [False, True]
    assert sorted(audit_events(store)) == [("token.reused", "jti-x"), ("token.used", "jti-x")]


def test_a_token_spent_through_one_replica_is_refused_through_the_other(
    store: Store, replica: Store, now: datetime
) -> None:
    assert store.write(spender("jti-r", now)) is True
    assert replica.write(spender("jti-r", now)) is False
    assert audit_events(store) == [("token.used", "jti-r"), ("token.reused", "jti-r")]


def test_coroutines_and_threads_write_through_the_same_batches(store: Store, now: datetime) -> None:
    async def from_coroutines() -> list[bool]:
        return list(
            await asyncio.gather(
                *(store.write_async(spender(f"co-{i}", now)) for i in range(SPENDERS))
            )
        )

    with ThreadPoolExecutor(4) as pool:
        threads = [pool.submit(store.write, spender(f"th-{i}", now)) for i in range(SPENDERS)]
        assert asyncio.run(from_coroutines()) == [True] * SPENDERS
        assert [t.result() for t in threads] == [True] * SPENDERS
    with store.transaction(read_only=True) as session:
        assert session.scalar(select(func.count()).select_from(UsedToken)) == 2 * SPENDERS
    assert len(audit_events(store)) == 2 * SPENDERS


def test_a_coroutines_failing_unit_raises_in_that_coroutine(store: Store, now: datetime) -> None:
    async def run() -> None:
        with pytest.raises(ValueError, match="broken"):
            await store.write_async(spender("co-bad", now, fail=True))
        assert await store.write_async(spender("co-good", now)) is True

    asyncio.run(run())
    assert audit_events(store) == [("token.used", "co-good")]


def test_a_batch_size_below_one_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(store.engine, max_batch=0)
