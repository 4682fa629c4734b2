"""`hubwarden doctor`: stuck rows, orphaned temp files and store/database mismatches, found and
repaired, on a real database (SQLite and PostgreSQL) and a real blob directory."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.config import Settings, load_settings
from proxy.ops.doctor import EXIT_OK, EXIT_PROBLEMS, DataDirMissing, Doctor, Kind, register
from proxy.ops.owners import host_name, this_process
from proxy.repos import RepoRef, RepoType
from proxy.store import db
from proxy.store.blobs import BlobStore
from proxy.store.models import BlobState
from proxy.store.repository import Repository

DATA = b"weights" * 100
SHA = hashlib.sha256(DATA).hexdigest()


def dead_owner() -> str:
    """The owner name of a process that has ended."""
    process = subprocess.Popen(["true"])  # noqa: S607 - a process that ends at once
    process.wait()
    return f"{host_name()}:{process.pid}"


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    store = BlobStore(tmp_path / "data")
    store.prepare()
    return store


@pytest.fixture
def repository(db_sessions: async_sessionmaker[AsyncSession]) -> Repository:
    return Repository(db_sessions)


async def _blob(
    repository: Repository, etag: str, state: BlobState, owner: str | None = None
) -> None:
    repo = await repository.upsert_repo(RepoRef(RepoType.MODEL, "org/m"), private=False, gated="")
    assert await repository.claim_blob(etag, len(DATA), repo.pk, "model.bin", owner=owner)
    if state is not BlobState.FETCHING:
        await repository.set_blob_state(etag, state, sha256=SHA)


async def _examine(repository: Repository, store: BlobStore, *, repair: bool) -> list[Kind]:
    diagnosis = await Doctor(repository, store, repair=repair).examine()
    return [p.kind for p in diagnosis.problems]


async def test_doctor_stuck_row_of_a_dead_owner_is_forgotten_on_repair(
    repository: Repository, store: BlobStore
) -> None:
    await _blob(repository, "a" * 64, BlobState.FETCHING, owner=dead_owner())
    assert await _examine(repository, store, repair=False) == [Kind.STUCK_ROW]
    assert await repository.get_blob("a" * 64) is not None  # reported, not touched
    assert await _examine(repository, store, repair=True) == [Kind.STUCK_ROW]
    assert await repository.get_blob("a" * 64) is None
    assert await _examine(repository, store, repair=False) == []


async def test_doctor_leaves_the_row_of_a_live_owner_alone(
    repository: Repository, store: BlobStore
) -> None:
    await _blob(repository, "b" * 64, BlobState.FETCHING, owner=this_process())
    diagnosis = await Doctor(repository, store, repair=True).examine()
    assert diagnosis.problems == [] and diagnosis.in_flight == 1
    assert await repository.get_blob("b" * 64) is not None


async def test_doctor_deletes_orphaned_temp_files_and_keeps_live_ones(
    repository: Repository, store: BlobStore
) -> None:
    live = store.new_temp()  # named after this (live) process
    orphan = store.tmp_dir / f"{dead_owner().rpartition(':')[2]}-{'0' * 32}.part"
    orphan.write_bytes(b"half")
    assert await _examine(repository, store, repair=True) == [Kind.ORPHANED_TEMP]
    assert live.exists() and not orphan.exists()


async def test_doctor_forgets_a_released_row_whose_file_is_gone(
    repository: Repository, store: BlobStore
) -> None:
    await _blob(repository, "c" * 64, BlobState.RELEASED)
    assert await _examine(repository, store, repair=True) == [Kind.MISSING_FILE]
    assert await repository.get_blob("c" * 64) is None  # fetched and verified again on request


async def test_doctor_deletes_a_stored_file_no_row_expects(
    repository: Repository, store: BlobStore
) -> None:
    stray = store.released_path(SHA)
    stray.parent.mkdir(parents=True)
    stray.write_bytes(DATA)
    assert await _examine(repository, store, repair=False) == [Kind.FILE_WITHOUT_ROW]
    assert stray.exists()
    await _examine(repository, store, repair=True)
    assert not stray.exists()


async def test_doctor_moves_a_held_blob_found_in_blobs_back_to_quarantine(
    repository: Repository, store: BlobStore
) -> None:
    await _blob(repository, "d" * 64, BlobState.QUARANTINED)
    misplaced = store.released_path(SHA)
    misplaced.parent.mkdir(parents=True)
    misplaced.write_bytes(DATA)
    assert await _examine(repository, store, repair=True) == [Kind.MISPLACED_FILE]
    assert store.quarantined_path(SHA).read_bytes() == DATA and not misplaced.exists()
    assert await _examine(repository, store, repair=False) == []


# -- the command, through its register() hook ----------------------------------------------


def _command(settings: Settings, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hubwarden")
    commands = parser.add_subparsers()

    def add_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--data-dir")

    register(commands, lambda args: settings, add_options)
    args = parser.parse_args(argv)
    code: int = args.command(args)
    return code


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    data_dir = tmp_path / "served"
    BlobStore(data_dir).prepare()
    settings = load_settings(None, {}, {"data_dir": str(data_dir)})
    engine = db.create_engine(settings.effective_database_url)
    try:
        await db.upgrade_schema(engine)
        repository = Repository(db.session_maker(engine))
        await _blob(repository, "e" * 64, BlobState.SCANNING, owner=dead_owner())
    finally:
        await engine.dispose()
    return settings


async def test_doctor_command_exits_1_on_problems_and_0_once_repaired(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _in_thread(settings, ["doctor", "--json"]) == EXIT_PROBLEMS
    found = json.loads(capsys.readouterr().out)
    assert [p["kind"] for p in found["problems"]] == ["stuck row"]
    assert await _in_thread(settings, ["doctor", "--repair"]) == EXIT_OK
    assert "1 problems repaired" in capsys.readouterr().out
    assert await _in_thread(settings, ["doctor"]) == EXIT_OK
    assert "no problems found" in capsys.readouterr().out


async def test_doctor_command_refuses_a_missing_data_directory(tmp_path: Path) -> None:
    settings = load_settings(None, {}, {"data_dir": str(tmp_path / "nowhere")})
    with pytest.raises(DataDirMissing, match="does not exist"):
        await _in_thread(settings, ["doctor"])
    assert not (tmp_path / "nowhere").exists()


async def _in_thread(settings: Settings, argv: list[str]) -> int:
    """The command runs its own event loop (asyncio.run), as from the shell."""
    return await asyncio.to_thread(_command, settings, argv)


def test_dead_owner_is_really_dead() -> None:
    pid = int(dead_owner().rpartition(":")[2])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
