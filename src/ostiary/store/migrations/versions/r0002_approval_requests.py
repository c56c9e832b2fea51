"""Approval enrollment: pending certificate requests and the officers who decide them.

Revision ID: 0002_approval
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_approval"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "certificate_requests",
        sa.Column("id", _ID, nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("provisioner", sa.String(128), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("sans", sa.JSON(), nullable=False),
        sa.Column("csr_pem", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("code_sha256", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("decided_at", _TIME, nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("serial", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_certificate_requests"),
        sa.UniqueConstraint("request_id", name="uq_certificate_requests_request_id"),
    )
    op.create_index(
        "ix_certificate_requests_status_expires_at",
        "certificate_requests",
        ["status", "expires_at"],
    )
    op.create_table(
        "officers",
        sa.Column("id", _ID, nullable=False),
        sa.Column("subject_cn", sa.String(255), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("added_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_officers"),
        sa.UniqueConstraint("subject_cn", name="uq_officers_subject_cn"),
    )


def downgrade() -> None:
    op.drop_table("officers")
    op.drop_index("ix_certificate_requests_status_expires_at", "certificate_requests")
    op.drop_table("certificate_requests")
