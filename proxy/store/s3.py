"""The blob store in an S3-compatible bucket (AWS, MinIO, Ceph, any S3 API), with aiobotocore.

Keys derive only from a sha256 Hubwarden computed (checked to be 64 hex characters), never from a
client's input: `<prefix>blobs/<sha256>` is served, `<prefix>quarantine/<sha256>` is kept for
review and never served. Ingests still write a local temp file in `<data_dir>/tmp` (scanners read
local files); the verdict publishes it with a create-only-if-absent write (`IfNoneMatch="*"`), so
a blob is never under the released key before its verdict and never overwritten: another replica
that published the same content first is fine (the keys are content-addressed). Files larger than
one part go up as a multipart upload read part by part (memory flat in file size).

Foreign errors (botocore, aiohttp client) are translated here into StoreUnavailable; a missing
object into FileNotFoundError.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from proxy.config import ConfigError, StoreSettings
from proxy.store.blob_protocol import BlobPlace, StoreUnavailable, checked_sha256
from proxy.store.blobs import LocalBlobStore

if TYPE_CHECKING:
    from aiobotocore.session import ClientCreatorContext
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, CopySourceTypeDef

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
READ_CHUNK_BYTES = MiB
_MISSING = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchUpload"})
_ALREADY_THERE = frozenset({"412", "PreconditionFailed", "409", "ConditionalRequestConflict"})
_OUR_KEY = re.compile(r"(?:blobs|quarantine)/[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class S3Limits:
    """Sizes the S3 API imposes: parts of 5 MiB to 5 GiB, at most 10,000 of them; one
    CopyObject of at most 5 GiB (larger objects are copied part by part)."""

    part_size_bytes: int = 16 * MiB
    max_parts: int = 10_000
    single_copy_max_bytes: int = 5 * 1024 * MiB
    max_listed_pages: int = 100  # bounds the start-up clean-up (1,000 uploads a page)
    upload_concurrency: int = 3  # parts sent at once (and held in memory)

    def part_size_for(self, size: int) -> int:
        """The part size that keeps `size` within `max_parts`, in whole MiB."""
        needed = -(-size // self.max_parts)
        return max(self.part_size_bytes, -(-needed // MiB) * MiB)


@dataclass(frozen=True, slots=True)
class _Part:
    """One part of a multipart upload: [offset, offset + size_bytes) of the file."""

    key: str
    upload_id: str
    number: int
    offset: int
    size_bytes: int


def s3_client(settings: StoreSettings) -> ClientCreatorContext[S3Client]:
    """The aiobotocore client `[store]` describes (an async context manager). Credentials: the
    config's, else botocore's usual chain (AWS_ACCESS_KEY_ID..., profiles, instance roles).
    Raises ConfigError when no bucket is set."""
    if not settings.bucket:
        raise ConfigError(
            '[store] kind = "s3" needs a bucket; set [store] bucket (HUBWARDEN_STORE_BUCKET)',
            source="[store]",
            key="store.bucket",
            allowed="an S3 bucket name",
        )
    addressing = {"addressing_style": "path"} if settings.endpoint_url else {}
    config = AioConfig(
        signature_version="s3v4",  # presigned URLs too: SigV2 is refused by most stores
        connect_timeout=settings.timeout_s,
        read_timeout=settings.timeout_s,
        retries={"max_attempts": 3, "mode": "standard"},
        s3=addressing,  # MinIO, Ceph, moto: path-style on a custom endpoint
    )
    key_id, secret = settings.access_key_id, settings.secret_access_key
    return get_session().create_client(
        "s3",
        region_name=settings.region or None,
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=key_id.reveal() if key_id else None,
        aws_secret_access_key=secret.reveal() if secret else None,
        config=config,
    )


def _code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code", exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")))


@contextlib.contextmanager
def _translated(operation: str) -> Iterator[None]:
    """botocore and aiohttp errors → StoreUnavailable; a missing object → FileNotFoundError."""
    try:
        yield
    except ClientError as exc:
        if _code(exc) in _MISSING:
            raise FileNotFoundError(f"{operation}: no such object") from exc
        raise StoreUnavailable(operation, f"{_code(exc)}: {exc}") from exc
    except (BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
        raise StoreUnavailable(operation, repr(exc)) from exc


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class S3BlobStore:
    """Blobs in a bucket; temp files in `<data_dir>/tmp` (shared with the local store's code)."""

    def __init__(
        self,
        data_dir: Path,
        settings: StoreSettings,
        client: S3Client,
        *,
        limits: S3Limits | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._local = LocalBlobStore(data_dir)
        self._settings = settings
        self._client = client
        self._bucket = settings.bucket
        self._prefix = settings.prefix
        self._limits = limits or S3Limits(part_size_bytes=settings.part_size_bytes)
        self._clock = clock

    @property
    def tmp_dir(self) -> Path:
        return self._local.tmp_dir

    def key_of(self, sha256: str, place: BlobPlace) -> str:
        folder = "blobs" if place is BlobPlace.RELEASED else "quarantine"
        return f"{self._prefix}{folder}/{checked_sha256(sha256)}"

    # -- local temp files ----------------------------------------------------------------------

    def new_temp(self) -> Path:
        return self._local.new_temp()

    def free_bytes(self) -> int:
        return self._local.free_bytes()

    def discard(self, path: Path) -> None:
        self._local.discard(path)

    def clear_dead_temps(self) -> int:
        return self._local.clear_dead_temps()

    # -- start ---------------------------------------------------------------------------------

    async def start(self) -> int:
        """Clean tmp/, check the bucket answers, abort our abandoned multipart uploads."""
        removed = await asyncio.to_thread(self._local.prepare)
        await self._head_bucket("no such bucket; create it first")
        return removed + await self.abort_stale_uploads()

    async def abort_stale_uploads(self) -> int:
        """Abort the unfinished multipart uploads under our prefix that are older than
        `upload_grace_s`. Returns how many were aborted."""
        # Another replica sharing this bucket may be uploading right now: an upload younger
        # than the grace period (longer than any upload takes) is its work in progress, not a
        # leftover. Only keys of our own shape are touched, never other tenants' of the bucket.
        grace = dt.timedelta(seconds=self._settings.upload_grace_s)
        now = self._clock()
        aborted = 0
        for key, upload_id, initiated in await self._list_uploads():
            ours = key.startswith(self._prefix) and _OUR_KEY.fullmatch(key[len(self._prefix) :])
            if ours and now - initiated > grace:
                await self._abort(key, upload_id)
                aborted += 1
        if aborted:
            logger.info("aborted %d unfinished uploads in bucket %s", aborted, self._bucket)
        return aborted

    async def _list_uploads(self) -> list[tuple[str, str, dt.datetime]]:
        uploads: list[tuple[str, str, dt.datetime]] = []
        paginator = self._client.get_paginator("list_multipart_uploads")
        pages = paginator.paginate(Bucket=self._bucket, Prefix=self._prefix)
        with _translated("list unfinished uploads"):
            count = 0
            async for page in pages:
                uploads += [
                    (u["Key"], u["UploadId"], u["Initiated"]) for u in page.get("Uploads", [])
                ]
                count += 1
                if count >= self._limits.max_listed_pages:
                    break
        return uploads

    async def _abort(self, key: str, upload_id: str) -> None:
        """Abort an upload; a failure is logged, never raised (it would hide the error that
        made us abort, and start-up must not fail on another's leftover)."""
        try:
            with contextlib.suppress(FileNotFoundError), _translated("abort an upload"):
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id
                )
        except StoreUnavailable as exc:
            logger.warning("upload %s of %s not aborted: %s", upload_id[:16], key, exc.reason)

    # -- publish -------------------------------------------------------------------------------

    async def publish(self, temp: Path, sha256: str, place: BlobPlace) -> None:
        key = self.key_of(sha256, place)
        size = (await asyncio.to_thread(temp.stat)).st_size
        with _translated(f"store {key}"):
            try:
                if size <= self._limits.part_size_bytes:
                    await self._put(temp, key, sha256)
                else:
                    await self._put_in_parts(temp, key, sha256, size)
            except ClientError as exc:
                if _code(exc) not in _ALREADY_THERE:
                    raise
                await self._check_existing(key, sha256, size)
        await asyncio.to_thread(self._local.discard, temp)

    async def _put(self, temp: Path, key: str, sha256: str) -> None:
        data = await asyncio.to_thread(temp.read_bytes)  # at most one part
        await self._client.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=data,
            Metadata={"sha256": sha256},
            ContentType="application/octet-stream",
            IfNoneMatch="*",  # create only: never replace what is there
        )

    async def _put_in_parts(self, temp: Path, key: str, sha256: str, size: int) -> None:
        created = await self._client.create_multipart_upload(
            Bucket=self._bucket,
            Key=key,
            Metadata={"sha256": sha256},
            ContentType="application/octet-stream",
        )
        upload_id = created["UploadId"]
        try:
            parts = await self._upload_parts(temp, key, upload_id, size)
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",  # create only, as for a single PUT
            )
        except BaseException:
            # An upload left open costs storage until aborted; start-up would find it later.
            await asyncio.shield(self._abort(key, upload_id))
            raise

    async def _upload_parts(
        self, temp: Path, key: str, upload_id: str, size: int
    ) -> list[CompletedPartTypeDef]:
        """Send the parts, `upload_concurrency` at a time: memory holds that many parts,
        whatever the file size (a part is read only once a slot is free)."""
        part_size = self._limits.part_size_for(size)
        slots = asyncio.Semaphore(self._limits.upload_concurrency)
        parts: list[CompletedPartTypeDef] = []
        fd = await asyncio.to_thread(os.open, temp, os.O_RDONLY)
        try:
            async with asyncio.TaskGroup() as group:
                for number, offset in enumerate(range(0, size, part_size), start=1):
                    await slots.acquire()
                    span = _Part(key, upload_id, number, offset, part_size)
                    group.create_task(self._send_part(fd, span, slots, parts))
        except ExceptionGroup as failed:  # the first failure, as a single PUT would raise it
            raise failed.exceptions[0] from None
        finally:
            os.close(fd)
        return sorted(parts, key=lambda part: part["PartNumber"])

    async def _send_part(
        self, fd: int, part: _Part, slots: asyncio.Semaphore, parts: list[CompletedPartTypeDef]
    ) -> None:
        try:
            data = await asyncio.to_thread(os.pread, fd, part.size_bytes, part.offset)
            answer = await self._client.upload_part(
                Bucket=self._bucket,
                Key=part.key,
                UploadId=part.upload_id,
                PartNumber=part.number,
                Body=data,
            )
            parts.append({"PartNumber": part.number, "ETag": answer["ETag"]})
        finally:
            slots.release()

    async def _check_existing(self, key: str, sha256: str, size: int) -> None:
        """The key was taken: fine when it holds this content (another replica, an earlier
        attempt), else StoreUnavailable (never overwritten)."""
        head = await self._client.head_object(Bucket=self._bucket, Key=key)
        if head["ContentLength"] != size or head.get("Metadata", {}).get("sha256") != sha256:
            raise StoreUnavailable(f"store {key}", "another object is already under this key")
        logger.info("%s was already stored (another replica or an earlier attempt)", key)

    # -- moves ---------------------------------------------------------------------------------

    async def release_held(self, sha256: str) -> None:
        await self._move(sha256, BlobPlace.QUARANTINED, BlobPlace.RELEASED)

    async def hold_again(self, sha256: str) -> None:
        await self._move(sha256, BlobPlace.RELEASED, BlobPlace.QUARANTINED)

    async def _move(self, sha256: str, source: BlobPlace, target: BlobPlace) -> None:
        """A server-side copy, then the delete of the source (S3 has no rename). A retry after
        a crash in between finds the source still there and copies again: same bytes."""
        source_key, target_key = self.key_of(sha256, source), self.key_of(sha256, target)
        with _translated(f"move {source_key} to {target_key}"):
            size = await self._size_of(source_key)
            if size is None:
                if await self._size_of(target_key) is not None:
                    return  # moved already (a retried decision)
                raise FileNotFoundError(f"{source.value} blob {sha256} is not in the store")
            if size <= self._limits.single_copy_max_bytes:
                source_ref: CopySourceTypeDef = {"Bucket": self._bucket, "Key": source_key}
                await self._client.copy_object(
                    Bucket=self._bucket, Key=target_key, CopySource=source_ref
                )  # MetadataDirective COPY (the default) keeps the sha256 metadata
            else:
                await self._copy_in_parts(sha256, source_key, target_key, size)
            await self._client.delete_object(Bucket=self._bucket, Key=source_key)

    async def _copy_in_parts(
        self, sha256: str, source_key: str, target_key: str, size: int
    ) -> None:
        created = await self._client.create_multipart_upload(
            Bucket=self._bucket, Key=target_key, Metadata={"sha256": sha256}
        )
        upload_id = created["UploadId"]
        part_size = self._limits.part_size_for(size)
        parts: list[CompletedPartTypeDef] = []
        try:
            for number, offset in enumerate(range(0, size, part_size), start=1):
                last = min(offset + part_size, size) - 1
                answer = await self._client.upload_part_copy(
                    Bucket=self._bucket,
                    Key=target_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self._bucket, "Key": source_key},
                    CopySourceRange=f"bytes={offset}-{last}",
                )
                parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=target_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await asyncio.shield(self._abort(target_key, upload_id))
            raise

    async def _size_of(self, key: str) -> int | None:
        try:
            head = await self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise
        return head["ContentLength"]

    # -- reads ---------------------------------------------------------------------------------

    async def probe(self) -> str:
        """HEAD the bucket: a lookup of a missing key answers 404 for a deleted bucket too."""
        await self._head_bucket("no such bucket")
        return "bucket answers"

    async def _head_bucket(self, missing: str) -> None:
        operation = f"reach bucket {self._bucket}"
        try:
            with _translated(operation):
                await self._client.head_bucket(Bucket=self._bucket)
        except FileNotFoundError as exc:
            raise StoreUnavailable(operation, missing) from exc

    async def contains(self, sha256: str, place: BlobPlace) -> bool:
        key = self.key_of(sha256, place)
        with _translated(f"look up {key}"):
            return await self._size_of(key) is not None

    def released_file(self, sha256: str) -> None:
        return None  # remote: served by read_released or presigned_url

    @asynccontextmanager
    async def read_released(
        self, sha256: str, start: int, end: int
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        key = self.key_of(sha256, BlobPlace.RELEASED)
        if end <= start:
            yield _no_chunks()
            return
        with _translated(f"read {key}"):
            answer = await self._client.get_object(
                Bucket=self._bucket, Key=key, Range=f"bytes={start}-{end - 1}"
            )
        body = answer["Body"]
        try:
            yield _chunks(body, key)
        finally:
            body.close()

    async def presigned_url(self, sha256: str, content_disposition: str) -> str | None:
        if not self._settings.presign:
            return None
        key = self.key_of(sha256, BlobPlace.RELEASED)
        params = {
            "Bucket": self._bucket,
            "Key": key,
            "ResponseContentType": "application/octet-stream",
            "ResponseContentDisposition": content_disposition,
        }
        with _translated(f"sign a URL of {key}"):
            return await self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=self._settings.presign_ttl_s
            )

    @asynccontextmanager
    async def local_copy(self, sha256: str, place: BlobPlace) -> AsyncIterator[Path]:
        temp = await asyncio.to_thread(self._local.new_temp)
        try:
            await self._download(self.key_of(sha256, place), temp, sha256)
            yield temp
        finally:
            await asyncio.to_thread(self._local.discard, temp)

    async def _download(self, key: str, temp: Path, sha256: str) -> None:
        """The object into `temp`, hashed as it arrives: a bucket whose object is not what its
        key says (tampered, truncated) raises StoreUnavailable, never yields bad bytes."""
        digest = hashlib.sha256()
        with _translated(f"read {key}"):
            answer = await self._client.get_object(Bucket=self._bucket, Key=key)
        body = answer["Body"]
        try:
            handle = await asyncio.to_thread(temp.open, "wb")
            with handle:
                async for chunk in _chunks(body, key):
                    digest.update(chunk)
                    await asyncio.to_thread(handle.write, chunk)
        finally:
            body.close()
        if digest.hexdigest() != sha256:
            raise StoreUnavailable(f"read {key}", f"its bytes hash to {digest.hexdigest()}")


async def _no_chunks() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that yields nothing


async def _chunks(body: Any, key: str) -> AsyncIterator[bytes]:
    """An object body's chunks; a connection lost mid-body is StoreUnavailable."""
    with _translated(f"read {key}"):
        async for chunk in body.iter_chunks(READ_CHUNK_BYTES):
            yield chunk
