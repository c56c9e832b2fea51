"""The heartbeat rows of running CA server replicas (ca status, ca doctor).

Revision ID: 0013_replicas
Revises: 0012_acme_eab
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_replicas"
down_revision: str | None = "0012_acme_eab"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("last_seen", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("instance_id", name="pk_replicas"),
    )


def downgrade() -> None:
    op.drop_table("replicas")
