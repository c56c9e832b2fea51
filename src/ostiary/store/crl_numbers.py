"""CRL numbers: one counter per issuer that only ever grows (RFC 5280, section 5.2.3).

One statement does the work, ``INSERT ... ON CONFLICT DO UPDATE SET last_number =
last_number + 1 RETURNING last_number``: the database row lock makes a second replica wait
for the first to commit, then count on from its number. A number whose transaction rolls back
is handed out again, which is right as long as a CRL is published only after its transaction
committed.
"""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ostiary.store.models import CrlNumber

_FIRST_NUMBER = 1


def next_crl_number(session: Session, issuer_key_id: str) -> int:
    """Hand out the next CRL number of the issuer whose key identifier (hex) is given."""
    values = {"issuer_key_id": issuer_key_id, "last_number": _FIRST_NUMBER}
    increment = {"last_number": CrlNumber.last_number + 1}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg_insert = postgresql.insert(CrlNumber).values(values)
        number = session.execute(
            pg_insert.on_conflict_do_update(
                index_elements=[CrlNumber.issuer_key_id], set_=increment
            ).returning(CrlNumber.last_number)
        ).scalar_one()
    elif dialect == "sqlite":
        sqlite_insert = sqlite.insert(CrlNumber).values(values)
        number = session.execute(
            sqlite_insert.on_conflict_do_update(
                index_elements=[CrlNumber.issuer_key_id], set_=increment
            ).returning(CrlNumber.last_number)
        ).scalar_one()
    else:
        raise NotImplementedError(f"CRL numbers are not implemented for {dialect}")
    return int(number)
