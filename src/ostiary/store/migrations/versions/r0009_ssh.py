"""OpenSSH certificates: the ``ssh_certificates`` table (authority/ssh.py).

Revision ID: 0009_ssh
Revises: 0008_officer_certificates
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_ssh"
down_revision: str | Sequence[str] | None = "0008_officer_certificates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ssh_certificates",
        sa.Column("id", _ID, nullable=False),
        sa.Column("ca_key_sha256", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(16), nullable=False),
        sa.Column("cert_type", sa.String(8), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("principals", sa.JSON(), nullable=False),
        sa.Column("not_before", _TIME, nullable=False),
        sa.Column("not_after", _TIME, nullable=False),
        sa.Column("provisioner", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.CheckConstraint("status IN ('valid', 'revoked')", name="ck_ssh_certificates_status"),
        sa.CheckConstraint("cert_type IN ('user', 'host')", name="ck_ssh_certificates_cert_type"),
        sa.PrimaryKeyConstraint("id", name="pk_ssh_certificates"),
        sa.UniqueConstraint(
            "ca_key_sha256", "serial", name="uq_ssh_certificates_ca_key_sha256_serial"
        ),
    )
    op.create_index("ix_ssh_certificates_not_after", "ssh_certificates", ["not_after"])
    op.create_index("ix_ssh_certificates_key_fingerprint", "ssh_certificates", ["key_fingerprint"])
    op.create_index(
        "ix_ssh_certificates_status_ca_key_sha256",
        "ssh_certificates",
        ["status", "ca_key_sha256"],
    )


def downgrade() -> None:
    op.drop_table("ssh_certificates")
