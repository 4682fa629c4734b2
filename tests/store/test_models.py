"""The models on both databases: unique constraints, foreign keys and their delete rules,
enum columns, UTC timestamps, JSON columns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.repos import RepoType
from proxy.store.models import (
    AuditEvent,
    Base,
    Blob,
    BlobState,
    Block,
    BlockReason,
    Commit,
    Entry,
    EntryKind,
    FindingRow,
    Pin,
    Ref,
    Repo,
)

Sessions = async_sessionmaker[AsyncSession]
SHA = "a" * 40


async def _add(sessions: Sessions, *rows: Base) -> None:
    async with sessions() as session:
        session.add_all(rows)
        await session.commit()


async def _repo(sessions: Sessions, repo_id: str = "org/model") -> int:
    repo = Repo(repo_type=RepoType.MODEL, repo_id=repo_id, private=False, gated="false")
    await _add(sessions, repo)
    return repo.id


async def _commit(sessions: Sessions) -> int:
    commit = Commit(repo_pk=await _repo(sessions), sha=SHA, info=None)
    await _add(sessions, commit)
    return commit.id


def _blob(etag: str = "b" * 64, state: BlobState | str = BlobState.FETCHING) -> Blob:
    return Blob(etag=etag, size=10, state=state)


def _entry(commit_pk: int) -> Entry:
    return Entry(commit_pk=commit_pk, path="model.bin", kind=EntryKind.FILE, oid=SHA, size=10)


async def _same_repo(sessions: Sessions) -> list[Base]:
    await _repo(sessions)
    return [Repo(repo_type="model", repo_id="org/model", private=True, gated="auto")]


async def _same_ref(sessions: Sessions) -> list[Base]:
    pk = await _repo(sessions)
    return [Ref(repo_pk=pk, name="main", commit=SHA), Ref(repo_pk=pk, name="main", commit="b" * 40)]


async def _same_commit(sessions: Sessions) -> list[Base]:
    pk = await _repo(sessions)
    return [Commit(repo_pk=pk, sha=SHA), Commit(repo_pk=pk, sha=SHA)]


async def _same_entry(sessions: Sessions) -> list[Base]:
    pk = await _commit(sessions)
    return [_entry(pk), _entry(pk)]


async def _same_blob(sessions: Sessions) -> list[Base]:
    return [_blob(), _blob(state=BlobState.SCANNING)]


async def _same_pin(sessions: Sessions) -> list[Base]:
    pk = await _repo(sessions)
    return [Pin(repo_pk=pk, path="a.bin", etag=e * 64, commit=SHA, pinned_by="x") for e in "cd"]


@pytest.mark.parametrize(
    "duplicates",
    [_same_repo, _same_ref, _same_commit, _same_entry, _same_blob, _same_pin],
    ids=["repo", "ref", "commit", "entry", "blob-etag", "pin"],
)
async def test_models_duplicate_natural_key_is_refused(
    db_sessions: Sessions, duplicates: Callable[[Sessions], Awaitable[list[Base]]]
) -> None:
    rows = await duplicates(db_sessions)
    with pytest.raises(IntegrityError):
        await _add(db_sessions, *rows)


async def test_models_same_path_in_two_commits_is_allowed(db_sessions: Sessions) -> None:
    repo_pk = await _repo(db_sessions)
    commits = [Commit(repo_pk=repo_pk, sha=s * 40) for s in "ab"]
    await _add(db_sessions, *commits)
    await _add(db_sessions, *(_entry(c.id) for c in commits))
    async with db_sessions() as session:
        assert len((await session.execute(select(Entry))).scalars().all()) == 2


async def test_models_reference_to_missing_repo_is_refused(db_sessions: Sessions) -> None:
    with pytest.raises(IntegrityError):
        await _add(db_sessions, Ref(repo_pk=999, name="main", commit=SHA))


async def test_models_findings_are_deleted_with_their_blob(db_sessions: Sessions) -> None:
    blob = _blob()
    await _add(db_sessions, blob)
    finding = FindingRow(
        blob_pk=blob.id,
        scanner="pickle",
        code="os.system",
        severity="critical",
        outcome="reject",
        message="imports os.system",
        details={"at": [1, 2], "ok": False},
    )
    await _add(db_sessions, finding)
    async with db_sessions() as session:
        await session.execute(delete(Blob).where(Blob.id == blob.id))
        await session.commit()
        assert (await session.execute(select(FindingRow))).scalars().all() == []


async def test_models_audit_event_outlives_its_repo_and_blob(db_sessions: Sessions) -> None:
    repo_pk = await _repo(db_sessions)
    blob = _blob()
    await _add(db_sessions, blob)
    await _add(
        db_sessions,
        AuditEvent(
            actor="admin", action="block", repo_pk=repo_pk, blob_pk=blob.id, details={"why": "test"}
        ),
    )
    async with db_sessions() as session:
        await session.execute(delete(Blob))
        await session.execute(delete(Repo))
        await session.commit()
        event = (await session.execute(select(AuditEvent))).scalar_one()
    assert (event.repo_pk, event.blob_pk, event.details) == (None, None, {"why": "test"})


async def test_models_json_column_round_trips_nested_values(db_sessions: Sessions) -> None:
    info = {"sha": SHA, "siblings": [{"rfilename": "a", "size": 1}], "private": False}
    repo_pk = await _repo(db_sessions)
    await _add(db_sessions, Commit(repo_pk=repo_pk, sha=SHA, info=info))
    async with db_sessions() as session:
        assert (await session.execute(select(Commit.info))).scalar_one() == info


async def test_models_state_is_read_back_as_enum(db_sessions: Sessions) -> None:
    await _add(db_sessions, _blob(state="quarantined"))
    async with db_sessions() as session:
        state = (await session.execute(select(Blob.state))).scalar_one()
    assert state is BlobState.QUARANTINED


@pytest.mark.parametrize("column", ["blob-state", "block-reason", "entry-kind"])
async def test_models_unknown_enum_value_is_refused(db_sessions: Sessions, column: str) -> None:
    if column == "blob-state":
        row: Base = _blob(state="served")
    elif column == "block-reason":
        row = Block(repo_pk=await _repo(db_sessions), reason="because", created_by="x")
    else:
        row = Entry(commit_pk=await _commit(db_sessions), path="p", kind="link", oid=SHA, size=0)
    with pytest.raises(StatementError, match="is not a valid"):
        await _add(db_sessions, row)


async def test_models_timestamps_read_back_timezone_aware_utc(db_sessions: Sessions) -> None:
    lifted = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    block = Block(
        repo_pk=await _repo(db_sessions),
        reason=BlockReason.ADMIN,
        created_by="x",
        lifted_at=lifted,
        lifted_by="y",
    )
    await _add(db_sessions, block)
    async with db_sessions() as session:
        row = (await session.execute(select(Block))).scalar_one()
    assert row.lifted_at == lifted
    assert row.lifted_at is not None and row.lifted_at.utcoffset() == dt.timedelta(0)
    assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == dt.timedelta(0)


async def test_models_naive_timestamp_is_refused(db_sessions: Sessions) -> None:
    block = Block(
        repo_pk=await _repo(db_sessions),
        reason=BlockReason.ADMIN,
        created_by="x",
        lifted_at=dt.datetime(2030, 1, 1),
    )
    with pytest.raises(StatementError, match="naive datetime"):
        await _add(db_sessions, block)


async def test_models_defaults_fill_new_blob(db_sessions: Sessions) -> None:
    blob = _blob()
    await _add(db_sessions, blob)
    assert (blob.reason, blob.file_format, blob.outcome, blob.lease_token) == ("", "", "", 0)
    assert blob.created_at.tzinfo is not None
