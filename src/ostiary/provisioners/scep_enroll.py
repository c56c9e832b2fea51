"""SCEP transactions: enroll, renew and poll, each idempotent by ``transactionID``.

A device names its request with a transactionID and may send it again (a lost answer, a
poll). The first request whose credential holds records the transaction (provisioner,
transactionID, a SHA-256 of the CSR's key, subject and SANs) in the same database transaction
that spends its one-time challenge and records its certificate and audit entry (or, for an
officer's approval, queues the request), so a repeat finds the first answer: the same
request gets the same certificate (or still PENDING), another key or other names under that
transactionID are refused, and nothing is issued twice. A request that is not recorded (a
refusal, an audit log that cannot be written) spends nothing: sent again, it is decided anew.

Refusals are :class:`~ostiary.core.errors.OstiaryError` exceptions; the wire layer
(:mod:`ostiary.scep`) turns :class:`NotFound` into failInfo badCertId and the rest into
badRequest. Issuance goes through :meth:`Authority.issue` / :meth:`Authority.renew`.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ostiary.authority.authority import Authority
from ostiary.core.encoding import serial_hex
from ostiary.core.errors import Conflict, NotFound, PolicyDenied, Unauthorized
from ostiary.core.issuance import Authorization
from ostiary.core.names import format_general_name
from ostiary.provisioners.base import CAIdentity
from ostiary.provisioners.renewal import renewal_authorization
from ostiary.provisioners.scep import ScepProvisioner, authorize_challenge, check_key_size
from ostiary.store import (
    AuditLog,
    Batch,
    CertificateRepository,
    CertificateRequest,
    RequestRepository,
    RequestStatus,
    ScepRepository,
    ScepTransaction,
    spend_challenge_in,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """Where a transaction is: issued (with the certificate) or waiting for an officer."""

    certificate: x509.Certificate | None = None

    @property
    def pending(self) -> bool:
        return self.certificate is None


def _csr_digest(csr: x509.CertificateSigningRequest) -> str:
    """What makes two CSRs the same request: the key, the subject and the names asked for.

    Not the CSR's bytes: certmonger makes a new CSR for the same key on every resubmit, with
    a fresh random subjectKeyIdentifier (seen against Debian's certmonger 0.79), and sends it
    under the same transactionID (RFC 8894 derives that from the key). Extensions other than
    the SAN do not reach the certificate (the profile decides them), so they do not count.
    """
    digest = hashlib.sha256()
    key = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for part in (key, csr.subject.public_bytes(), _requested_names(csr)):
        digest.update(len(part).to_bytes(4, "big") + part)
    return digest.hexdigest()


def _requested_names(csr: x509.CertificateSigningRequest) -> bytes:
    try:
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return b""
    return names.public_bytes()


def enroll(
    authority: Authority,
    provisioner: ScepProvisioner,
    transaction_id: str,
    csr: x509.CertificateSigningRequest,
    *,
    ca: CAIdentity,
) -> Outcome:
    """PKCSReq: the challenge's names for the CSR's key, issued or queued for an officer."""
    repeated = _repeat(authority, provisioner, transaction_id, csr)
    if repeated is not None:
        return repeated
    check_key_size(csr)
    now = authority.clock()
    authorization, challenge = authorize_challenge(
        authority.store, provisioner, csr, ca=ca, now=now, transaction_id=transaction_id
    )
    request_id = secrets.token_hex(16) if provisioner.require_approval else None

    if request_id is None:
        return _issue(authority, provisioner, transaction_id, csr, authorization, challenge)

    def also(session: Session) -> None:
        repository = ScepRepository(session)
        if challenge is not None and not repository.spend_challenge(challenge, now=now):
            raise Unauthorized(_SPENT)
        _queue(session, provisioner, request_id, transaction_id, csr, authorization, now)

    repeated = _record(authority, provisioner, transaction_id, csr, request_id, also)
    return Outcome() if repeated is None else repeated


def renew(
    authority: Authority,
    provisioner: ScepProvisioner,
    transaction_id: str,
    csr: x509.CertificateSigningRequest,
    current: x509.Certificate,
    *,
    ca: CAIdentity,
) -> Outcome:
    """RenewalReq: signed with ``current`` (ours, valid, from this provisioner), same names."""
    repeated = _repeat(authority, provisioner, transaction_id, csr)
    if repeated is not None:
        return repeated
    check_key_size(csr)
    now = authority.clock()
    authorization, _ = renewal_authorization(authority.store, current, now=now, csr=csr, ca=ca)
    if authorization.provisioner != provisioner.name:
        raise PolicyDenied(
            f"this certificate was not issued by SCEP provisioner {provisioner.name!r}"
        )
    return _issue(authority, provisioner, transaction_id, csr, authorization, None, current)


def _record(
    authority: Authority,
    provisioner: ScepProvisioner,
    transaction_id: str,
    csr: x509.CertificateSigningRequest,
    request_id: str | None,
    also: Callable[[Session], None],
) -> Outcome | None:
    """Record the transaction queued for an officer with ``also`` (spend the challenge, queue
    the request, audited) in one database transaction; the first answer if the same
    transactionID won a race meanwhile.
    """
    try:
        with authority.store.transaction() as session:
            also(session)
            ScepRepository(session).add_transaction(
                ScepTransaction(
                    provisioner=provisioner.name,
                    transaction_id=transaction_id,
                    csr_sha256=_csr_digest(csr),
                    created_at=authority.clock(),
                    request_id=request_id,
                )
            )
    except IntegrityError:  # the same transactionID recorded meanwhile (another replica)
        repeated = _repeat(authority, provisioner, transaction_id, csr)
        if repeated is None:
            raise
        return repeated
    return None


def poll(authority: Authority, provisioner: ScepProvisioner, transaction_id: str) -> Outcome:
    """CertPoll/GetCertInitial: where the transaction is; :class:`NotFound` if unknown."""
    with authority.store.transaction(read_only=True) as session:
        row = ScepRepository(session).transaction(provisioner.name, transaction_id)
        if row is None:
            raise NotFound(f"no SCEP transaction {transaction_id[:80]!r} here")
        return _state(session, row, authority.clock())


def _repeat(
    authority: Authority,
    provisioner: ScepProvisioner,
    transaction_id: str,
    csr: x509.CertificateSigningRequest,
) -> Outcome | None:
    """The answer to a transactionID seen before, or None if it is new."""
    with authority.store.transaction(read_only=True) as session:
        row = ScepRepository(session).transaction(provisioner.name, transaction_id)
        if row is None:
            return None
        if row.csr_sha256 != _csr_digest(csr):
            raise Conflict("this transactionID was used with another request: use a new one")
        return _state(session, row, authority.clock())


def _state(session: Session, row: ScepTransaction, now: datetime) -> Outcome:
    serial = row.serial
    if row.failure is not None:
        raise PolicyDenied(row.failure)
    if serial is None and row.request_id is not None:
        request = RequestRepository(session).get(row.request_id)
        status = request.status_at(now)
        if status in (RequestStatus.REJECTED, RequestStatus.EXPIRED):
            raise PolicyDenied(f"an officer did not approve the request ({status.value})")
        serial = request.serial
    if serial is None:
        return Outcome()
    return Outcome(CertificateRepository(session).get(int(serial, 16)).certificate())


def _queue(
    session: Session,
    provisioner: ScepProvisioner,
    request_id: str,
    transaction_id: str,
    csr: x509.CertificateSigningRequest,
    authorization: Authorization,
    now: datetime,
) -> None:
    """The request in the officers' queue, with the names the challenge granted."""
    from ostiary.provisioners.approval import UNOPENED_REQUEST_TTL

    names = [format_general_name(n) for n in authorization.names]
    subject = authorization.subject.rfc4514_string()
    RequestRepository(session).add(
        CertificateRequest(
            request_id=request_id,
            provisioner=provisioner.name,
            subject=subject,
            sans=names,
            csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            note=f"SCEP transaction {transaction_id[:80]}",
            code_sha256=None,
            status=RequestStatus.PENDING.value,
            created_at=now,
            expires_at=now + UNOPENED_REQUEST_TTL,
        )
    )
    AuditLog(session).append(
        "request.submitted",
        at=now,
        actor=f"provisioner:{provisioner.name}",
        target=request_id,
        details={"subject": subject, "san": names, "scep_transaction": transaction_id[:80]},
    )


def _issue(
    authority: Authority,
    provisioner: ScepProvisioner,
    transaction_id: str,
    csr: x509.CertificateSigningRequest,
    authorization: Authorization,
    challenge: str | None,
    current: x509.Certificate | None = None,
) -> Outcome:
    """Issue (or renew ``current``), and in the issuance's own transaction spend the
    challenge and record the transaction with its serial: all of it, or none of it.
    """
    actor = f"provisioner:{provisioner.name}"
    details = {"scep_transaction": transaction_id[:80]}
    created_at = authority.clock()

    def record(batch: Batch, certificate: x509.Certificate) -> None:
        if challenge is not None and not spend_challenge_in(batch, challenge, now=created_at):
            raise Unauthorized(_SPENT)
        values = {
            "provisioner": provisioner.name,
            "transaction_id": transaction_id,
            "csr_sha256": _csr_digest(csr),
            "created_at": created_at,
            "request_id": None,
            "serial": serial_hex(certificate.serial_number),
            "failure": None,
        }
        batch.insert(ScepTransaction, values, duplicate=_TransactionTaken)

    try:
        if current is None:
            certificate = authority.issue(
                csr, authorization, actor=actor, details=details, then=record
            )
        else:
            certificate = authority.renew(
                current, authorization, csr.public_key(), actor=actor, csr=csr,
                details=details, then=record,
            )  # fmt: skip
    except _TransactionTaken:  # the same transactionID recorded meanwhile (another replica)
        repeated = _repeat(authority, provisioner, transaction_id, csr)
        if repeated is None:
            raise
        return repeated
    return Outcome(certificate)


_SPENT = "the challenge password was used already: it is one-time"


class _TransactionTaken(Conflict):
    """The transactionID was recorded by another request while this one was issued."""

    def __init__(self) -> None:
        super().__init__("this transactionID was used meanwhile: use a new one")
