"""The import's one transaction (`BundleQueries.apply_import`) on SQLite and PostgreSQL: all of
it is written, or (when what it was judged against changed meanwhile) none of it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.metadata import CommitInfo, EntryType, LfsInfo, RefKind, TreeEntry
from proxy.repos import RepoRef, RepoType
from proxy.store import db
from proxy.store.bundles import (
    AuditWrite,
    BlobWrite,
    BundleQueries,
    CommitWrite,
    ImportConflict,
    ImportWrite,
    PinWrite,
    RefWrite,
    RepoWrite,
)
from proxy.store.models import AuditEvent, BlobState, BundleImport
from proxy.store.repository import PinRecord, RefRecord, Repository
from scanners.report import Finding, Outcome, Severity

REPO = RepoRef(RepoType.MODEL, "org/model")
A, B = "a" * 40, "b" * 40
SHA = "5" * 64
ENTRY = TreeEntry(EntryType.FILE, "model.safetensors", "f" * 40, 10, LfsInfo(SHA, 10, 130))


def _write(repo: RepoWrite, digest: str = "d" * 64) -> ImportWrite:
    return ImportWrite(
        digest,
        "dmz",
        "e" * 64,
        "dmz.example",
        "2026-01-01T00:00:00Z",
        "os:test",
        {"files": 1},
        [repo],
        {"role": "os-user"},
    )


def _first(expected_pk: int | None = None) -> RepoWrite:
    repo = RepoWrite(REPO, False, "false", expected_pk)
    repo.refs.append(RefWrite("main", RefKind.BRANCH, A, A, None))
    repo.commits.append(CommitWrite(A, {"sha": A}, [ENTRY]))
    repo.items = {A: {"id": A, "title": "first"}}
    repo.histories = {A: [A]}
    finding = Finding("safetensors", "OK", Severity.INFO, Outcome.CLEAN, "fine")
    repo.blobs.append(
        BlobWrite(
            SHA,
            SHA,
            None,
            10,
            BlobState.RELEASED,
            "",
            "safetensors",
            "clean",
            ENTRY.path,
            [finding],
        )
    )
    repo.pins.append(PinWrite(PinRecord(ENTRY.path, SHA, A), None))
    repo.audit.append(AuditWrite("bundle.imported", {"bundle": "d" * 64}))
    repo.audit.append(AuditWrite("blob.released", {"path": ENTRY.path}, blob_etag=SHA))
    return repo


async def _count(engine: AsyncEngine, model: type) -> int:
    async with db.session_maker(engine)() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_apply_import_writes_everything(db_engine: AsyncEngine) -> None:
    queries = BundleQueries(db.session_maker(db_engine))
    await queries.apply_import(_write(_first()))
    repository = Repository(db.session_maker(db_engine))
    record = await repository.find_repo(REPO)
    assert record is not None
    commit = await repository.get_commit(record.pk, A)
    assert commit is not None and commit.tree_complete
    assert await repository.list_entries(commit.pk) == [ENTRY]
    assert await repository.get_history(record.pk, A) == [
        CommitInfo(A, {"id": A, "title": "first"})
    ]
    assert await repository.get_ref_record(record.pk, "main") == RefRecord(
        "main", A, A, RefKind.BRANCH
    )
    blob = await repository.get_blob(SHA)
    assert blob is not None and blob.state is BlobState.RELEASED
    assert [f.code for f in await repository.list_findings(blob.pk)] == ["OK"]
    assert await repository.get_pin(record.pk, ENTRY.path) == PinRecord(ENTRY.path, SHA, A)
    events = await repository.list_audit()
    assert [(e.action, e.actor, e.blob_pk) for e in events] == [
        ("bundle.imported", "os:test", None),
        ("blob.released", "os:test", blob.pk),
    ]
    assert events[0].details["role"] == "os-user"
    assert await queries.imported("d" * 64)
    assert await _count(db_engine, BundleImport) == 1


async def test_apply_import_judged_against_a_stale_ref_writes_nothing(
    db_engine: AsyncEngine,
) -> None:
    queries = BundleQueries(db.session_maker(db_engine))
    await queries.apply_import(_write(_first()))
    repository = Repository(db.session_maker(db_engine))
    record = await repository.find_repo(REPO)
    assert record is not None
    second = RepoWrite(REPO, False, "false", record.pk)
    second.commits.append(CommitWrite(B, {"sha": B}, [ENTRY]))
    second.audit.append(AuditWrite("bundle.imported", {"bundle": "9" * 64}))
    # judged when main was at B (say): a server moved it meanwhile
    second.refs.append(
        RefWrite("main", RefKind.BRANCH, B, B, RefRecord("main", B, B, RefKind.BRANCH))
    )
    events = await _count(db_engine, AuditEvent)
    with pytest.raises(ImportConflict, match="changed while the bundle was being checked"):
        await queries.apply_import(_write(second, "9" * 64))
    assert await repository.get_commit(record.pk, B) is None
    assert await _count(db_engine, AuditEvent) == events
    assert not await queries.imported("9" * 64)


async def test_apply_import_of_a_repo_created_meanwhile_writes_nothing(
    db_engine: AsyncEngine,
) -> None:
    queries = BundleQueries(db.session_maker(db_engine))
    await Repository(db.session_maker(db_engine)).upsert_repo(REPO, private=False, gated="false")
    with pytest.raises(ImportConflict, match="the record of org/model"):
        await queries.apply_import(_write(_first(expected_pk=None)))
    assert await _count(db_engine, BundleImport) == 0
