"""Revision signatures in the database: the status of a repo's model signature at a commit, and
what the mirror holds of that commit's files to compare with it.

Same habits as `Repository`: one short session per method, typed records out, ORM objects never
leave this module; two writers of the same commit settle on the unique constraint (the later
write wins: both verified the same bytes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.store.models import (
    Blob,
    BlobState,
    Commit,
    Entry,
    EntryKind,
    RevisionSignature,
    SignatureStatus,
)
from proxy.store.repository import utcnow
from scanners.report import JsonValue

MAX_REVISION_FILES = 100_000
_VERIFIED_STATES = (
    BlobState.SCANNING,
    BlobState.RELEASED,
    BlobState.QUARANTINED,
    BlobState.REJECTED,
)  # the bytes hashed to what upstream advertised (a tampered blob keeps no sha256)


@dataclass(frozen=True, slots=True)
class SignatureRecord:
    """A revision's signature status. `files` (path → signed sha256) and `ignore_paths` are the
    signed manifest, kept only when the signature verified."""

    commit: str
    status: SignatureStatus
    signer: str = ""
    detail: str = ""
    signature_sha256: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    ignore_paths: tuple[str, ...] = ()
    trust_digest: str = ""
    checked_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file of a recorded commit: the sha256 this mirror computed from its bytes (None: never
    fetched or failed its checks), and the one upstream advertised for an LFS file."""

    path: str
    sha256: str | None
    advertised_sha256: str | None
    state: str


@dataclass(frozen=True, slots=True)
class StoredRevision:
    """What the mirror recorded of a commit's files; `complete`: the whole tree was listed."""

    complete: bool
    files: tuple[StoredFile, ...]


def _record(row: RevisionSignature) -> SignatureRecord:
    manifest = row.manifest or {}
    files = manifest.get("files")
    ignored = manifest.get("ignore_paths")
    return SignatureRecord(
        commit=row.commit,
        status=SignatureStatus(row.status),
        signer=row.signer,
        detail=row.detail,
        signature_sha256=row.signature_sha256,
        files={str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {},
        ignore_paths=tuple(str(p) for p in ignored) if isinstance(ignored, list) else (),
        trust_digest=row.trust_digest,
        checked_at=row.checked_at,
    )


def _manifest(record: SignatureRecord) -> dict[str, JsonValue]:
    if record.status is not SignatureStatus.VERIFIED:
        return {}
    files: dict[str, JsonValue] = dict(record.files)
    return {"files": files, "ignore_paths": list(record.ignore_paths)}


class SignatureRecords:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self._sessions = sessions
        self._read = read_sessions or sessions

    async def get(self, repo_pk: int, commit: str) -> SignatureRecord | None:
        async with self._read() as session:
            row = (
                await session.execute(
                    select(RevisionSignature).where(
                        RevisionSignature.repo_pk == repo_pk, RevisionSignature.commit == commit
                    )
                )
            ).scalar_one_or_none()
            return _record(row) if row is not None else None

    async def put(self, repo_pk: int, record: SignatureRecord) -> None:
        """Record (or replace) the status of the commit."""
        for _ in range(2):  # a concurrent first insert: update the winner's row instead
            try:
                await self._put(repo_pk, record)
                return
            except IntegrityError:
                continue
        await self._put(repo_pk, record)

    async def _put(self, repo_pk: int, record: SignatureRecord) -> None:
        async with self._sessions() as session, session.begin():
            row = (
                await session.execute(
                    select(RevisionSignature).where(
                        RevisionSignature.repo_pk == repo_pk,
                        RevisionSignature.commit == record.commit,
                    )
                )
            ).scalar_one_or_none()
            if row is None:
                row = RevisionSignature(repo_pk=repo_pk, commit=record.commit)
                session.add(row)
            row.status = record.status
            row.signer = record.signer[:512]
            row.detail = record.detail
            row.signature_sha256 = record.signature_sha256
            row.manifest = _manifest(record)
            row.trust_digest = record.trust_digest
            row.checked_at = utcnow()

    async def stored_revision(self, repo_pk: int, commit: str) -> StoredRevision | None:
        """The recorded files of a commit with the sha256 of their verified bytes.
        None: the commit was never recorded."""
        async with self._read() as session:
            row = (
                await session.execute(
                    select(Commit).where(Commit.repo_pk == repo_pk, Commit.sha == commit)
                )
            ).scalar_one_or_none()
            if row is None:
                return None
            etag = func.coalesce(Entry.lfs_sha256, Entry.oid)
            rows = await session.execute(
                select(Entry.path, Entry.lfs_sha256, Blob.sha256, Blob.state)
                .outerjoin(Blob, Blob.etag == etag)
                .where(Entry.commit_pk == row.id, Entry.kind == EntryKind.FILE)
                .order_by(Entry.path)
                .limit(MAX_REVISION_FILES)
            )
            files = tuple(
                StoredFile(
                    path,
                    sha256 if state in _VERIFIED_STATES else None,
                    lfs_sha256,
                    state.value if state is not None else "not fetched",
                )
                for path, lfs_sha256, sha256, state in rows.all()
            )
            return StoredRevision(row.tree_complete, files)
