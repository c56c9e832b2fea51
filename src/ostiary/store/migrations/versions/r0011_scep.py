"""SCEP one-time challenges and transactions.

Revision ID: 0011_scep
Revises: 0010_acme
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_scep"
down_revision: str | Sequence[str] | None = "0010_acme"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scep_challenges",
        sa.Column("challenge_sha256", sa.String(64), nullable=False),
        sa.Column("provisioner", sa.String(128), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("sans", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("used_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("challenge_sha256", name="pk_scep_challenges"),
    )
    op.create_table(
        "scep_transactions",
        sa.Column("provisioner", sa.String(128), nullable=False),
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("csr_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("request_id", sa.String(32), nullable=True),
        sa.Column("serial", sa.String(40), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("provisioner", "transaction_id", name="pk_scep_transactions"),
    )


def downgrade() -> None:
    op.drop_table("scep_transactions")
    op.drop_table("scep_challenges")
