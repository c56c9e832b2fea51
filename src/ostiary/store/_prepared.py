"""Core statements run on SQLite's driver directly, for the group commit's write path.

A group-commit batch runs five statements (the audit head read, the tokens spent, the
certificates, the audit entries, the head moved) while it holds SQLite's one write lock,
which every worker process waits for. Through SQLAlchemy's ``Connection.execute`` each cost
50-80 µs of Python (compiled-cache lookup, execution context, events, result set-up) against
5-15 µs in sqlite3 itself: most of a small batch's time under the lock.

:class:`Prepared` keeps what SQLAlchemy's execution works out per call, once per statement
and set of parameter names: the SQL SQLAlchemy compiles for the dialect, the order of its
parameters, and each parameter's bind processor (the column type's own conversion: a
``datetime`` to SQLite's text form, a dict to JSON through the engine's serializer). Per call
it only converts the values and hands them to the driver's cursor. So the SQL and the values
stored are exactly SQLAlchemy's; only the call path is shorter. A driver error is raised as
SQLAlchemy's (:class:`~sqlalchemy.exc.IntegrityError` for a duplicate), as ``execute`` would.

Other dialects (PostgreSQL) go through ``Connection.execute`` unchanged. Rows come back as
the driver returns them, without result processing: read only columns that need none
(text, integers), or build a SELECT with ``typed=True``, whose rows get each column's
result processor (a datetime from SQLite's text, a list from JSON), as a ``Result`` would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Executable, Select
from sqlalchemy.sql.compiler import SQLCompiler

Parameters = Mapping[str, Any]
_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One statement compiled for SQLite with one set of parameter names."""

    sql: str
    compiled: SQLCompiler
    #: The parameters in the SQL's order, each with its type's bind processor.
    binds: tuple[tuple[str, _Processor], ...]
    returns_rows: bool
    #: Per column of a ``typed`` SELECT, its type's result processor; None: rows as read.
    results: tuple[_Processor, ...] | None

    @classmethod
    def of(
        cls, statement: Executable, dialect: Dialect, keys: Sequence[str], *, typed: bool = False
    ) -> _Compiled:
        assert isinstance(statement, ClauseElement)
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler) and compiled.positiontup is not None
        if compiled.insert_prefetch or compiled.update_prefetch:
            # Column defaults computed in Python: SQLAlchemy's execution fills them in.
            raise ValueError("a prepared statement must be given every column it writes")
        binds = tuple(
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup
        )
        writes = compiled.isinsert or compiled.isupdate or compiled.isdelete
        results = None
        if isinstance(statement, Select) and typed:
            results = tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in statement.selected_columns
            )
        returns_rows = bool(compiled.returning) or not writes
        return cls(compiled.string, compiled, binds, returns_rows, results)

    def typed(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        if self.results is None:
            return row
        return tuple(
            value if processor is None else processor(value)
            for value, processor in zip(row, self.results, strict=True)
        )

    def values(self, parameters: Parameters) -> tuple[Any, ...]:
        bound = self.compiled.construct_params(parameters)  # with the statement's own literals
        return tuple(
            bound[name] if processor is None else processor(bound[name])
            for name, processor in self.binds
        )


class Prepared:
    """A Core statement to run many times on the write path (see the module docstring).

    Build it once, at import: it compiles lazily, per set of parameter names.
    """

    __slots__ = ("_compiled", "_typed", "statement")

    def __init__(self, statement: Executable, *, typed: bool = False) -> None:
        if typed and not isinstance(statement, Select):
            raise ValueError("typed rows are for a SELECT")
        self.statement = statement
        self._typed = typed
        self._compiled: dict[tuple[str, ...], _Compiled] = {}

    def execute(
        self, connection: Connection, parameters: Sequence[Parameters] | Parameters
    ) -> list[tuple[Any, ...]]:
        """Run with one set of parameters (a mapping; none: ``{}``) or many (a non-empty
        sequence of mappings with the same names); the rows it returns (RETURNING, SELECT),
        as tuples.
        """
        many = [parameters] if isinstance(parameters, Mapping) else list(parameters)
        if not many:
            raise ValueError("no parameter sets: nothing to run")
        if connection.dialect.name != "sqlite":
            result = connection.execute(self.statement, many[0] if len(many) == 1 else many)
            return [tuple(row) for row in result] if result.returns_rows else []
        keys = tuple(many[0])
        compiled = self._compiled.get(keys)
        if compiled is None:
            compiled = self._compiled[keys] = _Compiled.of(
                self.statement, connection.dialect, keys, typed=self._typed
            )
        rows = [compiled.values(one) for one in many]
        driver = connection.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        cursor = driver.cursor()
        try:
            if not compiled.returns_rows:
                cursor.executemany(compiled.sql, rows)
                return []
            returned: list[tuple[Any, ...]] = []
            for row in rows:  # sqlite3 returns no rows from executemany
                returned += cursor.execute(compiled.sql, row).fetchall()
            return returned if compiled.results is None else [compiled.typed(r) for r in returned]
        except sqlite3.Error as error:
            raise DBAPIError.instance(
                compiled.sql, rows, error, sqlite3.Error, dialect=connection.dialect
            ) from error
        finally:
            cursor.close()


__all__ = ["Prepared"]
