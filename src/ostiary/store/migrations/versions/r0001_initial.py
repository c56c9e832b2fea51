"""Initial schema: certificates, used tokens, provisioners, CRL numbers, audit log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept literal (not imported from ostiary.store): a migration must not change when the
# models do.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)
_GENESIS_HASH = "0" * 64


def upgrade() -> None:
    op.create_table(
        "certificates",
        sa.Column("id", _ID, nullable=False),
        sa.Column("issuer_key_id", sa.String(128), nullable=False),
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("sans", sa.JSON(), nullable=False),
        sa.Column("not_before", _TIME, nullable=False),
        sa.Column("not_after", _TIME, nullable=False),
        sa.Column("profile", sa.String(128), nullable=False),
        sa.Column("provisioner", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revocation_reason", sa.String(32), nullable=True),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_certificates"),
        sa.UniqueConstraint("issuer_key_id", "serial", name="uq_certificates_issuer_key_id_serial"),
        sa.UniqueConstraint("fingerprint_sha256", name="uq_certificates_fingerprint_sha256"),
        sa.CheckConstraint("status IN ('valid', 'revoked')", name="ck_certificates_status"),
        sa.CheckConstraint(
            "(status = 'valid' AND revoked_at IS NULL AND revocation_reason IS NULL)"
            " OR (status = 'revoked' AND revoked_at IS NOT NULL"
            " AND revocation_reason IS NOT NULL)",
            name="ck_certificates_revocation",
        ),
    )
    op.create_index("ix_certificates_not_after", "certificates", ["not_after"])
    op.create_index(
        "ix_certificates_status_issuer_key_id", "certificates", ["status", "issuer_key_id"]
    )

    op.create_table(
        "used_tokens",
        sa.Column("id", _ID, nullable=False),
        sa.Column("provisioner", sa.String(128), nullable=False),
        sa.Column("token_id", sa.String(255), nullable=False),
        sa.Column("used_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_used_tokens"),
        sa.UniqueConstraint("provisioner", "token_id", name="uq_used_tokens_provisioner_token_id"),
    )
    op.create_index("ix_used_tokens_expires_at", "used_tokens", ["expires_at"])

    op.create_table(
        "provisioners",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_provisioners"),
        sa.UniqueConstraint("name", name="uq_provisioners_name"),
    )

    op.create_table(
        "crl_numbers",
        sa.Column("issuer_key_id", sa.String(128), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("issuer_key_id", name="pk_crl_numbers"),
    )

    op.create_table(
        "audit_entries",
        sa.Column("id", _ID, nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_entries"),
        sa.UniqueConstraint("hash", name="uq_audit_entries_hash"),
    )
    op.create_index("ix_audit_entries_at", "audit_entries", ["at"])

    audit_head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_entry_id", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
        sa.CheckConstraint("id = 1", name="ck_audit_head_single_row"),
    )
    # The head of an empty log: appends only ever update this row.
    op.bulk_insert(audit_head, [{"id": 1, "last_entry_id": 0, "hash": _GENESIS_HASH}])


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_index("ix_audit_entries_at", table_name="audit_entries")
    op.drop_table("audit_entries")
    op.drop_table("crl_numbers")
    op.drop_table("provisioners")
    op.drop_index("ix_used_tokens_expires_at", table_name="used_tokens")
    op.drop_table("used_tokens")
    op.drop_index("ix_certificates_status_issuer_key_id", table_name="certificates")
    op.drop_index("ix_certificates_not_after", table_name="certificates")
    op.drop_table("certificates")
