"""One-time enrollment secrets: ACME ClientIdentifiers and enrollment codes.

Revision ID: 0015_enrollment_secrets
Revises: 0014_ssh_requests
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_enrollment_secrets"
down_revision: str | None = "0014_ssh_requests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "enrollment_secrets",
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("provisioner", sa.String(128), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("sans", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("used_at", _TIME, nullable=True),
        sa.Column("used_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("secret_sha256", name="pk_enrollment_secrets"),
    )
    op.create_index("ix_enrollment_secrets_used_by", "enrollment_secrets", ["used_by"])


def downgrade() -> None:
    op.drop_index("ix_enrollment_secrets_used_by", "enrollment_secrets")
    op.drop_table("enrollment_secrets")
