"""SCEP transactions: enroll, renew and poll, each idempotent by ``transactionID``.

A device names its request with a transactionID and may send it again (a lost answer, a
poll). The transaction (provisioner, transactionID, a SHA-256 of the CSR's key, subject and
SANs) is recorded in the database transaction that spends its one-time challenge, so a
repeat finds the first answer: the same request gets the same certificate (or still
PENDING), another key or other names under that transactionID are refused, and nothing is
issued twice.

An enrollment that issues at once is one write: the certificate, its audit entry, the
challenge spent and the transaction (with the serial) go in the certificate's group-commit
unit (:meth:`Authority.issue`'s ``then``), all or nothing, sharing one durable commit with
concurrent issuances. A request the pipeline refuses therefore spends nothing and records
no transaction (the refusal is audited, and a repeat is refused again); a challenge spent
meanwhile, or the same transactionID recorded meanwhile (another replica, a resubmit), is
found by the database in that unit, and the signed certificate is dropped. A request that
waits for an officer records its transaction and its queue entry in one transaction.

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
from typing import Protocol

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
from ostiary.provisioners.grants import grant_of_row
from ostiary.provisioners.renewal import renewal_authorization
from ostiary.provisioners.scep import (
    ScepProvisioner,
    authorize_challenge,
    challenge_of,
    check_key_size,
)
from ostiary.store import (
    AuditLog,
    Batch,
    CertificateRepository,
    CertificateRequest,
    RequestRepository,
    RequestStatus,
    ScepRepository,
    ScepTransaction,
    read_request_rows,
    spend_challenge_in,
    transaction_values,
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


#: Called with the certificate once its rows are written, just before its transaction
#: commits (:meth:`Batch.while_committing <ostiary.store.Batch.while_committing>`): the
#: responder starts its CertRep there, and sends it once the commit is durable.
WhileCommitting = Callable[[x509.Certificate], None]


def enroll(
    authority: Authority,
    provisioner: ScepProvisioner,
    transaction_id: str,
    csr: x509.CertificateSigningRequest,
    *,
    ca: CAIdentity,
    while_committing: WhileCommitting | None = None,
) -> Outcome:
    """PKCSReq: the challenge's names for the CSR's key, issued or queued for an officer."""
    given = _one_time_challenge(provisioner, csr)
    row, challenge_row = read_request_rows(
        authority.store.read_engine, provisioner.name, transaction_id, given
    )
    repeated = _repeat_of(authority, row, csr)
    if repeated is not None:
        return repeated
    check_key_size(csr)
    now = authority.clock()
    authorization, challenge = authorize_challenge(
        authority.store, provisioner, csr, ca=ca, now=now, transaction_id=transaction_id,
        grant=grant_of_row(challenge_row, now=now) if given is not None else None,
    )  # fmt: skip
    if not provisioner.require_approval:
        return _issue(
            authority, provisioner, transaction_id, csr, authorization,
            challenge=challenge, while_committing=while_committing,
        )  # fmt: skip
    request_id = secrets.token_hex(16)

    def also(session: Session) -> None:
        if challenge is not None and not ScepRepository(session).spend_challenge(
            challenge, now=now
        ):
            raise _ChallengeSpent()
        _queue(session, provisioner, request_id, transaction_id, csr, authorization, now)

    return _record(authority, provisioner, transaction_id, csr, request_id, also) or Outcome()


def renew(
    authority: Authority,
    provisioner: ScepProvisioner,
    transaction_id: str,
    csr: x509.CertificateSigningRequest,
    current: x509.Certificate,
    *,
    ca: CAIdentity,
    while_committing: WhileCommitting | None = None,
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
    return _issue(
        authority, provisioner, transaction_id, csr, authorization,
        current=current, while_committing=while_committing,
    )  # fmt: skip


def _record(
    authority: Authority,
    provisioner: ScepProvisioner,
    transaction_id: str,
    csr: x509.CertificateSigningRequest,
    request_id: str | None,
    also: Callable[[Session], None],
) -> Outcome | None:
    """Record a transaction that waits for an officer, with ``also`` (spend the challenge,
    queue the request) in one database transaction; the first answer if the same
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
    except (IntegrityError, _ChallengeSpent):  # the same transactionID won a race meanwhile
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


def _one_time_challenge(
    provisioner: ScepProvisioner, csr: x509.CertificateSigningRequest
) -> str | None:
    """The CSR's challenge if it is a one-time one, to read with the transaction; None for
    other kinds, or when the CSR carries none (:func:`authorize_challenge` refuses that).
    """
    if provisioner.challenge not in ("one-time", "dynamic"):
        return None
    try:
        return challenge_of(csr)
    except Unauthorized:
        return None


def _repeat(
    authority: Authority,
    provisioner: ScepProvisioner,
    transaction_id: str,
    csr: x509.CertificateSigningRequest,
) -> Outcome | None:
    """The answer to a transactionID seen before, or None if it is new."""
    row, _ = read_request_rows(authority.store.read_engine, provisioner.name, transaction_id, None)
    return _repeat_of(authority, row, csr)


def _repeat_of(
    authority: Authority, row: _TransactionRow | None, csr: x509.CertificateSigningRequest
) -> Outcome | None:
    """:func:`_repeat` with the transaction's row read already (None: a new one)."""
    if row is None:
        return None
    if row.csr_sha256 != _csr_digest(csr):
        raise Conflict("this transactionID was used with another request: use a new one")
    with authority.store.transaction(read_only=True) as session:
        return _state(session, row, authority.clock())


class _TransactionRow(Protocol):
    """A transaction's row: :class:`ScepTransaction`, or a Core row of it."""

    @property
    def csr_sha256(self) -> str: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def serial(self) -> str | None: ...
    @property
    def failure(self) -> str | None: ...


def _state(session: Session, row: _TransactionRow, now: datetime) -> Outcome:
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
    from ostiary.provisioners.approval_queue import UNOPENED_REQUEST_TTL

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


class _ChallengeSpent(Unauthorized):
    def __init__(self) -> None:
        super().__init__("the challenge password was used already: it is one-time")


class _TransactionRecorded(Conflict):
    def __init__(self) -> None:
        super().__init__("this transactionID was recorded meanwhile")


def _issue(
    authority: Authority,
    provisioner: ScepProvisioner,
    transaction_id: str,
    csr: x509.CertificateSigningRequest,
    authorization: Authorization,
    *,
    challenge: str | None = None,
    current: x509.Certificate | None = None,
    while_committing: WhileCommitting | None = None,
) -> Outcome:
    """Issue (or renew) and record the transaction in the certificate's own unit; the first
    answer if the challenge or the transactionID was taken by the same request meanwhile.
    """
    actor = f"provisioner:{provisioner.name}"
    details = {"scep_transaction": transaction_id[:80]}
    now = authority.clock()
    digest = _csr_digest(csr)

    def record(batch: Batch, certificate: x509.Certificate) -> None:
        if challenge is not None and not spend_challenge_in(batch, challenge, now=now):
            raise _ChallengeSpent()
        row = transaction_values(
            provisioner=provisioner.name,
            transaction_id=transaction_id,
            csr_sha256=digest,
            created_at=now,
            serial=serial_hex(certificate.serial_number),
        )
        batch.insert(ScepTransaction, row, duplicate=_TransactionRecorded)
        if while_committing is not None:
            batch.while_committing(lambda: while_committing(certificate))

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
    except (_ChallengeSpent, _TransactionRecorded):
        repeated = _repeat(authority, provisioner, transaction_id, csr)
        if repeated is None:
            raise
        return repeated
    return Outcome(certificate)
