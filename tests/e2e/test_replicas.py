"""Several `hubwarden serve` processes on one PostgreSQL database and one blob store (a shared
data directory, or one S3 bucket with a data directory each) behave as one mirror: one upstream
fetch per file across them, a replica killed mid-ingest is taken over by another, a block placed
through one is honoured by the other within the warm caches' second, and `serve --workers 2`
serves on one port.

Needs PostgreSQL (HUBWARDEN_TEST_POSTGRES_URL, set by .ci/run; see tests/dbplugin.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from huggingface_hub import hf_hub_download
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from proxy.config import StoreSettings
from proxy.store.s3 import s3_client
from tests.e2e.serving import Served as Replica
from tests.e2e.serving import start_serve as _start
from tests.e2e.serving import stop_serve as _stop
from tests.e2e.test_concurrency import get_with_retries, safetensors_bytes
from tests.fakehub.hub import FakeHub
from tests.ops.scrape import scrape
from tests.s3plugin import TEST_KEY_ID, TEST_SECRET, new_bucket

MODEL = "org/replicated"
FILE = "model.safetensors"


def _env(database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "HUBWARDEN_DATABASE_URL": database_url,
        "HUBWARDEN_SCAN_WORKERS": "1",
        "HUBWARDEN_INGEST_RETRY_AFTER_S": "1",
        "HUBWARDEN_INGEST_LEASE_S": "3",
        **(extra or {}),
    }


@dataclass
class Store:
    """Where the replicas keep blobs: a shared data directory, or one bucket (`bucket` set)."""

    env: dict[str, str]
    bucket: StoreSettings | None

    def data_dir(self, tmp_path: Path, replica: int) -> Path:
        return tmp_path / ("data" if self.bucket is None else f"data-{replica}")


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "local":
        return Store({}, None)
    bucket = await new_bucket(request.getfixturevalue("s3_endpoint"))
    env = {
        "HUBWARDEN_STORE_KIND": "s3",
        "HUBWARDEN_STORE_BUCKET": str(bucket.bucket),
        "HUBWARDEN_STORE_ENDPOINT_URL": str(bucket.endpoint_url),
        "HUBWARDEN_STORE_REGION": str(bucket.region),
        "HUBWARDEN_STORE_ACCESS_KEY_ID": TEST_KEY_ID,
        "HUBWARDEN_STORE_SECRET_ACCESS_KEY": TEST_SECRET,
    }
    return Store(env, bucket)


async def _bucket_state(bucket: StoreSettings) -> tuple[list[str], int]:
    """The bucket's keys, and how many multipart uploads are unfinished."""
    async with s3_client(bucket) as client:
        listed = await client.list_objects_v2(Bucket=str(bucket.bucket))
        uploads = await client.list_multipart_uploads(Bucket=str(bucket.bucket))
    keys = sorted(item["Key"] for item in listed.get("Contents", []))
    return keys, len(uploads.get("Uploads", []))


@pytest.fixture
async def replicas(
    fake_hub: FakeHub, tmp_path: Path, fresh_postgres_url: str, store: Store
) -> AsyncIterator[tuple[Replica, Replica]]:
    env = _env(fresh_postgres_url, store.env)
    first = await _start(store.data_dir(tmp_path, 1), fake_hub.url, env)
    second = await _start(store.data_dir(tmp_path, 2), fake_hub.url, env)
    try:
        yield first, second
    finally:
        await asyncio.gather(_stop(first), _stop(second))


async def _rows(database_url: str, query: str) -> list[tuple[object, ...]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return [tuple(row) for row in await connection.execute(text(query))]
    finally:
        await engine.dispose()


@pytest.mark.timeout(240)
async def test_replicas_100_clients_on_a_cold_file_cause_one_upstream_fetch(
    replicas: tuple[Replica, Replica], fake_hub: FakeHub, tmp_path: Path
) -> None:
    data = safetensors_bytes(6)
    repo = fake_hub.create_repo(MODEL, files={FILE: data})
    fake_hub.throttle(4 * 1024 * 1024, f"*/{FILE}")  # long enough for both replicas to ask
    urls = [f"{r.url}/{MODEL}/resolve/{repo.head()}/{FILE}" for r in replicas]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        bodies = await asyncio.gather(*(get_with_retries(session, urls[n % 2]) for n in range(98)))
    # two real clients, one per replica, after the crowd
    paths = await asyncio.gather(
        *(
            asyncio.to_thread(
                hf_hub_download,
                MODEL,
                FILE,
                revision=repo.head(),
                endpoint=r.url,
                cache_dir=tmp_path / f"hf-{n}",
            )
            for n, r in enumerate(replicas)
        )
    )
    bodies += [Path(p).read_bytes() for p in paths]
    assert {hashlib.sha256(b).hexdigest() for b in bodies} == {hashlib.sha256(data).hexdigest()}
    assert fake_hub.body_fetches(f"*/{FILE}") == 1


@pytest.mark.timeout(240)
async def test_replica_killed_mid_ingest_is_taken_over_and_nothing_half_written_is_served(
    fake_hub: FakeHub, tmp_path: Path, fresh_postgres_url: str, store: Store
) -> None:
    data = safetensors_bytes(8)
    repo = fake_hub.create_repo(MODEL, files={FILE: data})
    throttle = fake_hub.throttle(512 * 1024, f"*/{FILE}")
    env = _env(fresh_postgres_url, store.env)
    fetcher = await _start(store.data_dir(tmp_path, 1), fake_hub.url, env)
    other = await _start(store.data_dir(tmp_path, 2), fake_hub.url, env)
    path = f"/{MODEL}/resolve/{repo.head()}/{FILE}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.head(fetcher.url + path) as head:  # starts the ingest there
                assert head.status == 200
            for _ in range(100):
                if fake_hub.bytes_served(f"*/{FILE}") > 1024 * 1024:
                    break
                await asyncio.sleep(0.1)
            fetcher.process.send_signal(signal.SIGKILL)
            await fetcher.process.wait()
            assert fake_hub.bytes_served(f"*/{FILE}") < len(data)  # it died mid-ingest
            (owner, state), *_ = await _rows(
                fresh_postgres_url, "SELECT lease_owner, state FROM blobs"
            )
            assert state == "fetching" and str(owner).endswith(f":{fetcher.process.pid}")
            fake_hub.state.traffic.throttles.remove(throttle)
            # a Range request: complete for its range only once the file is released
            async with session.get(other.url + path, headers={"Range": "bytes=0-99"}) as ranged:
                assert ranged.status in (206, 429)
                if ranged.status == 206:
                    assert await ranged.read() == data[:100]
            assert await get_with_retries(session, other.url + path) == data
        rows = await _rows(fresh_postgres_url, "SELECT state, lease_token FROM blobs")
        assert rows == [("released", 2)]  # taken over once: the fencing token grew
        assert fake_hub.body_fetches(f"*/{FILE}") == 2
        sha256 = hashlib.sha256(data).hexdigest()
        if store.bucket is not None:
            assert await _bucket_state(store.bucket) == ([f"blobs/{sha256}"], 0)
            return
        data_dir = store.data_dir(tmp_path, 1)
        assert [p.name for p in (data_dir / "tmp").iterdir()] == []  # no orphan left
        stored = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
        assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in stored] == [sha256]
    finally:
        await asyncio.gather(_stop(fetcher), _stop(other))


def _admin_token(database_url: str, data_dir: Path) -> str:
    done = subprocess.run(  # noqa: S603 - our own CLI
        [
            sys.executable,
            "-m",
            "proxy",
            "admin",
            "token",
            "create",
            "--name",
            "ops",
            "--role",
            "admin",
            "--data-dir",
            str(data_dir),
        ],
        env=_env(database_url),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    token = done.stdout.strip().splitlines()[-1]
    assert token.startswith("hwa_"), done.stdout
    return token


async def _first_refusal(
    session: aiohttp.ClientSession, url: str, deadline_s: float
) -> float | None:
    """Seconds until `url` answers 403 (None: not within `deadline_s`)."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        async with session.get(url) as response:
            await response.read()
            if response.status == 403:
                return time.monotonic() - start
        await asyncio.sleep(0.02)
    return None


@pytest.mark.timeout(180)
async def test_block_placed_through_one_replica_is_honoured_by_the_other_within_a_second(
    replicas: tuple[Replica, Replica],
    fake_hub: FakeHub,
    tmp_path: Path,
    fresh_postgres_url: str,
    store: Store,
) -> None:
    first, second = replicas
    repo = fake_hub.create_repo(MODEL, files={"config.json": b'{"a": 1}'})
    url = f"{second.url}/{MODEL}/resolve/{repo.head()}/config.json"
    async with aiohttp.ClientSession() as session:
        assert await get_with_retries(session, url) == b'{"a": 1}'  # warm on the second
        data_dir = store.data_dir(tmp_path, 1)
        token = await asyncio.to_thread(_admin_token, fresh_postgres_url, data_dir)
        async with session.post(
            f"{first.url}/admin/api/repos/models/{MODEL}/block",
            json={"comment": "incident 42"},
            headers={"Authorization": f"Bearer {token}"},
        ) as blocked:
            assert blocked.status == 200, await blocked.text()
        waited_s = await _first_refusal(session, url, deadline_s=5.0)
    assert waited_s is not None, "the other replica kept serving a blocked repo"
    assert waited_s < 1.5, f"the block took {waited_s:.2f} s to reach the other replica"


def _children(pid: int) -> list[int]:
    listing = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in listing.read_text().split()]


@pytest.mark.timeout(180)
async def test_serve_with_two_workers_serves_one_port_with_one_fetch_and_stops_cleanly(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    data = safetensors_bytes(4)
    repo = fake_hub.create_repo(MODEL, files={FILE: data})
    server = await _start(tmp_path / "data", fake_hub.url, _env_sqlite(), "--workers", "2")
    try:
        await _until(lambda: len(_children(server.process.pid)) == 2)
        workers = _children(server.process.pid)
        url = f"{server.url}/{MODEL}/resolve/{repo.head()}/{FILE}"
        connector = aiohttp.TCPConnector(limit=0, force_close=True)  # new connections: both
        async with aiohttp.ClientSession(connector=connector) as session:
            bodies = await asyncio.gather(*(get_with_retries(session, url) for _ in range(40)))
            ranged = await session.get(url, headers={"Range": "bytes=10-19"})
            assert ranged.status == 206 and await ranged.read() == data[10:20]
        assert all(body == data for body in bodies)
        assert fake_hub.body_fetches(f"*/{FILE}") == 1
        # a scrape reaches one worker (a new connection each) and counts both workers' bytes
        served = 40 * len(data) + 10
        assert await _served_bytes_scraped(server.url, 6) == [served] * 6
        os.kill(workers[0], signal.SIGKILL)  # a worker that dies is started again
        await _until(
            lambda: (
                len(_children(server.process.pid)) == 2
                and workers[0] not in _children(server.process.pid)
            )
        )
        assert await _served_bytes_scraped(server.url, 4) == [served] * 4  # its counts stay
    finally:
        await _stop(server)
    assert server.process.returncode == 0
    for pid in workers[1:]:
        assert not Path(f"/proc/{pid}").exists()


async def _served_bytes_scraped(url: str, times: int) -> list[float]:
    return [(await scrape(url)).total("hubwarden_served_bytes_total") for _ in range(times)]


def _env_sqlite() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "HUBWARDEN_DATABASE_URL"}
    return {**env, "HUBWARDEN_SCAN_WORKERS": "1", "HUBWARDEN_INGEST_RETRY_AFTER_S": "1"}


async def _until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)
