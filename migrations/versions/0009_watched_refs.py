"""Watched refs: what the upstream watch last saw of each mirrored branch and tag.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-12
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "watched_refs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("upstream_head", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("previous", sa.String(length=40), nullable=True),
        sa.Column("noticed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed", sa.JSON(), nullable=False),
        sa.Column("prefetched", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_pk"], ["repos.id"], name="fk_watched_refs_repo_pk_repos", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_watched_refs"),
        sa.UniqueConstraint("repo_pk", "name", name="uq_watched_refs_repo_pk_name"),
    )


def downgrade() -> None:
    op.drop_table("watched_refs")
