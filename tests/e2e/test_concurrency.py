"""Single-flight ingests, serving while ingesting, and restarts in the middle of an ingest."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from safetensors.numpy import save

from tests.e2e.serving import free_port, start_serve
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import RunningProxy

MODEL = "org/big-model"


def safetensors_bytes(megabytes: int) -> bytes:
    rows = megabytes * 1024 * 1024 // (4 * 256)
    tensor = np.arange(rows * 256, dtype=np.float32).reshape(rows, 256)
    return save({"weight": tensor})


async def get_with_retries(session: aiohttp.ClientSession, url: str) -> bytes:
    """GET like the real client: honour 429 + Retry-After (up to 30 tries)."""
    for _ in range(30):
        async with session.get(url) as response:
            if response.status == 429:
                await asyncio.sleep(int(response.headers.get("Retry-After", "1")))
                continue
            assert response.status == 200, await response.text()
            return await response.read()
    raise AssertionError(f"{url} stayed 429")


async def test_200_concurrent_clients_cause_one_upstream_fetch_and_get_identical_bytes(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    data = safetensors_bytes(4)
    repo = fake_hub.create_repo(MODEL, files={"model.safetensors": data})
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/model.safetensors"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        bodies = await asyncio.gather(*(get_with_retries(session, url) for _ in range(200)))
    assert {hashlib.sha256(b).hexdigest() for b in bodies} == {hashlib.sha256(data).hexdigest()}
    assert fake_hub.body_fetches("*/model.safetensors") == 1
    assert fake_hub.bytes_served("*/model.safetensors") == len(data)


async def test_client_during_slow_ingest_keeps_receiving_bytes_and_gets_the_file(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    data = safetensors_bytes(6)
    repo = fake_hub.create_repo(MODEL, files={"model.safetensors": data})
    fake_hub.throttle(1024 * 1024, "*/model.safetensors")
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/model.safetensors"
    timeout = aiohttp.ClientTimeout(sock_read=5)  # stricter than the client's 10 s silence limit
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        assert response.status == 200
        first = await response.content.readexactly(64 * 1024)
        served_when_first_arrived = fake_hub.bytes_served("*/model.safetensors")
        rest = await response.content.read()
    assert served_when_first_arrived < len(data)  # bytes flowed while upstream was still sending
    assert first + rest == data


async def _serve(data_dir: Path, upstream: str, port: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "HUBWARDEN_SCAN_WORKERS": "1"}
    return (await start_serve(data_dir, upstream, env, port=port)).process


@pytest.mark.timeout(180)
async def test_killed_server_mid_ingest_restarts_with_a_consistent_store(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    data = safetensors_bytes(8)
    repo = fake_hub.create_repo(MODEL, files={"model.safetensors": data})
    throttle = fake_hub.throttle(512 * 1024, "*/model.safetensors")
    data_dir, port = tmp_path / "data", free_port()
    server = await _serve(data_dir, fake_hub.url, port)
    url = f"http://127.0.0.1:{port}/{MODEL}/resolve/{repo.head()}/model.safetensors"
    async with aiohttp.ClientSession() as session:
        async with session.head(url) as head:  # starts the ingest in the background
            assert head.status == 200
        for _ in range(100):
            if any((data_dir / "tmp").glob("*.part")):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        server.send_signal(signal.SIGKILL)
        await server.wait()
    assert any((data_dir / "tmp").glob("*.part"))  # it really died mid-ingest
    fake_hub.state.traffic.throttles.remove(throttle)
    server = await _serve(data_dir, fake_hub.url, port)
    try:
        assert list((data_dir / "tmp").iterdir()) == []
        with sqlite3.connect(data_dir / "hubwarden.db") as db:
            states = db.execute("SELECT state FROM blobs").fetchall()
        assert all(state not in ("fetching", "scanning") for (state,) in states)
        async with aiohttp.ClientSession() as session:
            assert await get_with_retries(session, url) == data
    finally:
        server.terminate()
        await server.wait()


def legacy_torch_bytes(megabytes: int) -> bytes:
    """A benign pre-zip `torch.save` file: a sequence of pickles, the kind that acts on load."""
    import io

    import torch

    buffer = io.BytesIO()
    rows = megabytes * 1024 * 1024 // (4 * 256)
    state = {"weight": torch.arange(rows * 256, dtype=torch.float32).reshape(rows, 256)}
    torch.save(state, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


async def test_legacy_pickle_checkpoint_streams_as_far_as_the_walk_cleared_it(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    data = legacy_torch_bytes(6)
    repo = fake_hub.create_repo(MODEL, files={"pytorch_model.bin": data})
    fake_hub.throttle(1024 * 1024, "*/pytorch_model.bin")
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/pytorch_model.bin"
    timeout = aiohttp.ClientTimeout(sock_read=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        body = b""
        served_when_first_arrived = None
        for _ in range(30):
            async with session.get(url) as response:
                if response.status == 429:
                    await asyncio.sleep(int(response.headers["Retry-After"]))
                    continue
                assert response.status == 200
                first = await response.content.readexactly(64 * 1024)
                served_when_first_arrived = fake_hub.bytes_served("*/pytorch_model.bin")
                body = first + await response.content.read()
                break
    assert body == data
    assert served_when_first_arrived is not None
    assert served_when_first_arrived < len(data)
