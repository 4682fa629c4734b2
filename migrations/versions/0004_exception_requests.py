"""Requests for an exception, made by the people a held file was refused to.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "exception_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("blob_pk", sa.Integer(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("requester", sa.String(length=64), nullable=False),
        sa.Column("remote", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["blob_pk"],
            ["blobs.id"],
            name="fk_exception_requests_blob_pk_blobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_exception_requests"),
    )
    op.create_index(
        "ix_exception_requests_blob_pk", "exception_requests", ["blob_pk"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_exception_requests_blob_pk", table_name="exception_requests")
    op.drop_table("exception_requests")
