"""Column types that keep Python values exactly as they went in, on SQLite and PostgreSQL.

SQLite has no time zone type: a plain ``DateTime`` comes back naive. :class:`UTCDateTime`
refuses naive values on the way in and always returns aware UTC datetimes, so comparisons
with ``now=`` values never mix naive and aware times.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Integer
from sqlalchemy.types import TypeDecorator

#: Primary keys: 64-bit on PostgreSQL, ``INTEGER PRIMARY KEY`` (the rowid alias) on SQLite,
#: which is the only column type SQLite auto-increments.
BigIntegerPrimaryKey = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime``; naive values are a bug and are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; pass an aware UTC time")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite stores text; keep one canonical naive-UTC form so ordering is correct.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: One encoder for every value: ``json.dumps`` with options makes a new one each time.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps_json(value: Any) -> str:
    """JSON as stored in the database: UTF-8 text as is, no NaN, compact."""
    return _ENCODER.encode(value)
