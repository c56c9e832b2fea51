"""PostgreSQL connections that give up: a database that stops answering is an error in
bounded time, never a thread blocked for good.

libpq waits for an answer as long as the socket stays open. A database host that vanished
without closing its connections (power loss, a network partition, a firewall forgetting the
flow), or a backend stuck after its postmaster was killed, leaves every query on those
connections waiting forever, and with them the group-commit leader and every request queued
behind it. So:

- connecting gives up after :data:`CONNECT_TIMEOUT` seconds (libpq ``connect_timeout``);
- each round trip on an open connection (a query and its answer, a commit) gives up after
  :data:`ROUND_TRIP_TIMEOUT` seconds: psycopg's own wait, given a deadline. The connection
  is then closed (its state is unknown), so the pool throws it away, and the caller gets an
  ``OperationalError``, which the server answers with 503 ``store-unavailable``;
- TCP keepalives find a dead peer of an idle pooled connection;
- on the server, a session idle in a transaction is ended after
  :data:`IDLE_IN_TRANSACTION_TIMEOUT` (a client that vanished mid-transaction would hold
  the audit lock, and so every replica's issuance, until then).

A statement that legitimately runs longer than a round trip allows would fail too: none of
Ostiary's does (the largest, a CRL of a million entries, reads in a few seconds).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors

#: Seconds to open a connection.
CONNECT_TIMEOUT = 3
#: Seconds one round trip on an open connection may take.
ROUND_TRIP_TIMEOUT = 8.0
#: Milliseconds a server session may stay idle inside a transaction.
IDLE_IN_TRANSACTION_TIMEOUT = 60_000


class DeadlineConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait for the server ends within a deadline."""

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        try:
            return super().wait(gen, interval, ROUND_TRIP_TIMEOUT if timeout is None else timeout)
        except errors._WaitTimeout:
            # Mid-operation: nothing more can be said on this connection; the pool sees it
            # closed and discards it.
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"the database did not answer within {ROUND_TRIP_TIMEOUT:g} s"
            ) from None


def connect_arguments() -> dict[str, Any]:
    """Libpq parameters of every Ostiary connection to PostgreSQL."""
    return {
        "connect_timeout": CONNECT_TIMEOUT,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }


def connect(_dialect: Any, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]) -> Any:
    """SQLAlchemy's ``do_connect``: a :class:`DeadlineConnection` with the server-side
    idle-in-transaction limit added to the URL's own ``options``.
    """
    options = cparams.get("options", "")
    cparams = {
        **cparams,
        "options": f"{options} -c idle_in_transaction_session_timeout="
        f"{IDLE_IN_TRANSACTION_TIMEOUT}".strip(),
    }
    return DeadlineConnection.connect(*cargs, **cparams)
