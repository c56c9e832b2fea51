"""The revocation feed: revocations as an ordered, resumable, signed stream.

A gateway or ``ca crl-watch`` asks ``GET /revocations?after=N&nonce=R&wait=S`` and gets the
revocations committed after position ``N``, holding the request up to ``S`` seconds while
there are none (a long poll). What it gets back is one compact JWS (RFC 7515) signed by the
issuing CA's own key, so the feed can be served over plain HTTP: a subscriber verifies it
against the intermediate it has pinned, and checks that ``nonce`` (its own random value) is
echoed, so an old answer cannot be replayed to it.

The sequence. Positions are ids of the audit log (:mod:`ostiary.store.audit`): every
revocation writes a ``certificate.revoked`` entry, ids are assigned under the audit chain's
append lock (SQLite's write lock; PostgreSQL's advisory lock) and so commit in order on every
replica sharing the database, and they survive restarts. Positions are sparse (other
decisions take ids too): an answer covers *every* revocation in ``(after, head]`` and the
subscriber continues from ``head``. The head is the audit log's one-row head.

Start over from a snapshot. When ``after`` is 0 (a new subscriber; unless the log is empty,
when there is nothing to start from), lies ahead of the head (a
database restored from a backup, another CA), or is more than :data:`WINDOW` audit entries
behind it (the retained window: a subscriber that was away so long reads the CRL instead of
pages of events), the answer carries ``"snapshot": "/crl"`` and no events: fetch the CRL,
which the server builds to include every revocation committed before the request
(:mod:`ostiary.authority.publisher`), take its serials, and follow from ``head`` (read
before the CRL, so a revocation in between is in both, never in neither).

Waking. A revocation in this process wakes the waiting requests at once (the Authority's
revocation listeners); one made elsewhere (another replica, ``ostiary ca revoke``) is seen by
the OCSP cache's audit-head poll (:class:`~ostiary.authority.ocsp_service.RevocationWatch`,
every 250 ms), which wakes them too. Each woken request reads the entries after its
position (one indexed range read) and answers if there are revocations; a request also
re-reads every :data:`RECHECK_SECONDS` on its own, in case a wake-up was missed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select

from ostiary.authority.authority import Authority
from ostiary.core.errors import BadRequest, TooManyRequests
from ostiary.core.jws import b64url, default_algorithm, sign_message
from ostiary.store import AuditEntry, AuditHead

#: The audit event of a revocation; its target is the serial number in hex.
REVOKED_EVENT = "certificate.revoked"
#: A subscriber further behind than this many audit entries starts over from the CRL.
WINDOW = 200_000
#: Most revocations in one answer; the subscriber asks again from the ``head`` it got.
MAX_EVENTS = 1000
#: The longest a request may be held (seconds).
MAX_WAIT = 30.0
#: A held request reads the store again this often even without a wake-up (seconds).
RECHECK_SECONDS = 5.0
#: The media type of an answer.
MEDIA_TYPE = "application/jose"
#: The JWS ``typ`` of an answer.
JWS_TYPE = "ostiary-revocations+jws"
#: Where a subscriber that must start over reads the snapshot (the issuing CA's CRL).
SNAPSHOT_PATH = "/crl"
#: Held requests at once, per client address and in all.
MAX_WAITING_PER_ADDRESS = 8
MAX_WAITING = 2048
_NONCE = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class FeedQuery:
    """What a subscriber asked: its position, its nonce, how long it will wait."""

    after: int
    nonce: str | None
    wait: float

    @classmethod
    def parse(cls, after: str | None, nonce: str | None, wait: str | None) -> FeedQuery:
        """The query parameters, checked; :class:`BadRequest` names the one that is wrong."""
        position = _number(after or "0", "after", integer=True)
        if nonce is not None and not _NONCE.fullmatch(nonce):
            raise BadRequest("nonce must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'")
        held = _number(wait or "0", "wait", integer=False)
        if held > MAX_WAIT:
            raise BadRequest(f"wait must be at most {MAX_WAIT:g} seconds")
        return cls(int(position), nonce, held)


def _number(text: str, name: str, *, integer: bool) -> float:
    pattern = r"[0-9]{1,18}" if integer else r"[0-9]{1,5}(\.[0-9]{1,3})?"
    if not re.fullmatch(pattern, text):
        kind = "a whole number" if integer else "a number of seconds"
        raise BadRequest(f"{name} must be {kind}, not {text[:40]!r}")
    return float(text) if not integer else int(text)


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revocation as the feed lists it."""

    seq: int
    serial_number: int
    reason: str
    revoked_at: datetime


@dataclass(frozen=True, slots=True)
class FeedRead:
    """What the store says after a position: the revocations up to ``head``, or start over."""

    head: int
    revocations: tuple[Revocation, ...]
    snapshot: bool


class RevocationFeed:
    """Reads, signs and holds feed requests for the authority's issuing CA (thread-safe)."""

    def __init__(self, authority: Authority, *, window: int = WINDOW) -> None:
        self._authority = authority
        self._window = window
        self._key = authority.issuer.private_key
        if not isinstance(self._key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise TypeError("the issuing CA key cannot sign a JWS")  # pragma: no cover
        self._alg = default_algorithm(self._key.public_key())
        header = {"alg": self._alg, "kid": authority.issuer_key_id, "typ": JWS_TYPE}
        self._header = b64url(json.dumps(header, separators=(",", ":")).encode())
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._waiting: dict[str, int] = {}
        authority.revocation_listeners.append(lambda _serial: self.wake())

    # ------------------------------------------------------------------ the store

    def read(self, after: int) -> FeedRead:
        """The revocations committed after ``after`` (at most :data:`MAX_EVENTS`)."""
        with self._authority.store.transaction(read_only=True) as session:
            head = int(session.scalar(select(AuditHead.last_entry_id)) or 0)
            # A new subscriber starts from the CRL, unless nothing was ever recorded (head 0).
            if (after <= 0 < head) or after > head or head - after > self._window:
                return FeedRead(head, (), snapshot=True)
            rows = session.execute(
                select(AuditEntry.id, AuditEntry.target, AuditEntry.at, AuditEntry.details)
                .where(
                    AuditEntry.id > after,
                    AuditEntry.id <= head,
                    AuditEntry.event == REVOKED_EVENT,
                )
                .order_by(AuditEntry.id)
                .limit(MAX_EVENTS + 1)
            ).all()
        if len(rows) > MAX_EVENTS:
            rows = rows[:MAX_EVENTS]
            head = rows[-1].id
        found = []
        for row in rows:
            try:
                serial = int(row.target or "", 16)
            except ValueError:
                continue
            reason = str((row.details or {}).get("reason", "unspecified"))
            found.append(Revocation(row.id, serial, reason, row.at))
        return FeedRead(head, tuple(found), snapshot=False)

    # ------------------------------------------------------------------ signing

    def sign(self, query: FeedQuery, read: FeedRead) -> bytes:
        """The signed answer (a compact JWS) to ``query``."""
        payload: dict[str, Any] = {
            "iss": self._authority.issuer_key_id,
            "after": query.after,
            "head": read.head,
            "revoked": [
                {
                    "seq": r.seq,
                    "serial": f"{r.serial_number:x}",
                    "reason": r.reason,
                    "at": r.revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                for r in read.revocations
            ],
        }
        if query.nonce is not None:
            payload["nonce"] = query.nonce
        if read.snapshot:
            payload["snapshot"] = SNAPSHOT_PATH
        body = b64url(json.dumps(payload, separators=(",", ":")).encode())
        signing_input = f"{self._header}.{body}".encode("ascii")
        signature = sign_message(self._key, self._alg, signing_input)  # type: ignore[arg-type]
        return signing_input + b"." + b64url(signature).encode("ascii")

    def answer_now(self, query: FeedQuery) -> bytes:
        """Read and sign without waiting (blocking: run it in a worker thread)."""
        return self.sign(query, self.read(query.after))

    # ------------------------------------------------------------------ holding

    def wake(self) -> None:
        """A revocation was committed somewhere: wake every held request (any thread)."""
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed
                pass

    async def follow(
        self,
        query: FeedQuery,
        run: Callable[[Callable[[], Any]], Awaitable[Any]],
        *,
        address: str,
    ) -> bytes:
        """The answer to ``query``, held up to ``query.wait`` seconds while there is nothing
        new. ``run`` runs blocking work off the event loop. At most
        :data:`MAX_WAITING_PER_ADDRESS` held requests per client address
        (:class:`TooManyRequests` past it).
        """
        if query.wait <= 0:
            answer: bytes = await run(lambda: self.answer_now(query))
            return answer
        with self._lock:
            held = self._waiting.get(address, 0)
            total = sum(self._waiting.values())
            if held >= MAX_WAITING_PER_ADDRESS or total >= MAX_WAITING:
                raise TooManyRequests(
                    f"at most {MAX_WAITING_PER_ADDRESS} waiting feed requests per address",
                    retry_after=1,
                )
            self._waiting[address] = held + 1
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._lock:
            self._waiters.add(waiter)
        try:
            deadline = loop.time() + query.wait
            while True:
                event.clear()
                read: FeedRead = await run(lambda: self.read(query.after))
                left = deadline - loop.time()
                if read.revocations or read.snapshot or left <= 0:
                    signed: bytes = await run(functools.partial(self.sign, query, read))
                    return signed
                try:
                    await asyncio.wait_for(event.wait(), min(left, RECHECK_SECONDS))
                except TimeoutError:
                    pass
        finally:
            with self._lock:
                self._waiters.discard(waiter)
                remaining = self._waiting.get(address, 1) - 1
                if remaining > 0:
                    self._waiting[address] = remaining
                else:
                    self._waiting.pop(address, None)


__all__ = [
    "JWS_TYPE",
    "MAX_EVENTS",
    "MAX_WAIT",
    "MEDIA_TYPE",
    "SNAPSHOT_PATH",
    "WINDOW",
    "FeedQuery",
    "FeedRead",
    "Revocation",
    "RevocationFeed",
]
