"""The `BlobStore` contract, on both implementations: the local directory and an S3 bucket of a
real S3 API server (moto, its own process on loopback: tests/s3plugin.py)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.config import StoreKind, StoreSettings
from proxy.store.blob_protocol import BlobPlace, BlobStore
from proxy.store.blob_stores import open_blob_store
from tests.s3plugin import new_bucket

DATA = b"verified bytes"
SHA256 = hashlib.sha256(DATA).hexdigest()
MiB = 1024 * 1024
# Above one part (5 MiB, the S3 minimum) so that the S3 store uploads it in three parts.
LARGE = os.urandom(11 * MiB + 123)
LARGE_SHA256 = hashlib.sha256(LARGE).hexdigest()


@pytest.fixture(params=["local", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[BlobStore]:
    settings = StoreSettings()
    if request.param == "s3":
        settings = await new_bucket(s3_endpoint, part_size_bytes=5 * MiB)
    assert (settings.kind is StoreKind.S3) == (request.param == "s3")
    async with open_blob_store(tmp_path / "data", settings) as blob_store:
        await blob_store.start()
        yield blob_store


def _temp_with(store: BlobStore, data: bytes = DATA) -> Path:
    temp = store.new_temp()
    temp.write_bytes(data)
    return temp


async def _released_bytes(store: BlobStore, sha256: str, start: int = 0, end: int = -1) -> bytes:
    if end < 0:
        async with store.local_copy(sha256, BlobPlace.RELEASED) as path:
            end = path.stat().st_size
    async with store.read_released(sha256, start, end) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def test_blob_store_publish_released_is_served_and_temp_removed(store: BlobStore) -> None:
    temp = _temp_with(store)
    await store.publish(temp, SHA256, BlobPlace.RELEASED)
    assert not temp.exists()
    assert await store.contains(SHA256, BlobPlace.RELEASED)
    assert await _released_bytes(store, SHA256) == DATA


async def test_blob_store_publish_quarantined_is_never_under_the_released_key(
    store: BlobStore,
) -> None:
    await store.publish(_temp_with(store), SHA256, BlobPlace.QUARANTINED)
    assert await store.contains(SHA256, BlobPlace.QUARANTINED)
    assert not await store.contains(SHA256, BlobPlace.RELEASED)
    with pytest.raises(FileNotFoundError):
        async with store.read_released(SHA256, 0, len(DATA)) as chunks:
            _ = [chunk async for chunk in chunks]


async def test_blob_store_publish_same_content_twice_is_fine(store: BlobStore) -> None:
    await store.publish(_temp_with(store), SHA256, BlobPlace.RELEASED)
    second = _temp_with(store)
    await store.publish(second, SHA256, BlobPlace.RELEASED)
    assert not second.exists()
    assert await _released_bytes(store, SHA256) == DATA


async def test_blob_store_publish_large_file_round_trips(store: BlobStore) -> None:
    await store.publish(_temp_with(store, LARGE), LARGE_SHA256, BlobPlace.RELEASED)
    assert await _released_bytes(store, LARGE_SHA256) == LARGE


async def test_blob_store_read_released_range_is_exact(store: BlobStore) -> None:
    await store.publish(_temp_with(store, LARGE), LARGE_SHA256, BlobPlace.RELEASED)
    start, end = 5 * MiB - 10, 5 * MiB + 70_000
    assert await _released_bytes(store, LARGE_SHA256, start, end) == LARGE[start:end]


async def test_blob_store_release_held_moves_to_released(store: BlobStore) -> None:
    await store.publish(_temp_with(store, LARGE), LARGE_SHA256, BlobPlace.QUARANTINED)
    await store.release_held(LARGE_SHA256)
    assert not await store.contains(LARGE_SHA256, BlobPlace.QUARANTINED)
    assert await _released_bytes(store, LARGE_SHA256) == LARGE


async def test_blob_store_hold_again_moves_to_quarantine(store: BlobStore) -> None:
    await store.publish(_temp_with(store), SHA256, BlobPlace.RELEASED)
    await store.hold_again(SHA256)
    assert not await store.contains(SHA256, BlobPlace.RELEASED)
    async with store.local_copy(SHA256, BlobPlace.QUARANTINED) as path:
        assert path.read_bytes() == DATA


async def test_blob_store_local_copy_of_missing_blob_raises(store: BlobStore) -> None:
    with pytest.raises(FileNotFoundError):
        async with store.local_copy(SHA256, BlobPlace.RELEASED):
            pass


async def test_blob_store_local_copy_leaves_no_temp_file_behind(store: BlobStore) -> None:
    await store.publish(_temp_with(store), SHA256, BlobPlace.QUARANTINED)
    async with store.local_copy(SHA256, BlobPlace.QUARANTINED) as path:
        assert path.read_bytes() == DATA
    assert list(store.tmp_dir.iterdir()) == []


async def test_blob_store_start_removes_half_written_temp_files(store: BlobStore) -> None:
    for _ in range(2):
        _temp_with(store)
    assert await store.start() == 2
    assert list(store.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("sha256", ["../" + "a" * 61, "A" * 64, "a" * 63, "a" * 64 + "/x"])
async def test_blob_store_refuses_a_name_that_is_not_a_sha256(
    store: BlobStore, sha256: str
) -> None:
    with pytest.raises(ValueError, match="not a sha256"):
        await store.publish(_temp_with(store), sha256, BlobPlace.RELEASED)


async def test_blob_store_released_file_is_local_only_for_the_local_store(
    store: BlobStore, request: pytest.FixtureRequest
) -> None:
    local = request.node.callspec.params["store"] == "local"
    assert (store.released_file(SHA256) is not None) == local


async def test_blob_store_probe_answers_when_the_store_is_there(store: BlobStore) -> None:
    assert await store.probe()  # a short detail for /readyz; failures: tests/ops/test_health.py
