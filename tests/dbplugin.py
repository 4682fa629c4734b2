"""Database fixtures, as a pytest plugin (`pytest_plugins = ["tests.dbplugin"]` in the root
conftest).

- `db_url`: parametrised over `sqlite` (a file in tmp_path) and `postgresql` (a fresh database per
  test on the server HUBWARDEN_TEST_POSTGRES_URL names, by default the project's
  127.0.0.1:5432 with trust auth, dropped at teardown; a server that cannot be reached fails the
  case with a message naming the variable: a skipped case would prove nothing).
- `db_engine`: an engine on `db_url` whose schema was built by the migrations (never create_all).
- `db_sessions`: a session maker on `db_engine`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from proxy.store import db

POSTGRES_URL_VARIABLE = "HUBWARDEN_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DATABASE_KINDS = ("sqlite", "postgresql")

T = TypeVar("T")


def run_isolated(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion in a thread of its own, so that sync fixtures can do async
    work whether or not the test's own event loop exists yet."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(_await(make))).result()


async def _await(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def postgres_server_url() -> str:
    """The test server's URL (on the asyncpg driver): HUBWARDEN_TEST_POSTGRES_URL, else the
    server every machine of this project runs."""
    url = os.environ.get(POSTGRES_URL_VARIABLE) or DEFAULT_POSTGRES_URL
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


async def _admin(server_url: str, statement: str) -> None:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped (connections and all) afterwards."""
    server_url = postgres_server_url()
    name = f"hw_{secrets.token_hex(8)}"
    try:
        run_isolated(lambda: _admin(server_url, f'CREATE DATABASE "{name}"'))
    except (OSError, DBAPIError) as exc:
        shown = make_url(server_url).render_as_string(hide_password=True)
        pytest.fail(
            f"no PostgreSQL server to test on at {shown} ({type(exc).__name__}: {exc}); "
            f"run one there or point {POSTGRES_URL_VARIABLE} at a server where the tests may "
            "CREATE DATABASE"
        )
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        run_isolated(lambda: _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'hubwarden.db'}"


@pytest.fixture(params=DATABASE_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database of each kind."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


@pytest.fixture
async def db_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on `db_url`, with the schema built by the migrations."""
    engine = db.create_engine(db_url)
    try:
        await db.upgrade_schema(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def db_sessions(db_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db.session_maker(db_engine)
