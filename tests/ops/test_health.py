"""`/healthz` (alive) and `/readyz` (database, store, upstream), against real dependencies made
to fail for real: a dropped database, a store directory that cannot take a file, an upstream
port where nothing listens."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from proxy.app import ENGINE
from proxy.config import StoreSettings
from proxy.store.blobs import BlobStore
from proxy.store.s3 import s3_client
from tests.dbplugin import postgres_server_url
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

CHECKS = {"database", "store", "upstream"}


async def _get_json(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def _readyz_once_cache_expired(url: str) -> tuple[int, dict[str, object]]:
    """The readiness answer after the probe's cache (2 s) has run out."""
    await asyncio.sleep(2.1)
    return await _get_json(f"{url}/readyz")


async def test_healthz_answers_200_at_once(proxy: RunningProxy) -> None:
    started = time.monotonic()
    status, body = await _get_json(f"{proxy.url}/healthz")
    assert (status, body) == (200, {"status": "ok"})
    assert time.monotonic() - started < 1.0


async def test_readyz_all_checks_pass_lists_each(proxy: RunningProxy) -> None:
    status, body = await _get_json(f"{proxy.url}/readyz")
    assert status == 200
    assert body["status"] == "ready"
    assert body["failed"] == []
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert set(checks) == CHECKS
    assert all(check["ok"] for check in checks.values())


async def test_readyz_offline_mode_needs_no_upstream(fake_hub: FakeHub, tmp_path: Path) -> None:
    settings = proxy_settings(fake_hub, tmp_path / "data", offline=True)
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        status, body = await _get_json(f"{running.url}/readyz")
    finally:
        await runner.cleanup()
    assert status == 200
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert "offline" in checks["upstream"]["detail"]


async def test_readyz_upstream_unreachable_is_503_naming_it(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    settings = proxy_settings(fake_hub, tmp_path / "data", upstream=f"http://127.0.0.1:{port}")
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        status, body = await _get_json(f"{running.url}/readyz")
    finally:
        await runner.cleanup()
    assert (status, body["status"], body["failed"]) == (503, "not ready", ["upstream"])


async def test_readyz_store_unwritable_is_503_naming_it(proxy: RunningProxy) -> None:
    assert (await _get_json(f"{proxy.url}/readyz"))[0] == 200
    tmp_dir = BlobStore(proxy.settings.data_dir).tmp_dir  # where every ingest writes first
    # Root ignores permissions: a plain file where the directory was refuses every write.
    shutil.rmtree(tmp_dir)
    tmp_dir.write_bytes(b"")
    try:
        status, body = await _readyz_once_cache_expired(proxy.url)
    finally:
        tmp_dir.unlink()
        tmp_dir.mkdir()
    assert (status, body["failed"]) == (503, ["store"])
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert "ENOTDIR" in checks["store"]["detail"]
    assert str(tmp_dir) not in str(body)  # paths go to the log, not to whoever asks


@pytest.fixture
async def proxy_on_postgres(
    fake_hub: FakeHub, tmp_path: Path, fresh_postgres_url: str
) -> AsyncIterator[tuple[RunningProxy, str]]:
    settings = proxy_settings(fake_hub, tmp_path / "data", database_url=fresh_postgres_url)
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        yield running, fresh_postgres_url
    finally:
        await runner.cleanup()


async def test_readyz_postgres_database_dropped_is_503_naming_it(
    proxy_on_postgres: tuple[RunningProxy, str],
) -> None:
    running, url = proxy_on_postgres
    assert (await _get_json(f"{running.url}/readyz"))[0] == 200
    name = url.rsplit("/", 1)[1]
    admin = create_async_engine(postgres_server_url(), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
    status, body = await _readyz_once_cache_expired(running.url)
    assert (status, body["failed"]) == (503, ["database"])
    assert "password" not in str(body) and "postgres" not in str(body["checks"])


async def test_readyz_sqlite_database_gone_is_503_naming_it(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    database = tmp_path / "db" / "hubwarden.db"
    settings = proxy_settings(fake_hub, tmp_path / "data", database_url=f"sqlite:///{database}")
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        assert (await _get_json(f"{running.url}/readyz"))[0] == 200
        shutil.rmtree(database.parent)  # the file and its directory: nothing to reopen
        await running.app[ENGINE].dispose()  # the pool's open handles would outlive the file
        status, body = await _readyz_once_cache_expired(running.url)
    finally:
        await runner.cleanup()
    assert (status, body["failed"]) == (503, ["database"])


@pytest.mark.parametrize("path", ["/readyz", "/metrics", "/healthz"])
async def test_monitoring_paths_leave_hub_repos_of_the_same_name_reachable(
    proxy: RunningProxy, fake_hub: FakeHub, path: str
) -> None:
    name = path.strip("/")
    fake_hub.create_repo(f"{name}/{name}", files={"a.txt": name.encode()})
    downloaded = await proxy.download(f"{name}/{name}", "a.txt")
    assert downloaded.read_bytes() == name.encode()


@pytest.fixture
async def proxy_on_s3(
    fake_hub: FakeHub, tmp_path: Path, s3_bucket: StoreSettings
) -> AsyncIterator[tuple[RunningProxy, StoreSettings]]:
    settings = proxy_settings(fake_hub, tmp_path / "data")
    settings = dataclasses.replace(settings, store=s3_bucket)
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        yield running, s3_bucket
    finally:
        await runner.cleanup()


async def test_readyz_on_an_s3_store_looks_the_store_up(
    proxy_on_s3: tuple[RunningProxy, StoreSettings],
) -> None:
    running, _ = proxy_on_s3
    status, body = await _get_json(f"{running.url}/readyz")
    assert (status, body["failed"]) == (200, [])
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert "lookups answer" in checks["store"]["detail"]
    assert "bucket answers" in checks["store"]["detail"]


async def test_readyz_s3_bucket_deleted_is_503_naming_the_store(
    proxy_on_s3: tuple[RunningProxy, StoreSettings],
) -> None:
    # a HEAD of a missing key answers 404 whether or not the bucket exists: only a bucket
    # probe tells a deleted bucket from a blob not stored yet
    running, bucket = proxy_on_s3
    assert (await _get_json(f"{running.url}/readyz"))[0] == 200
    async with s3_client(bucket) as client:
        await client.delete_bucket(Bucket=bucket.bucket)
    status, body = await _readyz_once_cache_expired(running.url)
    assert (status, body["failed"]) == (503, ["store"])
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert "StoreUnavailable" in checks["store"]["detail"]
    assert bucket.bucket not in str(body)  # names go to the log, not to whoever asks


async def test_readyz_blob_directory_removed_is_503_naming_the_store(proxy: RunningProxy) -> None:
    assert (await _get_json(f"{proxy.url}/readyz"))[0] == 200
    blobs = BlobStore(proxy.settings.data_dir).blobs_dir
    moved = blobs.with_name("blobs-away")
    blobs.rename(moved)  # an unmounted or deleted volume
    try:
        status, body = await _readyz_once_cache_expired(proxy.url)
    finally:
        moved.rename(blobs)
    assert (status, body["failed"]) == (503, ["store"])
    assert (await _readyz_once_cache_expired(proxy.url))[0] == 200
