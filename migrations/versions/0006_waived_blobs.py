"""Waived blobs: the files a waiver let through, judged again when it ends.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "waived_blobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("waiver_pk", sa.Integer(), nullable=False),
        sa.Column("blob_pk", sa.Integer(), nullable=False),
        sa.Column("held_for", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("judged_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["waiver_pk"],
            ["waivers.id"],
            name="fk_waived_blobs_waiver_pk_waivers",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["blob_pk"], ["blobs.id"], name="fk_waived_blobs_blob_pk_blobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_waived_blobs"),
    )
    op.create_index("ix_waived_blobs_waiver_pk", "waived_blobs", ["waiver_pk"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_waived_blobs_waiver_pk", table_name="waived_blobs")
    op.drop_table("waived_blobs")
