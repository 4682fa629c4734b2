"""Waivers: a reviewer's release that also covers later files (a path, a repo, an organisation).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "waivers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("repo_type", sa.String(length=16), nullable=False),
        sa.Column("namespace", sa.String(length=100), nullable=False),
        sa.Column("repo_id", sa.String(length=200), nullable=True),
        sa.Column("path", sa.String(length=1024), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_waivers"),
    )
    op.create_index(
        "ix_waivers_repo_type_namespace", "waivers", ["repo_type", "namespace"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_waivers_repo_type_namespace", table_name="waivers")
    op.drop_table("waivers")
