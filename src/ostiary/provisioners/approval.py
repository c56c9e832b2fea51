"""Approval enrollment (provisioner type ``approval``): a person looks at the CSR and decides.

For devices that cannot sign in or hold a token. The requester submits a CSR (and a note);
the request waits until an officer approves it, is rejected, or expires: after a day
(:data:`UNOPENED_REQUEST_TTL`) if no officer has opened the queue since, else after
``request_ttl``.
With ``require_code`` the requester is shown a one-time code (8 characters, 40 bits) that
the officer must enter when approving, so that approving a stranger's request by mistake is
hard; only its SHA-256 is stored and it is compared in constant time.

Approval issues through :meth:`Authority.issue` (the one pipeline) with an
:class:`~ostiary.core.issuance.Authorization` whose names are exactly the CSR's names, which
the officer was shown: a subject of exactly one common name (a CSR with a second CN, an O
or a multi-valued RDN is refused) and SANs in canonical form, bounded by the provisioner's
claims (allowed names, lifetime) and profile. Every step is audited: ``request.submitted``,
``request.approved`` (next to the pipeline's ``certificate.issued``), ``request.rejected``,
``request.denied`` (bad code).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session

from ostiary.authority.authority import Authority
from ostiary.core.encoding import load_csr, serial_hex
from ostiary.core.errors import (
    BadRequest,
    Conflict,
    InvalidCSR,
    NotFound,
    Unauthorized,
)
from ostiary.core.issuance import Authorization, verify_csr
from ostiary.core.lifetime import format_duration, parse_duration
from ostiary.core.names import (
    canonical_general_name,
    format_general_name,
    requested_subject,
    sans_of,
)
from ostiary.core.profiles import get_profile
from ostiary.provisioners.base import (
    LEAF_PROFILES,
    CAIdentity,
    ProvisionerClaims,
    check_profile,
    precheck_request,
    validate_provisioner_name,
)
from ostiary.provisioners.officers import check_no_role_names
from ostiary.provisioners.patterns import check_allowed_names
from ostiary.store import (
    AuditLog,
    Batch,
    CertificateRequest,
    ProvisionerRepository,
    RequestRepository,
    RequestStatus,
    Store,
    mark_request_issued,
)

APPROVAL_TYPE = "approval"
DEFAULT_REQUEST_TTL = timedelta(days=7)
MAX_NOTE = 500
#: Pending requests one provisioner keeps at most: submitting needs no credential, so a
#: flood must not grow the table without bound (expired ones stop counting). The server
#: also limits submissions per client address (:mod:`ostiary.server.limits`).
MAX_PENDING = 1000
#: How long a request waits while no officer has opened it (seen it in the console's queue
#: or ``ca requests list``): a flood nobody looked at clears itself within a day. Opening
#: gives it the provisioner's whole ``request_ttl`` from its submission.
UNOPENED_REQUEST_TTL = timedelta(days=1)
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
_CODE_LENGTH = 8


@dataclass(frozen=True)
class ApprovalProvisioner:
    """The settings of an ``approval`` provisioner (kept in its record's ``config``)."""

    name: str
    claims: ProvisionerClaims
    profile: str = "device"
    require_code: bool = True
    request_ttl: timedelta = DEFAULT_REQUEST_TTL
    #: Whether a request may name an officer (else refused: :mod:`.officers`).
    allow_officer_names: bool = False

    @property
    def type(self) -> str:
        return APPROVAL_TYPE

    def to_config(self) -> dict[str, Any]:
        return {
            "claims": self.claims.to_config(),
            "profiles": [self.profile],
            "profile": self.profile,
            "require_code": self.require_code,
            "request_ttl": format_duration(self.request_ttl),
            "allow_officer_names": self.allow_officer_names,
        }

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> ApprovalProvisioner:
        try:
            return cls(
                name=name,
                claims=ProvisionerClaims.from_config(config["claims"]),
                profile=str(config["profile"]),
                require_code=bool(config["require_code"]),
                request_ttl=parse_duration(str(config["request_ttl"])),
                allow_officer_names=bool(config.get("allow_officer_names", False)),
            )
        except (KeyError, TypeError):
            raise BadRequest(f"provisioner {name!r} has an incomplete approval config") from None


@dataclass(frozen=True)
class Submitted:
    """What the requester gets back: the id to poll and, if required, the code to tell."""

    request_id: str
    code: str | None
    expires_at: datetime


@dataclass(frozen=True)
class RequestView:
    """A request as the requester (or an officer) sees it; never the code."""

    request_id: str
    provisioner: str
    subject: str
    sans: tuple[str, ...]
    note: str | None
    status: RequestStatus
    needs_code: bool
    created_at: datetime
    expires_at: datetime
    decided_by: str | None
    reason: str | None
    serial: str | None
    kind: str = "x509"

    @classmethod
    def of(cls, record: CertificateRequest, *, now: datetime) -> RequestView:
        return cls(
            request_id=record.request_id,
            provisioner=record.provisioner,
            subject=record.subject,
            sans=tuple(record.sans),
            note=record.note,
            status=record.status_at(now),
            needs_code=record.code_sha256 is not None,
            created_at=record.created_at,
            expires_at=record.expires_at,
            decided_by=record.decided_by,
            reason=record.reason,
            serial=record.serial,
            kind=record.kind or "x509",
        )


# --------------------------------------------------------------------------- provisioner


def add_approval_provisioner(
    store: Store,
    name: str,
    *,
    claims: ProvisionerClaims,
    now: datetime,
    profile: str = "device",
    require_code: bool = True,
    request_ttl: timedelta = DEFAULT_REQUEST_TTL,
    ca_claims: ProvisionerClaims | None = None,
    actor: str | None = None,
    allow_officer_names: bool = False,
) -> ApprovalProvisioner:
    """Record an ``approval`` provisioner with a "provisioner.added" entry."""
    validate_provisioner_name(name)
    check_profile(profile, LEAF_PROFILES)
    if ca_claims is not None:
        claims.check_within(ca_claims)
    if not timedelta(minutes=5) <= request_ttl <= timedelta(days=90):
        raise BadRequest("the request lifetime must be between 5m and 90d")
    provisioner = ApprovalProvisioner(
        name, claims, profile, require_code, request_ttl, allow_officer_names
    )
    with store.transaction() as session:
        ProvisionerRepository(session).add(
            name, type=APPROVAL_TYPE, config=provisioner.to_config(), now=now
        )
        AuditLog(session).append(
            "provisioner.added",
            at=now,
            actor=actor,
            target=name,
            details={"type": APPROVAL_TYPE, **provisioner.to_config()},
        )
    return provisioner


def load_approval_provisioner(store: Store, name: str) -> ApprovalProvisioner:
    """The ``approval`` provisioner ``name``; :class:`NotFound` or :class:`PolicyDenied`."""
    from ostiary.provisioners.manage import load_provisioner_of_type

    return load_provisioner_of_type(store, name, APPROVAL_TYPE, ApprovalProvisioner.from_config)


# --------------------------------------------------------------------------- requester


def submit_request(
    store: Store,
    provisioner_name: str,
    csr: x509.CertificateSigningRequest,
    *,
    ca: CAIdentity,
    now: datetime,
    note: str | None = None,
    attestation: Mapping[str, Any] | None = None,
) -> Submitted:
    """Check ``csr`` as issuance will, then record it as pending (audited).

    A provisioner that requires a TPM attestation (``require_attestation``) checks it here,
    before anything is recorded, and spends its nonce; the policy OIDs it earns are kept
    with the request and go into the certificate when an officer approves it.
    """
    from ostiary.provisioners.attest import attestation_for, with_attestation

    provisioner = load_approval_provisioner(store, provisioner_name)
    if note is not None and len(note) > MAX_NOTE:
        raise BadRequest(f"the note is longer than {MAX_NOTE} characters")
    authorization = _authorization(provisioner, csr)
    _check_role_names(store, provisioner, authorization)
    hardware = attestation_for(store, provisioner.name, attestation, csr, now=now)
    precheck_request(csr, authorization, ca=ca, now=now)
    check_queue_room(store, provisioner, now=now)
    authorization = with_attestation(store, authorization, hardware, now=now)
    return record_request(
        store,
        provisioner,
        subject=authorization.subject.rfc4514_string(),
        names=[format_general_name(n) for n in authorization.names],
        request=csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        now=now,
        note=note,
        policies=list(authorization.policies) or None,
    )


def check_queue_room(store: Store, provisioner: ApprovalProvisioner, *, now: datetime) -> None:
    """Refuse (:class:`Conflict`) while the provisioner has :data:`MAX_PENDING` waiting."""
    with store.transaction(read_only=True) as session:
        waiting = RequestRepository(session).count_pending(provisioner.name, now=now)
    if waiting >= MAX_PENDING:
        raise Conflict(
            f"provisioner {provisioner.name!r} already has {waiting} pending requests: "
            "try again after officers have decided some",
            provisioner=provisioner.name,
        )


def record_request(
    store: Store,
    provisioner: ApprovalProvisioner,
    *,
    subject: str,
    names: list[str],
    request: str,
    now: datetime,
    note: str | None,
    policies: list[str] | None = None,
    kind: str = "x509",
) -> Submitted:
    """Record a checked request as pending (audited ``request.submitted``), with its code.

    Check :func:`check_queue_room` first, before anything single-use is spent.
    """
    code = _new_code() if provisioner.require_code else None
    request_id = secrets.token_hex(16)
    expires_at = now + min(provisioner.request_ttl, UNOPENED_REQUEST_TTL)
    with store.transaction() as session:
        RequestRepository(session).add(
            CertificateRequest(
                request_id=request_id,
                provisioner=provisioner.name,
                subject=subject,
                sans=names,
                csr_pem=request,
                note=note,
                code_sha256=_code_hash(code) if code is not None else None,
                status=RequestStatus.PENDING.value,
                created_at=now,
                expires_at=expires_at,
                policies=policies,
                kind=kind,
            )
        )
        AuditLog(session).append(
            "request.submitted",
            at=now,
            actor=f"provisioner:{provisioner.name}",
            target=request_id,
            details={
                "subject": subject,
                "san": names,
                "note": note,
                **({"kind": kind} if kind != "x509" else {}),
            },
        )
    return Submitted(request_id, code, expires_at)


def request_view(store: Store, request_id: str, *, now: datetime) -> RequestView:
    with store.transaction(read_only=True) as session:
        return RequestView.of(RequestRepository(session).get(_check_id(request_id)), now=now)


def issued_certificate_pem(store: Store, view: RequestView) -> x509.Certificate | None:
    """The certificate an issued request got (from the certificate store)."""
    from ostiary.store import CertificateRepository

    if view.serial is None:
        return None
    with store.transaction(read_only=True) as session:
        return CertificateRepository(session).get(int(view.serial, 16)).certificate()


def pending_requests(store: Store, *, now: datetime) -> list[RequestView]:
    with store.transaction(read_only=True) as session:
        return [RequestView.of(r, now=now) for r in RequestRepository(session).pending(now=now)]


def open_pending_requests(store: Store, *, now: datetime) -> list[RequestView]:
    """The queue as an officer is shown it (see :func:`open_pending_records`)."""
    return [RequestView.of(r, now=now) for r in open_pending_records(store, now=now)]


def open_pending_records(store: Store, *, now: datetime) -> list[CertificateRequest]:
    """The waiting requests, oldest first, as an officer is shown them (detached from the
    session): each one shown is opened, and waits from now on until its provisioner's
    ``request_ttl`` (from its submission) has passed, no longer the short
    :data:`UNOPENED_REQUEST_TTL`.
    """
    ttls: dict[str, timedelta] = {}
    with store.transaction() as session:
        requests = RequestRepository(session)
        pending = requests.pending(now=now)
        for record in pending:
            ttl = ttls.get(record.provisioner)
            if ttl is None:
                ttl = ttls[record.provisioner] = _request_ttl(session, record.provisioner)
            until = record.created_at + ttl
            if until > record.expires_at:
                requests.extend(record.request_id, until=until, now=now)
                record.expires_at = until
        for record in pending:
            session.expunge(record)
    return pending


def _request_ttl(session: Session, provisioner: str) -> timedelta:
    """The ``request_ttl`` of ``provisioner`` (the short one if it is gone or changed type)."""
    try:
        record = ProvisionerRepository(session).get(provisioner)
        if record.type == APPROVAL_TYPE:
            return ApprovalProvisioner.from_config(record.name, record.config).request_ttl
    except (NotFound, BadRequest):
        pass
    return UNOPENED_REQUEST_TTL


# --------------------------------------------------------------------------- decisions


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
    request_id = _check_id(request_id)
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
        authorization = _authorization(provisioner, csr)
        _check_role_names(store, provisioner, authorization)  # an officer added since
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
    request_id = _check_id(request_id)
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


# --------------------------------------------------------------------------- helpers


def _type_of(store: Store, provisioner: str) -> str:
    with store.transaction(read_only=True) as session:
        return ProvisionerRepository(session).get(provisioner).type


def _authorization(
    provisioner: ApprovalProvisioner, csr: x509.CertificateSigningRequest
) -> Authorization:
    return csr_authorization(
        csr, profile=provisioner.profile, claims=provisioner.claims, provisioner=provisioner.name
    )


def csr_authorization(
    csr: x509.CertificateSigningRequest,
    *,
    profile: str,
    claims: ProvisionerClaims,
    provisioner: str,
) -> Authorization:
    """The CSR's own subject and names, within the provisioner's claims and profile.

    The subject is exactly one common name (:func:`requested_subject`) and the SANs are
    checked in their canonical form (:func:`canonical_general_name`), the form the
    certificate will carry: the allowed-name patterns never see a raw name from the CSR.
    """
    verify_csr(csr)
    subject = requested_subject(csr.subject)
    try:
        raw = sans_of(csr.extensions)
    except (ValueError, x509.DuplicateExtension):
        raise InvalidCSR("the CSR extensions cannot be parsed") from None
    names = tuple(canonical_general_name(n) for n in raw)
    check_allowed_names(subject, names, claims.allowed_names)
    get_profile(profile).check_names(list(names))
    return Authorization(
        subject=subject,
        names=names,
        profile=profile,
        lifetime=claims.lifetime,
        provisioner=provisioner,
    )


def _check_role_names(
    store: Store, provisioner: ApprovalProvisioner, authorization: Authorization
) -> None:
    """Refuse names of role holders unless the provisioner allows them (see :mod:`.officers`)."""
    if not provisioner.allow_officer_names:
        names = [format_general_name(n) for n in authorization.names]
        check_no_role_names(store, authorization.subject, names, provisioner=provisioner.name)


def _new_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def _code_matches(code: str | None, expected_sha256: str) -> bool:
    given = (code or "").strip().upper().replace("-", "").replace(" ", "")
    return hmac.compare_digest(_code_hash(given), expected_sha256)


def _check_id(request_id: str) -> str:
    value = request_id.strip().lower()
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise BadRequest("a request id is 32 hex digits")
    return value
