"""Group commit: concurrent writes share one transaction and one durable commit.

On SQLite every commit waits for an ``fsync`` (several milliseconds on a virtual disk) while
holding the database's one write lock, so writers that commit one by one are capped at a few
hundred commits a second whatever the CPU does. :class:`GroupCommit` lets threads that write
at the same moment share a transaction: each caller hands in a *unit* (a function of a
:class:`Batch`), and :meth:`GroupCommit.submit` returns the unit's result only once the
transaction holding its rows has committed, so an answer never outruns its data.

Blocking callers need no writer thread: a thread that calls :meth:`GroupCommit.submit` and
finds no batch in progress becomes the *leader*: it takes every queued unit (up to
``max_batch``), runs them in one transaction, commits, hands each caller its result, and, if
more units queued meanwhile, promotes the oldest waiting caller to lead the next batch.
Coroutines (:meth:`GroupCommit.submit_async`, the server's ``POST /sign``) do not block their
event loop: one standing leader thread per process, parked while nothing is queued, leads
their batches until the queue is empty, and each batch resolves its coroutines with one
callback into their loop. While a leader waits on the disk, newcomers queue up, so batches
grow exactly when the load does; an idle system commits each unit alone, with no added delay.

One unit must not sink the others. Units report expected refusals (a replayed token) as
results, not exceptions. If a unit raises anyway, or the database refuses a row of the batch
(a certificate already recorded), the whole transaction is rolled back and every unit of
that batch is run again in a transaction of its own, so only the faulty one sees the error.
If the commit itself fails, its outcome is unknown and nothing is retried: every caller of
the batch gets the error. Nor is anything retried when the database cannot be reached
(:func:`database_unreachable`): each unit alone would wait out the same timeout in turn,
so the last caller of a batch of 64 would wait 64 of them.

Every unit has a deadline (``deadline`` seconds from its submission, :data:`WRITE_DEADLINE`
by default). A unit still queued when its deadline passes is never run: it fails with
:class:`WriteTimeout` (a ``store-unavailable`` 503), with nothing of it applied. A coroutine
stops waiting at its deadline even if its batch is running: it is taken out of the queue if
it is still there, and otherwise fails with :class:`WriteTimeout` too, as the batch's
outcome is unknown then: it may still commit (the row is then recorded but never handed
out, as when an answer is lost), but the caller never returns what it wrote. Without it, a
request queued behind a batch stuck on an unreachable database waited out that batch and
then its own (two rounds of the pool's wait and a round trip, ~36 s). A thread that leads a
batch itself is bounded by the driver's timeouts instead.

A batch writes each table once, whatever the number of its units: SQLAlchemy costs tens of
microseconds per statement, the rows themselves a few. A unit names the one-time token it
spends (if any) when it is submitted, and the batch spends every unit's token in one
statement before the units run; each unit then reads whether *its* token was spent
(:attr:`Batch.token_spent`) and queues its rows (:meth:`Batch.insert`, audit entries through
one :class:`~ostiary.store.audit.AuditChain`), which the batch inserts table by table, one
statement each, before it commits. The audit lock is taken first so that on PostgreSQL
batches of different replicas queue on it instead of deadlocking on each other's rows.

The commit is mostly a wait for the disk (the GIL is released meanwhile). A unit may ask
for work to start in another thread just before it (:meth:`Batch.while_committing`), so
that work the caller needs after the commit, but may not hand out before it (a signed
answer), is done during that wait instead of after it.

On SQLite, processes writing to one file (``ca serve --workers``) take their turns through
a :class:`~ostiary.store._locks.WriterLock` before ``BEGIN IMMEDIATE``: the next in line is
woken when the previous commit ends instead of sleeping in SQLite's busy handler. A process
that waits meanwhile queues more units, so its next batch is bigger.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ostiary.store._faults import database_unreachable
from ostiary.store._locks import WriterLock
from ostiary.store._prepared import Prepared
from ostiary.store._unique import is_unique_violation
from ostiary.store.audit import AuditChain
from ostiary.store.models import Base
from ostiary.store.tokens import TokenUse, spend_tokens

T = TypeVar("T")
#: Makes the error a unit raises, alone in its batch, when the database refuses its row.
_Duplicate = Callable[[], Exception]

#: Most units one transaction takes; more wait for the next batch.
MAX_BATCH = 64
#: Seconds a unit may take from submission to commit before its caller gets a 503: past the
#: pool's wait (10 s) plus one round trip (8 s) on PostgreSQL, so that one stuck batch is
#: waited out, not two; under the 30 s clients usually give a request.
WRITE_DEADLINE = 20.0


class WriteTimeout(PoolTimeout):
    """A unit did not commit within its deadline: nothing of it was applied if it never
    ran; if it ran, its outcome is unknown and its caller must not hand out what it wrote.
    A :func:`database_unreachable` error (503 ``store-unavailable``, try again).
    """


@dataclass(frozen=True, slots=True)
class Batch:
    """What a unit writes with: its batch's connection (in its transaction), audit chain and
    rows (:meth:`insert`), and whether the unit's token was spent.

    ``token_spent`` is True if the batch spent the token the unit was submitted with, False
    if that token was spent before (by anyone, or by an earlier unit of this batch), None if
    the unit named no token.
    """

    connection: Connection
    audit: AuditChain
    _rows: _Rows
    token_spent: bool | None = None

    def insert(
        self,
        model: type[Base],
        values: dict[str, Any],
        *,
        duplicate: _Duplicate | None = None,
    ) -> None:
        """Queue a row for ``model``'s table, inserted with the batch's other rows for it.

        Rows of one table must have the same keys. If the database refuses a row as a
        duplicate, the batch fails and each unit is run again alone (see the module
        docstring); alone, the unit raises ``duplicate()`` (when given) instead of the
        database's :class:`~sqlalchemy.exc.IntegrityError`.
        """
        self._rows.add(model, values, duplicate)

    def while_committing(self, start: Callable[[], None]) -> None:
        """Call ``start`` once the batch's rows are written, just before its commit: to start
        work in another thread that overlaps the commit's wait for the disk (the SCEP
        responder's CertRep). ``start`` must not block, and what it starts must not be handed
        out before the unit's result is (that is, before the commit is durable). If the
        batch is run again (a unit of it failed), the unit runs again and so may ``start``.
        """
        self._rows.starts.append(start)


class _Rows:
    """The rows a batch's units queued, per table, in the order queued, and what they ask to
    start while the batch commits (:meth:`Batch.while_committing`).
    """

    __slots__ = ("_tables", "starts")

    def __init__(self) -> None:
        self._tables: dict[type[Base], list[tuple[dict[str, Any], _Duplicate | None]]] = {}
        self.starts: list[Callable[[], None]] = []

    def add(self, model: type[Base], values: dict[str, Any], duplicate: _Duplicate | None) -> None:
        self._tables.setdefault(model, []).append((values, duplicate))

    def write(self, connection: Connection) -> None:
        """Insert every table's rows, one statement (an ``executemany``) per table."""
        for model, rows in self._tables.items():
            try:
                _insert(model).execute(connection, [values for values, _ in rows])
            except IntegrityError as error:
                duplicate = rows[0][1] if len(rows) == 1 else None
                if duplicate is not None and is_unique_violation(error):
                    raise duplicate() from None
                raise
        self._tables.clear()


@functools.cache
def _insert(model: type[Base]) -> Prepared:
    """Built once per table: building a statement costs more than running it."""
    return Prepared(insert(model))


Unit = Callable[[Batch], T]


class _Waiting(Generic[T]):
    """A queued unit and, once its batch is over, its outcome."""

    __slots__ = ("deadline", "done", "error", "result", "token", "unit")

    def __init__(self, unit: Unit[T], token: TokenUse | None, deadline: float) -> None:
        self.unit = unit
        self.token = token
        self.deadline = deadline
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        result: T = self.result
        return result


class _Blocking(_Waiting[T]):
    """A caller blocked in :meth:`GroupCommit.submit`: woken when done or promoted to lead."""

    __slots__ = ("wake",)

    def __init__(self, unit: Unit[T], token: TokenUse | None, deadline: float) -> None:
        super().__init__(unit, token, deadline)
        self.wake = threading.Event()


class _Awaiting(_Waiting[T]):
    """A coroutine in :meth:`GroupCommit.submit_async`, resolved through its event loop."""

    __slots__ = ("future", "loop")

    def __init__(
        self,
        unit: Unit[T],
        token: TokenUse | None,
        deadline: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(unit, token, deadline)
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()


class GroupCommit:
    """Runs write units from many threads in shared transactions (see the module docstring)."""

    def __init__(
        self, engine: Engine, *, max_batch: int = MAX_BATCH, deadline: float = WRITE_DEADLINE
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if deadline <= 0:
            raise ValueError("deadline must be positive")
        self._engine = engine
        self._max_batch = max_batch
        self._deadline = deadline
        self._lock = threading.Lock()
        self._queue: list[_Waiting[Any]] = []
        self._leading = False
        self._leader: threading.Thread | None = None
        self._leader_calls: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._writer_lock = WriterLock.for_engine(engine)
        #: Called with the number of units of each batch that committed (``/metrics``).
        self.batch_listeners: list[Callable[[int], None]] = []

    @property
    def pending(self) -> int:
        """Units queued for the next batch (not those of the batch running now)."""
        with self._lock:
            return len(self._queue)

    def submit(self, unit: Unit[T], *, token: TokenUse | None = None) -> T:
        """Run ``unit`` in a shared transaction; its result once that transaction committed.

        ``token`` is spent by the batch before ``unit`` runs, which reads the outcome in
        :attr:`Batch.token_spent`.
        """
        waiting: _Blocking[T] = _Blocking(unit, token, time.monotonic() + self._deadline)
        with self._lock:
            self._queue.append(waiting)
            lead = not self._leading
            self._leading = True
        while True:
            if lead and self._lead():
                self._start_leader()  # coroutines queued next: a thread leads for them
            waiting.wake.wait()
            if waiting.done:
                return waiting.outcome()
            # Promoted: the previous leader left this caller's unit for the next batch.
            waiting.wake.clear()
            lead = True

    async def submit_async(
        self, unit: Unit[T], *, token: TokenUse | None = None, deadline: float | None = None
    ) -> T:
        """:meth:`submit` for a coroutine: the event loop is not blocked meanwhile.

        ``deadline`` (a :func:`time.monotonic` time) replaces the unit's own: a request
        gives the time it started plus :data:`WRITE_DEADLINE`, so that what it did before
        (a read that waited on the database) counts too.

        Batches of coroutines are led by the standing leader thread, so a request costs no
        thread switch of its own: one thread runs the whole batch, and one callback per batch
        hands the results back to the loop.
        """
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = time.monotonic() + self._deadline
        waiting: _Awaiting[T] = _Awaiting(unit, token, deadline, loop)
        with self._lock:
            self._queue.append(waiting)
            start = not self._leading
            self._leading = True
        if start:
            self._start_leader()
        # Cancelling the caller does not stop the unit: it commits or fails with its batch.
        try:
            await asyncio.wait_for(
                asyncio.shield(waiting.future), max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            with self._lock:
                queued = waiting in self._queue
                if queued:
                    self._queue.remove(waiting)
            if not waiting.done:
                outcome = "" if queued else " (its outcome is unknown)"
                raise WriteTimeout(f"the write did not commit in time{outcome}") from None
        return waiting.outcome()

    def _start_leader(self) -> None:
        """Have the standing leader thread drain the queue, starting it if there is none.

        One thread per process, parked while nothing is queued: starting a thread per batch
        cost more CPU than a small batch's inserts. After a fork (``ca serve --workers``) the
        child has no such thread (``is_alive()`` is False there) and starts its own.
        """
        leader = self._leader
        if leader is None or not leader.is_alive():
            leader = threading.Thread(target=self._serve, name="ostiary-group-commit", daemon=True)
            self._leader = leader
            leader.start()
        self._leader_calls.put(None)

    def _serve(self) -> None:
        while True:
            self._leader_calls.get()
            self._drain()

    def _drain(self) -> None:
        """Lead batches until the queue is empty (the leader of coroutines' units)."""
        while self._lead():
            pass

    def _lead(self) -> bool:
        """Run one batch; True if this thread should lead the next one too."""
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        late = _past_deadline(batch)
        if late:
            batch = [waiting for waiting in batch if not waiting.done]
        try:
            if batch:
                self._run(batch)
        finally:
            for waiting in batch:
                if not waiting.done:  # only if _run itself was interrupted
                    waiting.finish(error=RuntimeError("the write batch was interrupted"))
            _notify(late + batch)
        with self._lock:
            if not self._queue:
                self._leading = False
                return False
            following = self._queue[0]
        if isinstance(following, _Blocking):
            following.wake.set()  # it leads the next batch
            return False
        return True

    def _run(self, batch: list[_Waiting[Any]]) -> None:
        try:
            results = self._transaction(batch)
        except _CommitFailed as failed:
            for waiting in batch:
                waiting.finish(error=failed.error)
            return
        except Exception as error:
            if len(batch) == 1 or database_unreachable(error):
                for waiting in batch:
                    waiting.finish(error=error)
                return
            # Someone's unit failed: give each its own transaction, so only that one fails.
            for waiting in batch:
                self._run([waiting])
            return
        for waiting, result in zip(batch, results, strict=True):
            waiting.finish(result)
        for listener in self.batch_listeners:
            listener(len(batch))

    def _transaction(self, batch: list[_Waiting[Any]]) -> list[Any]:
        if self._writer_lock is None:
            return self._write(batch)
        with self._writer_lock.held():
            return self._write(batch)

    def _write(self, batch: list[_Waiting[Any]]) -> list[Any]:
        with self._engine.connect() as connection:
            transaction = connection.begin()
            try:
                audit = AuditChain(connection)
                audit.lock()
                rows = _Rows()
                results = [
                    waiting.unit(Batch(connection, audit, rows, spent))
                    for waiting, spent in zip(batch, _spend(connection, batch), strict=True)
                ]
                rows.write(connection)
                audit.close()
                for start in rows.starts:
                    start()
            except BaseException:
                transaction.rollback()
                raise
            try:
                transaction.commit()
            except BaseException as error:
                raise _CommitFailed(error) from error
        return results


def _past_deadline(batch: list[_Waiting[Any]]) -> list[_Waiting[Any]]:
    """Fail the units whose deadline passed while they were queued (never run, nothing
    applied); the units so failed.
    """
    now = time.monotonic()
    late = [waiting for waiting in batch if waiting.deadline <= now]
    for waiting in late:
        waiting.finish(error=WriteTimeout("the write waited past its deadline"))
    return late


def _spend(connection: Connection, batch: list[_Waiting[Any]]) -> list[bool | None]:
    """Spend the batch's tokens in one statement; per unit, whether its token was spent."""
    uses = [waiting.token for waiting in batch if waiting.token is not None]
    answers = iter(spend_tokens(connection, uses))
    return [None if waiting.token is None else next(answers) for waiting in batch]


def _notify(batch: list[_Waiting[Any]]) -> None:
    """Wake the blocked callers; resolve the coroutines' futures, one callback per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for waiting in batch:
        if isinstance(waiting, _Blocking):
            waiting.wake.set()
        elif isinstance(waiting, _Awaiting):
            by_loop.setdefault(waiting.loop, []).append(waiting.future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop was closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


class _CommitFailed(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


__all__ = [
    "MAX_BATCH",
    "WRITE_DEADLINE",
    "Batch",
    "GroupCommit",
    "Unit",
    "WriteTimeout",
    "database_unreachable",
]
