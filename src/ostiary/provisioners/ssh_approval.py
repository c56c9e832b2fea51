"""SSH user certificates approved by an officer, through the approval queue.

For people or machines with no sign-in and no token. The requester sends an SSH public key,
the principals it asks for and a note to an ``approval`` provisioner
(``POST /ssh/requests``); the request waits in the same queue as X.509 requests
(``ostiary ca requests list``, the console), shown as ``ssh-principal:<name>`` entries; an
officer approves it (``ostiary ca requests approve ID``), which is the authorization: the
certificate carries exactly the principals the officer saw, within the provisioner's SSH
policy (principal patterns, user lifetime, extensions, critical options). The requester
collects it (``GET /ssh/requests/{id}``, ``ostiary ssh request --wait``).

The row is a :class:`~ostiary.store.CertificateRequest` of kind ``ssh``: ``csr_pem`` holds the
public key line, ``serial`` the SSH certificate's serial in hex.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from ostiary.authority.ssh import IssuedSSHCertificate, SSHAuthority
from ostiary.authority.ssh_keys import ca_key_sha256
from ostiary.core.errors import BadRequest, Conflict, NotFound
from ostiary.provisioners.approval import MAX_NOTE, load_approval_provisioner
from ostiary.provisioners.approval_decisions import check_decidable, claimed
from ostiary.provisioners.approval_queue import (
    RequestView,
    Submitted,
    check_queue_room,
    record_request,
)
from ostiary.provisioners.ssh import load_ssh_policy
from ostiary.ssh import SSHCertificateType, SSHPublicKey, load_ssh_public_key_line
from ostiary.store import (
    AuditLog,
    RequestRepository,
    RequestStatus,
    SSHCertificateRepository,
    Store,
)

KIND = "ssh"
_PRINCIPAL = "ssh-principal:"
#: The request's ``subject`` (an RFC 4514 string, as the queue shows subjects).
_SUBJECT = "CN=SSH user certificate"


def submit_ssh_request(
    store: Store,
    provisioner_name: str,
    public_key: SSHPublicKey,
    principals: Sequence[str],
    *,
    now: datetime,
    note: str | None = None,
) -> Submitted:
    """Check the request as issuance will, then queue it for an officer (audited)."""
    provisioner = load_approval_provisioner(store, provisioner_name)
    if note is not None and len(note) > MAX_NOTE:
        raise BadRequest(f"the note is longer than {MAX_NOTE} characters")
    _, policy = load_ssh_policy(store, provisioner.name)
    names = policy.check_principals(list(principals))
    check_queue_room(store, provisioner, now=now)
    return record_request(
        store,
        provisioner,
        subject=_SUBJECT,
        names=[_PRINCIPAL + name for name in names],
        request=public_key.line(),
        now=now,
        note=note,
        kind=KIND,
    )


def approve_ssh_request(
    ssh: SSHAuthority, request_id: str, *, officer: str, code: str | None = None
) -> IssuedSSHCertificate:
    """Issue the certificate of a pending SSH request for exactly its principals.

    As with X.509 requests: a wrong or missing code leaves it pending (audited), of two
    officers one wins, and a failed issuance puts it back to pending.
    """
    store, now = ssh.store, ssh.clock()
    with store.transaction(read_only=True) as session:
        record = RequestRepository(session).get(request_id)
        status = record.status_at(now)
        code_sha256, provisioner = record.code_sha256, record.provisioner
        line, names, kind = record.csr_pem, list(record.sans), record.kind
    if kind != KIND:
        raise NotFound("no such SSH certificate request", request_id=request_id[:40])
    check_decidable(store, request_id, status, code_sha256, code, officer=officer, now=now)
    principals = tuple(n.removeprefix(_PRINCIPAL) for n in names if n.startswith(_PRINCIPAL))
    _, policy = load_ssh_policy(store, provisioner)
    authorization = policy.authorization(
        SSHCertificateType.USER,
        policy.check_principals(principals),  # the policy may have changed since
        key_id=f"{principals[0]} (request {request_id[:8]})",
        provisioner=provisioner,
    )
    public_key = load_ssh_public_key_line(line)

    def mark_issued(session: Session, serial: int) -> None:
        # In the issuance's transaction: the certificate and the request marked issued, with
        # both audit entries, or none of them.
        record = RequestRepository(session).get(request_id)
        if record.status != RequestStatus.APPROVING.value:
            raise Conflict("request is no longer being approved", request_id=request_id)
        record.status = RequestStatus.ISSUED.value
        record.decided_at = now
        record.decided_by = officer
        record.serial = f"{serial:x}"
        AuditLog(session).append(
            "request.approved",
            at=now,
            actor=officer,
            target=request_id,
            details={"ssh_serial": str(serial), "san": record.sans},
        )

    with claimed(store, request_id, now=now):
        return ssh.issue(
            public_key,
            authorization,
            actor=officer,
            details={"via": "approval", "request_id": request_id},
            also=mark_issued,
        )


def issued_ssh_certificate(ssh: SSHAuthority, view: RequestView) -> str | None:
    """The certificate line an issued SSH request got, or None."""
    if view.kind != KIND or view.serial is None:
        return None
    user_ca = ca_key_sha256(ssh.keys.user.public_key())
    with ssh.store.transaction(read_only=True) as session:
        record = SSHCertificateRepository(session).get(int(view.serial, 16), ca_key_sha256=user_ca)
        return record.certificate
