"""Approval requests keep the policy OIDs their key attestation earned.

Revision ID: 0006_request_policies
Revises: 0005_attestation
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_request_policies"
down_revision: str | Sequence[str] | None = "0005_attestation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("certificate_requests") as table:
        table.add_column(sa.Column("policies", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("certificate_requests") as table:
        table.drop_column("policies")
