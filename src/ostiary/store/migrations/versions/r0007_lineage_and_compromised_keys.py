"""Renewal lineages and compromised keys.

``certificates`` gains ``spki_sha256`` (every certificate of one key) and ``renewed_from``
(the serial a renewal replaced; unique, so a certificate has one successor), and
``compromised_keys`` lists keys reported by a revocation for keyCompromise. Existing rows are
filled in: the key hash from each certificate's DER, ``renewed_from`` from the audit log's
``certificate.renewed`` entries (oldest successor kept), and the keys of certificates already
revoked for keyCompromise.

Revision ID: 0007_lineage
Revises: 0006_request_policies
Create Date: 2026-12-07
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from alembic import op
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

revision: str = "0007_lineage"
down_revision: str | Sequence[str] | None = "0006_request_policies"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)
_BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("certificates") as table:
        table.add_column(sa.Column("spki_sha256", sa.String(64), nullable=True))
        table.add_column(sa.Column("renewed_from", sa.String(40), nullable=True))
    op.create_table(
        "compromised_keys",
        sa.Column("spki_sha256", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("issuer_key_id", sa.String(128), nullable=False),
        sa.Column("reported_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("spki_sha256", name="pk_compromised_keys"),
    )
    _fill_in(op.get_bind())
    op.create_index("ix_certificates_spki_sha256", "certificates", ["spki_sha256"])
    with op.batch_alter_table("certificates") as table:
        table.create_unique_constraint("uq_certificates_renewed_from", ["renewed_from"])


def downgrade() -> None:
    with op.batch_alter_table("certificates") as table:
        table.drop_constraint("uq_certificates_renewed_from", type_="unique")
    op.drop_index("ix_certificates_spki_sha256", table_name="certificates")
    op.drop_table("compromised_keys")
    with op.batch_alter_table("certificates") as table:
        table.drop_column("renewed_from")
        table.drop_column("spki_sha256")


def _fill_in(connection: sa.Connection) -> None:
    certificates = sa.table(
        "certificates",
        sa.column("id"),
        sa.column("issuer_key_id"),
        sa.column("serial"),
        sa.column("der"),
        sa.column("status"),
        sa.column("revocation_reason"),
        sa.column("revoked_at"),
        sa.column("spki_sha256"),
        sa.column("renewed_from"),
    )
    last = 0
    while True:
        rows = connection.execute(
            sa.select(certificates.c.id, certificates.c.der)
            .where(certificates.c.id > last)
            .order_by(certificates.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        for row_id, der in rows:  # der: the driver's bytes or memoryview
            key = x509.load_der_x509_certificate(bytes(cast(bytes, der))).public_key()
            info = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            connection.execute(
                certificates.update()
                .where(certificates.c.id == row_id)
                .values(spki_sha256=hashlib.sha256(info).hexdigest())
            )
        last = rows[-1][0]
    _fill_in_lineage(connection, certificates)
    compromised = sa.table(
        "compromised_keys",
        sa.column("spki_sha256"),
        sa.column("serial"),
        sa.column("issuer_key_id"),
        sa.column("reported_at"),
    )
    seen: set[str] = set()
    for spki, serial, issuer, at in connection.execute(
        sa.select(
            certificates.c.spki_sha256,
            certificates.c.serial,
            certificates.c.issuer_key_id,
            certificates.c.revoked_at,
        )
        .where(certificates.c.revocation_reason == "keyCompromise")
        .order_by(certificates.c.id)
    ):
        if spki is None or str(spki) in seen:
            continue
        seen.add(str(spki))
        connection.execute(
            compromised.insert().values(
                spki_sha256=spki,
                serial=serial,
                issuer_key_id=issuer,
                reported_at=at or datetime.now(UTC),
            )
        )


def _fill_in_lineage(connection: sa.Connection, certificates: Any) -> None:
    """``renewed_from`` from the audit log (target: the new serial; details: the old)."""
    audit = sa.table(
        "audit_entries", sa.column("id"), sa.column("event"), sa.column("target"),
        sa.column("details"),
    )  # fmt: skip
    taken: set[str] = set()
    for target, details in connection.execute(
        sa.select(audit.c.target, audit.c.details)
        .where(audit.c.event == "certificate.renewed")
        .order_by(audit.c.id)
    ):
        data = json.loads(details) if isinstance(details, str) else details
        old = data.get("renewed_from") if isinstance(data, dict) else None
        if not isinstance(old, str) or not target:
            continue
        old_serial = old.lower().replace(":", "").lstrip("0") or "0"
        new_serial = str(target).lower().replace(":", "").lstrip("0") or "0"
        if old_serial in taken:
            continue  # a fan-out from before this revision: the first successor is the one
        issuer = connection.execute(
            sa.select(certificates.c.issuer_key_id).where(certificates.c.serial == new_serial)
        ).scalar()
        if issuer is None:
            continue
        taken.add(old_serial)
        connection.execute(
            certificates.update()
            .where(certificates.c.serial == new_serial, certificates.c.issuer_key_id == issuer)
            .values(renewed_from=old_serial)
        )
