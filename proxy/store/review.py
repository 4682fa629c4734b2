"""The database queries of the admins' review: held blobs, blocks, pending pinned changes.

Kept apart from `Repository` (the queries the mirror needs on every request); same habits: one
short session per method, typed records out, ORM objects never leave this module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.repos import RepoRef, RepoType
from proxy.store.models import (
    AuditEvent,
    Blob,
    BlobState,
    Block,
    Commit,
    Entry,
    ExceptionRequest,
    Pin,
    Ref,
    Repo,
)
from proxy.store.repository import AuditRecord, RepoRecord, repo_record, utcnow

MAX_LISTED = 1000


@dataclass(frozen=True, slots=True)
class HeldBlob:
    """A quarantined or rejected blob, with where it was first asked for."""

    pk: int
    etag: str
    sha256: str | None
    size: int
    state: BlobState
    reason: str
    file_format: str
    repo: RepoRef | None
    path: str
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class BlockedRepo:
    repo: RepoRecord
    block_pk: int
    reason: str
    detail: str
    since: dt.datetime
    by: str


@dataclass(frozen=True, slots=True)
class HeldRef:
    """A branch or tag whose upstream head waits for review while clients get `approved`."""

    repo: RepoRecord
    name: str
    head: str
    approved: str


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A refused user's request for an exception."""

    justification: str
    requester: str
    created_at: dt.datetime


class ReviewQueries:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self._sessions = sessions
        self._read = read_sessions or sessions

    async def held_blobs(
        self, states: Sequence[BlobState], *, limit: int = MAX_LISTED, after_pk: int = 0
    ) -> list[HeldBlob]:
        """Blobs in `states`, by id, from `after_pk` on (at most `limit`)."""
        async with self._read() as session:
            query = (
                select(Blob, Repo)
                .outerjoin(Repo, Repo.id == Blob.first_repo_pk)
                .where(Blob.state.in_([s.value for s in states]), Blob.id > after_pk)
                .order_by(Blob.id)
                .limit(min(limit, MAX_LISTED))
            )
            result = await session.execute(query)
            return [_held(blob, repo) for blob, repo in result.all()]

    async def held_blob(self, pk: int) -> HeldBlob | None:
        async with self._read() as session:
            result = await session.execute(
                select(Blob, Repo)
                .outerjoin(Repo, Repo.id == Blob.first_repo_pk)
                .where(Blob.id == pk)
            )
            row = result.first()
            return None if row is None else _held(row[0], row[1])

    async def blob_history(self, blob_pk: int) -> list[AuditRecord]:
        async with self._read() as session:
            result = await session.execute(
                select(AuditEvent).where(AuditEvent.blob_pk == blob_pk).order_by(AuditEvent.id)
            )
            return [
                AuditRecord(e.at, e.actor, e.action, e.repo_pk, e.blob_pk, e.details or {})
                for e in result.scalars()
            ]

    async def blocked_repos(self) -> list[BlockedRepo]:
        async with self._read() as session:
            result = await session.execute(
                select(Block, Repo)
                .join(Repo, Repo.id == Block.repo_pk)
                .where(Block.lifted_at.is_(None))
                .order_by(Block.id)
                .limit(MAX_LISTED)
            )
            return [
                BlockedRepo(
                    repo_record(repo),
                    block.id,
                    block.reason,
                    block.detail,
                    block.created_at,
                    block.created_by,
                )
                for block, repo in result.all()
            ]

    async def lift_blocks(self, repo_pk: int, by: str) -> int:
        """Lift every active block of a repo; returns how many were lifted."""
        async with self._sessions() as session:
            result = await session.execute(
                update(Block)
                .where(Block.repo_pk == repo_pk, Block.lifted_at.is_(None))
                .values(lifted_at=utcnow(), lifted_by=by)
            )
            await session.commit()
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def held_refs(self) -> list[HeldRef]:
        async with self._read() as session:
            result = await session.execute(
                select(Ref, Repo)
                .join(Repo, Repo.id == Ref.repo_pk)
                .where(Ref.approved_commit.is_not(None), Ref.approved_commit != Ref.commit)
                .order_by(Ref.id)
                .limit(MAX_LISTED)
            )
            return [
                HeldRef(repo_record(repo), ref.name, ref.commit, ref.approved_commit or "")
                for ref, repo in result.all()
            ]

    async def entries_at(self, repo_pk: int, sha: str, paths: Sequence[str]) -> dict[str, str]:
        """path → etag of the recorded entries of a commit (LFS sha256, else git oid)."""
        async with self._read() as session:
            result = await session.execute(
                select(Entry.path, Entry.oid, Entry.lfs_sha256)
                .join(Commit, Commit.id == Entry.commit_pk)
                .where(Commit.repo_pk == repo_pk, Commit.sha == sha, Entry.path.in_(list(paths)))
            )
            return {path: lfs or oid for path, oid, lfs in result.all()}

    async def pins(self, repo_pk: int) -> list[tuple[str, str, str]]:
        async with self._read() as session:
            result = await session.execute(
                select(Pin.path, Pin.etag, Pin.commit).where(Pin.repo_pk == repo_pk)
            )
            return [(p, e, c) for p, e, c in result.all()]

    async def audit_log(
        self, *, action: str | None = None, repo_pk: int | None = None, limit: int = MAX_LISTED
    ) -> list[AuditRecord]:
        async with self._read() as session:
            query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(min(limit, 10_000))
            if action is not None:
                query = query.where(AuditEvent.action == action)
            if repo_pk is not None:
                query = query.where(AuditEvent.repo_pk == repo_pk)
            result = await session.execute(query)
            events = [
                AuditRecord(e.at, e.actor, e.action, e.repo_pk, e.blob_pk, e.details or {})
                for e in result.scalars()
            ]
            return events[::-1]

    async def add_request(
        self, blob_pk: int, justification: str, requester: str, remote: str
    ) -> None:
        async with self._sessions() as session:
            session.add(
                ExceptionRequest(
                    blob_pk=blob_pk,
                    justification=justification,
                    requester=requester,
                    remote=remote,
                )
            )
            await session.commit()

    async def requests_for(self, blob_pk: int, *, limit: int = MAX_LISTED) -> list[RequestRecord]:
        async with self._read() as session:
            result = await session.execute(
                select(ExceptionRequest)
                .where(ExceptionRequest.blob_pk == blob_pk)
                .order_by(ExceptionRequest.id)
                .limit(limit)
            )
            return [
                RequestRecord(r.justification, r.requester, r.created_at) for r in result.scalars()
            ]


def _held(blob: Blob, repo: Repo | None) -> HeldBlob:
    return HeldBlob(
        pk=blob.id,
        etag=blob.etag,
        sha256=blob.sha256,
        size=blob.size,
        state=BlobState(blob.state),
        reason=blob.reason,
        file_format=blob.file_format,
        repo=None if repo is None else RepoRef(RepoType(repo.repo_type), repo.repo_id),
        path=blob.first_path,
        created_at=blob.created_at,
        updated_at=blob.updated_at,
    )
