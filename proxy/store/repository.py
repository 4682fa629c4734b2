"""The database queries the core needs, as typed records in and out.

Each method runs in its own short session and transaction; ORM objects never leave this module.
Races between tasks (or replicas) inserting the same row are settled by the unique constraints:
the loser's insert fails with IntegrityError and it reads the winner's row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.metadata import CommitInfo, EntryType, LfsInfo, RefKind, TreeEntry
from proxy.repos import RepoRef, RepoType
from proxy.store.leases import BlobLeases
from proxy.store.models import (
    Ancestry,
    AuditEvent,
    Blob,
    BlobState,
    Block,
    Commit,
    CommitItem,
    Entry,
    FindingRow,
    History,
    Pin,
    Ref,
    Repo,
)
from scanners.report import Finding, JsonValue, Outcome, Severity

MAX_ENTRIES_PER_INSERT = 500
MAX_SHAS_PER_QUERY = 500


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class RepoRecord:
    pk: int
    ref: RepoRef
    private: bool
    gated: str


@dataclass(frozen=True, slots=True)
class CommitRecord:
    pk: int
    sha: str
    info: dict[str, JsonValue] | None
    tree_complete: bool


@dataclass(frozen=True, slots=True)
class BlobRecord:
    pk: int
    etag: str
    sha256: str | None
    size: int
    state: BlobState
    reason: str
    first_path: str
    owner: str | None = None
    """The process (`host:pid`) whose ingest claimed the blob (see proxy.ops.owners)."""
    lease_token: int = 0
    """The fencing token of that claim (proxy.store.leases)."""


@dataclass(frozen=True, slots=True)
class PinRecord:
    path: str
    etag: str
    commit: str


@dataclass(frozen=True, slots=True)
class BlockRecord:
    pk: int
    reason: str
    detail: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class AuditRecord:
    at: dt.datetime
    actor: str
    action: str
    repo_pk: int | None
    blob_pk: int | None
    details: dict[str, JsonValue]
    pk: int = 0


AUDIT_CONTEXT: ContextVar[Mapping[str, str] | None] = ContextVar("audit_context", default=None)
"""Who is calling, for every audit event written while it is set: the edge that authenticated
the call (admin API, web pages, CLI) sets the acting identity's `role` and the `remote` address,
and each event made on its behalf (by the review, the lifecycle, blocks, pins) records them."""


def audit_record(event: AuditEvent) -> AuditRecord:
    return AuditRecord(
        event.at, event.actor, event.action, event.repo_pk, event.blob_pk, event.details or {},
        event.id,
    )  # fmt: skip


AuditHook = Callable[[AuditRecord], None]
"""Told of each audit event once it is committed; runs on the caller's path, so it must be
cheap, never await and never raise (the webhook notifier only enqueues)."""


@dataclass(frozen=True, slots=True)
class RefRecord:
    """Where a branch or tag pointed upstream (`commit`), what clients are served, and what it
    is upstream (`kind`, None when not known)."""

    name: str
    commit: str
    approved_commit: str | None
    kind: RefKind | None = None


def entry_row(commit_pk: int, entry: TreeEntry) -> Entry:
    """The database row of a tree entry (the reverse of `_entry`)."""
    return Entry(
        commit_pk=commit_pk,
        path=entry.path,
        kind=entry.entry_type.value,
        oid=entry.oid,
        size=entry.size,
        lfs_sha256=entry.lfs.sha256 if entry.lfs else None,
        lfs_pointer_size=entry.lfs.pointer_size if entry.lfs else None,
    )


def _entry(row: Entry) -> TreeEntry:
    lfs = None
    if row.lfs_sha256 is not None:
        lfs = LfsInfo(sha256=row.lfs_sha256, size=row.size, pointer_size=row.lfs_pointer_size or 0)
    return TreeEntry(
        entry_type=EntryType(row.kind), path=row.path, oid=row.oid, size=row.size, lfs=lfs
    )


def _ref(row: Ref) -> RefRecord:
    kind = None if row.kind is None else RefKind(row.kind)
    return RefRecord(row.name, row.commit, row.approved_commit, kind)


def repo_record(row: Repo) -> RepoRecord:
    """A repo row as the record the core passes around."""
    ref = RepoRef(RepoType(row.repo_type), row.repo_id)
    return RepoRecord(pk=row.id, ref=ref, private=row.private, gated=row.gated)


def _blob(row: Blob) -> BlobRecord:
    return BlobRecord(
        pk=row.id,
        etag=row.etag,
        sha256=row.sha256,
        size=row.size,
        state=BlobState(row.state),
        reason=row.reason,
        first_path=row.first_path,
        owner=row.lease_owner,
        lease_token=row.lease_token,
    )


class Repository:
    """Typed access to the tables; built once by the app factory around a session maker."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession] | None = None,
        *,
        on_audit: AuditHook | None = None,
    ) -> None:
        self._sessions = sessions
        # Pure reads may use sessions that do not take SQLite's write lock (proxy.store.db).
        self._read = read_sessions or sessions
        self._on_audit = on_audit

    # -- repos, refs, commits ------------------------------------------------------------------

    async def upsert_repo(self, ref: RepoRef, *, private: bool, gated: str) -> RepoRecord:
        """The repo's row, created or updated with what upstream just said about access."""
        found = await self.find_repo(ref)
        if found is not None and (found.private, found.gated) == (private, gated):
            return found  # the row already says this: no write transaction (issue 9)
        async with self._sessions() as session:
            row = await self._repo_row(session, ref)
            if row is None:
                row = Repo(
                    repo_type=ref.repo_type.value, repo_id=ref.repo_id, private=private, gated=gated
                )
                session.add(row)
                try:
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                    row = await self._repo_row(session, ref)
                    assert row is not None
            elif row.private != private or row.gated != gated:
                row.private, row.gated, row.updated_at = private, gated, utcnow()
                await session.commit()
            return RepoRecord(pk=row.id, ref=ref, private=row.private, gated=row.gated)

    async def find_repo(self, ref: RepoRef) -> RepoRecord | None:
        async with self._read() as session:
            row = await self._repo_row(session, ref)
            if row is None:
                return None
            return RepoRecord(pk=row.id, ref=ref, private=row.private, gated=row.gated)

    async def repo_by_pk(self, pk: int) -> RepoRecord | None:
        """The repo recorded under this primary key (audit events name repos by key)."""
        async with self._read() as session:
            row = await session.get(Repo, pk)
            return None if row is None else repo_record(row)

    async def list_repos(self, repo_type: str, search: str) -> list[RepoRecord]:
        """Recorded repos of a type whose id contains `search`, by id (at most 1000)."""
        async with self._read() as session:
            query = select(Repo).where(Repo.repo_type == repo_type)
            if search:
                query = query.where(Repo.repo_id.contains(search, autoescape=True))
            result = await session.execute(query.order_by(Repo.repo_id).limit(1000))
            return [repo_record(row) for row in result.scalars()]

    @staticmethod
    async def _repo_row(session: AsyncSession, ref: RepoRef) -> Repo | None:
        result = await session.execute(
            select(Repo).where(Repo.repo_type == ref.repo_type.value, Repo.repo_id == ref.repo_id)
        )
        return result.scalar_one_or_none()

    async def set_ref(self, repo_pk: int, name: str, commit: str) -> str | None:
        """Record where a branch/tag points; returns the commit it pointed at before (or None)."""
        recorded = await self.get_ref(repo_pk, name)
        if recorded == commit:
            return recorded  # the row already says this: no write transaction (issue 9)
        async with self._sessions() as session:
            result = await session.execute(
                select(Ref).where(Ref.repo_pk == repo_pk, Ref.name == name)
            )
            row = result.scalar_one_or_none()
            if row is None:
                session.add(Ref(repo_pk=repo_pk, name=name, commit=commit))
                try:
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                return None
            previous = row.commit
            if previous != commit:
                row.commit, row.updated_at = commit, utcnow()
                await session.commit()
            return previous

    async def list_refs(self, repo_pk: int) -> list[RefRecord]:
        async with self._read() as session:
            result = await session.execute(
                select(Ref).where(Ref.repo_pk == repo_pk).order_by(Ref.name)
            )
            return [_ref(r) for r in result.scalars()]

    async def get_ref_record(self, repo_pk: int, name: str) -> RefRecord | None:
        async with self._read() as session:
            result = await session.execute(
                select(Ref).where(Ref.repo_pk == repo_pk, Ref.name == name)
            )
            row = result.scalar_one_or_none()
            return None if row is None else _ref(row)

    async def set_ref_kinds(self, repo_pk: int, kinds: Mapping[str, RefKind]) -> set[str]:
        """Record what the named refs are upstream; returns the names recorded (refs without a
        row yet are left alone)."""
        if not kinds:
            return set()
        async with self._read() as session:
            found = await session.execute(
                select(Ref.name, Ref.kind).where(Ref.repo_pk == repo_pk, Ref.name.in_(list(kinds)))
            )
            rows = found.all()
        if all(kind == kinds[name] for name, kind in rows):
            return {name for name, _ in rows}  # the rows already say this (issue 9)
        async with self._sessions() as session:
            result = await session.execute(
                select(Ref).where(Ref.repo_pk == repo_pk, Ref.name.in_(list(kinds)))
            )
            recorded: set[str] = set()
            for row in result.scalars():
                recorded.add(row.name)
                if row.kind != kinds[row.name]:
                    row.kind = kinds[row.name]
            await session.commit()
            return recorded

    async def set_approved(self, repo_pk: int, name: str, commit: str) -> None:
        """Record the commit clients asking for ref `name` are served."""
        async with self._sessions() as session:
            await session.execute(
                update(Ref)
                .where(Ref.repo_pk == repo_pk, Ref.name == name)
                .values(approved_commit=commit)
            )
            await session.commit()

    async def get_ancestry(self, repo_pk: int, older: str, newer: str) -> bool | None:
        """The recorded answer to "is `older` in the history of `newer`?", None if never asked."""
        async with self._read() as session:
            result = await session.execute(
                select(Ancestry.is_ancestor).where(
                    Ancestry.repo_pk == repo_pk, Ancestry.older == older, Ancestry.newer == newer
                )
            )
            return result.scalar_one_or_none()

    async def record_ancestry(
        self, repo_pk: int, older: str, newer: str, *, is_ancestor: bool
    ) -> None:
        async with self._sessions() as session:
            session.add(
                Ancestry(repo_pk=repo_pk, older=older, newer=newer, is_ancestor=is_ancestor)
            )
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()  # another task recorded the same (immutable) answer

    async def get_ref(self, repo_pk: int, name: str) -> str | None:
        async with self._read() as session:
            result = await session.execute(
                select(Ref.commit).where(Ref.repo_pk == repo_pk, Ref.name == name)
            )
            return result.scalar_one_or_none()

    async def get_commit(self, repo_pk: int, sha: str) -> CommitRecord | None:
        async with self._read() as session:
            result = await session.execute(
                select(Commit).where(Commit.repo_pk == repo_pk, Commit.sha == sha)
            )
            row = result.scalar_one_or_none()
            if row is None:
                return None
            return CommitRecord(
                pk=row.id, sha=row.sha, info=row.info, tree_complete=row.tree_complete
            )

    async def save_commit(
        self, repo_pk: int, sha: str, info: dict[str, JsonValue] | None
    ) -> CommitRecord:
        """The commit's row, created if new; `info` is stored when the row has none yet."""
        existing = await self.get_commit(repo_pk, sha)
        if existing is not None:
            if existing.info is None and info is not None:
                async with self._sessions() as session:
                    await session.execute(
                        update(Commit).where(Commit.id == existing.pk).values(info=info)
                    )
                    await session.commit()
                return CommitRecord(existing.pk, sha, info, existing.tree_complete)
            return existing
        async with self._sessions() as session:
            session.add(Commit(repo_pk=repo_pk, sha=sha, info=info, tree_complete=False))
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
        record = await self.get_commit(repo_pk, sha)
        assert record is not None
        return record

    async def get_history(self, repo_pk: int, head: str) -> list[CommitInfo] | None:
        """The recorded commit listing of `head`, newest first; None if never recorded whole."""
        async with self._read() as session:
            result = await session.execute(
                select(History.shas).where(History.repo_pk == repo_pk, History.head == head)
            )
            shas = result.scalar_one_or_none()
            if shas is None:
                return None
            items: dict[str, dict[str, JsonValue]] = {}
            for start in range(0, len(shas), MAX_SHAS_PER_QUERY):
                chunk = shas[start : start + MAX_SHAS_PER_QUERY]
                rows = await session.execute(
                    select(CommitItem.sha, CommitItem.item).where(
                        CommitItem.repo_pk == repo_pk, CommitItem.sha.in_(chunk)
                    )
                )
                items.update({row.sha: row.item for row in rows})
        if any(sha not in items for sha in shas):
            return None
        return [CommitInfo(commit_id=sha, raw=items[sha]) for sha in shas]

    async def save_history(self, repo_pk: int, head: str, listing: Sequence[CommitInfo]) -> None:
        """Record the complete commit listing of `head` (newest first) and its items. Items
        already recorded are kept: a commit's listing item never changes."""
        for attempt in range(2):
            try:
                await self._save_history(repo_pk, head, listing)
                return
            except IntegrityError:
                if attempt:  # another task recorded the same immutable facts meanwhile
                    return

    async def _save_history(self, repo_pk: int, head: str, listing: Sequence[CommitInfo]) -> None:
        async with self._sessions() as session:
            exists = await session.execute(
                select(History.id).where(History.repo_pk == repo_pk, History.head == head)
            )
            if exists.scalar_one_or_none() is not None:
                return
            known: set[str] = set()
            shas = [c.commit_id for c in listing]
            for start in range(0, len(shas), MAX_SHAS_PER_QUERY):
                rows = await session.execute(
                    select(CommitItem.sha).where(
                        CommitItem.repo_pk == repo_pk,
                        CommitItem.sha.in_(shas[start : start + MAX_SHAS_PER_QUERY]),
                    )
                )
                known.update(rows.scalars())
            fresh = {c.commit_id: c for c in listing if c.commit_id not in known}
            session.add_all(
                CommitItem(repo_pk=repo_pk, sha=sha, item=dict(c.raw)) for sha, c in fresh.items()
            )
            session.add(History(repo_pk=repo_pk, head=head, shas=shas))
            await session.commit()

    # -- entries -------------------------------------------------------------------------------

    async def save_tree(self, commit_pk: int, entries: Sequence[TreeEntry]) -> None:
        """Store a commit's complete listing (replacing partial entries) and mark it complete."""
        async with self._sessions() as session:
            await session.execute(delete(Entry).where(Entry.commit_pk == commit_pk))
            for start in range(0, len(entries), MAX_ENTRIES_PER_INSERT):
                session.add_all(
                    entry_row(commit_pk, e) for e in entries[start : start + MAX_ENTRIES_PER_INSERT]
                )
                await session.flush()
            await session.execute(
                update(Commit).where(Commit.id == commit_pk).values(tree_complete=True)
            )
            await session.commit()

    async def save_entries(self, commit_pk: int, entries: Iterable[TreeEntry]) -> None:
        """Add single entries learnt from paths-info (existing ones are kept)."""
        for entry in entries:
            async with self._sessions() as session:
                session.add(entry_row(commit_pk, entry))
                try:
                    await session.commit()
                except IntegrityError:
                    await session.rollback()

    async def list_entries(self, commit_pk: int) -> list[TreeEntry]:
        async with self._read() as session:
            result = await session.execute(
                select(Entry).where(Entry.commit_pk == commit_pk).order_by(Entry.path)
            )
            return [_entry(row) for row in result.scalars()]

    async def get_entries(self, commit_pk: int, paths: Sequence[str]) -> list[TreeEntry]:
        async with self._read() as session:
            result = await session.execute(
                select(Entry).where(Entry.commit_pk == commit_pk, Entry.path.in_(list(paths)))
            )
            return [_entry(row) for row in result.scalars()]

    # -- blobs and findings --------------------------------------------------------------------

    async def get_blob(self, etag: str) -> BlobRecord | None:
        async with self._read() as session:
            result = await session.execute(select(Blob).where(Blob.etag == etag))
            row = result.scalar_one_or_none()
            return None if row is None else _blob(row)

    async def repo_of_blob(self, blob_pk: int) -> RepoRecord | None:
        """The repo a blob was first asked for."""
        async with self._read() as session:
            result = await session.execute(
                select(Repo).join(Blob, Blob.first_repo_pk == Repo.id).where(Blob.id == blob_pk)
            )
            row = result.scalar_one_or_none()
            return None if row is None else repo_record(row)

    async def get_blob_by_pk(self, pk: int) -> BlobRecord | None:
        async with self._read() as session:
            row = await session.get(Blob, pk)
            return None if row is None else _blob(row)

    def blob_leases(self, lease_s: float) -> BlobLeases:
        """The leases of ingests, on this repository's database (proxy.store.leases)."""
        return BlobLeases(self._sessions, lease_s)

    async def claim_blob(
        self, etag: str, size: int, repo_pk: int, path: str, owner: str | None = None
    ) -> bool:
        """Insert the blob in state `fetching`, owned by `owner`; False when another task or
        replica has it."""
        async with self._sessions() as session:
            session.add(
                Blob(
                    etag=etag,
                    size=size,
                    state=BlobState.FETCHING.value,
                    reason="",
                    first_repo_pk=repo_pk,
                    first_path=path,
                    lease_owner=owner,
                    lease_token=1,
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                return False
            return True

    async def set_blob_state(
        self, etag: str, state: BlobState, *, reason: str = "", **fields: object
    ) -> None:
        """Move a blob to a new state, with optional column values (sha256, outcome...)."""
        async with self._sessions() as session:
            await session.execute(
                update(Blob)
                .where(Blob.etag == etag)
                .values(state=state.value, reason=reason, updated_at=utcnow(), **fields)
            )
            await session.commit()

    async def forget_blob(self, etag: str) -> None:
        """Delete a blob row that never completed (upstream failure), so a retry refetches."""
        async with self._sessions() as session:
            await session.execute(delete(Blob).where(Blob.etag == etag))
            await session.commit()

    async def forget_abandoned_blob(self, etag: str, owner: str | None) -> bool:
        """Delete a fetching/scanning row still owned by `owner` (a process found dead, or
        this one, which lost its ingest); False when the row moved on or another took it."""
        unfinished = [BlobState.FETCHING.value, BlobState.SCANNING.value]
        query = delete(Blob).where(Blob.etag == etag, Blob.state.in_(unfinished))
        query = query.where(
            Blob.lease_owner.is_(None) if owner is None else Blob.lease_owner == owner
        )
        async with self._sessions() as session:
            result = await session.execute(query)
            await session.commit()
            return bool(getattr(result, "rowcount", 0))

    async def list_blobs(self, states: Iterable[BlobState]) -> list[BlobRecord]:
        """Every blob in one of `states` (for `hubwarden doctor`)."""
        wanted = [state.value for state in states]
        async with self._read() as session:
            result = await session.execute(
                select(Blob).where(Blob.state.in_(wanted)).order_by(Blob.id)
            )
            return [_blob(row) for row in result.scalars()]

    async def forget_unfinished_blobs(self) -> int:
        """At start-up: rows left in fetching/scanning by a stopped process are deleted."""
        unfinished = [BlobState.FETCHING.value, BlobState.SCANNING.value]
        async with self._sessions() as session:
            rows = await session.execute(select(Blob.id).where(Blob.state.in_(unfinished)))
            ids = list(rows.scalars())
            if ids:
                await session.execute(delete(FindingRow).where(FindingRow.blob_pk.in_(ids)))
                await session.execute(delete(Blob).where(Blob.id.in_(ids)))
            await session.commit()
            return len(ids)

    async def replace_findings(self, blob_pk: int, findings: Iterable[Finding]) -> None:
        """A blob's findings after a new scan (the old ones stay in the audit log's details)."""
        async with self._sessions() as session:
            await session.execute(delete(FindingRow).where(FindingRow.blob_pk == blob_pk))
            await session.commit()
        await self.add_findings(blob_pk, findings)

    async def add_findings(self, blob_pk: int, findings: Iterable[Finding]) -> None:
        async with self._sessions() as session:
            session.add_all(
                FindingRow(
                    blob_pk=blob_pk,
                    scanner=f.scanner[:64],
                    code=f.code[:64],
                    severity=f.severity.value,
                    outcome=f.outcome.value,
                    message=f.message,
                    details=f.details,
                )
                for f in findings
            )
            await session.commit()

    async def list_findings(self, blob_pk: int) -> list[Finding]:
        async with self._read() as session:
            result = await session.execute(
                select(FindingRow).where(FindingRow.blob_pk == blob_pk).order_by(FindingRow.id)
            )
            return [
                Finding(
                    scanner=r.scanner,
                    code=r.code,
                    severity=Severity(r.severity),
                    outcome=Outcome(r.outcome),
                    message=r.message,
                    details=r.details or {},
                )
                for r in result.scalars()
            ]

    # -- pins, blocks, audit -------------------------------------------------------------------

    async def get_pin(self, repo_pk: int, path: str) -> PinRecord | None:
        async with self._read() as session:
            result = await session.execute(
                select(Pin).where(Pin.repo_pk == repo_pk, Pin.path == path)
            )
            row = result.scalar_one_or_none()
            return None if row is None else PinRecord(row.path, row.etag, row.commit)

    async def list_pins(self, repo_pk: int) -> list[PinRecord]:
        async with self._read() as session:
            result = await session.execute(
                select(Pin).where(Pin.repo_pk == repo_pk).order_by(Pin.path)
            )
            return [PinRecord(row.path, row.etag, row.commit) for row in result.scalars()]

    async def has_pins(self, repo_pk: int) -> bool:
        async with self._read() as session:
            result = await session.execute(select(Pin.id).where(Pin.repo_pk == repo_pk).limit(1))
            return result.scalar_one_or_none() is not None

    async def set_pin(self, repo_pk: int, path: str, etag: str, commit: str, by: str) -> None:
        """Pin (repo, path) to a verified etag; an existing pin is replaced."""
        async with self._sessions() as session:
            result = await session.execute(
                select(Pin).where(Pin.repo_pk == repo_pk, Pin.path == path)
            )
            row = result.scalar_one_or_none()
            if row is None:
                session.add(Pin(repo_pk=repo_pk, path=path, etag=etag, commit=commit, pinned_by=by))
            else:
                row.etag, row.commit, row.pinned_by, row.pinned_at = etag, commit, by, utcnow()
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()

    async def active_block(self, repo_pk: int) -> BlockRecord | None:
        async with self._read() as session:
            result = await session.execute(
                select(Block)
                .where(Block.repo_pk == repo_pk, Block.lifted_at.is_(None))
                .order_by(Block.id)
                .limit(1)
            )
            row = result.scalar_one_or_none()
            if row is None:
                return None
            return BlockRecord(row.id, row.reason, row.detail, row.created_at)

    async def add_block(self, repo_pk: int, reason: str, detail: str, by: str) -> BlockRecord:
        async with self._sessions() as session:
            row = Block(repo_pk=repo_pk, reason=reason, detail=detail, created_by=by)
            session.add(row)
            await session.commit()
            return BlockRecord(row.id, row.reason, row.detail, row.created_at)

    async def audit(
        self,
        actor: str,
        action: str,
        *,
        repo_pk: int | None = None,
        blob_pk: int | None = None,
        details: dict[str, JsonValue] | None = None,
    ) -> None:
        """Append an audit event (with the caller's role and address, see `AUDIT_CONTEXT`);
        once it is committed, hand it to the `on_audit` hook."""
        context = AUDIT_CONTEXT.get() or {}
        record = AuditRecord(
            utcnow(), actor, action, repo_pk, blob_pk, {**context, **(details or {})}
        )
        async with self._sessions() as session:
            row = AuditEvent(
                at=record.at,
                actor=actor,
                action=action,
                repo_pk=repo_pk,
                blob_pk=blob_pk,
                details=record.details,
            )
            session.add(row)
            await session.commit()
            record = dataclasses.replace(record, pk=row.id)
        if self._on_audit is not None:
            self._on_audit(record)

    async def list_audit(self, action: str | None = None, limit: int = 1000) -> list[AuditRecord]:
        """Audit events, oldest first, optionally of one action (at most `limit`)."""
        async with self._read() as session:
            query = select(AuditEvent).order_by(AuditEvent.id).limit(limit)
            if action is not None:
                query = query.where(AuditEvent.action == action)
            result = await session.execute(query)
            return [audit_record(e) for e in result.scalars()]
