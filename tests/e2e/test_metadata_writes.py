"""Metadata lookups write the database only when something changed (issue 9 item 6).

Counted with a SQLAlchemy listener on every engine of the process: statements that write
(INSERT, UPDATE, DELETE) and transactions opened for writing (SQLite's `BEGIN IMMEDIATE`, which
takes the one write lock every replica and worker queues for).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

MODEL = "org/tiny-model"
WRITES = ("INSERT", "UPDATE", "DELETE", "BEGIN IMMEDIATE")


@dataclass
class WriteCounter:
    """The writing statements the database was sent since `reset`."""

    statements: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.statements.clear()

    def after_cursor_execute(
        self, conn: Connection, cursor: Any, statement: str, *args: object
    ) -> None:
        if statement.lstrip().upper().startswith(WRITES):
            self.statements.append(statement.strip().split("\n")[0][:120])


@pytest.fixture
def writes() -> Iterator[WriteCounter]:
    counter = WriteCounter()
    event.listen(Engine, "after_cursor_execute", counter.after_cursor_execute)
    try:
        yield counter
    finally:
        event.remove(Engine, "after_cursor_execute", counter.after_cursor_execute)


@pytest.fixture
async def cached_proxy(fake_hub: FakeHub, tmp_path: Path) -> Any:
    """Hubwarden with its default metadata TTL (the cached case the issue measures)."""
    settings = proxy_settings(fake_hub, tmp_path / "data", **{"fetch.metadata_ttl_s": 30.0})
    running, runner = await start_proxy(settings, tmp_path / "client-cache")
    try:
        yield running
    finally:
        await runner.cleanup()


async def _get_revision(proxy: RunningProxy, revision: str = "main") -> str:
    url = f"{proxy.url}/api/models/{MODEL}/revision/{revision}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        body = await response.json()
    return str(body["sha"])


async def test_revision_lookup_repeated_writes_nothing(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes], writes: WriteCounter
) -> None:
    """Upstream asked again each time (TTL 0), same answer: the rows already say it."""
    repo = make_tiny_model(fake_hub, tiny_model_files)
    assert await _get_revision(proxy) == repo.head()
    assert writes.statements  # the first lookup records the repo, its commit and the branch
    writes.reset()
    assert await _get_revision(proxy) == repo.head()
    assert writes.statements == []


async def test_revision_lookup_cached_writes_nothing(
    cached_proxy: RunningProxy,
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    writes: WriteCounter,
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await _get_revision(cached_proxy)
    writes.reset()
    for _ in range(3):
        assert await _get_revision(cached_proxy) == repo.head()
    assert writes.statements == []


async def test_revision_lookup_after_a_new_commit_records_only_the_move(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes], writes: WriteCounter
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await _get_revision(proxy)
    new_head = repo.commit({"README.md": b"# changed\n"}, message="docs")
    writes.reset()
    assert await _get_revision(proxy) == new_head
    assert writes.statements  # the branch moved: that is recorded
    writes.reset()
    assert await _get_revision(proxy) == new_head
    assert writes.statements == []
