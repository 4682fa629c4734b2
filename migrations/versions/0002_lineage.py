"""Pins by lineage: recorded ancestry answers, and the last approved commit of each ref.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ancestry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_pk", sa.Integer(), nullable=False),
        sa.Column("older", sa.String(length=40), nullable=False),
        sa.Column("newer", sa.String(length=40), nullable=False),
        sa.Column("is_ancestor", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_pk"], ["repos.id"], name="fk_ancestry_repo_pk_repos", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ancestry"),
        sa.UniqueConstraint("repo_pk", "older", "newer", name="uq_ancestry_repo_pk_older_newer"),
    )
    with op.batch_alter_table("refs") as batch:
        batch.add_column(sa.Column("approved_commit", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("refs") as batch:
        batch.drop_column("approved_commit")
    op.drop_table("ancestry")
