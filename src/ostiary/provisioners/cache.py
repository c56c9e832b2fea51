"""Provisioners kept in memory by the server, re-checked against the store every few seconds.

Loading a provisioner means reading its row and parsing its config (the public JWK, the
claims): done per request, it was a noticeable share of an issuance (and of every ACME
request). :class:`ProvisionerCache`, given how to load one kind (token provisioners,
``acme`` provisioners),
keeps what it loaded for :data:`PROVISIONER_RECHECK_SECONDS`; after that, the next token from
that provisioner costs one small query of the row's ``id`` and ``updated_at``: if either
changed (the provisioner was removed, replaced, or its config updated, from the CLI or
another replica), it is loaded again or refused. A removed or changed provisioner is thus
honoured for at most :data:`PROVISIONER_RECHECK_SECONDS` after the change commits.

Unknown provisioners are never cached: each such token is looked up again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from ostiary.provisioners.base import is_provisioner_name
from ostiary.store import Store, provisioner_version

#: Longest time a loaded provisioner is used without looking at its row again.
PROVISIONER_RECHECK_SECONDS = 5.0


class _Named(Protocol):
    @property
    def name(self) -> str: ...


P = TypeVar("P", bound=_Named)
P_co = TypeVar("P_co", bound=_Named, covariant=True)


class Loader(Protocol[P_co]):
    """How one kind of provisioner is loaded from the store (and refused when unfit)."""

    def __call__(self, store: Store, issuer: object, *, what: str) -> P_co: ...


@dataclass(frozen=True, slots=True)
class _Loaded(Generic[P]):
    provisioner: P
    version: tuple[int, datetime]
    checked_at: float


class ProvisionerCache(Generic[P]):
    """The provisioners of one store, loaded once by ``loader`` and re-checked every few seconds."""

    def __init__(
        self,
        store: Store,
        loader: Loader[P],
        *,
        recheck_seconds: float = PROVISIONER_RECHECK_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._loader = loader
        self._recheck_seconds = recheck_seconds
        self._monotonic = monotonic
        self._loaded: dict[str, _Loaded[P]] = {}
        self._lock = threading.Lock()

    def load(self, issuer: object, *, what: str) -> P:
        """As the loader, from memory."""
        now = self._monotonic()
        loaded = self._loaded.get(issuer) if isinstance(issuer, str) else None
        if loaded is not None:
            if now - loaded.checked_at < self._recheck_seconds:
                return loaded.provisioner
            if self._version(loaded.provisioner.name) == loaded.version:
                self._remember(loaded.provisioner, loaded.version, now)
                return loaded.provisioner
        # The version is read first: a change racing with the load makes it stale, not new.
        version = self._version(issuer) if is_provisioner_name(issuer) else None
        provisioner = self._load_fresh(issuer, what=what)
        if version is not None:
            self._remember(provisioner, version, now)
        return provisioner

    def fresh(self, name: str) -> P | None:
        """The provisioner ``name`` if :meth:`load` would answer it from memory (no I/O).

        For callers on an event loop: only a miss needs a worker thread.
        """
        loaded = self._loaded.get(name)
        if loaded is None or self._monotonic() - loaded.checked_at >= self._recheck_seconds:
            return None
        return loaded.provisioner

    def forget(self) -> None:
        """Drop everything loaded (after this process changed a provisioner)."""
        with self._lock:
            self._loaded.clear()

    def _load_fresh(self, issuer: object, *, what: str) -> P:
        if isinstance(issuer, str):
            with self._lock:
                self._loaded.pop(issuer, None)
        return self._loader(self._store, issuer, what=what)

    def _remember(self, provisioner: P, version: tuple[int, datetime], at: float) -> None:
        with self._lock:
            self._loaded[provisioner.name] = _Loaded(provisioner, version, at)

    def _version(self, name: object) -> tuple[int, datetime] | None:
        return provisioner_version(self._store.read_engine, str(name))


__all__ = ["PROVISIONER_RECHECK_SECONDS", "Loader", "ProvisionerCache"]
