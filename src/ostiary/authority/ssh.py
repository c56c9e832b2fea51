"""SSH certificates: sign -> record -> audit, revoke, and the KRL.

A provisioner turns a credential into an :class:`SSHAuthorization` (the certificate type,
the exact principals, the lifetime, options and extensions its policy allows); this module
signs the certificate with the matching CA key (``ssh_keys.py``) and commits its record,
the spent token and one audit entry in one transaction before returning it, as X.509
issuance does: a client never holds a certificate the CA does not know about.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from ostiary.authority.ssh_keys import SSHCAKeys, ca_key_sha256
from ostiary.core.errors import TokenReused
from ostiary.ssh import (
    SSHCertificateFields,
    SSHCertificateType,
    SSHPublicKey,
    build_krl,
    certificate_line,
    sign_certificate,
)
from ostiary.store import (
    AuditLog,
    CertificateStatus,
    SSHCertificateRecord,
    SSHCertificateRepository,
    Store,
    TokenRepository,
    TokenSpend,
)

#: Certificates start this much before the request, for clocks slightly behind.
BACKDATE = timedelta(minutes=1)


@dataclass(frozen=True)
class SSHAuthorization:
    """What a provisioner allows one SSH certificate to say."""

    cert_type: SSHCertificateType
    principals: tuple[str, ...]
    key_id: str
    lifetime: timedelta
    provisioner: str
    critical_options: Mapping[str, str] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True)
class IssuedSSHCertificate:
    serial: int
    line: str
    not_after: datetime


def key_fingerprint(public_key: SSHPublicKey) -> str:
    """``ssh-keygen -l``'s SHA256 fingerprint, without the ``SHA256:`` prefix."""
    digest = hashlib.sha256(public_key.blob).digest()
    return base64.b64encode(digest).decode("ascii").rstrip("=")


class SSHAuthority:
    """Issues, records and revokes SSH certificates with the CA folder's two SSH keys."""

    def __init__(self, keys: SSHCAKeys, store: Store, *, clock: Callable[[], datetime]) -> None:
        self.keys = keys
        self.store = store
        self.clock = clock
        self.revocation_listeners: list[Callable[[int], None]] = []
        #: Told ``(provisioner, "ssh_certificate.issued")`` after each issuance committed,
        #: and, through :attr:`denial_listeners`, ``(provisioner, "token-reused")`` (metrics).
        self.issuance_listeners: list[Callable[[str | None, str], None]] = []
        self.denial_listeners: list[Callable[[str | None, str], None]] = []

    def issue(
        self,
        public_key: SSHPublicKey,
        authorization: SSHAuthorization,
        *,
        actor: str | None,
        token: TokenSpend | None = None,
        details: Mapping[str, object] | None = None,
        also: Callable[[Session, int], None] | None = None,
    ) -> IssuedSSHCertificate:
        """Sign, then record the certificate, the spent ``token`` and its audit entry at once.

        ``also(session, serial)`` writes what the caller records with the certificate, in its
        transaction (an approved request marked issued): if it raises, nothing is recorded.

        A replayed token records nothing but a ``token.reused`` entry and raises
        :class:`TokenReused`; the certificate signed for it is dropped. ``details`` go into
        the audit entry (how it was authorized: ``via``, the X.509 serial...).
        """
        now = self.clock().replace(microsecond=0)
        signer = self.keys.signer_for(authorization.cert_type)
        fields = SSHCertificateFields(
            public_key=public_key,
            serial=secrets.randbits(64) or 1,
            cert_type=authorization.cert_type,
            key_id=authorization.key_id,
            principals=authorization.principals,
            valid_after=now - BACKDATE,
            valid_before=now + authorization.lifetime,
            critical_options=authorization.critical_options,
            extensions=authorization.extensions,
        )
        line = certificate_line(sign_certificate(fields, signer.private_key), authorization.key_id)
        kind = authorization.cert_type.name.lower()
        audited: dict[str, object] = {
            **(details or {}),
            "type": kind,
            "principals": list(authorization.principals),
            "key_id": authorization.key_id,
            "provisioner": authorization.provisioner,
            "not_after": fields.valid_before.isoformat(),
            "key_fingerprint": "SHA256:" + key_fingerprint(public_key),
        }
        reused = False
        with self.store.transaction() as session:
            audit = AuditLog(session)
            if token is not None:
                try:
                    TokenRepository(session).use(
                        token.token_id, token.provisioner, token.expires_at, now
                    )
                except TokenReused:
                    reused = True
            if reused:
                audit.append(
                    "token.reused",
                    at=now,
                    actor=actor,
                    target=authorization.key_id,
                    details={"purpose": "ssh", "token_id": token.token_id if token else None},
                )
            else:
                SSHCertificateRepository(session).add(
                    SSHCertificateRecord(
                        ca_key_sha256=ca_key_sha256(signer.public_key()),
                        serial=f"{fields.serial:x}",
                        cert_type=kind,
                        key_id=authorization.key_id,
                        principals=list(authorization.principals),
                        not_before=fields.valid_after,
                        not_after=fields.valid_before,
                        provisioner=authorization.provisioner,
                        status=CertificateStatus.VALID.value,
                        key_fingerprint=key_fingerprint(public_key),
                        certificate=line,
                        created_at=now,
                    )
                )
                if token is not None:
                    audited["token_id"] = token.token_id
                audit.append(
                    "ssh_certificate.issued",
                    at=now,
                    actor=actor,
                    target=str(fields.serial),
                    details=audited,
                )
                if also is not None:
                    also(session, fields.serial)
        if reused:
            for denied in self.denial_listeners:
                denied(authorization.provisioner, TokenReused.code)
            raise TokenReused("this token was already used: tokens are single-use")
        for issued in self.issuance_listeners:
            issued(authorization.provisioner, "ssh_certificate.issued")
        return IssuedSSHCertificate(fields.serial, line, fields.valid_before)

    def revoke(self, serial: int, *, actor: str | None) -> SSHCertificateRecord:
        """Revoke an SSH certificate (once) and audit it; the KRL and status answer at once."""
        now = self.clock()
        with self.store.transaction() as session:
            repository = SSHCertificateRepository(session)
            record = repository.get(serial)
            repository.revoke(record, now=now)
            AuditLog(session).append(
                "ssh_certificate.revoked",
                at=now,
                actor=actor,
                target=str(serial),
                details={"key_id": record.key_id, "principals": list(record.principals)},
            )
            session.expunge(record)
        for listener in self.revocation_listeners:
            listener(serial)
        return record

    def status(self, serial: int, *, cert_type: SSHCertificateType) -> SSHCertificateRecord:
        """The record of ``serial`` under the CA key of ``cert_type`` (NotFound otherwise)."""
        ca = ca_key_sha256(self.keys.signer_for(cert_type).public_key())
        with self.store.transaction(read_only=True) as session:
            record = SSHCertificateRepository(session).get(serial, ca_key_sha256=ca)
            session.expunge(record)
        return record

    def krl_version(self) -> int:
        """The KRL's version: how many certificates are revoked (it only grows)."""
        with self.store.transaction(read_only=True) as session:
            return SSHCertificateRepository(session).revocation_count()

    def build_krl(self) -> bytes:
        """A KRL of every revoked certificate of both CA keys; its version only grows.

        Its generation date is the newest revocation's time, not the clock's, so the KRL's
        bytes change only with its content: krl-watch rewrites the file (and runs its
        command) only then.
        """
        user, host = self.keys.user.public_key(), self.keys.host.public_key()
        with self.store.transaction(read_only=True) as session:
            repository = SSHCertificateRepository(session)
            version = repository.revocation_count()
            generated = repository.last_revoked_at() or datetime.fromtimestamp(0, UTC)
            revoked = [
                (key, repository.revoked_serials(ca_key_sha256(key))) for key in (user, host)
            ]
        return build_krl(revoked, version=version, now=generated, comment="ostiary")
