"""Replacing the issuing intermediate, and revoking one (docs/lifecycle.md).

``ostiary ca intermediate rotate`` makes a new intermediate under the root, with a new key
(an encrypted file in ``secrets/intermediates/``, or a key generated in the token of a
PKCS#11 CA), writes its certificate to ``certs/intermediates/KEYID.crt`` and records it in
the database as the *active* one, in the same transaction that marks the one before it
*retiring*. The database is what every replica reads (:class:`~ostiary.authority.authority.
Authority` at start, and a running server when the audit log shows the rotation), so new
issuance moves to the new intermediate everywhere. A retiring intermediate keeps signing
CRLs and OCSP answers for its leaves until the last one has expired; renewals of its leaves
are issued by the active one.

``ostiary ca revoke --intermediate FINGERPRINT`` records the revocation; the root CRL is made
again at once (with the root key, unlocked for that moment) and lists it.
:func:`list_issuers` is what ``ca intermediate list`` and ``ca status`` show.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ostiary.authority.authority import Authority
from ostiary.authority.folder import (
    CAMaterial,
    CAPaths,
    IssuerKey,
    intermediate_urls,
    load_ca_public,
)
from ostiary.authority.token_ca import rotated_label_file, rotated_token_signer, token_settings
from ostiary.core.ca import create_intermediate_certificate, fingerprint_sha256, key_id_hex
from ostiary.core.errors import BadRequest, Conflict
from ostiary.core.issuance import IssuingCA
from ostiary.core.keys import KeyType, generate_private_key
from ostiary.core.names import parse_subject
from ostiary.signers.base import Signer
from ostiary.signers.files import FileSigner
from ostiary.store import (
    AuditLog,
    CertificateRecord,
    CertificateStatus,
    Store,
    find_issuer,
    issuer_records,
    make_active,
    record_issuer,
    revoke_issuer,
)
from ostiary.store.issuers import ACTIVE, RETIRING, REVOKED

#: States :func:`list_issuers` reports beyond the recorded ones.
EXPIRED = "expired"
#: A retiring intermediate whose leaves have all expired: it has nothing left to answer for.
RETIRED = "retired"


@dataclass(frozen=True)
class IssuerState:
    """One intermediate of the CA and where it stands (``ca intermediate list``)."""

    certificate: x509.Certificate
    #: active, retiring, retired, expired or revoked.
    state: str
    #: The latest notAfter of its valid leaves; None when it has none.
    last_leaf_expires: datetime | None
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    #: Whether it is the one recorded as issuing (also once expired, when its state says
    #: ``expired``: the CA then issues from an expired intermediate, which health reports).
    issuing: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint_sha256(self.certificate)

    @property
    def key_id(self) -> str:
        return key_id_hex(self.certificate)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def live(self) -> bool:
        """Whether relying parties still need it (trust bundles, CRLs, OCSP)."""
        return self.state in (ACTIVE, RETIRING)

    def as_json(self) -> dict[str, object]:
        return {
            "subject": self.certificate.subject.rfc4514_string(),
            "fingerprint_sha256": self.fingerprint,
            "key_id": self.key_id,
            "state": self.state,
            "not_before": self.certificate.not_valid_before_utc.isoformat(),
            "not_after": self.not_after.isoformat(),
            "last_leaf_expires": (
                self.last_leaf_expires.isoformat() if self.last_leaf_expires else None
            ),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revocation_reason": self.revocation_reason,
        }


def list_issuers(paths: CAPaths, store: Store, *, now: datetime) -> list[IssuerState]:
    """Every intermediate of the CA folder with its state, oldest first. Needs no key.

    The states come from the database; a folder that never rotated has no rows, and its one
    intermediate is active. Past its notAfter an intermediate is ``expired``; a retiring one
    whose leaves have all expired is ``retired``.
    """
    _config, _root, first = load_ca_public(paths)
    certificates = [first, *paths.rotated_intermediates()]
    with store.transaction(read_only=True) as session:
        recorded = {r.fingerprint_sha256: r for r in issuer_records(session, "intermediate")}
        last_leaves = dict(
            session.execute(
                select(CertificateRecord.issuer_key_id, func.max(CertificateRecord.not_after))
                .where(CertificateRecord.status == CertificateStatus.VALID.value)
                .group_by(CertificateRecord.issuer_key_id)
            ).all()
        )
    states = []
    for certificate in certificates:
        record = recorded.get(fingerprint_sha256(certificate))
        state = record.state if record is not None else (ACTIVE if not recorded else RETIRING)
        issuing = state == ACTIVE
        last_leaf = last_leaves.get(key_id_hex(certificate))
        if last_leaf is not None and last_leaf <= now:
            last_leaf = None
        if state != REVOKED and certificate.not_valid_after_utc <= now:
            state = EXPIRED
        elif state == RETIRING and last_leaf is None:
            state = RETIRED
        states.append(
            IssuerState(
                certificate,
                state,
                last_leaf,
                record.revoked_at if record is not None else None,
                record.revocation_reason if record is not None else None,
                issuing,
            )
        )
    return states


def live_intermediates(paths: CAPaths, store: Store, *, now: datetime) -> list[x509.Certificate]:
    """The intermediates relying parties must trust now: active and retiring (active first)."""
    states = [s for s in list_issuers(paths, store, now=now) if s.live]
    states.sort(key=lambda s: s.state != ACTIVE)
    return [s.certificate for s in states]


def live_issuers(authority: Authority) -> list[IssuingCA]:
    """The intermediates of a running authority that relying parties need (active first,
    then retiring; neither revoked nor expired): what ``/intermediates.pem`` serves and
    whose CRLs ``ca crl-watch`` writes.
    """
    now = authority.clock()
    with authority.store.transaction(read_only=True) as session:
        states = {r.key_id: r.state for r in issuer_records(session, "intermediate")}
    live = [
        issuer
        for key_id, issuer in authority.issuers.items()
        if issuer.certificate.not_valid_after_utc > now
        and (
            states.get(key_id) in (ACTIVE, RETIRING)
            or (not states and key_id == first_key_id(authority))
        )
    ]
    live.sort(key=lambda i: key_id_hex(i.certificate) != authority.issuer_key_id)
    return live


def first_key_id(authority: Authority) -> str:
    return key_id_hex(authority.ca.intermediate)


def rotate_intermediate(
    material: CAMaterial,
    store: Store,
    root_signer: Signer,
    *,
    key_type: KeyType,
    password: bytes | None,
    now: datetime,
    actor: str | None,
) -> x509.Certificate:
    """Make a new intermediate under the newest root (``root_signer`` holds its key) and
    make it the issuing one (see above).

    ``password`` encrypts the new key file; None for a token CA, whose new key is generated
    in the token (labelled after the configured intermediate label and the key id).
    """
    config = material.config
    label: str | None = None
    if config.kms == "pkcs11":
        from ostiary.signers.pkcs11 import Pkcs11Signer

        if not isinstance(material.signer, Pkcs11Signer):
            raise BadRequest("this token CA's issuing key is not open")
        label = f"{token_settings(config).intermediate_key}-{now:%Y%m%d%H%M%S}"
        if material.signer.token.has_object(label):
            raise Conflict(f"the token holds a key labelled {label!r} already: try again")
        signer: Signer = material.signer.token.generate(label, key_type)
        public_key = signer.public_key()
    else:
        if password is None:
            raise BadRequest("the CA password is needed to encrypt the new key")
        key = generate_private_key(key_type)
        public_key = key.public_key()
    key_id = x509.SubjectKeyIdentifier.from_public_key(public_key).digest.hex()
    certificate = create_intermediate_certificate(
        parse_subject(f"CN={config.name} Intermediate CA {now:%Y-%m-%d} {key_id[:8]}"),
        public_key,
        root_certificate=material.newest_root,
        root_key=root_signer.private_key,
        now=now,
        root_urls=intermediate_urls(
            config.url,
            None if material.newest_root is material.root else key_id_hex(material.newest_root),
        ),
    )
    paths = material.paths
    paths.rotated_certificates.mkdir(parents=True, exist_ok=True)
    if label is not None:
        rotated_label_file(paths, certificate).write_text(label + "\n", encoding="utf-8")
    else:
        paths.rotated_keys.mkdir(parents=True, exist_ok=True, mode=0o700)
        FileSigner.create(paths.rotated_key(key_id), key, password)  # type: ignore[arg-type]
    (paths.rotated_certificates / f"{key_id}.crt").write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
    )
    root_key_id = key_id_hex(material.newest_root)
    with store.transaction() as session:
        record_known_issuers(session, material, now=now)
        record = record_issuer(
            session,
            certificate,
            kind="intermediate",
            state=RETIRING,
            issuer_key_id=root_key_id,
            now=now,
        )
        make_active(session, record.fingerprint_sha256)
        AuditLog(session).append(
            ROTATED_EVENT,
            actor=actor,
            target=record.fingerprint_sha256,
            details={
                "key_id": key_id,
                "subject": record.subject,
                "not_after": certificate.not_valid_after_utc.isoformat(),
            },
            at=now,
        )
    return certificate


#: The audit event of a rotation; running servers switch issuers when they see it.
ROTATED_EVENT = "ca.intermediate_rotated"


def record_known_issuers(session: Session, material: CAMaterial, *, now: datetime) -> None:
    """Record the folder's root and intermediates if they are not yet: the first
    intermediate active when nothing is recorded, the others retiring.
    """
    root_key_id = key_id_hex(material.root)
    record_issuer(
        session, material.root, kind="root", state=ACTIVE, issuer_key_id=root_key_id, now=now
    )
    nothing_active = not any(r.state == ACTIVE for r in issuer_records(session, "intermediate"))
    for position, issuer in enumerate(material.issuers):
        record_issuer(
            session,
            issuer.certificate,
            kind="intermediate",
            state=ACTIVE if position == 0 and nothing_active else RETIRING,
            issuer_key_id=key_id_hex(material.root_of(issuer.certificate)),
            now=now,
        )


def reload_issuers(material: CAMaterial, password: bytes) -> tuple[IssuingCA, ...]:
    """The folder's intermediates with their keys, read again (a running server after a
    rotation made elsewhere): the file keys open with ``password``; a token CA's open on the
    session the server holds.
    """
    from ostiary.signers.pkcs11 import Pkcs11Signer

    paths = material.paths
    rotated: list[IssuerKey] = []
    for certificate in paths.rotated_intermediates():
        signer: Signer
        if isinstance(material.signer, Pkcs11Signer):
            signer = rotated_token_signer(paths, material.signer, certificate)
        else:
            signer = FileSigner.load(paths.rotated_key(key_id_hex(certificate)), password)
        rotated.append(IssuerKey(certificate, signer))
    return replace(material, rotated=tuple(rotated)).issuers


def revoke_intermediate(
    material: CAMaterial,
    store: Store,
    fingerprint: str,
    *,
    reason: x509.ReasonFlags,
    now: datetime,
    actor: str | None,
) -> str:
    """Record the revocation of one of this CA's intermediates; its subject.

    The active intermediate cannot be revoked while it is the one issuing: rotate first
    (otherwise nothing could be issued, and leaves would keep coming from a revoked CA).
    """
    with store.transaction() as session:
        record_known_issuers(session, material, now=now)
        record = find_issuer(session, fingerprint)
        if record.kind != "intermediate":
            raise BadRequest("only an intermediate can be revoked here (not a root)")
        if record.state == ACTIVE:
            raise Conflict(
                "this intermediate is the one issuing now: run 'ostiary ca intermediate "
                "rotate' first, then revoke it"
            )
        revoke_issuer(session, record, reason=reason.value, at=now)
        AuditLog(session).append(
            REVOKED_EVENT,
            actor=actor,
            target=record.fingerprint_sha256,
            details={"reason": reason.value, "subject": record.subject, "serial": record.serial},
            at=now,
        )
        return record.subject


#: The audit event of an intermediate's revocation.
REVOKED_EVENT = "ca.intermediate_revoked"

__all__ = [
    "EXPIRED",
    "RETIRED",
    "REVOKED_EVENT",
    "ROTATED_EVENT",
    "IssuerState",
    "list_issuers",
    "live_intermediates",
    "live_issuers",
    "record_known_issuers",
    "reload_issuers",
    "revoke_intermediate",
    "rotate_intermediate",
]
