"""Migration 0007 fills in what a database from before it already knows.

Key hashes from each certificate's DER, ``renewed_from`` from the audit log's
``certificate.renewed`` entries (the first successor of a fan-out made before the fix), and
the keys of certificates already revoked for keyCompromise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from cryptography import x509
from sqlalchemy import insert, select

from ostiary.store import (
    AuditEntry,
    CertificateRecord,
    CompromisedKey,
    Store,
    certificate_values,
    migrate,
    spki_sha256_of,
    sqlite_url_for,
)
from ostiary.store.migrate import alembic_config

from ..conftest import NOW, TestCA

_NEW_COLUMNS = ("spki_sha256", "renewed_from")


def _row(certificate: x509.Certificate, **changes: Any) -> dict[str, Any]:
    values = certificate_values(certificate, profile="client", provisioner="ci", now=NOW)
    values.update({"revoked_at": None, "revocation_reason": None, **changes})
    return {k: v for k, v in values.items() if k not in _NEW_COLUMNS}


def _renewed(index: int, old: x509.Certificate, new: x509.Certificate) -> dict[str, Any]:
    return {
        "at": NOW,
        "event": "certificate.renewed",
        "actor": "t",
        "target": f"{new.serial_number:x}",
        "details": {"renewed_from": f"{old.serial_number:x}"},
        "prev_hash": f"{index:064x}",
        "hash": f"{index + 1:064x}",
    }


def test_migration_fills_key_hashes_lineage_and_compromised_keys(
    tmp_path: Path, test_ca: TestCA
) -> None:
    first, key = test_ca.issue("alice")
    second, _ = test_ca.issue("alice", key=key)  # renewed, same key
    fanned, _ = test_ca.issue("alice")  # a second renewal of `first`, before the fix
    stolen, _ = test_ca.issue("bob")
    store = Store.from_url(sqlite_url_for(tmp_path / "old.db"))
    try:
        with store.engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0006_request_policies")
            revoked = {"status": "revoked", "revoked_at": NOW, "revocation_reason": "keyCompromise"}
            connection.execute(
                insert(CertificateRecord.__table__),
                [_row(first), _row(second), _row(fanned), _row(stolen, **revoked)],
            )
            connection.execute(
                insert(AuditEntry.__table__),
                [_renewed(0, first, second), _renewed(1, first, fanned)],
            )
        migrate(store.engine)
        with store.transaction(read_only=True) as session:
            rows = {r.serial_number: r for r in session.scalars(select(CertificateRecord))}
            compromised = list(session.scalars(select(CompromisedKey)))
        assert rows[first.serial_number].spki_sha256 == spki_sha256_of(key.public_key())
        assert rows[second.serial_number].spki_sha256 == rows[first.serial_number].spki_sha256
        assert rows[second.serial_number].renewed_from == f"{first.serial_number:x}"
        assert rows[fanned.serial_number].renewed_from is None  # one successor only
        assert rows[first.serial_number].renewed_from is None
        assert [(k.spki_sha256, k.serial) for k in compromised] == [
            (spki_sha256_of(stolen.public_key()), f"{stolen.serial_number:x}")
        ]
    finally:
        store.dispose()
