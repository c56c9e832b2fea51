"""Which database errors mean "cannot be reached now" (503, try again) rather than a refusal
or a bug; shared by the group commit, the audit log and the server's error mapping.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout


def database_unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached now, rather than refusing
    something: a driver's ``OperationalError`` (refused, reset, timed out, shutting down),
    no pooled connection free in time, or any driver error on a connection found broken.
    """
    if isinstance(error, OperationalError | PoolTimeout):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


__all__ = ["database_unreachable"]
