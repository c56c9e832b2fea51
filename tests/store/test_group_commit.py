"""Group commit: concurrent write units share transactions, and one unit's failure is its own."""

from __future__ import annotations

import asyncio
import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import Connection, create_engine, event, func, select

from ostiary.core.errors import Conflict
from ostiary.store import (
    AuditEntry,
    AuditLog,
    Batch,
    CertificateRecord,
    GroupCommit,
    Store,
    TokenSpend,
    TokenUse,
    UsedToken,
    WriteTimeout,
    certificate_values,
    record_certificate,
)
from ostiary.store._locks import WriterLock
from tests.store.conftest import MiniCA

SPENDERS = 10


class Spender:
    """A unit like an issuance's: spend a token (named at submission), audit the outcome."""

    def __init__(self, token_id: str, now: datetime, *, fail: bool = False) -> None:
        self.token = TokenUse(TokenSpend("ci", token_id, now + timedelta(hours=1)), now)
        self.token_id, self.now, self.fail = token_id, now, fail

    def __call__(self, batch: Batch) -> bool:
        spent = bool(batch.token_spent)
        event = "token.used" if spent else "token.reused"
        batch.audit.append(event, at=self.now, target=self.token_id)
        if self.fail:
            raise ValueError(f"unit {self.token_id} is broken")
        return spent


def spender(token_id: str, now: datetime, *, fail: bool = False) -> Spender:
    return Spender(token_id, now, fail=fail)


def write(store: Store, unit: Spender) -> bool:
    return store.write(unit, token=unit.token)


async def write_async(store: Store, unit: Spender) -> bool:
    return await store.write_async(unit, token=unit.token)


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
    store: Store, group: GroupCommit, units: list[Spender]
) -> list[bool | BaseException]:
    """Run ``units`` from threads while a first unit holds its batch open until all queued."""
    started, release = threading.Event(), threading.Event()

    def first(batch: Batch) -> bool:
        started.set()
        assert release.wait(30)
        return True

    def call(unit: Spender) -> bool | BaseException:
        try:
            return group.submit(unit, token=unit.token)
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


def test_what_a_unit_starts_while_committing_starts_after_its_rows_and_before_the_commit(
    store: Store, now: datetime
) -> None:
    group = GroupCommit(store.engine)
    seen: list[str] = []

    @event.listens_for(store.engine, "commit")
    def _commit(_connection: Connection) -> None:
        seen.append("commit")

    def unit(batch: Batch) -> bool:
        batch.audit.append("token.used", at=now, target="jti-1")
        batch.while_committing(lambda: seen.append(f"started, {len(audit_events(store))} seen"))
        return True

    assert group.submit(unit) is True
    # started once, before the commit, with the rows written but not yet visible to others
    assert seen == ["started, 0 seen", "commit"]
    assert audit_events(store) == [("token.used", "jti-1")]


def test_a_unit_run_again_alone_starts_again_and_a_failed_one_never_commits(
    store: Store, now: datetime
) -> None:
    group = GroupCommit(store.engine)
    started: list[str] = []

    def unit(token_id: str, *, fail: bool) -> Callable[[Batch], bool]:
        def run(batch: Batch) -> bool:
            batch.audit.append("token.used", at=now, target=token_id)
            batch.while_committing(lambda: started.append(token_id))
            if fail:
                raise ValueError(f"unit {token_id} is broken")
            return True

        return run

    with ThreadPoolExecutor(3) as pool:
        hold, release = threading.Event(), threading.Event()

        def first(batch: Batch) -> bool:
            hold.set()
            assert release.wait(30)
            return True

        blocker = pool.submit(group.submit, first)
        assert hold.wait(30)
        good = pool.submit(group.submit, unit("good", fail=False))
        bad = pool.submit(group.submit, unit("bad", fail=True))
        deadline = time.monotonic() + 30
        while group.pending < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        release.set()
        assert blocker.result() and good.result()
        with pytest.raises(ValueError, match="broken"):
            bad.result()
    # the shared batch failed before its commit (nothing started), then each ran alone
    assert started == ["good"]
    assert audit_events(store) == [("token.used", "good")]


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
    assert write(store, spender("jti-r", now)) is True
    assert write(replica, spender("jti-r", now)) is False
    assert audit_events(store) == [("token.used", "jti-r"), ("token.reused", "jti-r")]


def test_coroutines_and_threads_write_through_the_same_batches(store: Store, now: datetime) -> None:
    async def from_coroutines() -> list[bool]:
        return list(
            await asyncio.gather(
                *(write_async(store, spender(f"co-{i}", now)) for i in range(SPENDERS))
            )
        )

    with ThreadPoolExecutor(4) as pool:
        threads = [pool.submit(write, store, spender(f"th-{i}", now)) for i in range(SPENDERS)]
        assert asyncio.run(from_coroutines()) == [True] * SPENDERS
        assert [t.result() for t in threads] == [True] * SPENDERS
    with store.transaction(read_only=True) as session:
        assert session.scalar(select(func.count()).select_from(UsedToken)) == 2 * SPENDERS
    assert len(audit_events(store)) == 2 * SPENDERS


def test_coroutines_batches_one_after_another_are_led_by_one_standing_thread(
    store: Store, now: datetime
) -> None:
    """Each lone coroutine's unit is its own batch; all of them run in the same parked
    leader thread (starting a thread per batch cost more than a small batch's inserts)."""
    leaders: list[threading.Thread] = []

    class Recording(Spender):
        def __call__(self, batch: Batch) -> bool:
            leaders.append(threading.current_thread())
            return super().__call__(batch)

    async def one_by_one(run: int) -> None:
        for i in range(5):
            assert await write_async(store, Recording(f"lone-{run}-{i}", now)) is True

    asyncio.run(one_by_one(1))
    asyncio.run(one_by_one(2))  # another event loop: the same thread resolves its futures
    assert len(leaders) == 10
    assert len({id(thread) for thread in leaders}) == 1
    assert leaders[0] is not threading.main_thread() and leaders[0].is_alive()


def test_a_coroutines_failing_unit_raises_in_that_coroutine(store: Store, now: datetime) -> None:
    async def run() -> None:
        with pytest.raises(ValueError, match="broken"):
            await write_async(store, spender("co-bad", now, fail=True))
        assert await write_async(store, spender("co-good", now)) is True

    asyncio.run(run())
    assert audit_events(store) == [("token.used", "co-good")]


def test_a_batch_size_below_one_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(store.engine, max_batch=0)


def test_a_replayed_token_is_refused_and_the_rest_of_its_batch_commits_together(
    store: Store, now: datetime
) -> None:
    assert write(store, spender("jti-old", now)) is True
    group = GroupCommit(store.engine)
    commits = count_commits(store)
    units = [spender("jti-old" if i == 4 else f"jti-{i}", now) for i in range(SPENDERS)]
    outcomes = run_queued_behind_a_slow_unit(store, group, units)
    assert outcomes == [i != 4 for i in range(SPENDERS)]
    assert commits[0] == 2  # the slow unit's batch, then all the others together
    events = audit_events(store)  # the chain verifies
    assert events[0] == ("token.used", "jti-old")
    assert sorted(events[1:]) == sorted(
        [("token.reused", "jti-old")]
        + [("token.used", f"jti-{i}") for i in range(SPENDERS) if i != 4]
    )
    with store.transaction(read_only=True) as session:
        spent = set(session.scalars(select(UsedToken.token_id)))
    assert spent == {"jti-old"} | {f"jti-{i}" for i in range(SPENDERS) if i != 4}


class Issuance(Spender):
    """A unit like :meth:`Authority.issue`'s: a spent token, a certificate row, an entry."""

    def __init__(self, token_id: str, now: datetime, certificate: x509.Certificate) -> None:
        super().__init__(token_id, now)
        self.row = certificate_values(certificate, profile="client", provisioner="ci", now=now)

    def __call__(self, batch: Batch) -> bool:
        if not batch.token_spent:
            batch.audit.append("token.reused", at=self.now, target=self.token_id)
            return False
        record_certificate(batch, self.row)
        batch.audit.append("certificate.issued", at=self.now, target=self.row["serial"])
        return True


def count_statements(store: Store) -> list[int]:
    statements = [0]

    @event.listens_for(store.engine, "before_cursor_execute")
    def _count(*_args: object) -> None:
        statements[0] += 1

    return statements


def test_a_batch_writes_each_table_in_one_statement(
    store: Store, now: datetime, ca: MiniCA
) -> None:
    group = GroupCommit(store.engine)
    statements = count_statements(store)
    assert group.submit(lambda batch: True) is True
    empty = statements[0]  # a batch that writes nothing, like the slow unit's below
    alone = Issuance("jti-alone", now, ca.issue())
    assert group.submit(alone, token=alone.token) is True
    one = statements[0] - empty
    statements[0] = 0
    units = [Issuance(f"jti-{i}", now, ca.issue()) for i in range(SPENDERS)]
    assert run_queued_behind_a_slow_unit(store, group, units) == [True] * SPENDERS
    assert statements[0] == empty + one  # as many statements for ten issuances as for one
    assert len(audit_events(store)) == SPENDERS + 1
    with store.transaction(read_only=True) as session:
        assert session.scalar(select(func.count()).select_from(CertificateRecord)) == 11


def test_a_certificate_already_recorded_fails_its_unit_alone(
    store: Store, now: datetime, ca: MiniCA
) -> None:
    taken = ca.issue(serial=0x5EED)
    first = Issuance("jti-first", now, taken)
    assert store.write(first, token=first.token) is True
    group = GroupCommit(store.engine)
    units = [Issuance(f"jti-{i}", now, taken if i == 2 else ca.issue()) for i in range(4)]
    outcomes = run_queued_behind_a_slow_unit(store, group, units)
    assert isinstance(outcomes[2], Conflict)
    assert "5eed" in str(outcomes[2])
    assert [outcomes[i] for i in (0, 1, 3)] == [True] * 3
    assert [event for event, _ in audit_events(store)] == ["certificate.issued"] * 4
    with store.transaction(read_only=True) as session:
        spent = set(session.scalars(select(UsedToken.token_id)))
    assert spent == {"jti-first", "jti-0", "jti-1", "jti-3"}  # jti-2 rolled back, not spent


def test_a_token_raced_through_two_replicas_is_spent_once(
    store: Store, replica: Store, now: datetime
) -> None:
    barrier = threading.Barrier(8)

    def race(target: Store) -> bool:
        barrier.wait()
        return write(target, spender("jti-raced", now))

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(race, [store, replica] * 4))
    assert sorted(outcomes) == [False] * 7 + [True]
    assert sorted(audit_events(store)) == [("token.reused", "jti-raced")] * 7 + [
        ("token.used", "jti-raced")
    ]


# --------------------------------------------------------------------------- SQLite writer lock


def test_on_sqlite_a_batch_waits_for_another_writers_turn_and_commits_when_it_ends(
    sqlite_store: Store, tmp_path: Path, now: datetime
) -> None:
    """Another process's batch holds the writer lock (another open file of it: the same
    exclusion as another process): ours waits on it, not on SQLite's busy handler."""
    holder = os.open(tmp_path / "ca.db-writer", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(write, sqlite_store, spender("jti-turn", now))
            time.sleep(0.3)
            assert not pending.done()
            fcntl.flock(holder, fcntl.LOCK_UN)
            assert pending.result(timeout=30) is True
    finally:
        os.close(holder)
    assert audit_events(sqlite_store) == [("token.used", "jti-turn")]


def test_the_writer_lock_file_is_private(
    sqlite_store: Store, tmp_path: Path, now: datetime
) -> None:
    write(sqlite_store, spender("jti-mode", now))
    assert stat.S_IMODE((tmp_path / "ca.db-writer").stat().st_mode) == 0o600


def test_a_forked_process_takes_the_writer_lock_through_a_file_of_its_own(tmp_path: Path) -> None:
    """A descriptor inherited over fork shares the parent's lock: the child must open anew."""
    lock = WriterLock(str(tmp_path / "ca.db-writer"))
    with lock.held():
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through its exit status
            descriptor = lock._open()
            try:
                assert descriptor is not None
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os._exit(0)  # the parent's lock excludes the child: right
            except BaseException:
                os._exit(2)
            os._exit(1)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_only_a_sqlite_file_has_a_writer_lock() -> None:
    assert WriterLock.for_engine(create_engine("sqlite://")) is None
    assert WriterLock.for_engine(create_engine("postgresql+psycopg://ostiary@127.0.0.1/x")) is None
    lock = WriterLock.for_engine(create_engine("sqlite:////srv/ostiary/ca.db"))
    assert lock is not None and lock.path == "/srv/ostiary/ca.db-writer"


def _spent(store: Store, token_id: str) -> bool:
    with store.transaction(read_only=True) as session:
        found = session.scalar(select(UsedToken).where(UsedToken.token_id == token_id))
        return found is not None


def _holding(group: GroupCommit) -> tuple[threading.Event, threading.Thread]:
    """A first unit that holds its batch open until the event is set (a stuck database)."""
    started, release = threading.Event(), threading.Event()

    def first(batch: Batch) -> bool:
        started.set()
        assert release.wait(30)
        return True

    thread = threading.Thread(target=group.submit, args=(first,))
    thread.start()
    assert started.wait(30)
    return release, thread


def test_a_coroutine_queued_past_its_deadline_fails_promptly_and_is_never_run(
    store: Store, now: datetime
) -> None:
    """Queued behind a stuck batch, a coroutine gets WriteTimeout (503) at its deadline, not
    after the stuck batch and then its own; it is taken out of the queue, so nothing of it
    is applied when the database answers again."""
    group = GroupCommit(store.engine, deadline=0.5)
    release, holder = _holding(group)
    unit = spender("late-coroutine", now)
    started = time.monotonic()
    try:
        with pytest.raises(WriteTimeout, match=r"in time$"):
            asyncio.run(group.submit_async(unit, token=unit.token))
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join(30)
    assert 0.5 <= waited < 5, waited
    assert group.pending == 0
    assert not _spent(store, "late-coroutine")
    assert asyncio.run(group.submit_async(spender("next", now), token=spender("next", now).token))


def test_a_coroutine_whose_batch_outlives_its_deadline_gets_no_result(
    store: Store, now: datetime
) -> None:
    """Its batch is running when the deadline passes: the outcome is unknown, so the caller
    gets WriteTimeout, never the result (the batch may still commit: recorded, not handed out)."""
    group = GroupCommit(store.engine, deadline=0.5)

    class Slow(Spender):
        def __call__(self, batch: Batch) -> bool:
            time.sleep(1.5)
            return super().__call__(batch)

    unit = Slow("slow-coroutine", now)
    with pytest.raises(WriteTimeout, match="outcome is unknown"):
        asyncio.run(group.submit_async(unit, token=unit.token))
    deadline = time.monotonic() + 10
    while not _spent(store, "slow-coroutine"):  # it committed after all
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert audit_events(store) == [("token.used", "slow-coroutine")]


def test_a_thread_unit_queued_past_its_deadline_is_not_run(store: Store, now: datetime) -> None:
    group = GroupCommit(store.engine, deadline=0.5)
    release, holder = _holding(group)
    unit = spender("late-thread", now)
    with ThreadPoolExecutor(1) as pool:
        queued = pool.submit(group.submit, unit, token=unit.token)
        time.sleep(1.0)  # past its deadline, still behind the stuck batch
        release.set()
        with pytest.raises(WriteTimeout, match="past its deadline"):
            queued.result(30)
    holder.join(30)
    assert not _spent(store, "late-thread")
    assert audit_events(store) == []


def test_a_deadline_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="positive"):
        GroupCommit(store.engine, deadline=0)
