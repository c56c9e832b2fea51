"""Officers: who may decide approval requests and use the console, and what guards the role.

**The role follows a certificate, never a name.** The CA owner binds a certificate this CA
issued to an officer (``ostiary ca officer add NAME --cert CRT``); the binding is the
certificate's SHA-256 fingerprint. A requester chooses every name in a CSR, so a certificate
that merely carries an officer's name (``CN=officer-alice``, asked for through an approval
provisioner that allows ``cn:*``) grants nothing. Binding needs no CA key: the certificate
was issued already, the usual way; the owner only says which one is the officer's.

**Requests that name a role holder are refused** (at submission and again at approval)
unless the provisioner explicitly allows it (``allow_officer_names``): even without a right
attached, a certificate named like an officer misleads whoever reads the audit log or a
relying party's header. Names are compared in one canonical form (NFKC, case-folded).

**Officers see which pending requests name an existing identity** (an officer, or the subject
or a SAN of a valid certificate): :func:`identity_warnings`, shown by the console and the CLI.

Also here: resolving a request id from a unique prefix, and rejecting many requests at once.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import String, cast, or_, select

from ostiary.authority.authority import Authority
from ostiary.core.encoding import serial_hex
from ostiary.core.errors import BadRequest, Conflict, NameNotAuthorized, NotFound
from ostiary.provisioners.base import CAIdentity
from ostiary.provisioners.renewal import check_certificate_time, find_issued_certificate
from ostiary.store import (
    AuditLog,
    CertificateRecord,
    CertificateStatus,
    OfficerRepository,
    RequestRepository,
    Store,
)

#: Longest officer name (the ``officers.subject_cn`` column).
MAX_OFFICER_NAME = 255
#: Shortest request-id prefix accepted.
MIN_ID_PREFIX = 4
_HEX = frozenset("0123456789abcdef")


# --------------------------------------------------------------------------- the role


def bind_officer_certificate(
    store: Store,
    name: str,
    certificate: x509.Certificate,
    *,
    ca: CAIdentity,
    now: datetime,
    actor: str | None,
) -> str:
    """Give officer ``name`` the role through ``certificate`` (audited); its serial (hex).

    The certificate must be one this CA issued and recorded, not revoked, within its
    validity. Refused: :class:`Conflict` if it carries a role already.
    """
    name = name.strip()
    if not name or len(name) > MAX_OFFICER_NAME or not name.isprintable():
        raise BadRequest(f"an officer's name is 1-{MAX_OFFICER_NAME} printable characters")
    with store.transaction(read_only=True) as session:
        find_issued_certificate(session, certificate, ca=ca)
    check_certificate_time(certificate, now=now)
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    serial = serial_hex(certificate.serial_number)
    with store.transaction() as session:
        OfficerRepository(session).bind(name, fingerprint, serial, now=now, added_by=actor)
        AuditLog(session).append(
            "officer.added",
            at=now,
            actor=actor,
            target=name,
            details={"serial_number": serial, "fingerprint_sha256": fingerprint},
        )
    return serial


def officer_for_certificate(store: Store, certificate: x509.Certificate) -> str | None:
    """The officer ``certificate`` is bound to (by fingerprint), or None: no name counts."""
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    with store.transaction(read_only=True) as session:
        return OfficerRepository(session).name_for_fingerprint(fingerprint)


def canonical_identity(text: str) -> str:
    """The form names are compared in: NFKC, case-folded, without surrounding space."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


def names_of_request(subject: x509.Name, sans: Iterable[str]) -> list[str]:
    """The identities a request asks for: its subject's common names and its SAN values."""
    names = [
        str(attribute.value)
        for attribute in subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    ]
    names.extend(san.partition(":")[2] or san for san in sans)
    return names


def role_names_in(store: Store, names: Iterable[str]) -> list[str]:
    """Which of ``names`` are officers' names (canonical comparison), as the officers spell them."""
    with store.transaction(read_only=True) as session:
        officers = {canonical_identity(n): n for n in OfficerRepository(session).names()}
    return sorted({officers[c] for c in map(canonical_identity, names) if c in officers})


def check_no_role_names(
    store: Store, subject: x509.Name, sans: Sequence[str], *, provisioner: str
) -> None:
    """Refuse a request whose subject or SANs name an officer (403 name-not-authorized)."""
    clashes = role_names_in(store, names_of_request(subject, sans))
    if clashes:
        raise NameNotAuthorized(
            f"the request names {', '.join(repr(c) for c in clashes)}, who holds the officer "
            f"role; provisioner {provisioner!r} does not allow officers' names",
            provisioner=provisioner,
        )


class NamedRequest(Protocol):
    """What :func:`identity_warnings` reads of a request (a record or a view)."""

    @property
    def request_id(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def sans(self) -> Sequence[str]: ...
    @property
    def kind(self) -> str: ...


def identity_warnings(
    store: Store, requests: Sequence[NamedRequest], *, now: datetime
) -> dict[str, list[str]]:
    """For each request that names an existing identity, what it collides with."""
    warnings: dict[str, list[str]] = {}
    with store.transaction(read_only=True) as session:
        officers = {canonical_identity(n): n for n in OfficerRepository(session).names()}
        for request in requests:
            if request.kind != "x509":  # SSH principals name no X.509 identity
                continue
            found: list[str] = []
            subject = x509.Name.from_rfc4514_string(request.subject)
            for name in names_of_request(subject, request.sans):
                officer = officers.get(canonical_identity(name))
                if officer is not None:
                    found.append(f"names officer {officer!r}")
            matches = [CertificateRecord.subject == request.subject]
            matches += [
                cast(CertificateRecord.sans, String).contains(json.dumps(s), autoescape=True)
                for s in request.sans
            ]
            serials = session.scalars(
                select(CertificateRecord.serial)
                .where(
                    CertificateRecord.status == CertificateStatus.VALID.value,
                    CertificateRecord.not_after > now,
                    or_(*matches),
                )
                .limit(3)
            ).all()
            found.extend(f"same name as valid certificate {s}" for s in serials)
            if found:
                warnings[request.request_id] = list(dict.fromkeys(found))
    return warnings


# --------------------------------------------------------------------------- request ids


def resolve_request_id(store: Store, text: str) -> str:
    """The full id of the one request whose id starts with ``text`` (at least 4 hex digits).

    :class:`NotFound` if none; :class:`BadRequest` listing the matches if several.
    """
    prefix = text.strip().lower().rstrip("…").rstrip(".")
    if not MIN_ID_PREFIX <= len(prefix) <= 32 or not set(prefix) <= _HEX:
        raise BadRequest(
            f"a request id is 32 hex digits (or a unique prefix of at least {MIN_ID_PREFIX})"
        )
    with store.transaction(read_only=True) as session:
        matches = RequestRepository(session).ids_starting_with(prefix, limit=11)
    if not matches:
        raise NotFound(f"no certificate request id starts with {prefix}", request_id=prefix)
    if len(matches) > 1:
        shown = ", ".join(matches[:10]) + (", ..." if len(matches) > 10 else "")
        raise BadRequest(f"{prefix} is the start of several request ids: {shown}")
    return matches[0]


# --------------------------------------------------------------------------- bulk


def reject_requests(
    authority: Authority,
    *,
    officer: str,
    reason: str,
    provisioner: str | None = None,
    submitted_before: datetime | None = None,
) -> list[str]:
    """Reject every waiting request (of ``provisioner``, submitted before a time); their ids.

    Each is rejected as one officer would (claimed, audited ``request.rejected``); one that
    another officer decides meanwhile is left to them.
    """
    from ostiary.provisioners.approval import MAX_NOTE
    from ostiary.provisioners.approval_decisions import reject_request

    if not reason.strip() or len(reason.strip()) > MAX_NOTE:
        raise BadRequest(f"give a reason of 1-{MAX_NOTE} characters")
    now = authority.clock()
    with authority.store.transaction(read_only=True) as session:
        waiting = RequestRepository(session).pending(now=now)
    chosen = [
        r.request_id
        for r in waiting
        if (provisioner is None or r.provisioner == provisioner)
        and (submitted_before is None or r.created_at < submitted_before)
    ]
    rejected = []
    for request_id in chosen:
        try:
            reject_request(authority, request_id, officer=officer, reason=reason)
        except Conflict:
            continue  # decided by someone else in the meantime
        rejected.append(request_id)
    return rejected


__all__ = [
    "NamedRequest",
    "bind_officer_certificate",
    "canonical_identity",
    "check_no_role_names",
    "identity_warnings",
    "names_of_request",
    "officer_for_certificate",
    "reject_requests",
    "resolve_request_id",
    "role_names_in",
]
