"""Engines, sessions and the schema's version: the one place that knows SQLite from PostgreSQL.

SQLite (the default, one process): WAL so readers never wait for the writer, foreign keys on, a
busy timeout, and every transaction opened with BEGIN IMMEDIATE. The last one matters: with
SQLite's default deferred BEGIN, two transactions that read and then write fail with "database
is locked" (SQLITE_BUSY_SNAPSHOT) whatever the busy timeout; taking the write lock at BEGIN makes
the loser wait instead. Keep transactions short. PostgreSQL (several replicas): pre-ping, and
migrations under a transaction-scoped advisory lock so replicas starting together do not race.

The schema is only ever built by the Alembic migrations in the `migrations` package.
"""

from __future__ import annotations

import errno
import logging
import socket
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import alembic.command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

import migrations
from proxy.config import Settings
from proxy.errors import HubwardenError, shown

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# One fixed key for "the schema is being migrated", shared by every replica.
MIGRATION_LOCK_KEY = zlib.crc32(b"hubwarden:migrations")
MIGRATION_LOCK_TIMEOUT_S = 600.0
POSTGRES_CONNECT_TIMEOUT_S = 10


class SchemaOutdated(HubwardenError):
    """The database schema is not at the revision this Hubwarden needs, and upgrading on start is
    off (`upgrade_on_start = false`). `current` and `head` are the revisions, when known."""

    def __init__(self, current: str | None = None, head: str | None = None) -> None:
        self.current = current
        self.head = head
        if head is None:
            found = "is not at the revision this Hubwarden needs"
        else:
            found = f"is at revision {current or '(empty)'}, this Hubwarden needs {head}"
        super().__init__(
            f"the database schema {found}; run `hubwarden db upgrade` (with the same "
            "configuration), then start again"
        )


class DatabaseUnavailable(HubwardenError):
    """The database cannot be reached (server down, wrong URL, unwritable file), or the
    migration lock was not granted in time. `url` has its password hidden; `advice` says what
    to check (by default database_url and the server)."""

    def __init__(self, url: str, reason: str, *, advice: str = "") -> None:
        self.url = url
        self.reason = reason
        advice = advice or "check database_url and that the database server is running"
        super().__init__(f"database {url} is unavailable ({shown(reason)}); {advice}")


READ_ONLY_OPTION = "hubwarden_read_only"


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL of the configured database (the SQLite file under data_dir by default)."""
    return settings.effective_database_url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str) -> AsyncEngine:
    """An async engine for a SQLite or PostgreSQL URL, with the settings described above.

    For a SQLite file, its parent directory is created.
    """
    if is_sqlite(url):
        return _sqlite_engine(url)
    return create_async_engine(
        url, pool_pre_ping=True, connect_args={"timeout": POSTGRES_CONNECT_TIMEOUT_S}
    )


def _sqlite_engine(url: str) -> AsyncEngine:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    # The driver must not open transactions itself: `_on_sqlite_begin` does, as IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable in WAL mode except on power loss
    cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    # Read-only sessions (see `read_session_maker`) begin DEFERRED: in WAL mode readers then run
    # side by side instead of queueing for the write lock.
    if connection.get_execution_options().get(READ_ONLY_OPTION):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_maker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit (no implicit I/O on attribute access)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def read_session_maker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reads only: on SQLite they do not take the write lock at BEGIN, so they must
    never write (a write there could fail with "database is locked" under contention)."""
    return async_sessionmaker(
        engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False
    )


# -- migrations ---------------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: the scripts are the installed `migrations`
    package, and `connection` (when given) is the one the migrations run on."""
    config = Config()
    script_location = Path(migrations.__file__).parent
    config.set_main_option("script_location", str(script_location).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision the code's models correspond to."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the migrations package has no revision")
    return head


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at; None for an empty database.

    Raises DatabaseUnavailable.
    """
    async with _connection(engine) as connection:
        return await connection.run_sync(_current_revision)


async def schema_is_current(engine: AsyncEngine) -> bool:
    return await current_revision(engine) == head_revision()


async def upgrade_schema(
    engine: AsyncEngine, *, lock_timeout_s: float = MIGRATION_LOCK_TIMEOUT_S
) -> None:
    """Run the migrations up to head, in one transaction (under an advisory lock on PostgreSQL,
    so that replicas starting together migrate once and the others wait).

    Raises DatabaseUnavailable (also when the lock is not granted within `lock_timeout_s`).
    """
    async with _connection(engine) as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            await _set_sqlite_foreign_keys(connection, on=False)
        try:
            async with connection.begin():
                if not sqlite:
                    await _take_migration_lock(connection, lock_timeout_s)
                await connection.run_sync(_upgrade_to_head)
                if sqlite:
                    await _check_sqlite_foreign_keys(connection)
        finally:
            if sqlite:
                await _set_sqlite_foreign_keys(connection, on=True)


async def downgrade_schema(engine: AsyncEngine, revision: str) -> None:
    """Run the migrations down to `revision` ("base" empties the database); for tests and
    emergencies only."""
    async with engine.connect() as connection, connection.begin():
        await connection.run_sync(
            lambda sync: alembic.command.downgrade(alembic_config(sync), revision)
        )


def _upgrade_to_head(connection: Connection) -> None:
    before = _current_revision(connection)
    alembic.command.upgrade(alembic_config(connection), "head")
    after = _current_revision(connection)
    if before != after:
        logger.info("database schema upgraded from %s to %s", before or "(empty)", after)


async def _take_migration_lock(connection: AsyncConnection, timeout_s: float) -> None:
    timeout_ms = max(1, round(timeout_s * 1000))
    await connection.execute(text(f"SET LOCAL lock_timeout = {timeout_ms}"))
    try:
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
        )
    except DBAPIError as exc:
        raise DatabaseUnavailable(
            _shown_url(connection.engine),
            f"another Hubwarden held the migration lock for more than {timeout_s:g} s",
        ) from exc


@asynccontextmanager
async def _connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection, or DatabaseUnavailable saying why there is none."""
    try:
        connection = await engine.connect()
    except (OSError, DBAPIError) as exc:
        detail = getattr(exc, "orig", None) or exc  # the driver's own words, without SQL
        reason, advice = _unreachable(engine.url, detail)
        raise DatabaseUnavailable(_shown_url(engine), reason, advice=advice) from exc
    try:
        yield connection
    finally:
        await connection.close()


def _unreachable(url: URL, detail: BaseException) -> tuple[str, str]:
    """Why a connection failed, and what to check, in the operator's words."""
    if url.get_backend_name() == "sqlite":
        reason = (str(detail).splitlines() or [type(detail).__name__])[0]
        return reason, (
            f"check that the user running hubwarden may read and write {shown(url.database)} "
            "and its directory (or database_url, if set)"
        )
    host = url.host or "localhost"
    where = f"{host}:{url.port or 5432}"
    advice = (
        f"check database_url (host {shown(host)}) and that the database server there is "
        "running and accepts connections from this machine"
    )
    if isinstance(detail, socket.gaierror):
        return f'host "{shown(host)}" cannot be resolved: {detail.strerror}', advice
    if isinstance(detail, OSError) and detail.errno == errno.ECONNREFUSED:
        return f"connection refused by {shown(where)}", advice
    if isinstance(detail, TimeoutError):
        return f"no answer from {shown(where)} within {POSTGRES_CONNECT_TIMEOUT_S} s", advice
    return (str(detail).splitlines() or [type(detail).__name__])[0], advice


def _shown_url(engine: AsyncEngine) -> str:
    return engine.url.render_as_string(hide_password=True)


async def _set_sqlite_foreign_keys(connection: AsyncConnection, *, on: bool) -> None:
    # Batch migrations recreate tables (copy, drop, rename); with foreign keys on, dropping a
    # parent table would cascade-delete its children. The pragma is ignored inside a
    # transaction, so it is sent on the raw connection, outside one.
    pragma = f"PRAGMA foreign_keys={'ON' if on else 'OFF'}"
    await connection.run_sync(lambda sync: _raw_execute(sync, pragma))


def _raw_execute(connection: Connection, statement: str) -> Any:
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
        return cursor.fetchall()
    finally:
        cursor.close()


async def _check_sqlite_foreign_keys(connection: AsyncConnection) -> None:
    result = await connection.exec_driver_sql("PRAGMA foreign_key_check")
    broken = result.fetchall()
    if broken:
        raise RuntimeError(f"a migration left rows with broken foreign keys: {broken[:5]}")


async def prepare_schema(engine: AsyncEngine, *, upgrade: bool) -> None:
    """At start-up: upgrade the schema, or (with `upgrade` false) check that it is current.

    Raises SchemaOutdated when the schema is behind and may not be upgraded here.
    """
    if upgrade:
        await upgrade_schema(engine)
        return
    current = await current_revision(engine)
    head = head_revision()
    if current != head:
        raise SchemaOutdated(current, head)
