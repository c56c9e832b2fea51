"""ACME External Account Binding keys, ARI renewal rules and orders' ``replaces``.

Revision ID: 0012_acme_eab
Revises: 0011_scep
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_acme_eab"
down_revision: str | Sequence[str] | None = "0011_scep"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)
_ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "acme_eab_keys",
        sa.Column("kid", _ID, nullable=False),
        sa.Column("provisioner", sa.String(128), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=False),
        sa.Column("names", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("bound_at", _TIME, nullable=True),
        sa.Column("account_id", _ID, nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_acme_eab_keys"),
        sa.UniqueConstraint("account_id", name="uq_acme_eab_keys_account_id"),
    )
    op.create_index("ix_acme_eab_keys_provisioner", "acme_eab_keys", ["provisioner"])
    op.create_table(
        "acme_renewal_rules",
        sa.Column("id", _ID, nullable=False),
        sa.Column("provisioner", sa.String(128), nullable=True),
        sa.Column("serial", sa.String(40), nullable=True),
        sa.Column("issuer_key_id", sa.String(128), nullable=True),
        sa.Column("start", _TIME, nullable=False),
        sa.Column("end", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_acme_renewal_rules"),
    )
    op.create_index("ix_acme_renewal_rules_serial", "acme_renewal_rules", ["serial"])
    op.create_index("ix_acme_renewal_rules_start", "acme_renewal_rules", ["start"])
    with op.batch_alter_table("acme_orders") as batch:
        batch.add_column(sa.Column("replaces", sa.String(160), nullable=True))
        batch.create_index("ix_acme_orders_replaces", ["replaces"])


def downgrade() -> None:
    with op.batch_alter_table("acme_orders") as batch:
        batch.drop_index("ix_acme_orders_replaces")
        batch.drop_column("replaces")
    op.drop_table("acme_renewal_rules")
    op.drop_table("acme_eab_keys")
