"""The reads of a SCEP request on the driver (``read_request_rows``): the same values as
the ORM reads them, and a challenge only for the provisioner it was made for.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ostiary.store import (
    ChallengeRow,
    ScepRepository,
    ScepTransaction,
    Store,
    TransactionState,
    read_request_rows,
)


def test_the_transaction_and_the_challenge_read_as_the_orm_reads_them(
    store: Store, now: datetime
) -> None:
    with store.transaction() as session:
        scep = ScepRepository(session)
        scep.add_challenge("secret", provisioner="devices", subject="CN=d", sans=["dns:d.test"],
                           now=now, expires_at=now + timedelta(hours=1))  # fmt: skip
        row = ScepTransaction(provisioner="devices", transaction_id="t1", csr_sha256="ab" * 32,
                              created_at=now, serial="0a")  # fmt: skip
        scep.add_transaction(row)
    engine = store.read_engine
    transaction, challenge = read_request_rows(engine, "devices", "t1", "secret")
    assert transaction == TransactionState("ab" * 32, None, "0a", None)
    assert challenge == ChallengeRow(
        "devices", challenge.challenge_sha256 if challenge else "", "CN=d", ["dns:d.test"],
        now + timedelta(hours=1), None,
    )  # fmt: skip
    with store.transaction(read_only=True) as session:
        orm = ScepRepository(session).find_challenge("devices", "secret")
        assert orm is not None and challenge is not None
        assert (orm.challenge_sha256, orm.expires_at, orm.used_at, orm.sans) == (
            challenge.challenge_sha256, challenge.expires_at, None, ["dns:d.test"],
        )  # fmt: skip
    assert read_request_rows(engine, "users", "t1", "secret") == (None, None)
    assert read_request_rows(engine, "devices", "t2", "wrong") == (None, None)
    assert read_request_rows(engine, "devices", "t1", None) == (transaction, None)
