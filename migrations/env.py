"""Alembic environment (from the async template).

Hubwarden itself runs the migrations on a connection it opened (`proxy.store.db.upgrade_schema`,
passed in `config.attributes["connection"]`, already inside a transaction and, on PostgreSQL,
under the advisory lock). A developer running `alembic` by hand gets an engine for the database
the Hubwarden settings name (HUBWARDEN_CONFIG file, HUBWARDEN_* variables).
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from pathlib import Path
from typing import Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import TypeDecorator, pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from proxy.config import CONFIG_FILE_VARIABLE, load_settings
from proxy.store.models import Base

config = context.config
target_metadata = Base.metadata


def render_item(kind: str, item: object, autogen_context: AutogenContext) -> str | Literal[False]:
    """Autogenerate writes the models' TypeDecorators as their plain SQLAlchemy types, so that
    revisions never import the models."""
    if kind == "type" and isinstance(item, TypeDecorator):
        return f"sa.{item.impl_instance!r}"
    return False


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: tables are recreated
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url_from_settings() -> str:
    config_file = os.environ.get(CONFIG_FILE_VARIABLE)
    path = Path(config_file) if config_file else None
    return load_settings(path, os.environ, {}).effective_database_url


async def run_async_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url") or _url_from_settings()
    database = make_url(url).database
    if make_url(url).get_backend_name() == "sqlite" and database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or _url_from_settings()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    if context.is_offline_mode():
        run_migrations_offline()
    else:
        asyncio.run(run_async_migrations())


run_migrations()
