"""Console sign-in flows, sessions and shared server secrets, in the database.

Revision ID: 0004_console
Revises: 0003_signing_keys
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_console"
down_revision: str | Sequence[str] | None = "0003_signing_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept literal (not imported from ostiary.store): a migration must not change when the
# models do.
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "console_entries",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_console_entries"),
    )
    op.create_index("ix_console_entries_expires_at", "console_entries", ["expires_at"])
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_server_secrets"),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
    op.drop_index("ix_console_entries_expires_at", table_name="console_entries")
    op.drop_table("console_entries")
