"""The ACME writes on the hot path, as group-commit units (:meth:`ostiary.store.Store.write`),
and the one read every signed request makes (:func:`read_account_row`).

Every ACME request spends its nonce and records the next; orders are placed, challenges
started, validations recorded and orders finalized at the rate clients poll. Each of these
is a unit that shares its transaction, and its durable commit, with the writes of concurrent
requests (:mod:`ostiary.store.group_commit`), in Core statements (prepared on SQLite) rather
than the ORM. Single use holds as before: each conditional ``UPDATE``/``DELETE`` returns the
row it changed, so exactly one caller sees it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, or_, select, update

from ostiary.store._prepared import Prepared
from ostiary.store.acme import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeNonce, AcmeOrder
from ostiary.store.group_commit import Batch
from ostiary.store.models import Base

#: Spends one nonce if it is there and unexpired; the row it deleted, or none.
_SPEND_NONCE = Prepared(
    delete(AcmeNonce)
    .where(AcmeNonce.nonce == bindparam("nonce"), AcmeNonce.expires_at > bindparam("now"))
    .returning(AcmeNonce.nonce)
)
#: The same, only while the account that signed the request is valid with its key.
_SPEND_NONCE_OF_ACCOUNT = Prepared(
    delete(AcmeNonce)
    .where(
        AcmeNonce.nonce == bindparam("nonce"),
        AcmeNonce.expires_at > bindparam("now"),
        select(AcmeAccount.id)
        .where(
            AcmeAccount.id == bindparam("account_id"),
            AcmeAccount.status == "valid",
            AcmeAccount.thumbprint == bindparam("thumbprint"),
        )
        .exists(),
    )
    .returning(AcmeNonce.nonce)
)


#: The state of the account that signed a request, read where its nonce is spent.
_ACCOUNT_STATE = Prepared(
    select(AcmeAccount.status, AcmeAccount.thumbprint).where(
        AcmeAccount.id == bindparam("account_id")
    )
)

#: What :func:`exchange_nonce` found: the nonce spent, the nonce not there, the account not
#: (or no longer) valid with the key the request was verified with.
SPENT, BAD_NONCE, ACCOUNT_CHANGED = "spent", "bad-nonce", "account-changed"


def exchange_nonce(
    spent: str,
    fresh: str,
    *,
    now: datetime,
    expires_at: datetime,
    account: tuple[str, str] | None = None,
) -> Any:
    """A group-commit unit (:meth:`ostiary.store.Store.write`): spend the nonce ``spent``
    and record ``fresh`` in its place, in one transaction shared with concurrent requests'
    (one durable commit for all of them). :data:`SPENT` for exactly one caller of a nonce;
    :data:`BAD_NONCE` if it was unknown, used or expired, and then nothing is recorded.

    ``account`` is ``(id, thumbprint)`` of the account whose key verified the request: unless
    that account is valid with that key in this very transaction (a replica may have
    deactivated it or changed its key), the answer is :data:`ACCOUNT_CHANGED` and nothing is
    spent or recorded.
    """

    def unit(batch: Batch) -> str:
        connection = batch.connection
        if account is None:
            if not _SPEND_NONCE.execute(connection, {"nonce": spent, "now": now}):
                return BAD_NONCE
        else:
            account_id, thumbprint = account
            parameters = {"nonce": spent, "now": now, "account_id": account_id}
            parameters["thumbprint"] = thumbprint
            if not _SPEND_NONCE_OF_ACCOUNT.execute(connection, parameters):
                # Nothing spent: say why (the account is checked first, as a request with a
                # changed account is verified again and a bad nonce is not).
                state = _ACCOUNT_STATE.execute(connection, {"account_id": account_id})
                if not state or tuple(state[0]) != ("valid", thumbprint):
                    return ACCOUNT_CHANGED
                return BAD_NONCE
        batch.insert(AcmeNonce, {"nonce": fresh, "expires_at": expires_at})
        return SPENT

    return unit


#: The account a ``kid`` names, as a request needs it.
_READ_ACCOUNT = Prepared(
    select(
        AcmeAccount.provisioner, AcmeAccount.status, AcmeAccount.thumbprint, AcmeAccount.jwk
    ).where(AcmeAccount.id == bindparam("account_id"))
)


def read_account_row(engine: Engine, account_id: str) -> tuple[str, str, str, Any] | None:
    """``(provisioner, status, thumbprint, jwk)`` of the account ``account_id``, in one
    indexed query outside any ORM session; the JWK as the driver returns it (JSON text on
    SQLite, a dict on PostgreSQL). ``engine`` should be a read-only one
    (:func:`ostiary.store.database.read_only_engine`).
    """
    with engine.connect() as connection:
        rows = _READ_ACCOUNT.execute(connection, {"account_id": account_id})
    if not rows:
        return None
    provisioner, status, thumbprint, jwk = rows[0]
    return str(provisioner), str(status), str(thumbprint), jwk


#: Moves a ready order to valid with its certificate's serial; the row, or none.
_ORDER_ISSUED = Prepared(
    update(AcmeOrder)
    .where(AcmeOrder.id == bindparam("order_id"), AcmeOrder.status == "ready")
    .values(status="valid", serial=bindparam("serial"))
    .returning(AcmeOrder.id)
)


def mark_order_issued(batch: Batch, order_id: str, serial: str) -> bool:
    """In an issuance's transaction: the ready order ``order_id`` becomes valid with
    ``serial``. True for exactly one caller; False if the order was not ready (finalized
    meanwhile, or invalid), and then the caller must not let the issuance commit.
    """
    return bool(_ORDER_ISSUED.execute(batch.connection, {"order_id": order_id, "serial": serial}))


def insert_rows(rows: list[Base]) -> Any:
    """A group-commit unit inserting new ACME rows (an order, its authorizations and
    challenges, in that order), every column given.
    """

    def unit(batch: Batch) -> None:
        for row in rows:
            table = type(row).__table__
            batch.insert(type(row), {c.key: getattr(row, c.key) for c in table.columns})

    return unit


def _set(model: Any, key: str, *conditions: Any, **values: Any) -> Prepared:
    """``UPDATE model SET values WHERE id = :key AND conditions``, built once."""
    return Prepared(update(model).where(model.id == bindparam(key), *conditions).values(**values))


#: A validation's outcome (:func:`outcome_unit`).
_CHALLENGE_INVALID = _set(AcmeChallenge, "challenge_id", status="invalid", error=bindparam("error"))
_AUTHORIZATION_INVALID = _set(AcmeAuthorization, "authorization_id", status="invalid")
_ORDER_INVALID = _set(
    AcmeOrder,
    "order_id",
    or_(AcmeOrder.status == "pending", AcmeOrder.status == "ready"),
    status="invalid",
    error=bindparam("error"),
)
_CHALLENGE_VALID = _set(
    AcmeChallenge, "challenge_id", status="valid", validated_at=bindparam("now")
)
_AUTHORIZATION_VALID = _set(
    AcmeAuthorization,
    "authorization_id",
    status="valid",
    attested_spki=bindparam("attested_spki"),
    hardware_key=bindparam("hardware_key"),
)
_AUTHORIZATIONS_LEFT = Prepared(
    select(func.count())
    .select_from(AcmeAuthorization)
    .where(AcmeAuthorization.order_id == bindparam("order_id"), AcmeAuthorization.status != "valid")
)
_ORDER_READY = _set(AcmeOrder, "order_id", AcmeOrder.status == "pending", status="ready")


def outcome_unit(
    challenge_id: str,
    authorization_id: str,
    order_id: str,
    result: Any,
    error: dict[str, Any] | None,
    *,
    now: datetime,
) -> Any:
    """A group-commit unit recording a validation's outcome: with ``result`` (a
    ValidationResult) the challenge and its authorization become valid, and the order ready
    once none of its authorizations is left; without, the challenge, the authorization and
    the order become invalid with ``error`` at once.
    """

    def unit(batch: Batch) -> None:
        connection = batch.connection
        if result is None:
            _CHALLENGE_INVALID.execute(connection, {"challenge_id": challenge_id, "error": error})
            _AUTHORIZATION_INVALID.execute(connection, {"authorization_id": authorization_id})
            _ORDER_INVALID.execute(connection, {"order_id": order_id, "error": error})
            return
        _CHALLENGE_VALID.execute(connection, {"challenge_id": challenge_id, "now": now})
        _AUTHORIZATION_VALID.execute(
            connection,
            {
                "authorization_id": authorization_id,
                "attested_spki": result.attested_spki_der,
                "hardware_key": result.hardware_key,
            },
        )
        left = _AUTHORIZATIONS_LEFT.execute(connection, {"order_id": order_id})
        if left[0][0] == 0:
            _ORDER_READY.execute(connection, {"order_id": order_id})

    return unit


#: Moves a pending challenge to processing; the row, or none.
_START_CHALLENGE = Prepared(
    update(AcmeChallenge)
    .where(AcmeChallenge.id == bindparam("challenge_id"), AcmeChallenge.status == "pending")
    .values(status="processing")
    .returning(AcmeChallenge.id)
)


def start_challenge_unit(challenge_id: str) -> Any:
    """A group-commit unit: the pending challenge becomes processing. True for exactly one
    caller (it starts the validation).
    """

    def unit(batch: Batch) -> bool:
        return bool(_START_CHALLENGE.execute(batch.connection, {"challenge_id": challenge_id}))

    return unit


def record_nonce(fresh: str, *, expires_at: datetime) -> Any:
    """A group-commit unit recording a nonce handed out on its own (``newNonce``)."""

    def unit(batch: Batch) -> None:
        batch.insert(AcmeNonce, {"nonce": fresh, "expires_at": expires_at})

    return unit


__all__ = [
    "ACCOUNT_CHANGED",
    "BAD_NONCE",
    "SPENT",
    "exchange_nonce",
    "insert_rows",
    "mark_order_issued",
    "outcome_unit",
    "read_account_row",
    "record_nonce",
    "start_challenge_unit",
]
