"""Attestation nonces for TPM key attestation (the ``attest`` provisioner).

Revision ID: 0005_attestation
Revises: 0004_console
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_attestation"
down_revision: str | Sequence[str] | None = "0004_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "attestation_nonces",
        sa.Column("nonce_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("used_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("nonce_sha256", name="pk_attestation_nonces"),
    )


def downgrade() -> None:
    op.drop_table("attestation_nonces")
