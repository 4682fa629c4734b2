"""Engines and sessions: SQLite in WAL with foreign keys and serialised writers, the configured
URL chosen from settings, sessions that keep values after commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.config import load_settings
from proxy.store import db
from proxy.store.models import Blob, BlobState
from tests.dbplugin import sqlite_url


async def _pragma(url: str, name: str) -> object:
    engine = db.create_engine(url)
    try:
        async with engine.connect() as connection:
            return (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
    finally:
        await engine.dispose()


def test_database_url_unset_is_sqlite_file_in_data_dir(tmp_path: Path) -> None:
    settings = load_settings(None, {"HUBWARDEN_DATA_DIR": str(tmp_path)}, {})
    assert db.database_url(settings) == f"sqlite+aiosqlite:///{tmp_path}/hubwarden.db"


def test_database_url_configured_is_used_as_given(tmp_path: Path) -> None:
    env = {"HUBWARDEN_DATABASE_URL": "postgresql://hw@db.example:5432/hubwarden"}
    settings = load_settings(None, env, {})
    assert db.database_url(settings) == "postgresql+asyncpg://hw@db.example:5432/hubwarden"


async def test_create_engine_settings_sqlite_uses_wal(tmp_path: Path) -> None:
    settings = load_settings(None, {"HUBWARDEN_DATA_DIR": str(tmp_path)}, {})
    assert await _pragma(db.database_url(settings), "journal_mode") == "wal"


async def test_create_engine_sqlite_enables_foreign_keys(tmp_path: Path) -> None:
    assert await _pragma(sqlite_url(tmp_path), "foreign_keys") == 1


async def test_create_engine_sqlite_sets_busy_timeout(tmp_path: Path) -> None:
    assert await _pragma(sqlite_url(tmp_path), "busy_timeout") == db.SQLITE_BUSY_TIMEOUT_MS


async def test_create_engine_sqlite_missing_parent_directory_is_created(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "a" / "b")
    await _pragma(url, "journal_mode")
    assert (tmp_path / "a" / "b" / "hubwarden.db").is_file()


async def _read_then_write(
    sessions: async_sessionmaker[AsyncSession], has_read: asyncio.Event | None
) -> None:
    async with sessions() as session:
        token = (await session.execute(select(Blob.lease_token))).scalar_one()
        if has_read is not None:
            has_read.set()
            await asyncio.sleep(0.2)  # room for the other transaction to start meanwhile
        await session.execute(update(Blob).values(lease_token=token + 1))
        await session.commit()


async def _after(event: asyncio.Event, sessions: async_sessionmaker[AsyncSession]) -> None:
    await event.wait()
    await _read_then_write(sessions, None)


async def test_session_overlapping_read_then_write_transactions_both_commit(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    # SQLite's deferred BEGIN makes the second of two overlapping read-then-write transactions
    # fail with "database is locked" whatever the busy timeout; BEGIN IMMEDIATE makes it wait.
    async with db_sessions() as session:
        session.add(Blob(etag="e" * 64, size=1, state=BlobState.FETCHING))
        await session.commit()
    has_read = asyncio.Event()
    await asyncio.gather(_read_then_write(db_sessions, has_read), _after(has_read, db_sessions))
    async with db_sessions() as session:
        assert (await session.execute(select(Blob.lease_token))).scalar_one() in (1, 2)


async def test_session_maker_values_readable_after_commit(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with db_sessions() as session:
        blob = Blob(etag="f" * 64, size=7, state=BlobState.SCANNING)
        session.add(blob)
        await session.commit()
    # expire_on_commit=False: no implicit (and, in asyncio, impossible) reload here.
    assert (blob.id, blob.size, blob.state) == (1, 7, BlobState.SCANNING)


async def test_create_engine_sqlite_transaction_takes_write_lock_at_begin(
    tmp_path: Path,
) -> None:
    engine = db.create_engine(sqlite_url(tmp_path))
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))  # a read only, yet the lock is taken
            other = sqlite3.connect(tmp_path / "hubwarden.db", timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
    finally:
        await engine.dispose()
