"""Hubwarden offline, and on PostgreSQL instead of SQLite."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub as hf
import pytest
from huggingface_hub.errors import HfHubHTTPError

from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model
from tests.proxyplugin import proxy_settings, start_proxy

MODEL = "org/tiny-model"


async def test_offline_mirror_serves_what_it_fetched_online_without_upstream(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    data_dir = tmp_path / "data"
    online, runner = await start_proxy(proxy_settings(fake_hub, data_dir), tmp_path / "c1")
    try:
        await online.call(
            hf.snapshot_download,
            MODEL,
            endpoint=online.url,
            cache_dir=online.cache_dir,
            token=False,
        )
    finally:
        await runner.cleanup()
    fake_hub.reset_requests()
    offline, runner = await start_proxy(
        proxy_settings(fake_hub, data_dir, offline=True), tmp_path / "c2"
    )
    try:
        path = await offline.download(MODEL, "model.safetensors")
        assert Path(path).read_bytes() == tiny_model_files["model.safetensors"]
        info = await offline.call(hf.HfApi(endpoint=offline.url, token=False).model_info, MODEL)
        assert info.sha == repo.head()
        with pytest.raises(HfHubHTTPError):
            await offline.call(hf.HfApi(endpoint=offline.url, token=False).model_info, "org/x")
    finally:
        await runner.cleanup()
    assert fake_hub.requests == []


async def test_mirror_on_postgresql_downloads_and_records_the_blob(
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    tmp_path: Path,
    fresh_postgres_url: str,
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    settings = proxy_settings(fake_hub, tmp_path / "data", database_url=fresh_postgres_url)
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        for _ in range(2):
            path = await running.download(MODEL, "model.safetensors", force_download=True)
            assert Path(path).read_bytes() == tiny_model_files["model.safetensors"]
    finally:
        await runner.cleanup()
    assert fake_hub.body_fetches("*/model.safetensors") == 1
