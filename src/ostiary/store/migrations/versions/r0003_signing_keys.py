"""Signing keys for remote signing (client assertions): keys and their versions.

Revision ID: 0003_signing_keys
Revises: 0002_approval (linearized after the web console's migration)
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_signing_keys"
down_revision: str | Sequence[str] | None = "0002_approval"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept literal (not imported from ostiary.store): a migration must not change when the
# models do.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("key_type", sa.String(32), nullable=False),
        sa.Column("audiences", sa.JSON(), nullable=False),
        sa.Column("callers", sa.JSON(), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("allow_digest_signing", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_signing_keys"),
        sa.UniqueConstraint("name", name="uq_signing_keys_name"),
    )
    op.create_table(
        "signing_key_versions",
        sa.Column("id", _ID, nullable=False),
        sa.Column("key_id", _ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("key_ref", sa.String(512), nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_signing_key_versions"),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["signing_keys.id"],
            name="fk_signing_key_versions_key_id_signing_keys",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("key_id", "version", name="uq_signing_key_versions_key_id_version"),
    )


def downgrade() -> None:
    op.drop_table("signing_key_versions")
    op.drop_table("signing_keys")
