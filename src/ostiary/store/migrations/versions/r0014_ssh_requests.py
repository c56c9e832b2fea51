"""SSH certificate requests in the approval queue: a request's kind.

Revision ID: 0014_ssh_requests
Revises: 0013_replicas
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_ssh_requests"
down_revision: str | None = "0013_replicas"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("certificate_requests") as batch:
        batch.add_column(sa.Column("kind", sa.String(8), nullable=False, server_default="x509"))


def downgrade() -> None:
    with op.batch_alter_table("certificate_requests") as batch:
        batch.drop_column("kind")
