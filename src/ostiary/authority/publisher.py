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
and grow with every CRL built anywhere (RFC 5280 section 5.2.3).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from ostiary.authority.authority import Authority
from ostiary.store import CertificateRecord, CertificateStatus, Store

#: Rebuild once this share of a CRL's validity has passed.
REFRESH_AFTER = 0.5


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
        count = session.scalar(
            select(func.count())
            .select_from(CertificateRecord)
            .where(
                CertificateRecord.status == CertificateStatus.REVOKED.value,
                CertificateRecord.issuer_key_id == issuer_key_id,
            )
        )
    return int(count or 0)


class CrlPublisher:
    """The current CRL of the authority's issuing CA (thread-safe)."""

    def __init__(self, authority: Authority) -> None:
        self._authority = authority
        self._lock = threading.Lock()
        self._current: PublishedCrl | None = None

    def current(self) -> PublishedCrl:
        """The CRL to serve now: the cached one if still right, else a new one."""
        generation = revocation_generation(self._authority.store, self._authority.issuer_key_id)
        fresh = self._fresh(generation)
        if fresh is not None:
            return fresh
        with self._lock:
            # Another thread may have rebuilt while this one waited; and the generation may
            # have grown meanwhile: read it again, before building.
            generation = revocation_generation(self._authority.store, self._authority.issuer_key_id)
            fresh = self._fresh(generation)
            if fresh is None:
                fresh = self._build(generation)
                self._current = fresh
            return fresh

    def _fresh(self, generation: int) -> PublishedCrl | None:
        cached = self._current
        if (
            cached is not None
            and cached.generation == generation
            and self._authority.clock() < cached.refresh_at()
        ):
            return cached
        return None

    def _build(self, generation: int) -> PublishedCrl:
        der = self._authority.build_crl()
        crl = x509.load_der_x509_crl(der)
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        next_update = crl.next_update_utc
        if next_update is None:  # pragma: no cover - build_crl always sets it
            raise RuntimeError("the CRL has no nextUpdate")
        return PublishedCrl(der, number, crl.last_update_utc, next_update, generation)


__all__ = ["REFRESH_AFTER", "CrlPublisher", "PublishedCrl", "revocation_generation"]
