"""Authorizations and challenges (RFC 8555 sections 7.5, 8): read, deactivate, validate.

A challenge POST moves the challenge from ``pending`` to ``processing`` by one conditional
``UPDATE`` (of two replicas, one starts the validation); the validator runs in the
background (:func:`run_validation`). The POST waits for it a little
(:attr:`ValidationSettings.answer_wait`, one second unless configured): a validation that
ends by then is answered as it ended (:func:`settled`, the challenge as a poll now shows
it, section 7.5.1), one that does not is answered ``processing`` with ``Retry-After``
(section 8.2) and goes on. Its outcome is final: success makes the authorization valid (and
the order ready once all are), a failure makes the challenge, its authorization *and* its
order invalid at once, so that a client stops polling and starts over.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any

from cryptography import x509
from sqlalchemy import update

from ostiary.acme.accounts import Authenticated
from ostiary.acme.errors import malformed, problem_document, unauthorized
from ostiary.acme.resources import (
    Answer,
    Urls,
    authorization_json,
    authorization_status,
    challenge_json,
    rfc3339,
)
from ostiary.acme.validation import (
    VALIDATORS,
    ChallengeContext,
    ChallengeFailed,
    ValidationResult,
    ValidationSettings,
)
from ostiary.core.errors import NotFound, OstiaryError
from ostiary.provisioners.acme import AcmeProvisioner
from ostiary.provisioners.enrollment import spend_client_id
from ostiary.store import (
    AcmeAuthorization,
    AcmeOrder,
    AcmeRepository,
    Store,
)
from ostiary.store.acme_reads import (
    authorization_with_challenges,
    challenge_row,
    challenge_with_authorization,
)
from ostiary.store.acme_writes import outcome_unit, start_challenge_unit
from ostiary.store.group_commit import Batch

logger = logging.getLogger("ostiary.acme")

#: Seconds a client is asked to wait before polling a challenge or order again.
RETRY_AFTER = 1


def _owned(repository: AcmeRepository, authz_id: str, auth: Authenticated) -> AcmeAuthorization:
    authz = repository.authorization(authz_id)
    if authz.account_id != auth.account_id:
        raise unauthorized("this authorization belongs to another account")
    return authz


def read_authorization(
    store: Store, urls: Urls, authz_id: str, auth: Authenticated, *, now: datetime
) -> Answer:
    """POST-as-GET an authorization, or deactivate it (section 7.5.2)."""
    payload = auth.payload
    if payload is None:  # a poll: Core, in the unit that spends the request's nonce
        found = auth.nonce.write(
            lambda batch: authorization_with_challenges(batch.connection, authz_id)
        )
        if found is None:
            raise NotFound(f"no authorization {authz_id[:40]!r}")
        authz, challenges = found
        if authz.account_id != auth.account_id:
            raise unauthorized("this authorization belongs to another account")
        return Answer(200, authorization_json(urls, authz, challenges, now=now))
    auth.nonce.settle()  # spent before anything is written
    with store.transaction() as session:
        repository = AcmeRepository(session)
        authz = _owned(repository, authz_id, auth)
        if payload.get("status") != "deactivated":
            raise malformed("an authorization's status can only be set to 'deactivated'")
        if authorization_status(authz, now=now) not in ("pending", "valid"):
            raise malformed(f"the authorization is {authz.status}: it cannot be deactivated")
        authz.status = "deactivated"
        _invalidate_order(session, authz.order_id, None)
        body = authorization_json(urls, authz, repository.challenges_of(authz.id), now=now)
    return Answer(200, body)


@dataclass(frozen=True)
class Started:
    """A validation this process started: what the validator checks, and the rows its
    outcome changes (so that recording it needs no read).
    """

    context: ChallengeContext
    authorization_id: str
    order_id: str


def start_challenge(
    store: Store,
    urls: Urls,
    provisioner: AcmeProvisioner,
    challenge_id: str,
    auth: Authenticated,
    *,
    now: datetime,
) -> tuple[Answer, Started | None]:
    """Read a challenge (POST-as-GET) or ask for its validation (any JSON object).

    Returns the answer and, when this call started the validation, what the background
    task validates.
    """

    def read_and_start(batch: Batch) -> tuple[Any, Any, bool] | OstiaryError:
        # In the unit that spends the request's nonce: the challenge and its authorization
        # read, and for a pending one asked to start, the conditional UPDATE (of two
        # requests, or replicas, one starts the validation). A refusal writes nothing and
        # is raised once the spending committed.
        found = challenge_with_authorization(batch.connection, challenge_id)
        if found is None:
            return NotFound(f"no challenge {challenge_id[:40]!r}")
        challenge, authz = found
        if authz.account_id != auth.account_id:
            return unauthorized("this authorization belongs to another account")
        if auth.payload is None or challenge.status != "pending":
            return challenge, authz, False
        if (authz_status := authorization_status(authz, now=now)) != "pending":
            return malformed(f"the authorization is {authz_status}")
        if start_challenge_unit(challenge.id)(batch):
            return challenge, authz, True
        challenge = challenge_row(batch.connection, challenge_id)  # started meanwhile
        if challenge is None:  # pragma: no cover - purged only once its order expired
            return NotFound(f"no challenge {challenge_id[:40]!r}")
        return challenge, authz, False

    outcome = auth.nonce.write(read_and_start)
    if isinstance(outcome, OstiaryError):
        raise outcome
    challenge, authz, began = outcome
    context = None
    status = "processing" if began else challenge.status
    if began:
        policy = _policy(provisioner)
        if authz.identifier_type == "permanent-identifier":
            with store.transaction() as session:
                spent = spend_client_id(
                    session, provisioner.name, authz.identifier_value,
                    order_id=authz.order_id, now=now,
                )  # fmt: skip
            if spent:
                # a ClientIdentifier we handed out (an Apple ACME payload's), spent now
                # for this order: it stands in for the device's serial number or UDID
                policy["issued_client_identifier"] = True
        context = ChallengeContext(
            challenge_type=challenge.type,
            identifier_type=authz.identifier_type,
            identifier_value=("*." if authz.wildcard else "") + authz.identifier_value,
            token=authz.token,
            key_authorization=f"{authz.token}.{auth_thumbprint(auth)}",
            payload=dict(auth.payload or {}),
            policy=policy,
        )
    body = {**challenge_json(urls, challenge, authz.token), "status": status}
    up = urls.resource("authz", authz.id)
    headers = {"Link": f'<{up}>;rel="up"'}
    if body["status"] == "processing":
        headers["Retry-After"] = str(RETRY_AFTER)
    started = None if context is None else Started(context, authz.id, authz.order_id)
    return Answer(200, body, headers), started


def auth_thumbprint(auth: Authenticated) -> str:
    """The JWK thumbprint of the account that signed the request (it owns the challenge)."""
    if auth.account is None:
        raise NotFound("the authorization's account is gone")
    return auth.account.thumbprint


def _policy(provisioner: AcmeProvisioner) -> dict[str, Any]:
    """What device-attest-01 reads (:mod:`ostiary.acme.validation.device_attest`): the
    provisioner's PEM roots as certificates, and the formats it takes.
    """
    pem = provisioner.attestation_roots
    return {
        "attestation_roots": x509.load_pem_x509_certificates(pem.encode()) if pem else [],
        "attestation_formats": list(provisioner.attestation_formats),
    }


async def run_validation(
    store: Store,
    challenge_id: str,
    started: Started,
    settings: ValidationSettings,
    *,
    clock: Any,
) -> dict[str, Any]:
    """Validate, then record the outcome (see the module docstring); returns the
    challenge's fields that changed, once they are stored (see :func:`settled`).

    At most :data:`MAX_VALIDATIONS` validations of one process reach out at once; the others
    wait their turn (their challenges stay ``processing``).
    """
    context = started.context
    validator = VALIDATORS[context.challenge_type]
    try:
        async with _validation_slots():
            result = await validator(context, settings)
        error = None
    except ChallengeFailed as failed:
        result, error = None, problem_document(failed.problem, failed.detail, HTTPStatus.FORBIDDEN)
    except Exception:  # a validator's bug must still end the challenge, not leave it hanging
        logger.exception("the %s validator failed unexpectedly", context.challenge_type)
        result = None
        error = problem_document(
            "serverInternal",
            "the validation failed inside the CA",
            HTTPStatus.INTERNAL_SERVER_ERROR,
        )
    now = clock()
    # from the event loop: the group commit's own thread writes it, no worker thread waits
    await store.write_async(
        outcome_unit(
            challenge_id, started.authorization_id, started.order_id, result, error, now=now
        )
    )
    if error is None:
        return {"status": "valid", "validated": rfc3339(now)}
    return {"status": "invalid", "error": error}


def settled(answer: Answer, outcome: dict[str, Any]) -> Answer:
    """A challenge POST's ``answer`` once its validation ended with ``outcome`` (what
    :func:`run_validation` returned): the challenge as a poll would now show it, without
    ``Retry-After``.
    """
    if not isinstance(answer.body, dict):  # pragma: no cover - a challenge is JSON
        return answer
    headers = {name: value for name, value in answer.headers.items() if name != "Retry-After"}
    return Answer(answer.status, {**answer.body, **outcome}, headers)


#: Validations one process runs at once (each holds at most one outgoing connection).
MAX_VALIDATIONS = 32

_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _validation_slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(MAX_VALIDATIONS)
    return slots


def record_outcome(
    store: Store,
    challenge_id: str,
    result: ValidationResult | None,
    error: dict[str, Any] | None,
    *,
    now: datetime,
    owner: tuple[str, str] | None = None,
) -> None:
    """Store a validation's outcome on the challenge, its authorization and its order, in
    a transaction shared with concurrent writes (:meth:`ostiary.store.Store.write`).
    ``owner`` is ``(authorization id, order id)`` when the caller knows them (else read).
    """
    if owner is None:
        with store.transaction(read_only=True) as session:
            repository = AcmeRepository(session)
            authz = repository.authorization(repository.challenge(challenge_id).authorization_id)
            owner = (authz.id, authz.order_id)
    authz_id, order_id = owner
    store.write(outcome_unit(challenge_id, authz_id, order_id, result, error, now=now))


def _invalidate_order(session: Any, order_id: str, error: dict[str, Any] | None) -> None:
    session.execute(
        update(AcmeOrder)
        .where(AcmeOrder.id == order_id, AcmeOrder.status.in_(("pending", "ready")))
        .values(status="invalid", error=error)
        .execution_options(synchronize_session=False)
    )


__all__ = [
    "MAX_VALIDATIONS",
    "RETRY_AFTER",
    "Started",
    "read_authorization",
    "record_outcome",
    "run_validation",
    "settled",
    "start_challenge",
]
