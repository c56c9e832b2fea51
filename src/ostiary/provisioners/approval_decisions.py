"""An officer's decision on a pending ``approval`` request: approve (issue) or reject.

Approving checks the one-time code in constant time (a wrong or missing one is audited as
``request.denied`` and leaves the request pending), claims the request by a conditional
``UPDATE`` (:func:`claimed`: of two officers one wins), then issues through
:meth:`Authority.issue` with the names the request was checked for: the CSR's for an
``approval`` provisioner, the names its challenge granted for a queued SCEP request.
SSH requests are decided in :mod:`.ssh_approval`, with the same checks.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from cryptography import x509

from ostiary.authority.authority import Authority
from ostiary.core.encoding import load_csr, serial_hex
from ostiary.core.errors import BadRequest, Conflict, Unauthorized
from ostiary.provisioners.approval import (
    MAX_NOTE,
    approval_authorization,
    check_role_names,
    load_approval_provisioner,
)
from ostiary.provisioners.approval_queue import check_request_id, request_code_sha256
from ostiary.store import (
    AuditLog,
    Batch,
    ProvisionerRepository,
    RequestRepository,
    RequestStatus,
    Store,
    mark_request_issued,
)


def approve_request(
    authority: Authority, request_id: str, *, officer: str, code: str | None = None
) -> x509.Certificate:
    """Issue the certificate of a pending request through the one pipeline and mark it
    issued, in one transaction.

    A wrong or missing code is refused (and audited as ``request.denied``) and leaves the
    request pending. Of two officers approving at once, one wins; the other gets
    :class:`Conflict`. If issuance fails, the request goes back to pending.
    """
    store = authority.store
    now = authority.clock()
    request_id = check_request_id(request_id)
    with store.transaction(read_only=True) as session:
        record = RequestRepository(session).get(request_id)
        status = record.status_at(now)
        code_sha256 = record.code_sha256
        provisioner_name = record.provisioner
        csr_pem = record.csr_pem
        granted = (record.subject, list(record.sans))
        policies = tuple(str(oid) for oid in record.policies or ())
        kind = record.kind or "x509"
    if kind != "x509":
        raise BadRequest(
            "this is an SSH certificate request: approve it with 'ostiary ca requests approve'"
        )
    check_decidable(store, request_id, status, code_sha256, code, officer=officer, now=now)
    csr = load_csr(csr_pem.encode("ascii"))
    if _type_of(store, provisioner_name) == "scep":  # the names its challenge granted
        from ostiary.provisioners.scep import queued_authorization

        authorization = queued_authorization(store, provisioner_name, *granted)
    else:
        provisioner = load_approval_provisioner(store, provisioner_name)
        authorization = approval_authorization(provisioner, csr)
        check_role_names(store, provisioner, authorization)  # an officer added since
    if policies:  # earned at submission (a verified key attestation)
        merged = tuple(dict.fromkeys((*authorization.policies, *policies)))
        authorization = replace(authorization, policies=merged)
    subject, sans = granted

    def mark_issued(batch: Batch, certificate: x509.Certificate) -> None:
        # In the issuance's transaction: the certificate, the request marked issued and
        # both audit entries are recorded together, or none of them.
        serial = serial_hex(certificate.serial_number)
        if not mark_request_issued(batch, request_id, serial=serial, officer=officer, at=now):
            raise Conflict("request is no longer being approved", request_id=request_id)
        batch.audit.append(
            "request.approved",
            at=now,
            actor=officer,
            target=request_id,
            details={"serial_number": serial, "subject": subject, "san": sans},
        )

    with claimed(store, request_id, now=now):
        return authority.issue(
            csr,
            authorization,
            actor=officer,
            details={"request_id": request_id},
            then=mark_issued,
        )


@contextmanager
def claimed(store: Store, request_id: str, *, now: datetime) -> Iterator[None]:
    """Hold a pending request as ``approving`` while its certificate is issued: of two
    officers one wins (:class:`Conflict` for the other); a failure puts it back to pending.
    """
    with store.transaction() as session:
        if not RequestRepository(session).claim(request_id, now=now):
            raise Conflict("request is no longer pending", request_id=request_id)
    try:
        yield
    except BaseException:
        with store.transaction() as session:
            record = RequestRepository(session).get(request_id)
            record.status = RequestStatus.PENDING.value
            record.decided_at = None
        raise


def check_decidable(
    store: Store,
    request_id: str,
    status: RequestStatus,
    code_sha256: str | None,
    code: str | None,
    *,
    officer: str,
    now: datetime,
) -> None:
    """Refuse a request that is not pending, or whose one-time code is missing or wrong (the
    latter audited ``request.denied``; the request stays pending).
    """
    if status != RequestStatus.PENDING:
        raise Conflict(f"request is {status.value}, not pending", request_id=request_id)
    if code_sha256 is None or _code_matches(code, code_sha256):
        return
    missing = not (code or "").strip()
    with store.transaction() as session:
        AuditLog(session).append(
            "request.denied",
            at=now,
            actor=officer,
            target=request_id,
            details={"reason": "missing one-time code" if missing else "wrong one-time code"},
        )
    if missing:
        raise Unauthorized(
            "this request needs its one-time code: the requester was shown it when "
            "submitting (ask them for it, then give it with --code or in the form)"
        )
    raise Unauthorized("the one-time code does not match this request")


def reject_request(authority: Authority, request_id: str, *, officer: str, reason: str) -> None:
    """Reject a pending request with ``reason`` (shown to the requester; audited)."""
    reason = reason.strip()
    if not reason or len(reason) > MAX_NOTE:
        raise BadRequest(f"give a reason of 1-{MAX_NOTE} characters")
    now = authority.clock()
    request_id = check_request_id(request_id)
    with authority.store.transaction() as session:
        repository = RequestRepository(session)
        if not repository.claim(request_id, now=now):
            status = repository.get(request_id).status_at(now)
            raise Conflict(f"request is {status.value}, not pending", request_id=request_id)
        record = repository.get(request_id)
        record.status = RequestStatus.REJECTED.value
        record.decided_at = now
        record.decided_by = officer
        record.reason = reason
        AuditLog(session).append(
            "request.rejected",
            at=now,
            actor=officer,
            target=request_id,
            details={"reason": reason, "subject": record.subject},
        )


def _type_of(store: Store, provisioner: str) -> str:
    with store.transaction(read_only=True) as session:
        return ProvisionerRepository(session).get(provisioner).type


def _code_matches(code: str | None, expected_sha256: str) -> bool:
    given = (code or "").strip().upper().replace("-", "").replace(" ", "")
    return hmac.compare_digest(request_code_sha256(given), expected_sha256)


__all__ = ["approve_request", "check_decidable", "claimed", "reject_request"]
