"""The issuing CA's CRL as the server publishes it: never stale, rebuilt only when needed.

RFC 5280 section 5 CRLs are complete lists with ``thisUpdate``/``nextUpdate``. A relying party
may cache one until its ``nextUpdate``, so the server must hand out a CRL that contains every
revocation committed before the request, whichever replica recorded it. Building one per
request would sign (and, with a million entries, encode for a second or more) every time.

:class:`CrlPublisher` keeps the last CRL it built together with the *revocation generation*
it was built from: the number of revoked certificates of the issuer in the database. A
revocation is permanent (a certificate is never un-revoked and revoked rows are not
deleted), so that count only grows, and it changes exactly when a revocation commits on any
replica. Each request reads it (one indexed ``count`` on ``(status, issuer_key_id)``) and
rebuilds when it moved, or when half of the CRL's validity has passed, so what is handed out
always has at least half its life ahead. The count is read *before* the build, so a
revocation that commits during the build only causes one extra rebuild, never a stale CRL.

CRL numbers come from the shared per-issuer counter (:func:`ostiary.store.next_crl_number`)
and grow with every CRL built anywhere (RFC 5280 section 5.2.3). Each CRL built is kept in
the database as the issuer's newest (:func:`ostiary.store.save_latest_crl`), and a replica
whose own is older serves that one (or builds a newer one): a relying party asking one
replica after another never sees the number go backwards, and no two replicas publish
different CRLs under one number (each number is handed out once).

One publisher per intermediate: after a rotation (:mod:`ostiary.authority.rollover`) the
retiring intermediate keeps publishing its CRL for its leaves.

Where a big CRL is built. Reading a million revoked rows and encoding them is some seconds of
Python, which in a thread of the server would hold the GIL and stall the event loop that
answers OCSP. So from :data:`PROCESS_FROM` revoked entries on, that part runs in a child
process (spawned once, at a lower CPU priority, ``nice`` :data:`CHILD_NICENESS`), which reads
the store itself and hands back the encoded list (:class:`~ostiary.core.crl.EncodedEntries`);
the server only takes the CRL number, splices and signs, so the signing key never leaves the
server process. Smaller CRLs (and in-memory SQLite, which a child cannot open) are built in
the calling thread: a child's start would cost more than the build. The threshold can be
moved with the environment variable ``OSTIARY_CRL_PROCESS_FROM`` (the benchmark sets it very
high to measure the in-thread build).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ostiary.authority.authority import Authority
from ostiary.core.ca import key_id_hex
from ostiary.core.crl import EncodedEntries, RevokedEntry, build_crl, encode_entries
from ostiary.core.issuance import IssuingCA
from ostiary.store import (
    CertificateRecord,
    CertificateRepository,
    CertificateStatus,
    LatestCrl,
    Store,
    latest_crl,
    next_crl_number,
    save_latest_crl,
)

#: Rebuild once this share of a CRL's validity has passed.
REFRESH_AFTER = 0.5
#: From this many revoked entries on, the list is read and encoded in a child process.
PROCESS_FROM = 20_000
#: An environment variable that overrides :data:`PROCESS_FROM`.
PROCESS_FROM_VARIABLE = "OSTIARY_CRL_PROCESS_FROM"
#: The child's ``nice`` increment: the server's requests come first.
CHILD_NICENESS = 10

logger = logging.getLogger("ostiary.crl")


@dataclass(frozen=True)
class PublishedCrl:
    """One signed CRL (DER) and what the publisher knows about it."""

    der: bytes
    number: int
    this_update: datetime
    next_update: datetime
    generation: int

    @cached_property
    def pem(self) -> bytes:
        return x509.load_der_x509_crl(self.der).public_bytes(serialization.Encoding.PEM)

    def refresh_at(self) -> datetime:
        return self.this_update + (self.next_update - self.this_update) * REFRESH_AFTER


def revocation_generation(store: Store, issuer_key_id: str) -> int:
    """How many certificates of the issuer are revoked: it grows with every revocation."""
    with store.transaction(read_only=True) as session:
        return revocation_generation_in(session, issuer_key_id)


def revocation_generation_in(session: Session, issuer_key_id: str) -> int:
    """:func:`revocation_generation` in the caller's transaction."""
    count = session.scalar(
        select(func.count())
        .select_from(CertificateRecord)
        .where(
            CertificateRecord.status == CertificateStatus.REVOKED.value,
            CertificateRecord.issuer_key_id == issuer_key_id,
        )
    )
    return int(count or 0)


def read_encoded_entries(store: Store, issuer_key_id: str) -> EncodedEntries:
    """Every revoked certificate of the issuer, encoded as a CRL lists them."""
    with store.transaction(read_only=True) as session:
        return encode_entries(
            RevokedEntry(serial, revoked_at, x509.ReasonFlags(reason))
            for serial, revoked_at, reason in CertificateRepository(session).revoked_entries(
                issuer_key_id
            )
        )


_child_stores: dict[str, Store] = {}


def _child_start() -> None:
    os.nice(CHILD_NICENESS)


def _encode_in_child(database_url: str, issuer_key_id: str) -> EncodedEntries:
    """:func:`read_encoded_entries` in the child process, on a store it keeps open."""
    store = _child_stores.get(database_url)
    if store is None:
        store = _child_stores[database_url] = Store.from_url(database_url)
    return read_encoded_entries(store, issuer_key_id)


class CrlPublisher:
    """The current CRL of the authority's issuing CA (thread-safe)."""

    def __init__(
        self,
        authority: Authority,
        *,
        issuer: IssuingCA | None = None,
        process_from: int | None = None,
    ) -> None:
        self._authority = authority
        #: The intermediate whose CRL this is: the folder's first one unless named.
        self._issuer = issuer if issuer is not None else authority.ca.issuer
        self._key_id = key_id_hex(self._issuer.certificate)
        self._lock = threading.Lock()
        self._current: PublishedCrl | None = None
        if process_from is None:  # the environment may move the threshold (the benchmark does)
            process_from = int(os.environ.get(PROCESS_FROM_VARIABLE, PROCESS_FROM))
        self._process_from = process_from
        self._children: ProcessPoolExecutor | None = None

    def close(self) -> None:
        """Stop the child process, if one was started."""
        children, self._children = self._children, None
        if children is not None:
            children.shutdown(wait=True, cancel_futures=True)

    def current(self) -> PublishedCrl:
        """The CRL to serve now: the cached one if still right, the newest one another
        replica published if that is right, else a new one.
        """
        generation, kept = self._state()
        fresh = self._fresh(generation, kept)
        if fresh is not None:
            return fresh
        with self._lock:
            # Another thread may have rebuilt while this one waited; and the generation may
            # have grown meanwhile: read it again, before building.
            generation, kept = self._state()
            fresh = self._fresh(generation, kept)
            if fresh is None:
                fresh = self._kept(generation, kept)
            if fresh is None:
                fresh = self._build(generation)
            self._current = fresh
            return fresh

    def _state(self) -> tuple[int, LatestCrl | None]:
        """The revocation generation and the newest published CRL's header, in one read."""
        with self._authority.store.transaction(read_only=True) as session:
            generation = revocation_generation_in(session, self._key_id)
            kept = latest_crl(session, self._key_id, with_der=False)
            if kept is not None:
                session.expunge(kept)
        return generation, kept

    def _fresh(self, generation: int, kept: LatestCrl | None) -> PublishedCrl | None:
        cached = self._current
        if (
            cached is not None
            and cached.generation == generation
            and self._authority.clock() < cached.refresh_at()
            and (kept is None or kept.number <= cached.number)
        ):
            return cached
        return None

    def _kept(self, generation: int, kept: LatestCrl | None) -> PublishedCrl | None:
        """The newest CRL another replica published, if it is still right to serve."""
        if kept is None or kept.generation != generation:
            return None
        candidate = PublishedCrl(b"", kept.number, kept.this_update, kept.next_update, generation)
        if self._authority.clock() >= candidate.refresh_at():
            return None
        with self._authority.store.transaction(read_only=True) as session:
            newest = latest_crl(session, self._key_id)
            if newest is None or newest.number != kept.number:
                return None  # replaced meanwhile: build
            der = newest.der
        return PublishedCrl(der, kept.number, kept.this_update, kept.next_update, generation)

    def _build(self, generation: int) -> PublishedCrl:
        """As :meth:`Authority.build_crl`: the number in its own short transaction, the
        entries in a read-only one (here or in the child), thisUpdate read after them.
        """
        authority = self._authority
        with authority.store.transaction() as session:
            number = next_crl_number(session, self._key_id)
        entries = self._encoded_entries(generation)
        now = authority.clock().replace(microsecond=0)
        next_update = now + authority.ca.config.crl_lifetime
        der = build_crl(
            self._issuer.certificate,
            self._issuer.private_key,
            entries,
            crl_number=number,
            this_update=now,
            next_update=next_update,
        )
        published = LatestCrl(
            issuer_key_id=self._key_id,
            number=number,
            generation=generation,
            this_update=now,
            next_update=next_update,
            der=der,
        )
        with authority.store.transaction() as session:
            save_latest_crl(session, published)
        return PublishedCrl(der, number, now, next_update, generation)

    def _encoded_entries(self, generation: int) -> EncodedEntries:
        store = self._authority.store
        url = store.engine.url
        in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
        if generation < self._process_from or in_memory:
            return read_encoded_entries(store, self._key_id)
        if self._children is None:
            self._children = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_child_start
            )
        try:
            return self._children.submit(
                _encode_in_child,
                url.render_as_string(hide_password=False),
                self._key_id,
            ).result()
        except BrokenProcessPool:
            # The child died (killed, out of memory): build here this time, a new child next.
            logger.warning("the CRL build process died; building in the server this time")
            self._children = None
            return read_encoded_entries(store, self._key_id)


__all__ = [
    "PROCESS_FROM",
    "PROCESS_FROM_VARIABLE",
    "REFRESH_AFTER",
    "CrlPublisher",
    "PublishedCrl",
    "read_encoded_entries",
    "revocation_generation",
]
