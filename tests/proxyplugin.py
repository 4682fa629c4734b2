"""A real Hubwarden on loopback, built by `create_app`, in front of the fake Hub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from huggingface_hub import hf_hub_download

from proxy.app import create_app
from proxy.config import Settings, load_settings
from tests.fakehub.hub import FakeHub

T = TypeVar("T")


@dataclass
class RunningProxy:
    """A started Hubwarden: its URL, settings and a client cache directory for the real client."""

    url: str
    settings: Settings
    app: web.Application
    cache_dir: Path

    async def call(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a synchronous huggingface_hub call off the loop the servers run on."""
        return await asyncio.to_thread(func, *args, **kwargs)

    async def download(
        self, repo_id: str, filename: str, *, token: str | bool = False, **kwargs: Any
    ) -> Path:
        """`hf_hub_download` through this proxy into its client cache (overridable)."""
        kwargs.setdefault("cache_dir", self.cache_dir)
        path = await self.call(
            hf_hub_download, repo_id, filename, endpoint=self.url, token=token, **kwargs
        )
        return Path(path)


def proxy_settings(hub: FakeHub, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "upstream": hub.url,
        "data_dir": str(data_dir),
        "tree_page_size": 4,  # so that every listing of more than 4 entries is paginated
        "fetch.retries": 1,
        "fetch.metadata_ttl_s": 0,  # tests push commits and expect the next call to see them
        "ingest.first_byte_wait_s": 2.0,
        "ingest.retry_after_s": 1,
        "scan.workers": 2,
    }
    values.update(overrides)
    return load_settings(None, {}, values)


async def start_proxy(settings: Settings, cache_dir: Path) -> tuple[RunningProxy, web.AppRunner]:
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets  # type: ignore[attr-defined]
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return RunningProxy(f"http://127.0.0.1:{port}", settings, app, cache_dir), runner


@pytest.fixture
async def proxy(fake_hub: FakeHub, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    """Hubwarden (SQLite in tmp_path) in front of `fake_hub`."""
    running, runner = await start_proxy(
        proxy_settings(fake_hub, tmp_path / "data"), tmp_path / "client-cache"
    )
    try:
        yield running
    finally:
        await runner.cleanup()
