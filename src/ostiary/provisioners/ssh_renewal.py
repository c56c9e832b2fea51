"""Hosts renew their SSH host certificate over the current one, with no provisioner.

1. The host asks for a challenge (``POST /ssh/renew/nonce``): 256 random bits, single use,
   five minutes to live, kept (hashed) in the nonce table that TPM attestations use.
2. It signs :func:`renewal_message` (a label, the nonce and its current certificate's blob)
   with its host key, as an SSH signature blob, and sends certificate, nonce and signature
   (``POST /ssh/renew``).
3. The CA checks that the certificate is exactly one it issued with its host CA key (the
   stored line), that it is current and unrevoked, that the signature verifies with the
   certificate's key, and spends the nonce; the new certificate has the same key id and
   principals, and the host lifetime of the policy of the provisioner that authorized the
   first one (30 days if it is gone; refused if its policy no longer allows hosts).

The principals therefore never come from the request, and only the holder of the host key
can renew; a revoked host certificate renews no more.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ostiary.authority.ssh import SSHAuthorization
from ostiary.core.errors import (
    InvalidCertificate,
    MalformedInput,
    NotFound,
    PolicyDenied,
    TooManyRequests,
)
from ostiary.provisioners.ssh import SSHPolicy, load_ssh_policy
from ostiary.ssh import (
    SSHCertificateType,
    SSHPublicKey,
    ca_public_key_line,
    load_ssh_public_key_line,
    renewal_message,
    verify_ssh_signature,
)
from ostiary.ssh.wire import decode_blob
from ostiary.store import (
    AttestationNonceRepository,
    CertificateStatus,
    SSHCertificateRecord,
    SSHCertificateRepository,
    Store,
)

NONCE_TTL = timedelta(minutes=5)
MAX_UNSPENT_NONCES = 10_000
_PREFIX = "ssh-renew."


def issue_renewal_nonce(store: Store, *, now: datetime) -> tuple[str, datetime]:
    """A fresh single-use challenge, and when it expires."""
    nonce = _PREFIX + secrets.token_urlsafe(32)
    expires_at = now + NONCE_TTL
    with store.transaction() as session:
        nonces = AttestationNonceRepository(session)
        nonces.purge_expired(now, keep_spent_until=now - timedelta(days=1))
        waiting, _ = nonces.unspent(now=now)
        if waiting >= MAX_UNSPENT_NONCES:
            raise TooManyRequests.wait("too many challenges are waiting: ask again later", 60)
        nonces.add(nonce, now=now, expires_at=expires_at)
    return nonce, expires_at


def authorize_host_renewal(
    store: Store,
    certificate_line: str,
    nonce: str,
    signature: bytes,
    *,
    host_ca_sha256: str,
    now: datetime,
) -> tuple[SSHAuthorization, SSHPublicKey]:
    """Check the proof and spend the nonce; the renewed certificate's authorization and key."""
    parts = certificate_line.strip().split()
    if len(parts) < 2 or not nonce.startswith(_PREFIX) or len(nonce) > 128:
        raise MalformedInput("send the certificate line, the challenge and its signature")
    try:
        presented = serialization.load_ssh_public_identity(b" ".join(p.encode() for p in parts[:2]))
    except (ValueError, UnsupportedAlgorithm):
        raise MalformedInput("not an OpenSSH certificate line") from None
    if not isinstance(presented, serialization.SSHCertificate):
        raise MalformedInput("send the host certificate, not a plain public key")
    if presented.type is not serialization.SSHCertificateType.HOST:
        raise InvalidCertificate("this is a user certificate: only host certificates renew")
    blob = decode_blob(parts[1])
    record = _current_host_certificate(store, presented.serial, host_ca_sha256, blob, now=now)
    verify_ssh_signature(presented.public_key(), renewal_message(nonce, blob), signature)
    with store.transaction() as session:
        AttestationNonceRepository(session).spend(nonce, now=now)
    policy = SSHPolicy(host=True)
    if record.provisioner is not None:
        try:
            _, policy = load_ssh_policy(store, record.provisioner)
        except NotFound:
            pass
    if not policy.host:
        raise PolicyDenied(
            f"provisioner {record.provisioner!r} no longer issues host certificates: "
            "this host certificate does not renew"
        )
    authorization = SSHAuthorization(
        cert_type=SSHCertificateType.HOST,
        principals=tuple(record.principals),
        key_id=record.key_id,
        lifetime=policy.host_lifetime,
        provisioner=record.provisioner or "renewal",
    )
    return authorization, load_ssh_public_key_line(ca_public_key_line(presented.public_key()))


def _current_host_certificate(
    store: Store, serial: int, host_ca_sha256: str, blob: bytes, *, now: datetime
) -> SSHCertificateRecord:
    with store.transaction(read_only=True) as session:
        try:
            record = SSHCertificateRepository(session).get(serial, ca_key_sha256=host_ca_sha256)
        except NotFound:
            raise InvalidCertificate("this is not a host certificate of this CA") from None
        session.expunge(record)
    stored = decode_blob(record.certificate.split()[1])
    if not hmac.compare_digest(stored, blob):
        raise InvalidCertificate("this is not a host certificate of this CA")
    if record.status == CertificateStatus.REVOKED.value:
        raise InvalidCertificate(f"host certificate {serial} is revoked", serial=serial)
    if now >= record.not_after:
        raise InvalidCertificate(
            f"host certificate {serial} expired at {record.not_after:%Y-%m-%d %H:%M:%SZ}: "
            "get a new one with a token",
            serial=serial,
        )
    return record
