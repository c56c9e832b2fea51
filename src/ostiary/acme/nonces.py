"""Nonces (RFC 8555 section 6.5, 7.2): made, handed out, and spent once.

Every signed request spends its nonce and records the next one (the answer's
``Replay-Nonce``) in one group-commit unit (:func:`ostiary.store.acme_writes.exchange_nonce`).
A request whose operation writes anyway (newOrder, a challenge POST, finalize) spends it
in that write's transaction instead (:meth:`NonceSpend.write`, or
:meth:`NonceSpend.spend_in` inside a unit of its own): one unit, one commit waited for,
instead of two. A poll (an order, an authorization, the certificate) reads in the unit that
spends its nonce (:meth:`NonceSpend.write` too), instead of taking a connection of its own
for the read after it. Whatever the operation did not spend is spent after it, failed or not
(:meth:`NonceSpend.settle`); an operation that spends it this way must write nothing before
that spending, so that a replayed request changes nothing.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NoReturn, TypeVar

from ostiary.acme.errors import AcmeProblem
from ostiary.store import AcmeRepository, Store
from ostiary.store.acme_writes import BAD_NONCE, SPENT, record_nonce
from ostiary.store.group_commit import Batch

#: How long a nonce may be used after it was handed out.
NONCE_TTL = timedelta(hours=1)
#: Expired rows are purged once per this many nonces made by a process.
PURGE_EVERY = 200

T = TypeVar("T")
_made = itertools.count()


def new_nonce(store: Store, *, now: datetime) -> str:
    """A nonce recorded for single use (and, now and then, a purge of expired rows)."""
    nonce = secrets.token_urlsafe(24)
    store.write(record_nonce(nonce, expires_at=now + NONCE_TTL))
    purge_now_and_then(store, now)
    return nonce


def purge_now_and_then(store: Store, now: datetime) -> None:
    if next(_made) % PURGE_EVERY == 0:
        with store.transaction() as session:
            AcmeRepository(session).purge_expired(now)


def bad_nonce() -> AcmeProblem:
    return AcmeProblem("badNonce", "the nonce is unknown, used or expired: get a new one")


class _Refused:
    """What a combined unit returns when the exchange refused (nothing else was written)."""

    __slots__ = ("outcome",)

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome


class NonceSpend:
    """The exchange of one request's nonce (see the module docstring), run once.

    ``exchange`` is the group-commit unit; ``refused`` raises the request's error for an
    outcome other than :data:`~ostiary.store.acme_writes.SPENT`.
    """

    __slots__ = ("_exchange", "_now", "_refused", "_store", "spent")

    def __init__(
        self,
        store: Store,
        exchange: Callable[[Batch], str],
        refused: Callable[[str], NoReturn],
        *,
        now: datetime,
    ) -> None:
        self._store = store
        self._exchange = exchange
        self._refused = refused
        self._now = now
        self.spent = False

    def write(self, unit: Callable[[Batch], T]) -> T:
        """``store.write(unit)``, the nonce spent in the same transaction if it is not yet;
        if the nonce is refused, ``unit`` does not run and the request's error is raised.
        """
        if self.spent:
            return self._store.write(unit)

        def spend_then(batch: Batch) -> T | _Refused:
            outcome = self._exchange(batch)
            if outcome != SPENT:
                return _Refused(outcome)
            return unit(batch)

        result = self._store.write(spend_then)
        if isinstance(result, _Refused):
            self._refused(result.outcome)
        self._spent()
        return result

    def spend_in(self, batch: Batch) -> None:
        """Spend the nonce in ``batch``, a unit's transaction the caller runs (an
        issuance's), unless it was; refused, raise, so that the transaction does not
        commit (:meth:`settle` then gives the request's error). Call :meth:`committed`
        once that transaction committed.
        """
        if self.spent:
            return
        outcome = self._exchange(batch)
        if outcome == BAD_NONCE:
            raise bad_nonce()
        if outcome != SPENT:
            raise AcmeProblem("unauthorized", "the account changed while this request was checked")

    def committed(self) -> None:
        """The transaction :meth:`spend_in` spent the nonce in has committed."""
        if not self.spent:
            self._spent()

    def settle(self) -> None:
        """Spend the nonce now, unless it was; the request's error if it is refused (again,
        after a refused :meth:`write`: a replay costs one more exchange, never a nonce
        handed out unrecorded).
        """
        if self.spent:
            return
        outcome = self._store.write(self._exchange)
        if outcome != SPENT:
            self._refused(outcome)
        self._spent()

    def _spent(self) -> None:
        self.spent = True
        purge_now_and_then(self._store, self._now)


def refuse_bad_nonce(outcome: str) -> NoReturn:
    """``refused`` for a request without an account: only a bad nonce can be refused."""
    if outcome == BAD_NONCE:
        raise bad_nonce()
    raise AssertionError(f"unexpected nonce outcome {outcome!r}")  # pragma: no cover


__all__ = [
    "NONCE_TTL",
    "PURGE_EVERY",
    "NonceSpend",
    "bad_nonce",
    "new_nonce",
    "purge_now_and_then",
    "refuse_bad_nonce",
]
