"""The account behind a ``kid``, read once per process and checked where the nonce is spent.

Every ACME request but newAccount names its account by URL (``kid``, RFC 8555 section
6.2), and the server needs that account's key before anything else: the signature is
verified before the nonce is spent, so that a forged request cannot burn a client's nonce.
Reading the account through the ORM on every request cost a tenth of the server's time
(docs/BENCHMARKS.md), so a process keeps the accounts it has seen (:class:`AccountCache`:
bounded, valid accounts only, their parsed keys) and reads one on a miss with a single
indexed Core query.

A cached account may be stale: another replica may have deactivated it or rolled its key
over (section 7.3.5) since. So the cache is never the authority. The group-commit unit that
spends the request's nonce (:func:`ostiary.store.acme_writes.exchange_nonce`) first reads
the account's status and key thumbprint in the same transaction, and spends nothing unless
the account is still valid with the key the signature was verified with. A mismatch drops
the entry and the request is authenticated again from a fresh read, which then refuses a
deactivated account (``unauthorized``) or a signature by the old key (``malformed``).
Changes made through this process drop the entry at once (:meth:`AccountCache.forget`).
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from joserfc.jwk import Key

from ostiary.acme.jws import account_key
from ostiary.store import Store
from ostiary.store.acme_writes import read_account_row

#: Accounts a process keeps (each a few hundred bytes and a parsed public key).
MAX_CACHED_ACCOUNTS = 10_000


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """What a request needs of its account: who, where, whether valid, and its key."""

    id: str
    provisioner: str
    status: str
    thumbprint: str
    key: Key


def read_account(store: Store, account_id: str) -> AccountRecord | None:
    """The account ``account_id`` from the database (one indexed query), or None."""
    return cache_of(store).read(account_id)


class AccountCache:
    """Valid accounts of one store, most recently used last, at most ``limit``."""

    def __init__(self, store: Store, limit: int = MAX_CACHED_ACCOUNTS) -> None:
        self._engine = store.read_engine
        self._limit = limit
        self._accounts: OrderedDict[str, AccountRecord] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, account_id: str) -> AccountRecord | None:
        """The account from the database, and the cache brought up to date with it."""
        row = read_account_row(self._engine, account_id)
        if row is None:
            self.forget(account_id)
            return None
        provisioner, status, thumbprint, jwk = row
        # SQLite hands back the JSON text as stored, PostgreSQL the parsed object.
        key = account_key(json.loads(jwk) if isinstance(jwk, str) else jwk)
        found = AccountRecord(account_id, provisioner, status, thumbprint, key)
        with self._lock:
            if status == "valid":
                self._accounts[account_id] = found
                self._accounts.move_to_end(account_id)
                while len(self._accounts) > self._limit:
                    self._accounts.popitem(last=False)
            else:
                self._accounts.pop(account_id, None)
        return found

    def get(self, account_id: str) -> AccountRecord | None:
        with self._lock:
            found = self._accounts.get(account_id)
            if found is not None:
                self._accounts.move_to_end(account_id)
            return found

    def forget(self, account_id: str) -> None:
        with self._lock:
            self._accounts.pop(account_id, None)

    def __len__(self) -> int:
        return len(self._accounts)


_caches: weakref.WeakKeyDictionary[Store, AccountCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def cache_of(store: Store) -> AccountCache:
    """The account cache of ``store`` (one per store object, so per process and database)."""
    cache = _caches.get(store)
    if cache is None:
        with _caches_lock:
            cache = _caches.get(store)
            if cache is None:
                cache = _caches[store] = AccountCache(store)
    return cache


def known_account(store: Store, account_id: str, *, fresh: bool = False) -> AccountRecord | None:
    """The account from the cache, or (on a miss, or ``fresh``) from the database."""
    cache = cache_of(store)
    found = None if fresh else cache.get(account_id)
    return found if found is not None else cache.read(account_id)


def forget_account(store: Store, account_id: str) -> None:
    """Drop ``account_id`` from this process's cache (its status or key changed here)."""
    cache_of(store).forget(account_id)


__all__ = [
    "MAX_CACHED_ACCOUNTS",
    "AccountCache",
    "AccountRecord",
    "cache_of",
    "forget_account",
    "known_account",
    "read_account",
]
