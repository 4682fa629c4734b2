"""The database side of bundles: what `hubwarden export` reads, what `hubwarden import` compares
with, and the import's one transaction.

Reads are batched (a bundle may name thousands of files). `apply_import` writes everything an
import brings (repos, refs, commits and their trees, commit listings, blobs and their findings,
pins, audit events, the `bundle_imports` row) in ONE transaction, after checking that what the
import was judged against has not changed meanwhile (a server or a second import on the same
database): if it has, ImportConflict, and the transaction is rolled back whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.errors import HubwardenError
from proxy.metadata import EntryType, LfsInfo, RefKind, TreeEntry
from proxy.repos import RepoRef
from proxy.store.models import (
    AuditEvent,
    Blob,
    BlobState,
    Block,
    BundleImport,
    Commit,
    CommitItem,
    Entry,
    FindingRow,
    History,
    Pin,
    Ref,
    Repo,
    WaivedBlob,
)
from proxy.store.repository import (
    MAX_ENTRIES_PER_INSERT,
    MAX_SHAS_PER_QUERY,
    AuditRecord,
    PinRecord,
    RefRecord,
    audit_record,
    entry_row,
    utcnow,
)
from scanners.report import Finding, JsonValue, Outcome, Severity

WITHHELD_PREFIX = "withheld by the exporting mirror"
"""The reason of a placeholder row: a file the exporter held, known here without its bytes."""
MAX_DECISIONS = 1000


class ImportConflict(HubwardenError):
    """What an import was judged against changed before it was written."""


@dataclass(frozen=True, slots=True)
class BlobView:
    """A blob row with what an export or an import needs of it."""

    pk: int
    etag: str
    sha256: str | None
    git_sha1: str | None
    size: int
    state: BlobState
    reason: str
    file_format: str
    outcome: str

    @property
    def is_placeholder(self) -> bool:
        """A withheld file recorded without bytes (see WITHHELD_PREFIX)."""
        return (
            self.state is BlobState.REJECTED
            and self.sha256 is None
            and self.reason.startswith(WITHHELD_PREFIX)
        )


def _blob_view(row: Blob) -> BlobView:
    return BlobView(
        row.id,
        row.etag,
        row.sha256,
        row.git_sha1,
        row.size,
        BlobState(row.state),
        row.reason,
        row.file_format,
        row.outcome,
    )


# -- what an import writes ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefWrite:
    """Set a ref; `expected` is what it was when judged (None: absent)."""

    name: str
    kind: RefKind | None
    commit: str
    approved: str
    expected: RefRecord | None


@dataclass(frozen=True, slots=True)
class CommitWrite:
    """Record a commit: its info (kept when one is recorded) and its complete tree (None: the
    recorded one is complete already)."""

    sha: str
    info: Mapping[str, JsonValue]
    tree: Sequence[TreeEntry] | None


@dataclass(frozen=True, slots=True)
class BlobWrite:
    """A new blob row (or the bytes of a placeholder row), with its scan findings."""

    etag: str
    sha256: str | None
    git_sha1: str | None
    size: int
    state: BlobState
    reason: str
    file_format: str
    outcome: str
    first_path: str
    findings: Sequence[Finding] = ()
    replaces_placeholder: bool = False


@dataclass(frozen=True, slots=True)
class PinWrite:
    pin: PinRecord
    expected: PinRecord | None


@dataclass(frozen=True, slots=True)
class AuditWrite:
    action: str
    details: Mapping[str, JsonValue]
    blob_etag: str | None = None
    actor: str | None = None
    """None: the importing actor."""


@dataclass(slots=True)
class RepoWrite:
    ref: RepoRef
    private: bool
    gated: str
    expected_pk: int | None
    refs: list[RefWrite] = field(default_factory=list)
    commits: list[CommitWrite] = field(default_factory=list)
    items: dict[str, Mapping[str, JsonValue]] = field(default_factory=dict)
    histories: dict[str, Sequence[str]] = field(default_factory=dict)
    blobs: list[BlobWrite] = field(default_factory=list)
    pins: list[PinWrite] = field(default_factory=list)
    waived: list[tuple[int, str, str]] = field(default_factory=list)
    """(waiver pk, blob etag, what it was held for)."""
    audit: list[AuditWrite] = field(default_factory=list)
    update_access: bool = False

    @property
    def changes(self) -> bool:
        return bool(
            self.expected_pk is None
            or self.update_access
            or self.refs
            or self.commits
            or self.items
            or self.histories
            or self.blobs
            or self.pins
        )


@dataclass(frozen=True, slots=True)
class ImportWrite:
    digest: str
    key_name: str
    fingerprint: str
    exporter: str
    created: str
    actor: str
    summary: Mapping[str, JsonValue]
    repos: Sequence[RepoWrite]
    context: Mapping[str, str] = field(default_factory=dict)
    """Added to every audit event's details (the acting role and address)."""


# -- what an import compares with -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalRepo:
    pk: int
    private: bool
    gated: str
    refs: Mapping[str, RefRecord]
    pins: Mapping[str, PinRecord]
    block: str | None
    """The active block's reason and detail, if the repo is blocked."""


@dataclass(frozen=True, slots=True)
class LocalCommit:
    info: Mapping[str, JsonValue] | None
    tree_complete: bool
    entries: Mapping[str, TreeEntry]


class BundleQueries:
    """Batched reads for export and import, and the import's transaction."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self._sessions = sessions
        self._read = read_sessions or sessions

    # -- reads -------------------------------------------------------------------------------

    async def blobs(self, etags: Iterable[str]) -> dict[str, BlobView]:
        wanted = sorted(set(etags))
        found: dict[str, BlobView] = {}
        async with self._read() as session:
            for start in range(0, len(wanted), MAX_SHAS_PER_QUERY):
                rows = await session.execute(
                    select(Blob).where(Blob.etag.in_(wanted[start : start + MAX_SHAS_PER_QUERY]))
                )
                found.update((row.etag, _blob_view(row)) for row in rows.scalars())
        return found

    async def findings(self, blob_pks: Iterable[int]) -> dict[int, list[Finding]]:
        wanted = sorted(set(blob_pks))
        found: dict[int, list[Finding]] = {pk: [] for pk in wanted}
        async with self._read() as session:
            for start in range(0, len(wanted), MAX_SHAS_PER_QUERY):
                rows = await session.execute(
                    select(FindingRow)
                    .where(FindingRow.blob_pk.in_(wanted[start : start + MAX_SHAS_PER_QUERY]))
                    .order_by(FindingRow.id)
                )
                for row in rows.scalars():
                    found[row.blob_pk].append(
                        Finding(
                            row.scanner,
                            row.code,
                            Severity(row.severity),
                            Outcome(row.outcome),
                            row.message,
                            row.details or {},
                        )
                    )
        return found

    async def decisions(
        self, repo_pk: int, actions: Iterable[str], limit: int = MAX_DECISIONS
    ) -> list[AuditRecord]:
        """The newest audit events of the repo with one of `actions`, oldest first."""
        async with self._read() as session:
            rows = await session.execute(
                select(AuditEvent)
                .where(AuditEvent.repo_pk == repo_pk, AuditEvent.action.in_(list(actions)))
                .order_by(AuditEvent.id.desc())
                .limit(limit)
            )
            return [audit_record(e) for e in reversed(list(rows.scalars()))]

    async def blob_decisions(
        self, blob_pks: Iterable[int], actions: Iterable[str], limit: int = MAX_DECISIONS
    ) -> dict[int, list[AuditRecord]]:
        wanted = sorted(set(blob_pks))
        found: dict[int, list[AuditRecord]] = {}
        async with self._read() as session:
            for start in range(0, len(wanted), MAX_SHAS_PER_QUERY):
                rows = await session.execute(
                    select(AuditEvent)
                    .where(
                        AuditEvent.blob_pk.in_(wanted[start : start + MAX_SHAS_PER_QUERY]),
                        AuditEvent.action.in_(list(actions)),
                    )
                    .order_by(AuditEvent.id)
                    .limit(limit)
                )
                for event in rows.scalars():
                    assert event.blob_pk is not None
                    found.setdefault(event.blob_pk, []).append(audit_record(event))
        return found

    async def history_shas(self, repo_pk: int, heads: Iterable[str]) -> dict[str, list[str]]:
        """The recorded commit listings (shas only) of those of `heads` that have one."""
        wanted = sorted(set(heads))
        found: dict[str, list[str]] = {}
        async with self._read() as session:
            for start in range(0, len(wanted), MAX_SHAS_PER_QUERY):
                rows = await session.execute(
                    select(History.head, History.shas).where(
                        History.repo_pk == repo_pk,
                        History.head.in_(wanted[start : start + MAX_SHAS_PER_QUERY]),
                    )
                )
                found.update((row.head, list(row.shas)) for row in rows)
        return found

    async def item_shas(self, repo_pk: int, shas: Iterable[str]) -> set[str]:
        """Those of `shas` whose commit listing item is recorded."""
        wanted = sorted(set(shas))
        found: set[str] = set()
        async with self._read() as session:
            for start in range(0, len(wanted), MAX_SHAS_PER_QUERY):
                rows = await session.execute(
                    select(CommitItem.sha).where(
                        CommitItem.repo_pk == repo_pk,
                        CommitItem.sha.in_(wanted[start : start + MAX_SHAS_PER_QUERY]),
                    )
                )
                found.update(rows.scalars())
        return found

    async def local_repo(self, ref: RepoRef) -> LocalRepo | None:
        async with self._read() as session:
            row = (
                await session.execute(
                    select(Repo).where(
                        Repo.repo_type == ref.repo_type.value, Repo.repo_id == ref.repo_id
                    )
                )
            ).scalar_one_or_none()
            if row is None:
                return None
            refs = (await session.execute(select(Ref).where(Ref.repo_pk == row.id))).scalars()
            pins = (await session.execute(select(Pin).where(Pin.repo_pk == row.id))).scalars()
            block = (
                await session.execute(
                    select(Block)
                    .where(Block.repo_pk == row.id, Block.lifted_at.is_(None))
                    .order_by(Block.id)
                    .limit(1)
                )
            ).scalar_one_or_none()
            return LocalRepo(
                row.id,
                row.private,
                row.gated,
                {r.name: _ref_record(r) for r in refs},
                {p.path: PinRecord(p.path, p.etag, p.commit) for p in pins},
                f"{block.reason}: {block.detail}" if block is not None else None,
            )

    async def local_commit(self, repo_pk: int, sha: str) -> LocalCommit | None:
        async with self._read() as session:
            row = (
                await session.execute(
                    select(Commit).where(Commit.repo_pk == repo_pk, Commit.sha == sha)
                )
            ).scalar_one_or_none()
            if row is None:
                return None
            entries = (
                await session.execute(select(Entry).where(Entry.commit_pk == row.id))
            ).scalars()
            return LocalCommit(
                row.info, row.tree_complete, {e.path: _tree_entry(e) for e in entries}
            )

    async def imported(self, digest: str) -> bool:
        async with self._read() as session:
            result = await session.execute(
                select(BundleImport.id).where(BundleImport.digest == digest)
            )
            return result.scalar_one_or_none() is not None

    # -- the import's transaction --------------------------------------------------------------

    async def apply_import(self, write: ImportWrite) -> None:
        """Write an import in one transaction. Raises ImportConflict (nothing written)."""
        try:
            await self._apply(write)
        except IntegrityError as exc:  # a row inserted meanwhile by a server or an import
            raise ImportConflict(
                "this mirror's records changed while the bundle was being checked (a server or "
                "another import on this database); nothing was imported: run the import again"
            ) from exc

    async def _apply(self, write: ImportWrite) -> None:
        async with self._sessions() as session:
            for repo in write.repos:
                await _Writer(session, write, repo).run()
            exists = await session.execute(
                select(BundleImport.id).where(BundleImport.digest == write.digest)
            )
            if exists.scalar_one_or_none() is None:
                session.add(
                    BundleImport(
                        digest=write.digest,
                        key_name=write.key_name,
                        fingerprint=write.fingerprint,
                        exporter=write.exporter[:200],
                        created=write.created[:64],
                        imported_by=write.actor[:128],
                        summary=dict(write.summary),
                    )
                )
            await session.commit()


def _ref_record(row: Ref) -> RefRecord:
    return RefRecord(
        row.name, row.commit, row.approved_commit, None if row.kind is None else RefKind(row.kind)
    )


def _tree_entry(row: Entry) -> TreeEntry:
    lfs = None
    if row.lfs_sha256 is not None:
        lfs = LfsInfo(row.lfs_sha256, row.size, row.lfs_pointer_size or 0)
    return TreeEntry(EntryType(row.kind), row.path, row.oid, row.size, lfs)


class _Writer:
    """One repo's share of an import's transaction."""

    def __init__(self, session: AsyncSession, write: ImportWrite, repo: RepoWrite) -> None:
        self._session = session
        self._write = write
        self._repo = repo
        self._pk = 0

    def _conflict(self, what: str) -> ImportConflict:
        return ImportConflict(
            f"{what} of {self._repo.ref} changed while the bundle was being checked (a server "
            "or another import on this database); nothing was imported: run the import again"
        )

    async def run(self) -> None:
        repo = self._repo
        row = (
            await self._session.execute(
                select(Repo).where(
                    Repo.repo_type == repo.ref.repo_type.value, Repo.repo_id == repo.ref.repo_id
                )
            )
        ).scalar_one_or_none()
        if (row.id if row is not None else None) != repo.expected_pk:
            raise self._conflict("the record")
        if row is None:
            row = Repo(
                repo_type=repo.ref.repo_type.value,
                repo_id=repo.ref.repo_id,
                private=repo.private,
                gated=repo.gated,
            )
            self._session.add(row)
            await self._session.flush()
        elif repo.update_access:
            row.private, row.gated, row.updated_at = repo.private, repo.gated, utcnow()
        self._pk = row.id
        await self._refs()
        await self._commits()
        await self._listings()
        etags = await self._blobs()
        await self._pins()
        for waiver_pk, etag, held_for in repo.waived:
            self._session.add(
                WaivedBlob(waiver_pk=waiver_pk, blob_pk=etags[etag], held_for=held_for)
            )
        for event in repo.audit:
            blob_pk = None
            if event.blob_etag is not None:
                blob_pk = etags.get(event.blob_etag) or await self._blob_pk(event.blob_etag)
            self._session.add(
                AuditEvent(
                    at=utcnow(),
                    actor=(event.actor or self._write.actor)[:128],
                    action=event.action,
                    repo_pk=self._pk,
                    blob_pk=blob_pk,
                    details={**self._write.context, **event.details},
                )
            )
        await self._session.flush()

    async def _refs(self) -> None:
        for ref in self._repo.refs:
            row = (
                await self._session.execute(
                    select(Ref).where(Ref.repo_pk == self._pk, Ref.name == ref.name)
                )
            ).scalar_one_or_none()
            current = _ref_record(row) if row is not None else None
            if current != ref.expected:
                raise self._conflict(f'the ref "{ref.name}"')
            if row is None:
                self._session.add(
                    Ref(
                        repo_pk=self._pk,
                        name=ref.name,
                        commit=ref.commit,
                        approved_commit=ref.approved,
                        kind=ref.kind,
                    )
                )
            else:
                row.commit, row.approved_commit, row.updated_at = ref.commit, ref.approved, utcnow()
                if ref.kind is not None:
                    row.kind = ref.kind

    async def _commits(self) -> None:
        for commit in self._repo.commits:
            row = (
                await self._session.execute(
                    select(Commit).where(Commit.repo_pk == self._pk, Commit.sha == commit.sha)
                )
            ).scalar_one_or_none()
            if row is None:
                row = Commit(
                    repo_pk=self._pk, sha=commit.sha, info=dict(commit.info), tree_complete=False
                )
                self._session.add(row)
                await self._session.flush()
            elif row.info is None:
                row.info = dict(commit.info)
            if commit.tree is None:
                continue
            if row.tree_complete:
                raise self._conflict(f"the file list of commit {commit.sha[:12]}")
            await self._session.execute(delete(Entry).where(Entry.commit_pk == row.id))
            entries = list(commit.tree)
            for start in range(0, len(entries), MAX_ENTRIES_PER_INSERT):
                self._session.add_all(
                    entry_row(row.id, e) for e in entries[start : start + MAX_ENTRIES_PER_INSERT]
                )
                await self._session.flush()
            row.tree_complete = True

    async def _listings(self) -> None:
        items = self._repo.items
        shas = sorted(items)
        known: set[str] = set()
        for start in range(0, len(shas), MAX_SHAS_PER_QUERY):
            rows = await self._session.execute(
                select(CommitItem.sha).where(
                    CommitItem.repo_pk == self._pk,
                    CommitItem.sha.in_(shas[start : start + MAX_SHAS_PER_QUERY]),
                )
            )
            known.update(rows.scalars())
        self._session.add_all(
            CommitItem(repo_pk=self._pk, sha=sha, item=dict(items[sha]))
            for sha in shas
            if sha not in known
        )
        for head, listing in self._repo.histories.items():
            exists = await self._session.execute(
                select(History.id).where(History.repo_pk == self._pk, History.head == head)
            )
            if exists.scalar_one_or_none() is None:
                self._session.add(History(repo_pk=self._pk, head=head, shas=list(listing)))
        await self._session.flush()

    async def _blobs(self) -> dict[str, int]:
        """Insert the new blob rows (and fill placeholders); returns etag → pk."""
        pks: dict[str, int] = {}
        for blob in self._repo.blobs:
            row = (
                await self._session.execute(select(Blob).where(Blob.etag == blob.etag))
            ).scalar_one_or_none()
            placeholder = row is not None and _blob_view(row).is_placeholder
            if row is not None and not (blob.replaces_placeholder and placeholder):
                raise self._conflict(f"the blob {blob.etag[:12]}")
            if row is None:
                row = Blob(
                    etag=blob.etag,
                    size=blob.size,
                    first_repo_pk=self._pk,
                    first_path=blob.first_path,
                    lease_token=0,
                )
                self._session.add(row)
            row.sha256, row.git_sha1, row.state = blob.sha256, blob.git_sha1, blob.state
            row.reason, row.file_format, row.outcome = blob.reason, blob.file_format, blob.outcome
            row.updated_at = utcnow()
            await self._session.flush()
            pks[blob.etag] = row.id
            self._session.add_all(
                FindingRow(
                    blob_pk=row.id,
                    scanner=f.scanner[:64],
                    code=f.code[:64],
                    severity=f.severity.value,
                    outcome=f.outcome.value,
                    message=f.message,
                    details=f.details,
                )
                for f in blob.findings
            )
        return pks

    async def _blob_pk(self, etag: str) -> int | None:
        result = await self._session.execute(select(Blob.id).where(Blob.etag == etag))
        return result.scalar_one_or_none()

    async def _pins(self) -> None:
        for write in self._repo.pins:
            row = (
                await self._session.execute(
                    select(Pin).where(Pin.repo_pk == self._pk, Pin.path == write.pin.path)
                )
            ).scalar_one_or_none()
            current = PinRecord(row.path, row.etag, row.commit) if row is not None else None
            if current != write.expected:
                raise self._conflict(f'the pin of "{write.pin.path}"')
            pin = write.pin
            if row is None:
                self._session.add(
                    Pin(
                        repo_pk=self._pk,
                        path=pin.path,
                        etag=pin.etag,
                        commit=pin.commit,
                        pinned_by=self._write.actor[:128],
                    )
                )
            else:
                row.etag, row.commit, row.pinned_at = pin.etag, pin.commit, utcnow()
                row.pinned_by = self._write.actor[:128]
