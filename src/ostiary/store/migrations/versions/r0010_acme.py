"""ACME (RFC 8555): nonces, accounts, orders, authorizations, challenges.

Revision ID: 0010_acme
Revises: 0009_ssh
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_acme"
down_revision: str | Sequence[str] | None = "0009_ssh"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)
_ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "acme_nonces",
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("nonce", name="pk_acme_nonces"),
    )
    op.create_index("ix_acme_nonces_expires_at", "acme_nonces", ["expires_at"])
    op.create_table(
        "acme_accounts",
        sa.Column("id", _ID, nullable=False),
        sa.Column("provisioner", sa.String(128), nullable=False),
        sa.Column("jwk", sa.JSON(), nullable=False),
        sa.Column("thumbprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("contact", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_acme_accounts"),
        sa.UniqueConstraint("thumbprint", name="uq_acme_accounts_thumbprint"),
    )
    op.create_table(
        "acme_orders",
        sa.Column("id", _ID, nullable=False),
        sa.Column("account_id", _ID, nullable=False),
        sa.Column("provisioner", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("identifiers", sa.JSON(), nullable=False),
        sa.Column("profile", sa.String(128), nullable=False),
        sa.Column("not_before", _TIME, nullable=True),
        sa.Column("not_after", _TIME, nullable=True),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("serial", sa.String(40), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["acme_accounts.id"],
            name="fk_acme_orders_account_id_acme_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_acme_orders"),
    )
    for column in ("account_id", "expires_at", "created_at"):
        op.create_index(f"ix_acme_orders_{column}", "acme_orders", [column])
    op.create_table(
        "acme_authorizations",
        sa.Column("id", _ID, nullable=False),
        sa.Column("order_id", _ID, nullable=False),
        sa.Column("account_id", _ID, nullable=False),
        sa.Column("identifier_type", sa.String(32), nullable=False),
        sa.Column("identifier_value", sa.Text(), nullable=False),
        sa.Column("wildcard", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("attested_spki", sa.LargeBinary(), nullable=True),
        sa.Column("hardware_key", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["acme_orders.id"],
            name="fk_acme_authorizations_order_id_acme_orders",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_acme_authorizations"),
    )
    for column in ("order_id", "account_id"):
        op.create_index(f"ix_acme_authorizations_{column}", "acme_authorizations", [column])
    op.create_table(
        "acme_challenges",
        sa.Column("id", _ID, nullable=False),
        sa.Column("authorization_id", _ID, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("validated_at", _TIME, nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["authorization_id"],
            ["acme_authorizations.id"],
            name="fk_acme_challenges_authorization_id_acme_authorizations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_acme_challenges"),
    )
    op.create_index("ix_acme_challenges_authorization_id", "acme_challenges", ["authorization_id"])


def downgrade() -> None:
    op.drop_table("acme_challenges")
    op.drop_table("acme_authorizations")
    op.drop_table("acme_orders")
    op.drop_table("acme_accounts")
    op.drop_table("acme_nonces")
