"""``ca status``: the state of a CA in one report, read without its keys.

What it holds (:class:`StatusReport`): the CA certificates' expiry, every intermediate with
its state (active, retiring, retired, expired, revoked: :mod:`ostiary.authority.rollover`),
the CRL of the root and of each active or retiring intermediate (the root's from its file,
an intermediate's fetched from the CA's own URL as relying parties fetch it), how many
certificates end within 7 and 30 days, pending requests, the database size, each replica's
last heartbeat, remote-signing keys and SSH CA keys; and the findings
(warnings, errors) derived from those, each with its fix. The CLI renders it as tables or
JSON; its exit status is non-zero when a finding is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from ostiary.authority.folder import CAPaths
from ostiary.authority.health import (
    CACertificate,
    CrlFetcher,
    CrlState,
    Finding,
    Level,
    ca_certificates,
    crl_finding,
    expiry_finding,
    fetch_crl,
    read_ca_crl,
    worst,
)
from ostiary.authority.ssh_keys import ssh_ca_public_file
from ostiary.config import CAConfig, published_base_url
from ostiary.ssh import SSHCertificateType
from ostiary.store import CertificateRepository, ReplicaRepository, RequestRepository, Store
from ostiary.store.replicas import SILENT_AFTER, Replica
from ostiary.store.signing_keys import SigningKeyRecord, SigningKeyVersion

#: Windows over which ``ca status`` counts certificates about to end.
EXPIRING_WINDOWS = (7, 30)
#: A signing key's certificate this close to its end is warned about.
SIGNING_KEY_WARNING = timedelta(days=30)


@dataclass(frozen=True)
class SigningKeyState:
    name: str
    version: int
    key_type: str
    backend: str
    not_after: datetime


@dataclass(frozen=True)
class SSHKeyState:
    kind: str
    present: bool
    public_key: str | None = None


@dataclass
class StatusReport:
    """Everything ``ca status`` shows (see the module docstring)."""

    now: datetime
    ca: list[CACertificate]
    crls: list[CrlState]
    expiring: dict[int, int]
    pending_requests: int
    oldest_pending: datetime | None
    database: str
    database_bytes: int | None
    replicas: list[Replica]
    signing_keys: list[SigningKeyState]
    ssh_keys: list[SSHKeyState]
    findings: list[Finding] = field(default_factory=list)

    @property
    def level(self) -> Level:
        return worst(self.findings)

    def as_json(self) -> dict[str, Any]:
        now = self.now
        return {
            "at": now.isoformat(),
            "level": self.level.value,
            "ca_certificates": [
                {
                    "role": ca.role,
                    "state": ca.state,
                    "key_id": ca.key_id,
                    "subject": ca.subject,
                    "fingerprint_sha256": ca.fingerprint,
                    "crl_path": ca.crl_path,
                    "not_after": ca.not_after.isoformat(),
                    "seconds_left": int((ca.not_after - now).total_seconds()),
                }
                for ca in self.ca
            ],
            "crls": [crl.as_json(now) for crl in self.crls],
            "expiring": {f"{days}d": count for days, count in self.expiring.items()},
            "pending_requests": {
                "count": self.pending_requests,
                "oldest": self.oldest_pending.isoformat() if self.oldest_pending else None,
            },
            "database": {"kind": self.database, "bytes": self.database_bytes},
            "replicas": [
                {
                    "instance_id": r.instance_id,
                    "host": r.host,
                    "version": r.version,
                    "started_at": r.started_at.isoformat(),
                    "last_seen": r.last_seen.isoformat(),
                    "seconds_since_seen": int((now - r.last_seen).total_seconds()),
                }
                for r in self.replicas
            ],
            "signing_keys": [
                {
                    "name": k.name,
                    "version": k.version,
                    "key_type": k.key_type,
                    "backend": k.backend,
                    "not_after": k.not_after.isoformat(),
                }
                for k in self.signing_keys
            ],
            "ssh_keys": [
                {"kind": k.kind, "present": k.present, "public_key": k.public_key}
                for k in self.ssh_keys
            ],
            "findings": [f.as_json() for f in self.findings],
        }


def collect_status(
    paths: CAPaths,
    config: CAConfig,
    store: Store,
    *,
    now: datetime,
    fetch: CrlFetcher = fetch_crl,
) -> StatusReport:
    """Read everything :class:`StatusReport` holds; nothing is written."""
    certificates = ca_certificates(paths, store, now=now)
    base = published_base_url(config)
    crls = [read_ca_crl(c, paths, base, fetch=fetch) for c in certificates if c.watched]
    with store.transaction(read_only=True) as session:
        repository = CertificateRepository(session)
        expiring = {
            days: repository.count_expiring(now + timedelta(days=days), after=now)
            for days in EXPIRING_WINDOWS
        }
        pending = RequestRepository(session).pending(now=now)
        replicas = ReplicaRepository(session).all()
        rows = session.execute(
            select(SigningKeyRecord, SigningKeyVersion)
            .join(
                SigningKeyVersion,
                (SigningKeyVersion.key_id == SigningKeyRecord.id)
                & (SigningKeyVersion.version == SigningKeyRecord.current_version),
            )
            .order_by(SigningKeyRecord.name)
        ).all()
        signing_keys = [
            SigningKeyState(
                key.name,
                version.version,
                key.key_type,
                version.backend,
                version.certificate().not_valid_after_utc,
            )
            for key, version in rows
        ]
        kind, size = _database_size(session.connection().dialect.name, session, paths, config)
    report = StatusReport(
        now=now,
        ca=certificates,
        crls=crls,
        expiring=expiring,
        pending_requests=len(pending),
        oldest_pending=pending[0].created_at if pending else None,
        database=kind,
        database_bytes=size,
        replicas=replicas,
        signing_keys=signing_keys,
        ssh_keys=_ssh_keys(paths),
    )
    report.findings = _findings(report)
    return report


def _database_size(
    dialect: str, session: Any, paths: CAPaths, config: CAConfig
) -> tuple[str, int | None]:
    if dialect == "postgresql":
        size = session.scalar(text("SELECT pg_database_size(current_database())"))
        return "postgresql", int(size)
    database = Path(paths.database_url(config).removeprefix("sqlite:///"))
    total = 0
    for path in (database, Path(f"{database}-wal")):
        try:
            total += os.stat(path).st_size
        except OSError:
            pass
    return "sqlite", total


def _ssh_keys(paths: CAPaths) -> list[SSHKeyState]:
    states = []
    for cert_type in (SSHCertificateType.USER, SSHCertificateType.HOST):
        public = ssh_ca_public_file(paths, cert_type)
        kind = cert_type.name.lower()
        try:
            line = public.read_text(encoding="ascii").split()
        except (OSError, UnicodeDecodeError):
            states.append(SSHKeyState(kind, present=False))
            continue
        states.append(SSHKeyState(kind, present=True, public_key=line[0] if line else None))
    return states


def _findings(report: StatusReport) -> list[Finding]:
    now = report.now
    findings = [f for ca in report.ca if ca.watched and (f := expiry_finding(ca, now)) is not None]
    findings += [f for crl in report.crls if (f := crl_finding(crl, now)) is not None]
    for replica in report.replicas:
        silent = now - replica.last_seen
        if silent > SILENT_AFTER:
            findings.append(
                Finding(
                    Level.WARNING,
                    "replica-silent",
                    f"replica {replica.instance_id[:12]} on {replica.host} has not been seen "
                    f"for {int(silent.total_seconds())} s",
                    "check that its 'ostiary ca serve' still runs (a replica that stopped "
                    "cleanly leaves no row; this one did not)",
                )
            )
    for key in report.signing_keys:
        if key.not_after - now <= SIGNING_KEY_WARNING:
            level = Level.ERROR if key.not_after <= now else Level.WARNING
            findings.append(
                Finding(
                    level,
                    "signing-key-certificate-expiring",
                    f"the certificate of signing key {key.name} (v{key.version}) ends on "
                    f"{key.not_after:%Y-%m-%d}",
                    f"ostiary ca key rotate {key.name}",
                )
            )
    return findings


__all__ = [
    "EXPIRING_WINDOWS",
    "SSHKeyState",
    "SigningKeyState",
    "StatusReport",
    "collect_status",
]
