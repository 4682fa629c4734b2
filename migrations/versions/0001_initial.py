"""Initial schema: repos, refs, commits, entries, blobs, findings, pins, blocks, audit events.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Types are spelled as plain SQLAlchemy types (not the models' TypeDecorators) so that this file
stays valid whatever the models become.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), nullable=False)


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _repo_fk(table: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["repo_pk"], ["repos.id"], name=f"fk_{table}_repo_pk_repos", ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "repos",
        _id(),
        sa.Column("repo_type", sa.String(length=16), nullable=False),
        sa.Column("repo_id", sa.String(length=200), nullable=False),
        sa.Column("private", sa.Boolean(), nullable=False),
        sa.Column("gated", sa.String(length=16), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_repos"),
        sa.UniqueConstraint("repo_type", "repo_id", name="uq_repos_repo_type_repo_id"),
    )
    op.create_table(
        "refs",
        _id(),
        sa.Column("repo_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("commit", sa.String(length=40), nullable=False),
        _timestamp("updated_at"),
        _repo_fk("refs", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_refs"),
        sa.UniqueConstraint("repo_pk", "name", name="uq_refs_repo_pk_name"),
    )
    op.create_table(
        "commits",
        _id(),
        sa.Column("repo_pk", sa.Integer(), nullable=False),
        sa.Column("sha", sa.String(length=40), nullable=False),
        sa.Column("info", sa.JSON(), nullable=True),
        sa.Column("tree_complete", sa.Boolean(), nullable=False),
        _timestamp("created_at"),
        _repo_fk("commits", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_commits"),
        sa.UniqueConstraint("repo_pk", "sha", name="uq_commits_repo_pk_sha"),
    )
    op.create_table(
        "entries",
        _id(),
        sa.Column("commit_pk", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("oid", sa.String(length=40), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("lfs_sha256", sa.String(length=64), nullable=True),
        sa.Column("lfs_pointer_size", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["commit_pk"], ["commits.id"], name="fk_entries_commit_pk_commits", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_entries"),
        sa.UniqueConstraint("commit_pk", "path", name="uq_entries_commit_pk_path"),
    )
    op.create_index("ix_entries_oid", "entries", ["oid"])
    op.create_index("ix_entries_lfs_sha256", "entries", ["lfs_sha256"])
    op.create_table(
        "blobs",
        _id(),
        sa.Column("etag", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("git_sha1", sa.String(length=40), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("file_format", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("first_repo_pk", sa.Integer(), nullable=True),
        sa.Column("first_path", sa.String(length=1024), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_token", sa.BigInteger(), nullable=False),
        _timestamp("lease_expires_at", nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(
            ["first_repo_pk"],
            ["repos.id"],
            name="fk_blobs_first_repo_pk_repos",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_blobs"),
        sa.UniqueConstraint("etag", name="uq_blobs_etag"),
    )
    op.create_index("ix_blobs_sha256", "blobs", ["sha256"])
    op.create_index("ix_blobs_state", "blobs", ["state"])
    op.create_table(
        "findings",
        _id(),
        sa.Column("blob_pk", sa.Integer(), nullable=False),
        sa.Column("scanner", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["blob_pk"], ["blobs.id"], name="fk_findings_blob_pk_blobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_findings"),
    )
    op.create_index("ix_findings_blob_pk", "findings", ["blob_pk"])
    op.create_table(
        "pins",
        _id(),
        sa.Column("repo_pk", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("etag", sa.String(length=64), nullable=False),
        sa.Column("commit", sa.String(length=40), nullable=False),
        _timestamp("pinned_at"),
        sa.Column("pinned_by", sa.String(length=128), nullable=False),
        _repo_fk("pins", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_pins"),
        sa.UniqueConstraint("repo_pk", "path", name="uq_pins_repo_pk_path"),
    )
    op.create_index("ix_pins_etag", "pins", ["etag"])
    op.create_table(
        "blocks",
        _id(),
        sa.Column("repo_pk", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        _timestamp("created_at"),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        _timestamp("lifted_at", nullable=True),
        sa.Column("lifted_by", sa.String(length=128), nullable=True),
        _repo_fk("blocks", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_blocks"),
    )
    op.create_index("ix_blocks_repo_pk_lifted_at", "blocks", ["repo_pk", "lifted_at"])
    op.create_table(
        "audit_events",
        _id(),
        _timestamp("at"),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("repo_pk", sa.Integer(), nullable=True),
        sa.Column("blob_pk", sa.Integer(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        _repo_fk("audit_events", "SET NULL"),
        sa.ForeignKeyConstraint(
            ["blob_pk"], ["blobs.id"], name="fk_audit_events_blob_pk_blobs", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_repo_pk", "audit_events", ["repo_pk"])
    op.create_index("ix_audit_events_blob_pk", "audit_events", ["blob_pk"])


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes.
    for table in ("audit_events", "blocks", "pins", "findings", "blobs", "entries", "commits"):
        op.drop_table(table)
    op.drop_table("refs")
    op.drop_table("repos")
