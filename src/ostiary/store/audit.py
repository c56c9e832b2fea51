"""The audit log: one entry per decision, hash-chained so that tampering shows.

Each entry stores the hash of the entry before it (``prev_hash``; the first one refers to
:data:`GENESIS_HASH`) and its own ``hash``: SHA-256 (hex) of the RFC 8785 (JCS) canonical
JSON of::

    {"actor": ..., "at": "2025-01-31T12:00:00.000000Z", "details": {...}, "event": ...,
     "prev_hash": ..., "target": ..., "v": 1}

The row id is not hashed: ids may be renumbered by a dump and restore without breaking the
chain, and order comes from the chain itself. ``details`` is limited to JSON strings,
integers within ±(2**53 - 1), booleans, null, lists and objects, for which Python's JSON
output with keys sorted by UTF-16 code units is exactly JCS, so any JCS library can
re-check a hash.

The single ``audit_head`` row holds the newest entry's id and hash and is updated in the same
transaction as each append, so that deleting the last entries shows too. Appends are
serialized so the chain stays linear: on PostgreSQL with a transaction-scoped advisory lock
(held until the caller's transaction ends, so append last), on SQLite by ``BEGIN IMMEDIATE``.

This detects edits by anyone who cannot also rewrite the rest of the chain and the head; to
detect even that, copy the head hash somewhere the database's owner cannot write.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import Connection, bindparam, insert, literal, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ostiary.core.errors import AuditUnavailable
from ostiary.store import _locks
from ostiary.store._faults import database_unreachable
from ostiary.store._prepared import Prepared
from ostiary.store.models import AuditEntry, AuditHead

#: ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64
#: The version of the hashed document; bump it if the canonical form ever changes.
HASH_VERSION = 1
#: The id of the single ``audit_head`` row.
HEAD_ID = 1

_EVENT = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_MAX_SAFE_INTEGER = 2**53 - 1
#: Detail keys that name a secret; refusing them catches a careless caller early.
_SECRET_KEYS = frozenset(
    {"password", "passphrase", "secret", "client_secret", "private_key", "token", "pin"}
)
_STREAM_BATCH = 2000


class AuditFault(enum.StrEnum):
    """Why verification failed."""

    EDITED = "edited"
    CHAIN_BROKEN = "inserted or deleted (chain broken)"
    HEAD_MISMATCH = "inserted or deleted at the end (head mismatch)"


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """The outcome of :meth:`AuditLog.verify`.

    ``checked`` counts the entries found sound before the first fault. ``first_bad_id`` is
    the entry where the fault shows (for a deletion, the entry after the gap); None when the
    fault is at the end of the log.
    """

    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: AuditFault | None = None


def entry_hash(
    *,
    at: datetime,
    event: str,
    actor: str | None,
    target: str | None,
    details: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """SHA-256 (hex) of an entry's canonical form (see the module docstring)."""
    return _entry_hash(
        canonical_json(details),
        at=at,
        event=event,
        actor=actor,
        target=target,
        prev_hash=prev_hash,
    )


def _entry_hash(
    canonical_details: str,
    *,
    at: datetime,
    event: str,
    actor: str | None,
    target: str | None,
    prev_hash: str,
) -> str:
    """:func:`entry_hash` with the details already in canonical form (made once per append).

    The document's keys are ASCII, so their canonical order is their plain order, and its
    other values are strings, null or an integer, whose JSON is already canonical: the
    document is assembled as text around the details.
    """
    document = (
        f'{{"actor":{_scalar(actor)},"at":{_scalar(_format_time(at))},'
        f'"details":{canonical_details},"event":{_scalar(event)},'
        f'"prev_hash":{_scalar(prev_hash)},"target":{_scalar(target)},"v":{HASH_VERSION}}}'
    )
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def _scalar(value: str | None) -> str:
    """JSON of a string or null, as ``json.dumps(value, ensure_ascii=False)`` writes it."""
    return "null" if value is None else encode_basestring(value)


#: One encoder for every call: ``json.dumps`` with options makes a new one each time.
_CANONICAL_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def canonical_json(value: Any) -> str:
    """RFC 8785 canonical JSON of ``value`` (floats and unsafe integers are refused)."""
    return _CANONICAL_ENCODER.encode(_jcs_ordered(value))


class AuditLog:
    """The audit log, appended to and verified within one session's transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def append(
        self,
        event: str,
        *,
        at: datetime,
        actor: str | None = None,
        target: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Add one entry after the newest one, in the caller's transaction.

        ``details`` must not hold secrets (keys such as ``password`` or ``token`` are refused
        with :class:`ValueError`, a bug in the caller). The advisory lock queues appenders
        even before the head row exists; the head row lock makes a transaction at a stricter
        isolation level fail rather than fork the chain.
        """
        _locks.lock_for_transaction(self._session, _locks.AUDIT_APPEND)
        head = self._session.get(AuditHead, HEAD_ID, with_for_update=True, populate_existing=True)
        prev_hash = head.hash if head is not None else GENESIS_HASH
        entry = AuditEntry(
            **new_entry_values(
                event, at=at, actor=actor, target=target, details=details, prev_hash=prev_hash
            )
        )
        with refused_audit():
            self._session.add(entry)
            self._session.flush()
            if head is None:
                self._session.add(AuditHead(id=HEAD_ID, last_entry_id=entry.id, hash=entry.hash))
            else:
                head.last_entry_id = entry.id
                head.hash = entry.hash
            self._session.flush()
        return entry

    def verify(self) -> AuditVerification:
        """Walk the chain from the first entry and compare its end with the head.

        Entries are streamed in batches: about 50 µs an entry, 20,000 in a second. Appends
        that commit while this runs are followed, not reported as a mismatch.
        """
        expected_prev = GENESIS_HASH
        last_id = 0
        checked = 0
        first_pass = True
        while True:
            query = select(
                AuditEntry.id,
                AuditEntry.at,
                AuditEntry.event,
                AuditEntry.actor,
                AuditEntry.target,
                AuditEntry.details,
                AuditEntry.prev_hash,
                AuditEntry.hash,
            ).order_by(AuditEntry.id)
            if not first_pass:
                query = query.where(AuditEntry.id > last_id)
            found_new = False
            result = self._session.execute(query.execution_options(yield_per=_STREAM_BATCH))
            try:
                for row in result:
                    found_new = True
                    if row.prev_hash != expected_prev:
                        return AuditVerification(False, checked, row.id, AuditFault.CHAIN_BROKEN)
                    recomputed = entry_hash(
                        at=row.at,
                        event=row.event,
                        actor=row.actor,
                        target=row.target,
                        details=row.details,
                        prev_hash=row.prev_hash,
                    )
                    if recomputed != row.hash:
                        return AuditVerification(False, checked, row.id, AuditFault.EDITED)
                    expected_prev, last_id = row.hash, row.id
                    checked += 1
            finally:
                result.close()
            head = self._session.execute(
                select(AuditHead.last_entry_id, AuditHead.hash).where(AuditHead.id == HEAD_ID)
            ).one_or_none()
            if head is None:
                # No head row: sound only if nothing was ever appended (schema from create_all).
                if checked == 0:
                    return AuditVerification(True, 0)
            elif head.hash == expected_prev and head.last_entry_id == last_id:
                return AuditVerification(True, checked)
            elif head.last_entry_id > last_id and (found_new or first_pass):
                first_pass = False
                continue  # entries were appended while we read: check those too
            return AuditVerification(False, checked, None, AuditFault.HEAD_MISMATCH)


# Built once: making a Core statement per batch costs more than running it. Run through
# Prepared: on SQLite, by the driver directly (store/_prepared.py).
_INSERT_ENTRY = Prepared(insert(AuditEntry))
_LOCK_HEAD = Prepared(select(AuditHead.hash).where(AuditHead.id == HEAD_ID).with_for_update())
_ENTRY_ID = select(AuditEntry.id).where(AuditEntry.hash == bindparam("new_hash"))
_INSERT_HEAD = Prepared(
    insert(AuditHead).from_select(
        ["id", "last_entry_id", "hash"],
        select(literal(HEAD_ID), AuditEntry.id, AuditEntry.hash).where(
            AuditEntry.hash == bindparam("new_hash")
        ),
    )
)
_UPDATE_HEAD = Prepared(
    update(AuditHead)
    .where(AuditHead.id == HEAD_ID)
    .values(last_entry_id=_ENTRY_ID.scalar_subquery(), hash=bindparam("new_hash"))
)


class AuditChain:
    """Appends to the audit log with Core statements, for many entries in one transaction.

    The write path of :mod:`ostiary.store.group_commit`: the lock is taken and the head read
    once, each entry is checked, hashed and chained to the previous one in memory as it is
    appended, and :meth:`close`, which must run before the transaction commits, inserts
    them all (one ``executemany``: one statement per row, in order, so ids follow the chain)
    and points the head at the last one, found by its hash. Entries are exactly those
    :class:`AuditLog` writes.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._locked = False
        self._head_exists = False
        self._prev_hash = GENESIS_HASH
        self._entries: list[dict[str, Any]] = []

    def lock(self) -> None:
        """Take the append lock and read the head (once; :meth:`append` does it if needed)."""
        if self._locked:
            return
        _locks.lock_for_transaction(self._connection, _locks.AUDIT_APPEND)
        rows = _LOCK_HEAD.execute(self._connection, {})
        head = rows[0][0] if rows else None
        self._head_exists = head is not None
        self._prev_hash = head if head is not None else GENESIS_HASH
        self._locked = True

    def append(
        self,
        event: str,
        *,
        at: datetime,
        actor: str | None = None,
        target: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Add one entry after the previous one (same checks as :meth:`AuditLog.append`)."""
        self.lock()
        values = new_entry_values(
            event, at=at, actor=actor, target=target, details=details, prev_hash=self._prev_hash
        )
        self._entries.append(values)
        self._prev_hash = values["hash"]

    def close(self) -> None:
        """Insert the appended entries and point the head at the newest (nothing if none)."""
        if not self._entries:
            return
        with refused_audit():
            _INSERT_ENTRY.execute(self._connection, self._entries)
            self._entries = []
            head = {"new_hash": self._prev_hash}
            (_UPDATE_HEAD if self._head_exists else _INSERT_HEAD).execute(self._connection, head)
        self._head_exists = True


@contextmanager
def refused_audit() -> Iterator[None]:
    """Fail closed: a database refusing an audit entry (a full disk, a trigger, a broken
    chain) is :class:`AuditUnavailable`, so the transaction that would have been recorded is
    rolled back and the caller told to try later; an unreachable database stays what it is.
    """
    try:
        yield
    except DBAPIError as error:
        if database_unreachable(error):
            raise
        raise AuditUnavailable(
            "the audit log cannot be written, so nothing was done; try again later",
            retry_after=5,
        ) from error


def new_entry_values(
    event: str,
    *,
    at: datetime,
    actor: str | None,
    target: str | None,
    details: Mapping[str, Any] | None,
    prev_hash: str,
) -> dict[str, Any]:
    """The column values of a new entry chained to ``prev_hash``, checked and hashed."""
    if not _EVENT.fullmatch(event):
        raise ValueError(f"audit event {event!r} is not like 'certificate.issued'")
    clean_details, canonical_details = _clean_details(details or {})
    at = _utc(at)
    return {
        "at": at,
        "event": event,
        "actor": actor,
        "target": target,
        "details": clean_details,
        "prev_hash": prev_hash,
        "hash": _entry_hash(
            canonical_details,
            at=at,
            event=event,
            actor=actor,
            target=target,
            prev_hash=prev_hash,
        ),
    }


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("audit times must be timezone-aware")
    return at.astimezone(UTC)


def _format_time(at: datetime) -> str:
    return _utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clean_details(details: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """``details`` as they will read back from the database (checked for secret keys), and
    their canonical JSON.
    """
    text = canonical_json(dict(details))
    clean: dict[str, Any] = json.loads(text)
    _refuse_secret_keys(clean)
    return clean, text


def _refuse_secret_keys(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key.lower() in _SECRET_KEYS:
                raise ValueError(f"audit details must not carry secrets (key {key!r})")
            _refuse_secret_keys(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_secret_keys(item)


def _jcs_ordered(value: Any) -> Any:
    """Order object keys as RFC 8785 does (by UTF-16 code units) and check value types.

    Only types whose JSON form Python and JCS agree on are let through.
    """
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
        if all(key.isascii() for key in value):
            ordered = sorted(value)  # the same order as by UTF-16 code units, found faster
        else:
            ordered = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return {key: _jcs_ordered(value[key]) for key in ordered}
    if isinstance(value, list | tuple):
        return [_jcs_ordered(item) for item in value]
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is too large for canonical JSON; use a string")
        return value
    raise TypeError(f"{type(value).__name__} is not allowed in audit details")
