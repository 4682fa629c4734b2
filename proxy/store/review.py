"""The database queries of the admins' review: held blobs, blocks, pending pinned changes.

Kept apart from `Repository` (the queries the mirror needs on every request); same habits: one
short session per method, typed records out, ORM objects never leave this module.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.repos import RepoRef, RepoType
from proxy.store.models import (
    AuditEvent,
    Blob,
    BlobState,
    Block,
    Commit,
    Entry,
    EntryKind,
    ExceptionRequest,
    FindingRow,
    Pin,
    Ref,
    Repo,
)
from proxy.store.repository import AuditRecord, RepoRecord, audit_record, repo_record, utcnow
from scanners.report import Severity

MAX_LISTED = 1000


@dataclass(frozen=True, slots=True)
class WorstFinding:
    severity: Severity
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class HeldFilter:
    """Which held blobs a list shows: `repo` is `namespace/name` (or a namespace followed by
    `/`), `severity` the least severe worst finding, `since` the oldest state change."""

    states: tuple[BlobState, ...] = (BlobState.QUARANTINED, BlobState.REJECTED)
    repo: str | None = None
    file_format: str | None = None
    severity: Severity | None = None
    since: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    repo_pk: int | None = None
    since: dt.datetime | None = None


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
    worst: WorstFinding | None = None
    commit: str = ""  # the commit it was first fetched for
    revisions: tuple[str, ...] = ()  # the branches and tags at that commit
    requests: int = 0  # exception requests from refused users


MAX_REVISION_FILES = 100_000
_SETTLED = (BlobState.RELEASED, BlobState.QUARANTINED, BlobState.REJECTED)


@dataclass(frozen=True, slots=True)
class RevisionFile:
    """A file of a recorded commit with its blob, if the mirror fetched it (for the AI-BOM)."""

    path: str
    size: int
    git_oid: str
    lfs_sha256: str | None
    blob_pk: int | None
    state: str  # the blob's state, or "not fetched"
    sha256: str | None
    file_format: str
    outcome: str
    reason: str


def _revision_file(entry: Entry, blob: Blob | None) -> RevisionFile:
    settled = blob if blob is not None and blob.state in _SETTLED else None
    return RevisionFile(
        path=entry.path,
        size=entry.size,
        git_oid=entry.oid,
        lfs_sha256=entry.lfs_sha256,
        blob_pk=settled.id if settled else None,
        state=settled.state.value if settled else "not fetched",
        sha256=settled.sha256 if settled else None,
        file_format=settled.file_format if settled else "",
        outcome=settled.outcome if settled else "",
        reason=settled.reason if settled else "",
    )


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

    async def revision_files(
        self, repo_pk: int, commit: str
    ) -> tuple[dt.datetime, bool, list[RevisionFile]] | None:
        """A recorded commit's files, each with its blob's state and hash; with when the
        commit was recorded and whether its file list is complete. None: never recorded."""
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
                select(Entry, Blob)
                .outerjoin(Blob, Blob.etag == etag)
                .where(Entry.commit_pk == row.id, Entry.kind == EntryKind.FILE)
                .order_by(Entry.path)
                .limit(MAX_REVISION_FILES)
            )
            files = [_revision_file(entry, blob) for entry, blob in rows.all()]
            return row.created_at, row.tree_complete, files

    async def held_blobs(
        self, found: HeldFilter, *, limit: int = MAX_LISTED, after_pk: int = 0
    ) -> list[HeldBlob]:
        """Blobs `found` matches, by id, from `after_pk` on (at most `limit`), each with its
        worst finding, commit, revisions and request count."""
        async with self._read() as session:
            query = (
                select(Blob, Repo)
                .outerjoin(Repo, Repo.id == Blob.first_repo_pk)
                .where(Blob.state.in_([s.value for s in found.states]), Blob.id > after_pk)
                .order_by(Blob.id)
                .limit(max(1, min(limit, MAX_LISTED)))
            )
            if found.repo is not None:
                repo_id = found.repo
                query = query.where(
                    Repo.repo_id.startswith(repo_id, autoescape=True)
                    if repo_id.endswith("/")
                    else Repo.repo_id == repo_id
                )
            if found.file_format is not None:
                query = query.where(Blob.file_format == found.file_format)
            if found.since is not None:
                query = query.where(Blob.updated_at >= found.since)
            if found.severity is not None:
                worse = [s.value for s in Severity if s.rank >= found.severity.rank]
                query = query.where(
                    exists().where(FindingRow.blob_pk == Blob.id, FindingRow.severity.in_(worse))
                )
            rows = (await session.execute(query)).all()
            return await _annotated(session, [_held(blob, repo) for blob, repo in rows])

    async def held_blob(self, pk: int) -> HeldBlob | None:
        async with self._read() as session:
            result = await session.execute(
                select(Blob, Repo)
                .outerjoin(Repo, Repo.id == Blob.first_repo_pk)
                .where(Blob.id == pk)
            )
            row = result.first()
            if row is None:
                return None
            return (await _annotated(session, [_held(row[0], row[1])]))[0]

    async def blob_history(self, blob_pk: int) -> list[AuditRecord]:
        async with self._read() as session:
            result = await session.execute(
                select(AuditEvent).where(AuditEvent.blob_pk == blob_pk).order_by(AuditEvent.id)
            )
            return [audit_record(e) for e in result.scalars()]

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
        self,
        found: AuditFilter | None = None,
        *,
        limit: int = MAX_LISTED,
        after_pk: int | None = None,
    ) -> list[AuditRecord]:
        """Audit events `found` matches, oldest first: the newest `limit` of them, or with
        `after_pk` the `limit` that follow that event (for following or streaming the log)."""
        found = found or AuditFilter()
        query = select(AuditEvent).limit(max(1, min(limit, 10_000)))
        if after_pk is None:
            query = query.order_by(AuditEvent.id.desc())
        else:
            query = query.where(AuditEvent.id > after_pk).order_by(AuditEvent.id)
        if found.actor is not None:
            query = query.where(AuditEvent.actor == found.actor)
        if found.action is not None:
            query = query.where(AuditEvent.action == found.action)
        if found.repo_pk is not None:
            query = query.where(AuditEvent.repo_pk == found.repo_pk)
        if found.since is not None:
            query = query.where(AuditEvent.at >= found.since)
        async with self._read() as session:
            events = [audit_record(e) for e in (await session.execute(query)).scalars()]
        return events[::-1] if after_pk is None else events

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


async def _annotated(session: AsyncSession, blobs: list[HeldBlob]) -> list[HeldBlob]:
    """The blobs with their worst finding, first commit, revisions and request count (a few
    queries per page, whatever its length)."""
    if not blobs:
        return blobs
    pks = [b.pk for b in blobs]
    worst = await _worst_findings(session, pks)
    commits = await _first_commits(session, pks)
    names = await _ref_names(session, set(commits.values()))
    counts = await _request_counts(session, pks)
    return [
        dataclasses.replace(
            b,
            worst=worst.get(b.pk),
            commit=commits[b.pk][1] if b.pk in commits else "",
            revisions=tuple(sorted(names.get(commits[b.pk], ()))) if b.pk in commits else (),
            requests=counts.get(b.pk, 0),
        )
        for b in blobs
    ]


async def _worst_findings(session: AsyncSession, pks: list[int]) -> dict[int, WorstFinding]:
    worst: dict[int, WorstFinding] = {}
    rows = await session.execute(
        select(FindingRow.blob_pk, FindingRow.severity, FindingRow.code, FindingRow.message)
        .where(FindingRow.blob_pk.in_(pks))
        .order_by(FindingRow.id)
    )
    for pk, severity, code, message in rows.all():
        candidate = WorstFinding(Severity(severity), code, message[:300])
        if pk not in worst or candidate.severity.rank > worst[pk].severity.rank:
            worst[pk] = candidate
    return worst


async def _first_commits(
    session: AsyncSession, pks: list[int]
) -> dict[int, tuple[int | None, str]]:
    """blob pk → (repo pk, commit) it was first fetched for, from its settling audit event."""
    commits: dict[int, tuple[int | None, str]] = {}
    rows = await session.execute(
        select(AuditEvent.blob_pk, AuditEvent.repo_pk, AuditEvent.details)
        .where(AuditEvent.blob_pk.in_(pks), AuditEvent.action.startswith("blob."))
        .order_by(AuditEvent.id)
    )
    for blob_pk, repo_pk, details in rows.all():
        commit = (details or {}).get("commit")
        if blob_pk is not None and blob_pk not in commits and isinstance(commit, str):
            commits[blob_pk] = (repo_pk, commit)
    return commits


async def _ref_names(
    session: AsyncSession, wanted: set[tuple[int | None, str]]
) -> dict[tuple[int | None, str], list[str]]:
    """(repo pk, commit) → the branches and tags at that commit."""
    names: dict[tuple[int | None, str], list[str]] = {}
    if wanted:
        rows = await session.execute(
            select(Ref.repo_pk, Ref.commit, Ref.name).where(
                Ref.commit.in_({commit for _, commit in wanted})
            )
        )
        for repo_pk, commit, name in rows.all():
            if (repo_pk, commit) in wanted:
                names.setdefault((repo_pk, commit), []).append(name)
    return names


async def _request_counts(session: AsyncSession, pks: list[int]) -> dict[int, int]:
    rows = await session.execute(
        select(ExceptionRequest.blob_pk, func.count())
        .where(ExceptionRequest.blob_pk.in_(pks))
        .group_by(ExceptionRequest.blob_pk)
    )
    return {pk: int(count) for pk, count in rows.all()}
