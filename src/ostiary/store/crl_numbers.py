"""CRL numbers: one counter per issuer that only ever grows (RFC 5280, section 5.2.3).

One statement does the work, ``INSERT ... ON CONFLICT DO UPDATE SET last_number =
last_number + 1 RETURNING last_number``: the database row lock makes a second replica wait
for the first to commit, then count on from its number. A number whose transaction rolls back
is handed out again, which is right as long as a CRL is published only after its transaction
committed.

The newest CRL of each issuer is kept too (:func:`save_latest_crl`): a replica serves the
highest-numbered one any replica built, so that a relying party that asks one replica after
another never sees the number go backwards.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, defer

from ostiary.store.models import CrlNumber, LatestCrl

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


def latest_crl(session: Session, issuer_key_id: str, *, with_der: bool = True) -> LatestCrl | None:
    """The newest CRL any replica published for the issuer (``der`` deferred unless asked)."""
    query = select(LatestCrl).where(LatestCrl.issuer_key_id == issuer_key_id)
    if not with_der:
        query = query.options(defer(LatestCrl.der))
    return session.scalar(query)


def save_latest_crl(session: Session, crl: LatestCrl) -> bool:
    """Keep ``crl`` as the issuer's newest, unless one with a number as high is kept already
    (then False: the caller serves that one). One conditional statement, so that two
    replicas racing cannot put an older number back.
    """
    values = {
        "issuer_key_id": crl.issuer_key_id,
        "number": crl.number,
        "generation": crl.generation,
        "this_update": crl.this_update,
        "next_update": crl.next_update,
        "der": crl.der,
    }
    changed = {key: value for key, value in values.items() if key != "issuer_key_id"}
    dialect = session.get_bind().dialect.name
    insert_of = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert_of(LatestCrl).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[LatestCrl.issuer_key_id],
        set_=changed,
        where=LatestCrl.number < crl.number,
    )
    result = session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]
