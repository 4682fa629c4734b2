"""Offline listings: the kind of each recorded ref, and the commit listings (items, histories).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("refs") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=True))
    op.create_table(
        "commit_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_pk", sa.Integer(), nullable=False),
        sa.Column("sha", sa.String(length=40), nullable=False),
        sa.Column("item", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_pk"], ["repos.id"], name="fk_commit_items_repo_pk_repos", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_commit_items"),
        sa.UniqueConstraint("repo_pk", "sha", name="uq_commit_items_repo_pk_sha"),
    )
    op.create_table(
        "histories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_pk", sa.Integer(), nullable=False),
        sa.Column("head", sa.String(length=40), nullable=False),
        sa.Column("shas", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_pk"], ["repos.id"], name="fk_histories_repo_pk_repos", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_histories"),
        sa.UniqueConstraint("repo_pk", "head", name="uq_histories_repo_pk_head"),
    )


def downgrade() -> None:
    op.drop_table("histories")
    op.drop_table("commit_items")
    with op.batch_alter_table("refs") as batch:
        batch.drop_column("kind")
