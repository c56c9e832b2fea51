"""CA rollover: the CA certificates and their states, and the latest CRL per issuer.

Revision ID: 0016_ca_rollover
Revises: 0015_enrollment_secrets
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_ca_rollover"
down_revision: str | None = "0015_enrollment_secrets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ca_issuers",
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("issuer_key_id", sa.String(128), nullable=False),
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("not_after", _TIME, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.Column("revocation_reason", sa.String(32), nullable=True),
        sa.Column("root_ocsp", sa.LargeBinary(), nullable=True),
        sa.CheckConstraint("kind IN ('intermediate', 'root', 'cross')", name="ck_ca_issuers_kind"),
        sa.CheckConstraint(
            "state IN ('active', 'retiring', 'revoked')", name="ck_ca_issuers_state"
        ),
        sa.PrimaryKeyConstraint("fingerprint_sha256", name="pk_ca_issuers"),
    )
    op.create_index("ix_ca_issuers_key_id", "ca_issuers", ["key_id"])
    op.create_table(
        "latest_crls",
        sa.Column("issuer_key_id", sa.String(128), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("this_update", _TIME, nullable=False),
        sa.Column("next_update", _TIME, nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("issuer_key_id", name="pk_latest_crls"),
    )


def downgrade() -> None:
    op.drop_table("latest_crls")
    op.drop_index("ix_ca_issuers_key_id", table_name="ca_issuers")
    op.drop_table("ca_issuers")
