"""What only the S3 store does, against a real S3 API server (moto, tests/s3plugin.py):
create-only writes, the start-up clean-up of unfinished uploads, verified local copies,
copies in parts, presigned URLs."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from proxy.config import Secret, StoreSettings
from proxy.store.blob_protocol import BlobPlace, StoreUnavailable
from proxy.store.s3 import S3BlobStore, S3Limits, s3_client
from tests.s3plugin import TEST_SECRET, new_bucket, s3_store_settings

DATA = b"verified bytes"
SHA256 = hashlib.sha256(DATA).hexdigest()
MiB = 1024 * 1024
GRACE_S = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def settings(s3_endpoint: str) -> StoreSettings:
    return await new_bucket(
        s3_endpoint, prefix="mirror/", upload_grace_s=GRACE_S, presign=True, presign_ttl_s=120
    )


@pytest.fixture
async def store(
    settings: StoreSettings, tmp_path: Path, clock: Clock
) -> AsyncIterator[S3BlobStore]:
    limits = S3Limits(part_size_bytes=5 * MiB, single_copy_max_bytes=5 * MiB)
    async with s3_client(settings) as client:
        blob_store = S3BlobStore(tmp_path / "data", settings, client, limits=limits, clock=clock)
        await blob_store.start()
        yield blob_store


async def _object(settings: StoreSettings, key: str) -> bytes:
    async with s3_client(settings) as client:
        answer = await client.get_object(Bucket=settings.bucket, Key=key)
        async with answer["Body"] as body:
            return await body.read()


async def _put(settings: StoreSettings, key: str, data: bytes) -> None:
    async with s3_client(settings) as client:
        await client.put_object(Bucket=settings.bucket, Key=key, Body=data)


def _temp_with(store: S3BlobStore, data: bytes = DATA) -> Path:
    temp = store.new_temp()
    temp.write_bytes(data)
    return temp


async def test_s3_store_keys_are_content_addressed_under_the_prefix(
    store: S3BlobStore, settings: StoreSettings
) -> None:
    await store.publish(_temp_with(store), SHA256, BlobPlace.QUARANTINED)
    assert await _object(settings, f"mirror/quarantine/{SHA256}") == DATA
    await store.release_held(SHA256)
    assert await _object(settings, f"mirror/blobs/{SHA256}") == DATA


async def test_s3_store_publish_never_overwrites_other_content(
    store: S3BlobStore, settings: StoreSettings
) -> None:
    key = f"mirror/blobs/{SHA256}"
    await _put(settings, key, b"planted by someone else")
    temp = _temp_with(store)
    with pytest.raises(StoreUnavailable, match="another object is already under this key"):
        await store.publish(temp, SHA256, BlobPlace.RELEASED)
    assert await _object(settings, key) == b"planted by someone else"


async def test_s3_store_multipart_publish_never_overwrites_other_content(
    store: S3BlobStore, settings: StoreSettings
) -> None:
    large = os.urandom(6 * MiB)
    sha256 = hashlib.sha256(large).hexdigest()
    key = f"mirror/blobs/{sha256}"
    await _put(settings, key, b"planted")
    with pytest.raises(StoreUnavailable, match="another object"):
        await store.publish(_temp_with(store, large), sha256, BlobPlace.RELEASED)
    assert await _object(settings, key) == b"planted"
    assert await _uploads(settings) == []  # the refused upload was aborted


async def test_s3_store_local_copy_of_tampered_object_is_refused(
    store: S3BlobStore, settings: StoreSettings
) -> None:
    await _put(settings, f"mirror/quarantine/{SHA256}", b"not what the key says")
    with pytest.raises(StoreUnavailable, match="hash to"):
        async with store.local_copy(SHA256, BlobPlace.QUARANTINED):
            pass
    assert list(store.tmp_dir.iterdir()) == []


async def test_s3_store_release_held_of_large_blob_copies_in_parts(
    store: S3BlobStore, settings: StoreSettings
) -> None:
    large = os.urandom(11 * MiB)
    sha256 = hashlib.sha256(large).hexdigest()
    await store.publish(_temp_with(store, large), sha256, BlobPlace.QUARANTINED)
    await store.release_held(sha256)
    assert await _object(settings, f"mirror/blobs/{sha256}") == large
    assert not await store.contains(sha256, BlobPlace.QUARANTINED)


async def _start_upload(settings: StoreSettings, key: str) -> dt.datetime:
    """An unfinished multipart upload of `key`; returns when the server says it began."""
    async with s3_client(settings) as client:
        await client.create_multipart_upload(Bucket=settings.bucket, Key=key)
        listed = await client.list_multipart_uploads(Bucket=settings.bucket)
    return next(u["Initiated"] for u in listed.get("Uploads", []) if u["Key"] == key)


async def _uploads(settings: StoreSettings) -> list[str]:
    async with s3_client(settings) as client:
        listed = await client.list_multipart_uploads(Bucket=settings.bucket)
    return sorted(u["Key"] for u in listed.get("Uploads", []))


async def test_s3_store_start_keeps_an_upload_younger_than_the_grace(
    store: S3BlobStore, settings: StoreSettings, clock: Clock
) -> None:
    key = f"mirror/blobs/{SHA256}"
    clock.now = await _start_upload(settings, key) + dt.timedelta(seconds=GRACE_S / 2)
    assert await store.abort_stale_uploads() == 0
    assert await _uploads(settings) == [key]


async def test_s3_store_start_aborts_our_uploads_older_than_the_grace(
    store: S3BlobStore, settings: StoreSettings, clock: Clock
) -> None:
    ours, foreign = f"mirror/blobs/{SHA256}", "mirror/other-tenant/file"
    initiated = await _start_upload(settings, ours)
    await _start_upload(settings, foreign)
    clock.now = initiated + dt.timedelta(seconds=GRACE_S * 2)
    assert await store.start() == 1
    assert await _uploads(settings) == [foreign]


async def test_s3_store_presigned_url_is_sigv4_and_serves_the_blob(store: S3BlobStore) -> None:
    await store.publish(_temp_with(store), SHA256, BlobPlace.RELEASED)
    url = await store.presigned_url(SHA256, 'inline; filename="x.bin";')
    assert url is not None
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["120"]
    # Signed into the URL; moto ignores response-* overrides, AWS and MinIO answer with them.
    assert query["response-content-disposition"] == ['inline; filename="x.bin";']
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert await response.read() == DATA


async def test_s3_store_unreachable_bucket_fails_start_with_store_unavailable(
    s3_endpoint: str, tmp_path: Path
) -> None:
    settings = s3_store_settings(s3_endpoint, "no-such-bucket-here")
    async with s3_client(settings) as client:
        with pytest.raises(StoreUnavailable, match="no-such-bucket-here"):
            await S3BlobStore(tmp_path, settings, client).start()


def test_s3_store_settings_repr_hides_the_credentials() -> None:
    settings = s3_store_settings("http://127.0.0.1:1", "bucket")
    assert TEST_SECRET not in repr(settings)
    assert isinstance(settings.secret_access_key, Secret)
