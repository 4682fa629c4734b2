"""The schema comes only from the Alembic migrations: they reach head, match the models exactly,
run once however many replicas start together, and cannot be skipped when so configured."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations
from proxy.store import db
from proxy.store.models import Base
from tests.dbplugin import sqlite_url


def _schema_differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _differences(engine: AsyncEngine) -> list[object]:
    async with engine.connect() as connection:
        return await connection.run_sync(_schema_differences)


async def test_upgrade_schema_empty_database_reaches_head(db_url: str) -> None:
    engine = db.create_engine(db_url)
    try:
        await db.upgrade_schema(engine)
        assert await db.current_revision(engine) == db.head_revision()
    finally:
        await engine.dispose()


async def test_upgrade_schema_result_matches_models_exactly(db_engine: AsyncEngine) -> None:
    assert await _differences(db_engine) == []


async def test_upgrade_schema_run_twice_changes_nothing(db_engine: AsyncEngine) -> None:
    await db.upgrade_schema(db_engine)
    assert await _differences(db_engine) == []
    assert await db.current_revision(db_engine) == db.head_revision()


async def test_downgrade_schema_to_base_then_upgrade_restores_schema(
    db_engine: AsyncEngine,
) -> None:
    await db.downgrade_schema(db_engine, "base")
    async with db_engine.connect() as connection:
        assert await connection.run_sync(_table_names) == {"alembic_version"}
    await db.upgrade_schema(db_engine)
    assert await _differences(db_engine) == []


async def test_upgrade_schema_concurrent_starts_both_succeed(db_url: str) -> None:
    # Two replicas starting together on one fresh database: on PostgreSQL the advisory lock makes
    # the second wait and then find the schema at head (without it, one fails on CREATE TABLE).
    engines = [db.create_engine(db_url) for _ in range(2)]
    try:
        await asyncio.gather(*(db.upgrade_schema(engine) for engine in engines))
        assert await _differences(engines[0]) == []
        assert await db.current_revision(engines[1]) == db.head_revision()
    finally:
        for engine in engines:
            await engine.dispose()


async def test_schema_is_current_empty_database_is_false(db_url: str) -> None:
    engine = db.create_engine(db_url)
    try:
        assert await db.schema_is_current(engine) is False
    finally:
        await engine.dispose()


async def test_schema_is_current_migrated_database_is_true(db_engine: AsyncEngine) -> None:
    assert await db.schema_is_current(db_engine) is True


async def test_prepare_schema_outdated_without_upgrade_raises_schema_outdated(
    db_url: str,
) -> None:
    engine = db.create_engine(db_url)
    try:
        with pytest.raises(db.SchemaOutdated, match=r"run `hubwarden db upgrade`") as caught:
            await db.prepare_schema(engine, upgrade=False)
        assert (caught.value.current, caught.value.head) == (None, db.head_revision())
        async with engine.connect() as connection:
            assert await connection.run_sync(_table_names) == set()
    finally:
        await engine.dispose()


async def test_prepare_schema_current_without_upgrade_passes(db_engine: AsyncEngine) -> None:
    await db.prepare_schema(db_engine, upgrade=False)
    assert await db.current_revision(db_engine) == db.head_revision()


async def test_prepare_schema_with_upgrade_migrates(db_url: str) -> None:
    engine = db.create_engine(db_url)
    try:
        await db.prepare_schema(engine, upgrade=True)
        assert await db.schema_is_current(engine) is True
    finally:
        await engine.dispose()


def test_alembic_config_scripts_are_the_installed_migrations_package() -> None:
    location = db.alembic_config().get_main_option("script_location")
    assert location is not None
    assert Path(location) == Path(migrations.__file__).parent
    assert (Path(location) / "versions" / "0001_initial.py").is_file()


def test_schema_outdated_message_names_revisions_and_command() -> None:
    error = db.SchemaOutdated("0001", "0002")
    assert error.message == (
        "the database schema is at revision 0001, this Hubwarden needs 0002; run "
        "`hubwarden db upgrade` (with the same configuration), then start again"
    )


async def test_upgrade_schema_unreachable_server_raises_database_unavailable() -> None:
    engine = db.create_engine("postgresql+asyncpg://hw:pw-sekrit@127.0.0.1:1/hubwarden")
    try:
        shown_url = r"postgresql\+asyncpg://hw:\*\*\*@127\.0\.0\.1:1/hubwarden"
        with pytest.raises(
            db.DatabaseUnavailable, match=rf"^database {shown_url} is unavailable \("
        ) as caught:
            await db.upgrade_schema(engine)
        assert "sekrit" not in caught.value.message
    finally:
        await engine.dispose()


async def test_upgrade_schema_sqlite_file_unopenable_raises_database_unavailable(
    tmp_path: Path,
) -> None:
    (tmp_path / "hubwarden.db").mkdir()  # a directory where the database file should be
    engine = db.create_engine(sqlite_url(tmp_path))
    try:
        with pytest.raises(db.DatabaseUnavailable, match=r"is unavailable \(unable to open"):
            await db.upgrade_schema(engine)
    finally:
        await engine.dispose()
        await _aiosqlite_threads_finished()


async def _aiosqlite_threads_finished() -> None:
    # aiosqlite (0.22) does not await its worker thread's stop after a failed connect: the thread
    # answers later, and fails if the test's loop is closed by then. Let it answer now.
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, 10)


async def test_upgrade_schema_migration_lock_held_too_long_raises_database_unavailable(
    fresh_postgres_url: str,
) -> None:
    holder = db.create_engine(fresh_postgres_url)
    engine = db.create_engine(fresh_postgres_url)
    try:
        async with holder.connect() as connection:
            await connection.execute(
                text("SELECT pg_advisory_lock(:key)"), {"key": db.MIGRATION_LOCK_KEY}
            )
            with pytest.raises(db.DatabaseUnavailable, match="held the migration lock for more"):
                await db.upgrade_schema(engine, lock_timeout_s=0.2)
        assert await db.current_revision(engine) is None
    finally:
        await engine.dispose()
        await holder.dispose()
