"""The database schema: SQLAlchemy 2 declarative models, changed only through Alembic migrations.

States and reasons are `StrEnum`s stored as plain strings (not database enums), so adding a state
needs no ALTER TYPE; `EnumString` refuses an unknown value on the way in and returns the enum on
the way out. Timestamps are timezone-aware UTC on both databases (`UTCDateTime`: SQLite keeps
no zone, so one is attached on read). Rows that describe history (audit events) outlive the repo
and blob rows they mention: those keys are set to NULL, not cascaded.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from proxy.metadata import RefKind
from proxy.repos import RepoType
from scanners.report import JsonValue

# Constraint names must be stable (and short enough for PostgreSQL's 63 characters) so that later
# migrations can drop them by name, on SQLite too (batch mode recreates tables by name).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BlobState(enum.StrEnum):
    """Where a blob is on its way (DESIGN.md): only `released` is ever served complete."""

    FETCHING = "fetching"
    SCANNING = "scanning"
    RELEASED = "released"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"


class BlockReason(enum.StrEnum):
    """Why a repo is stopped as a whole."""

    TAMPERED = "tampered"
    HISTORY_REWRITTEN = "history_rewritten"
    PINNED_CHANGED = "pinned_changed"
    ADMIN = "admin"


class EntryKind(enum.StrEnum):
    FILE = "file"
    DIRECTORY = "directory"


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every database; naive datetimes are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite stores the UTC wall clock without a zone
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


E = TypeVar("E", bound=enum.StrEnum)


class EnumString(TypeDecorator[E]):
    """A StrEnum kept in a VARCHAR column: unknown values refused on write, enums on read."""

    impl = String
    cache_ok = True

    def __init__(self, enum_type: type[E], length: int) -> None:
        super().__init__(length)
        self.enum_type = enum_type

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return self.enum_type(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_type(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime()}  # noqa: RUF012 (read by SQLAlchemy)


def _created() -> Any:
    return mapped_column(default=utcnow)


def _updated() -> Any:
    return mapped_column(default=utcnow, onupdate=utcnow)


class Repo(Base):
    """A repo Hubwarden has seen: `(repo_type, repo_id)` with what upstream said about access."""

    __tablename__ = "repos"
    __table_args__ = (UniqueConstraint("repo_type", "repo_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_type: Mapped[RepoType] = mapped_column(EnumString(RepoType, 16))
    repo_id: Mapped[str] = mapped_column(String(200))
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    gated: Mapped[str] = mapped_column(String(16), default="false")  # "false", "auto", "manual"
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class Ref(Base):
    """Where a branch or tag of a repo pointed when upstream last told us."""

    __tablename__ = "refs"
    __table_args__ = (UniqueConstraint("repo_pk", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_pk: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    commit: Mapped[str] = mapped_column(String(40))
    # The newest commit of this ref served to clients: its head, unless a newer head changes a
    # pinned file and waits for review (`pinned_change = "hold"`).
    approved_commit: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # Branch, tag... as the upstream's refs listing says (None: not known yet), so that the
    # listing can be answered offline.
    kind: Mapped[RefKind | None] = mapped_column(EnumString(RefKind, 16), nullable=True)
    updated_at: Mapped[dt.datetime] = _updated()


class Ancestry(Base):
    """A recorded answer to "is `older` in the history of `newer`?" (commits never change, so
    neither does the answer): each pair is asked upstream at most once."""

    __tablename__ = "ancestry"
    __table_args__ = (UniqueConstraint("repo_pk", "older", "newer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_pk: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    older: Mapped[str] = mapped_column(String(40))
    newer: Mapped[str] = mapped_column(String(40))
    is_ancestor: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = _created()


class Commit(Base):
    """A commit of a repo; `info` is the repo info at that commit (Xet fields stripped)."""

    __tablename__ = "commits"
    __table_args__ = (UniqueConstraint("repo_pk", "sha"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_pk: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    sha: Mapped[str] = mapped_column(String(40))
    info: Mapped[dict[str, JsonValue] | None] = mapped_column(JSON, nullable=True)
    tree_complete: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = _created()


class CommitItem(Base):
    """A commit as the upstream's commit listing shows it (`id`, `title`, `message`, `date`,
    `authors`, `formatted`), recorded once: commits never change."""

    __tablename__ = "commit_items"
    __table_args__ = (UniqueConstraint("repo_pk", "sha"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_pk: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    sha: Mapped[str] = mapped_column(String(40))
    item: Mapped[dict[str, JsonValue]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = _created()


class History(Base):
    """The complete commit listing of `head` (newest first, `head` itself first) as commit
    shas: recorded once, so that the listing can be answered offline."""

    __tablename__ = "histories"
    __table_args__ = (UniqueConstraint("repo_pk", "head"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_pk: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    head: Mapped[str] = mapped_column(String(40))
    shas: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = _created()


class Entry(Base):
    """One file or folder of a commit's tree; the blob is found by `lfs_sha256` or `oid`."""

    __tablename__ = "entries"
    __table_args__ = (
        UniqueConstraint("commit_pk", "path"),
        Index("ix_entries_oid", "oid"),
        Index("ix_entries_lfs_sha256", "lfs_sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    commit_pk: Mapped[int] = mapped_column(ForeignKey("commits.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[EntryKind] = mapped_column(EnumString(EntryKind, 16))
    oid: Mapped[str] = mapped_column(String(40))
    size: Mapped[int] = mapped_column(BigInteger)
    lfs_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lfs_pointer_size: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Blob(Base):
    """File content by the hash upstream advertised (`etag`), with its state and lease.

    The lease (owner, fencing token, expiry) elects the one task or replica that fetches; the
    token only grows, so a stale holder's writes can be refused by comparing it.
    """

    __tablename__ = "blobs"
    __table_args__ = (Index("ix_blobs_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    etag: Mapped[str] = mapped_column(String(64), unique=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    git_sha1: Mapped[str | None] = mapped_column(String(40), nullable=True)
    size: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[BlobState] = mapped_column(EnumString(BlobState, 16))
    reason: Mapped[str] = mapped_column(Text, default="")
    file_format: Mapped[str] = mapped_column(String(32), default="")
    outcome: Mapped[str] = mapped_column(String(16), default="")
    first_repo_pk: Mapped[int | None] = mapped_column(
        ForeignKey("repos.id", ondelete="SET NULL"), nullable=True
    )
    first_path: Mapped[str] = mapped_column(String(1024), default="")
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    findings: Mapped[list[FindingRow]] = relationship(
        back_populates="blob", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )


class FindingRow(Base):
    """One scanner result for a blob (`scanners.report.Finding` as stored)."""

    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    blob_pk: Mapped[int] = mapped_column(ForeignKey("blobs.id", ondelete="CASCADE"), index=True)
    scanner: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, JsonValue]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = _created()

    blob: Mapped[Blob] = relationship(back_populates="findings", lazy="raise")


class Pin(Base):
    """`(repo, path)` → the etag first verified and released, with the commit it came from."""

    __tablename__ = "pins"
    __table_args__ = (UniqueConstraint("repo_pk", "path"), Index("ix_pins_etag", "etag"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_pk: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    etag: Mapped[str] = mapped_column(String(64))
    commit: Mapped[str] = mapped_column(String(40))
    pinned_at: Mapped[dt.datetime] = _created()
    pinned_by: Mapped[str] = mapped_column(String(128))


class Block(Base):
    """A repo-wide stop; active while `lifted_at` is NULL."""

    __tablename__ = "blocks"
    __table_args__ = (Index("ix_blocks_repo_pk_lifted_at", "repo_pk", "lifted_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_pk: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    reason: Mapped[BlockReason] = mapped_column(EnumString(BlockReason, 32))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = _created()
    created_by: Mapped[str] = mapped_column(String(128))
    lifted_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    lifted_by: Mapped[str | None] = mapped_column(String(128), nullable=True)


class AuditEvent(Base):
    """Who did what, when: state changes, admin actions, blocks. Never deleted with its subject."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_repo_pk", "repo_pk"),
        Index("ix_audit_events_blob_pk", "blob_pk"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = _created()
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    repo_pk: Mapped[int | None] = mapped_column(
        ForeignKey("repos.id", ondelete="SET NULL"), nullable=True
    )
    blob_pk: Mapped[int | None] = mapped_column(
        ForeignKey("blobs.id", ondelete="SET NULL"), nullable=True
    )
    details: Mapped[dict[str, JsonValue]] = mapped_column(JSON, default=dict)


class Role(enum.StrEnum):
    """What a token may do (the permission table is `proxy.admin.identity.PERMISSIONS`)."""

    ADMIN = "admin"
    REVIEWER = "reviewer"
    VIEWER = "viewer"
    CLIENT = "client"


class AdminToken(Base):
    """A named bearer token of the admins' API or of a client on the local access list.

    Only the sha256 of the token is kept: the clear token is shown once, when it is created.
    Tokens are revoked, never deleted, so their names stay unique and the audit log readable.
    """

    __tablename__ = "admin_tokens"
    __table_args__ = (UniqueConstraint("name"), UniqueConstraint("token_hash"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[Role] = mapped_column(EnumString(Role, 16))
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = _created()
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class AccessGrant(Base):
    """A client token's right to read the gated and private repos matching a glob over
    "type/namespace/name" (e.g. "model/acme/*"), when the upstream cannot be asked (offline)."""

    __tablename__ = "access_grants"
    __table_args__ = (UniqueConstraint("token_name", "pattern"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_name: Mapped[str] = mapped_column(
        String(64), ForeignKey("admin_tokens.name", ondelete="CASCADE")
    )
    pattern: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = _created()
    created_by: Mapped[str] = mapped_column(String(128))


class ExceptionRequest(Base):
    """A refused user's request that a held file be released, with their reason. `requester`
    is a non-reversible key of their token ("anonymous" without one), never the token."""

    __tablename__ = "exception_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    blob_pk: Mapped[int] = mapped_column(ForeignKey("blobs.id", ondelete="CASCADE"), index=True)
    justification: Mapped[str] = mapped_column(Text)
    requester: Mapped[str] = mapped_column(String(64))
    remote: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = _created()


class WaiverScope(enum.StrEnum):
    """What a waiver covers besides the released bytes: the same path in every revision of the
    repo, the whole repo, or every repo of the organisation."""

    PATH = "path"
    REPO = "repo"
    ORG = "org"


class Waiver(Base):
    """A reviewer's release that also lets later files through their held verdict (never a
    malicious one), until it expires or is revoked."""

    __tablename__ = "waivers"
    __table_args__ = (Index("ix_waivers_repo_type_namespace", "repo_type", "namespace"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[WaiverScope] = mapped_column(EnumString(WaiverScope, 16))
    repo_type: Mapped[RepoType] = mapped_column(EnumString(RepoType, 16))
    namespace: Mapped[str] = mapped_column(String(100))
    repo_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    comment: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = _created()
    expires_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)


class WaivedBlob(Base):
    """A file a waiver let through its held verdict (not one a reviewer looked at): judged again
    when the waiver ends (`judged_at` set then)."""

    __tablename__ = "waived_blobs"
    __table_args__ = (Index("ix_waived_blobs_waiver_pk", "waiver_pk"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    waiver_pk: Mapped[int] = mapped_column(ForeignKey("waivers.id", ondelete="CASCADE"))
    blob_pk: Mapped[int] = mapped_column(ForeignKey("blobs.id", ondelete="CASCADE"))
    held_for: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = _created()
    judged_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class BundleImport(Base):
    """A bundle imported here (`hubwarden import`): the sha256 of its signature (which covers
    every manifest and state of the bundle), the trusted key that signed it, who imported it,
    and what it brought (`summary`). Written in the import's one transaction, only when the
    bundle changed something."""

    __tablename__ = "bundle_imports"
    __table_args__ = (UniqueConstraint("digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    key_name: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    exporter: Mapped[str] = mapped_column(String(200), default="")
    created: Mapped[str] = mapped_column(String(64), default="")
    """The bundle's creation time as its signed statement says it (RFC 3339 text)."""
    imported_at: Mapped[dt.datetime] = _created()
    imported_by: Mapped[str] = mapped_column(String(128))
    summary: Mapped[dict[str, JsonValue]] = mapped_column(JSON, default=dict)


class WatchedRef(Base):
    """What the upstream watch (`proxy.ops.watch`) last saw of a mirrored branch or tag: when it
    looked, the head upstream, and the last change it noticed (the commit before, the files that
    changed, what prefetching them gave). Its history is in the audit log."""

    __tablename__ = "watched_refs"
    __table_args__ = (UniqueConstraint("repo_pk", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_pk: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    checked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    upstream_head: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="current")
    detail: Mapped[str] = mapped_column(Text, default="")
    previous: Mapped[str | None] = mapped_column(String(40), nullable=True)
    noticed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    changed: Mapped[list[JsonValue]] = mapped_column(JSON, default=list)
    prefetched: Mapped[dict[str, JsonValue]] = mapped_column(JSON, default=dict)


class SignatureStatus(enum.StrEnum):
    """What a revision's model signature proves (`proxy.trust.signatures`)."""

    VERIFIED = "verified"  # valid, by a signer trusted for the repo
    UNSIGNED = "unsigned"  # no signature file at the commit
    INVALID = "invalid"  # malformed, does not verify, or the files contradict it
    UNTRUSTED_SIGNER = "untrusted_signer"  # made by someone not trusted for the repo
    UNVERIFIABLE = "unverifiable"  # cannot be checked here (offline without a trust config...)


class RevisionSignature(Base):
    """The signature status of a repo at a commit: who signed (`signer`), why not verified
    (`detail`), which signature bytes (`signature_sha256`), and, when verified, the signed
    manifest (`{"files": {path: sha256}, "ignore_paths": [...]}`) that every file of the commit is
    compared with. `trust_digest` fingerprints the `[signing]` trust that judged it: a changed
    trust judges the commit again."""

    __tablename__ = "revision_signatures"
    __table_args__ = (UniqueConstraint("repo_pk", "commit"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_pk: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    commit: Mapped[str] = mapped_column(String(40))
    status: Mapped[SignatureStatus] = mapped_column(EnumString(SignatureStatus, 32))
    signer: Mapped[str] = mapped_column(String(512), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    signature_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    manifest: Mapped[dict[str, JsonValue]] = mapped_column(JSON, default=dict)
    trust_digest: Mapped[str] = mapped_column(String(64), default="")
    checked_at: Mapped[dt.datetime] = _created()
