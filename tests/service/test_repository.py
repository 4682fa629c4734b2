"""`Repository` on SQLite and PostgreSQL (schema from the migrations): races, refs, blobs, pins."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.metadata import EntryType, LfsInfo, TreeEntry
from proxy.repos import RepoRef, RepoType
from proxy.store.models import AuditEvent, BlobState, Ref, Repo
from proxy.store.repository import RepoRecord, Repository
from scanners.report import Finding, Outcome, Severity

REF = RepoRef(RepoType.MODEL, "org/m")
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
SHA256 = "5" * 64
CONCURRENCY = 8
# Each PostgreSQL case costs a fresh migrated database (~1 s): behaviours that differ between the
# two databases (races, updates, deletes, ordering) run on both, plain round trips on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def repository(db_sessions: async_sessionmaker[AsyncSession]) -> Repository:
    return Repository(db_sessions)


@pytest.fixture
async def record(repository: Repository) -> RepoRecord:
    return await repository.upsert_repo(REF, private=False, gated="false")


async def _count(sessions: async_sessionmaker[AsyncSession], model: type[object]) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def _entry(path: str, *, lfs: bool = False) -> TreeEntry:
    info = LfsInfo(SHA256, 1000, 134) if lfs else None
    return TreeEntry(EntryType.FILE, path, "1" * 40, 1000 if lfs else 10, info)


# -- repos, refs, commits -------------------------------------------------------------------------


@SQLITE_ONLY
async def test_repository_upsert_repo_twice_keeps_one_row(repository: Repository) -> None:
    first = await repository.upsert_repo(REF, private=False, gated="false")
    second = await repository.upsert_repo(REF, private=False, gated="false")
    assert first == second


async def test_repository_upsert_repo_records_new_access_facts(repository: Repository) -> None:
    await repository.upsert_repo(REF, private=False, gated="false")
    updated = await repository.upsert_repo(REF, private=True, gated="manual")
    assert (updated.private, updated.gated) == (True, "manual")
    assert await repository.find_repo(REF) == updated


async def test_repository_upsert_repo_race_gives_everyone_the_same_row(
    repository: Repository, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    records = await asyncio.gather(
        *(repository.upsert_repo(REF, private=False, gated="false") for _ in range(CONCURRENCY))
    )
    assert len({r.pk for r in records}) == 1
    assert await _count(db_sessions, Repo) == 1


@SQLITE_ONLY
async def test_repository_find_repo_unknown_is_none(repository: Repository) -> None:
    assert await repository.find_repo(REF) is None


@SQLITE_ONLY
async def test_repository_find_repo_same_id_other_type_is_another_repo(
    repository: Repository, record: RepoRecord
) -> None:
    assert await repository.find_repo(RepoRef(RepoType.DATASET, "org/m")) is None


async def test_repository_list_repos_search_wildcards_are_literal(repository: Repository) -> None:
    for repo_id in ("org/a_b", "org/axb", "org/a%b"):
        await repository.upsert_repo(RepoRef(RepoType.MODEL, repo_id), private=False, gated="")
    found = await repository.list_repos("model", "a_b")
    assert [r.ref.repo_id for r in found] == ["org/a_b"]


@SQLITE_ONLY
async def test_repository_set_ref_first_time_returns_none(
    repository: Repository, record: RepoRecord
) -> None:
    assert await repository.set_ref(record.pk, "main", COMMIT_A) is None
    assert await repository.get_ref(record.pk, "main") == COMMIT_A


async def test_repository_set_ref_move_returns_the_previous_commit(
    repository: Repository, record: RepoRecord
) -> None:
    await repository.set_ref(record.pk, "main", COMMIT_A)
    assert await repository.set_ref(record.pk, "main", COMMIT_B) == COMMIT_A
    assert await repository.get_ref(record.pk, "main") == COMMIT_B


@SQLITE_ONLY
async def test_repository_set_ref_unchanged_returns_the_same_commit(
    repository: Repository, record: RepoRecord
) -> None:
    await repository.set_ref(record.pk, "main", COMMIT_A)
    assert await repository.set_ref(record.pk, "main", COMMIT_A) == COMMIT_A


async def test_repository_set_ref_race_keeps_one_row(
    repository: Repository, record: RepoRecord, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    await asyncio.gather(
        *(repository.set_ref(record.pk, "main", COMMIT_A) for _ in range(CONCURRENCY))
    )
    assert await _count(db_sessions, Ref) == 1


@SQLITE_ONLY
async def test_repository_save_commit_info_arrives_later_is_stored(
    repository: Repository, record: RepoRecord
) -> None:
    bare = await repository.save_commit(record.pk, COMMIT_A, None)
    filled = await repository.save_commit(record.pk, COMMIT_A, {"sha": COMMIT_A})
    assert filled.pk == bare.pk
    stored = await repository.get_commit(record.pk, COMMIT_A)
    assert stored is not None
    assert stored.info == {"sha": COMMIT_A}


@SQLITE_ONLY
async def test_repository_save_commit_keeps_the_first_info(
    repository: Repository, record: RepoRecord
) -> None:
    await repository.save_commit(record.pk, COMMIT_A, {"v": 1})
    await repository.save_commit(record.pk, COMMIT_A, {"v": 2})
    stored = await repository.get_commit(record.pk, COMMIT_A)
    assert stored is not None
    assert stored.info == {"v": 1}


async def test_repository_save_commit_race_gives_one_row(
    repository: Repository, record: RepoRecord
) -> None:
    commits = await asyncio.gather(
        *(repository.save_commit(record.pk, COMMIT_A, None) for _ in range(CONCURRENCY))
    )
    assert len({c.pk for c in commits}) == 1


# -- entries --------------------------------------------------------------------------------------


@SQLITE_ONLY
async def test_repository_save_tree_round_trips_entries_sorted(
    repository: Repository, record: RepoRecord
) -> None:
    commit = await repository.save_commit(record.pk, COMMIT_A, None)
    entries = [
        _entry("z.bin", lfs=True),
        _entry("a.json"),
        TreeEntry(EntryType.DIRECTORY, "d", "2" * 40, 0),
    ]
    await repository.save_tree(commit.pk, entries)
    assert await repository.list_entries(commit.pk) == sorted(entries, key=lambda e: e.path)


@SQLITE_ONLY
async def test_repository_save_tree_marks_the_commit_complete(
    repository: Repository, record: RepoRecord
) -> None:
    commit = await repository.save_commit(record.pk, COMMIT_A, None)
    await repository.save_tree(commit.pk, [_entry("a.json")])
    stored = await repository.get_commit(record.pk, COMMIT_A)
    assert stored is not None
    assert stored.tree_complete


@SQLITE_ONLY
async def test_repository_save_tree_replaces_partial_entries(
    repository: Repository, record: RepoRecord
) -> None:
    commit = await repository.save_commit(record.pk, COMMIT_A, None)
    await repository.save_entries(commit.pk, [_entry("a.json"), _entry("gone.json")])
    await repository.save_tree(commit.pk, [_entry("a.json"), _entry("b.json")])
    assert [e.path for e in await repository.list_entries(commit.pk)] == ["a.json", "b.json"]


@SQLITE_ONLY
async def test_repository_save_tree_many_entries_in_batches(
    repository: Repository, record: RepoRecord
) -> None:
    commit = await repository.save_commit(record.pk, COMMIT_A, None)
    await repository.save_tree(commit.pk, [_entry(f"f{n:04d}") for n in range(1200)])
    assert len(await repository.list_entries(commit.pk)) == 1200


@SQLITE_ONLY
async def test_repository_save_entries_duplicate_is_ignored(
    repository: Repository, record: RepoRecord
) -> None:
    commit = await repository.save_commit(record.pk, COMMIT_A, None)
    await repository.save_entries(commit.pk, [_entry("a.json")])
    await repository.save_entries(commit.pk, [_entry("a.json"), _entry("b.json")])
    found = await repository.get_entries(commit.pk, ["a.json", "b.json", "c.json"])
    assert sorted(e.path for e in found) == ["a.json", "b.json"]


# -- blobs and findings ---------------------------------------------------------------------------


async def test_repository_claim_blob_has_a_single_winner_under_concurrency(
    repository: Repository, record: RepoRecord
) -> None:
    wins = await asyncio.gather(
        *(repository.claim_blob(SHA256, 10, record.pk, "m.bin") for _ in range(CONCURRENCY))
    )
    assert wins.count(True) == 1
    blob = await repository.get_blob(SHA256)
    assert blob is not None
    assert (blob.state, blob.first_path, blob.sha256) == (BlobState.FETCHING, "m.bin", None)


@SQLITE_ONLY
async def test_repository_claim_blob_after_forget_can_be_claimed_again(
    repository: Repository, record: RepoRecord
) -> None:
    assert await repository.claim_blob(SHA256, 10, record.pk, "m.bin")
    await repository.forget_blob(SHA256)
    assert await repository.claim_blob(SHA256, 10, record.pk, "m.bin")


@SQLITE_ONLY
async def test_repository_set_blob_state_records_state_reason_and_fields(
    repository: Repository, record: RepoRecord
) -> None:
    await repository.claim_blob(SHA256, 10, record.pk, "m.bin")
    await repository.set_blob_state(SHA256, BlobState.QUARANTINED, reason="pickle", sha256=SHA256)
    blob = await repository.get_blob(SHA256)
    assert blob is not None
    assert (blob.state, blob.reason, blob.sha256) == (BlobState.QUARANTINED, "pickle", SHA256)


async def test_repository_forget_unfinished_blobs_deletes_only_fetching_and_scanning(
    repository: Repository, record: RepoRecord
) -> None:
    states = {
        "1" * 64: BlobState.FETCHING,
        "2" * 64: BlobState.SCANNING,
        "3" * 64: BlobState.RELEASED,
        "4" * 64: BlobState.QUARANTINED,
        "6" * 64: BlobState.REJECTED,
    }
    for etag, state in states.items():
        await repository.claim_blob(etag, 1, record.pk, "x")
        await repository.set_blob_state(etag, state)
    assert await repository.forget_unfinished_blobs() == 2
    left = {etag for etag in states if await repository.get_blob(etag) is not None}
    assert left == {"3" * 64, "4" * 64, "6" * 64}


async def test_repository_forget_unfinished_blobs_takes_their_findings(
    repository: Repository, record: RepoRecord
) -> None:
    await repository.claim_blob(SHA256, 1, record.pk, "x")
    await repository.set_blob_state(SHA256, BlobState.SCANNING)
    blob = await repository.get_blob(SHA256)
    assert blob is not None
    await repository.add_findings(blob.pk, [_finding("a")])
    await repository.forget_unfinished_blobs()
    assert await repository.list_findings(blob.pk) == []


def _finding(message: str, scanner: str = "pickle") -> Finding:
    return Finding(
        scanner, "PICKLE_GLOBAL", Severity.HIGH, Outcome.REVIEW, message, {"k": [1, "v"]}
    )


@SQLITE_ONLY
async def test_repository_findings_round_trip_in_order(
    repository: Repository, record: RepoRecord
) -> None:
    await repository.claim_blob(SHA256, 1, record.pk, "x")
    blob = await repository.get_blob(SHA256)
    assert blob is not None
    findings = [_finding("first"), _finding("second")]
    await repository.add_findings(blob.pk, findings)
    assert await repository.list_findings(blob.pk) == findings


@SQLITE_ONLY
async def test_repository_findings_overlong_scanner_name_is_cut(
    repository: Repository, record: RepoRecord
) -> None:
    await repository.claim_blob(SHA256, 1, record.pk, "x")
    blob = await repository.get_blob(SHA256)
    assert blob is not None
    await repository.add_findings(blob.pk, [_finding("m", scanner="s" * 500)])
    assert [f.scanner for f in await repository.list_findings(blob.pk)] == ["s" * 64]


# -- pins, blocks, audit --------------------------------------------------------------------------


@SQLITE_ONLY
async def test_repository_get_pin_unpinned_path_is_none(
    repository: Repository, record: RepoRecord
) -> None:
    assert await repository.get_pin(record.pk, "m.bin") is None


async def test_repository_set_pin_then_get_pin(repository: Repository, record: RepoRecord) -> None:
    await repository.set_pin(record.pk, "m.bin", SHA256, COMMIT_A, "hubwarden")
    pin = await repository.get_pin(record.pk, "m.bin")
    assert pin is not None
    assert (pin.path, pin.etag, pin.commit) == ("m.bin", SHA256, COMMIT_A)


async def test_repository_set_pin_again_replaces_the_pin(
    repository: Repository, record: RepoRecord
) -> None:
    await repository.set_pin(record.pk, "m.bin", SHA256, COMMIT_A, "hubwarden")
    await repository.set_pin(record.pk, "m.bin", "7" * 64, COMMIT_B, "admin")
    pin = await repository.get_pin(record.pk, "m.bin")
    assert pin is not None
    assert (pin.etag, pin.commit) == ("7" * 64, COMMIT_B)


async def test_repository_active_block_none_until_a_block_is_added(
    repository: Repository, record: RepoRecord
) -> None:
    assert await repository.active_block(record.pk) is None
    await repository.add_block(record.pk, "tampered", "m.bin differs", "hubwarden")
    block = await repository.active_block(record.pk)
    assert block is not None
    assert (block.reason, block.detail) == ("tampered", "m.bin differs")


async def test_repository_active_block_is_the_oldest_one(
    repository: Repository, record: RepoRecord
) -> None:
    await repository.add_block(record.pk, "tampered", "first", "hubwarden")
    await repository.add_block(record.pk, "admin", "second", "alice")
    block = await repository.active_block(record.pk)
    assert block is not None
    assert block.detail == "first"


@SQLITE_ONLY
async def test_repository_block_of_one_repo_does_not_block_another(
    repository: Repository, record: RepoRecord
) -> None:
    other = await repository.upsert_repo(
        RepoRef(RepoType.MODEL, "org/other"), private=False, gated=""
    )
    await repository.add_block(record.pk, "tampered", "x", "hubwarden")
    assert await repository.active_block(other.pk) is None


async def test_repository_audit_records_actor_action_and_details(
    repository: Repository, record: RepoRecord, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    await repository.audit("hubwarden", "repo.blocked", repo_pk=record.pk, details={"reason": "x"})
    async with db_sessions() as session:
        rows = list((await session.execute(select(AuditEvent))).scalars())
    assert [(r.actor, r.action, r.repo_pk, r.details) for r in rows] == [
        ("hubwarden", "repo.blocked", record.pk, {"reason": "x"})
    ]
