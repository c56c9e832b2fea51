"""PostgreSQL advisory locks that serialize work across replicas sharing one database.

Each lock key is derived from a name (first 8 bytes of its SHA-256, as a signed 64-bit
integer), so keys are stable, readable in code and unlikely to collide with another
application's. On SQLite nothing is needed: write transactions start with ``BEGIN IMMEDIATE``
and so already run one at a time.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session


def lock_key(name: str) -> int:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


AUDIT_APPEND = lock_key("ostiary.store.audit.append")
MIGRATE = lock_key("ostiary.store.migrate")


def lock_for_transaction(bind: Session | Connection, key: int) -> None:
    """Hold advisory lock ``key`` until the current transaction ends (PostgreSQL only)."""
    if _dialect_name(bind) == "postgresql":
        bind.execute(select(func.pg_advisory_xact_lock(key)))


def _dialect_name(bind: Session | Connection) -> str:
    if isinstance(bind, Session):
        return bind.get_bind().dialect.name
    return bind.dialect.name
