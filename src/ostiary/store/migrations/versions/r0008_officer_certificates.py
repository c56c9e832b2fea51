"""Officers hold their role through certificates bound by fingerprint, not by subject CN.

Officers added before this revision are bound to no certificate, so they hold the role no
longer until the CA owner binds their certificate (``ostiary ca officer add NAME --cert
CRT``): a name in a certificate is chosen by whoever asked for it.

Revision ID: 0008_officer_certificates
Revises: 0006_request_policies
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_officer_certificates"
down_revision: str | Sequence[str] | None = "0006_request_policies"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "officer_certificates",
        sa.Column("id", _ID, nullable=False),
        sa.Column("officer_id", _ID, nullable=False),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("added_by", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["officer_id"],
            ["officers.id"],
            name="fk_officer_certificates_officer_id_officers",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_officer_certificates"),
        sa.UniqueConstraint(
            "fingerprint_sha256", name="uq_officer_certificates_fingerprint_sha256"
        ),
    )
    op.create_index("ix_officer_certificates_officer_id", "officer_certificates", ["officer_id"])


def downgrade() -> None:
    op.drop_index("ix_officer_certificates_officer_id", "officer_certificates")
    op.drop_table("officer_certificates")
