"""The resolve route: HEAD and GET of `{prefix}{repo}/resolve/{rev}/{path}` (hub-protocol.md §3.2).

HEAD answers from metadata alone. GET sends a released blob through the kernel's sendfile path,
or streams an in-flight ingest as far as it is cleared, cutting the connection if the verdict
goes against it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from aiohttp import web

from proxy.catalog import Caller
from proxy.delivery import FileTarget, InFlightBlob, ReleasedBlob
from proxy.errors import HubwardenError, InvalidInput, NotReady
from proxy.hub.context import services_of
from proxy.hub.flights import Landing, Redirect, flights_of
from proxy.hub.monitoring import SERVED_FROM
from proxy.hub.requests import caller_of, file_path, repo_of, revision_and_path
from proxy.hub.stored_files import send_from_store
from proxy.ingest import IngestJob
from proxy.store.blob_protocol import BlobStore

logger = logging.getLogger(__name__)

# Re-check the verdict at least this often while a cleared span goes out.
STREAM_CHUNK_BYTES = 16 * 1024 * 1024
SMALL_RANGE_BYTES = 1024 * 1024
INLINE_READ_BYTES = 256 * 1024
KEEPALIVE_WAIT_S = 2.0
# hub-protocol.md §1.2: the client refuses plain-HTTP files over 50 GB when it knows the size.
MAX_ADVERTISED_SIZE = 50 * 1000 * 1000 * 1000
_RANGE = re.compile(r"bytes\s*=\s*([0-9]{0,30})\s*-\s*([0-9]{0,30})")


class BlobFileResponse(web.FileResponse):
    """aiohttp's sendfile response, keeping the Hub's ETag instead of its mtime-based one."""

    @property
    def etag(self) -> None:
        return None

    @etag.setter
    def etag(self, value: object) -> None:
        """Ignored: the ETag header set by `file_headers` is the Hub's."""


def file_headers(target: FileTarget) -> dict[str, str]:
    entry = target.entry
    name = entry.path.rsplit("/", 1)[-1]
    quoted = quote(name, safe="")
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_")
    headers = {
        "X-Repo-Commit": target.commit,
        "ETag": f'"{entry.etag}"',
        "X-Linked-Etag": f'"{entry.etag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f"inline; filename*=UTF-8''{quoted}; filename=\"{ascii_name}\";",
    }
    if entry.size <= MAX_ADVERTISED_SIZE:
        headers["X-Linked-Size"] = str(entry.size)
    return headers


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match list with our ETag."""
    for candidate in if_none_match.split(","):
        value = candidate.strip().removeprefix("W/").strip('"')
        if value in (etag, "*"):
            return True
    return False


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single `bytes=a-b`, `bytes=a-` or `bytes=-n` → [start, end). None: unsatisfiable."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        raise InvalidInput("Range header", header, "must be one range: bytes=START-END")
    first, last = match.group(1), match.group(2)
    if first == "":
        length = int(last)
        return (max(0, size - length), size) if length > 0 and size else None
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        return None
    return start, end


async def resolve_file(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    caller = caller_of(request)
    key = (request.raw_path, caller.key)
    if request.method != "GET":
        return await _resolve(request, caller, key, Landing())
    found = services.delivery.warm(key) or await flights_of(request).follow(key)
    if found is not None:
        return await _answer(request, found)
    with flights_of(request).lead(key) as landing:
        return await _resolve(request, caller, key, landing)


async def _resolve(
    request: web.Request, caller: Caller, warm_key: tuple[str, str], landing: Landing
) -> web.StreamResponse:
    services = services_of(request)
    repo = repo_of(request)
    wanted = revision_and_path(request)
    path = file_path(wanted.path)
    if not wanted.revision.is_commit:
        resolved = await services.catalog.resolve(repo, wanted.revision, caller, allow_blocked=True)
        location = f"/{repo.file_path}/resolve/{resolved.commit}/{quote(path.value)}"
        if request.query_string:
            location += f"?{request.query_string}"
        landing.outcome = Redirect(location, resolved.commit, resolved.notice)
        return await _answer(request, landing.outcome)
    target = await services.delivery.locate(repo, wanted.revision, path, caller)
    headers = file_headers(target)
    if request.method == "HEAD":
        await services.delivery.prefetch(target, caller)
        if target.entry.size <= MAX_ADVERTISED_SIZE:
            headers["Content-Length"] = str(target.entry.size)
        return web.Response(status=200, headers=headers)
    found = await services.delivery.open(target, caller)
    if isinstance(found, ReleasedBlob):
        services.delivery.remember_warm(warm_key, found)
        landing.outcome = found
        return await _send_released(request, found, headers)
    return await _stream_in_flight(request, found, headers)


async def _answer(request: web.Request, found: ReleasedBlob | Redirect) -> web.StreamResponse:
    """A released blob or a redirect found by this request, or by one just like it."""
    if isinstance(found, ReleasedBlob):
        return await _send_released(request, found, file_headers(found.target))
    headers = {"Location": found.location, "X-Repo-Commit": found.commit}
    if found.notice:
        headers["X-HF-Warning"] = f"hubwarden; {found.notice}"
    return web.Response(status=307, headers=headers)


async def _send_released(
    request: web.Request, found: ReleasedBlob, headers: dict[str, str]
) -> web.StreamResponse:
    if _etag_matches(request.headers.get("If-None-Match", ""), found.target.entry.etag):
        return web.Response(status=304, headers=headers)
    if found.path is None:  # a remote store (S3): no local file to sendfile
        return await _send_stored(request, found, headers)
    if "Range" in request.headers:
        small = await _small_range(request.headers["Range"], found.path, found, headers)
        if small is not None:
            return small
    response = BlobFileResponse(found.path, headers=headers)
    response[SERVED_FROM] = "warm"  # counted by its Content-Length once prepared
    return response


async def _send_stored(
    request: web.Request, found: ReleasedBlob, headers: dict[str, str]
) -> web.StreamResponse:
    size = found.target.entry.size
    span = None
    if "Range" in request.headers:
        span = _parse_range(request.headers["Range"], size)
        if span is None:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    return await send_from_store(request, services_of(request).store, found, headers, span)


async def _small_range(
    header: str, path: Path, found: ReleasedBlob, headers: dict[str, str]
) -> web.Response | None:
    """A Range of at most SMALL_RANGE_BYTES answered with one read: for block reads
    (HfFileSystem, safetensors metadata) this beats the sendfile set-up several times over."""
    size = found.target.entry.size
    wanted = _parse_range(header, size)
    if wanted is None:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    start, end = wanted
    if end - start > SMALL_RANGE_BYTES:
        return None
    if end - start <= INLINE_READ_BYTES:
        # A page-cache read this small costs less than the hop to a worker thread and back,
        # which was the largest cost of a 64 KiB range (bench/); larger reads go to a thread.
        data = _read_span(path, start, end - start)
    else:
        data = await asyncio.to_thread(_read_span, path, start, end - start)
    if len(data) != end - start:
        return None  # the blob file is not what the database says: let FileResponse report it
    range_headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{size}"}
    response = web.Response(status=206, body=data, headers=range_headers)
    response[SERVED_FROM] = "warm"
    return response


def _read_span(path: Path, start: int, count: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, count, start)
    finally:
        os.close(fd)


async def _stream_in_flight(
    request: web.Request, found: InFlightBlob, headers: dict[str, str]
) -> web.StreamResponse:
    """Send an ingesting blob as far as it is cleared; cut the connection on a bad verdict.
    A Range (complete for its span, so it must be verified: DESIGN.md rule 1) and, with
    `stream_before_release = false`, every GET waits for the verdict instead."""
    services = services_of(request)
    ingest = services.settings.ingest
    if "Range" in request.headers or not ingest.stream_before_release:
        released = await _wait_for_verdict(found, ingest.first_byte_wait_s, ingest.retry_after_s)
        path = services.store.released_file(released)
        return await _send_released(request, ReleasedBlob(found.target, path, released), headers)
    job, size = found.job, found.target.entry.size
    wanted = (0, size)
    status = 200
    if "Range" in request.headers:
        parsed = _parse_range(request.headers["Range"], size)
        if parsed is None:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        wanted, status = parsed, 206
    start, end = wanted
    await _wait_first_bytes(job, start, ingest.first_byte_wait_s, ingest.retry_after_s)
    try:
        source = _open_source(job.temp, services.store, job)
    except FileNotFoundError:
        # The ingest ended just now and its temp file is gone (published to a remote store, or
        # held): the verdict decides, the answer comes from the store or is the refusal.
        released = await _wait_for_verdict(found, ingest.first_byte_wait_s, ingest.retry_after_s)
        path = services.store.released_file(released)
        return await _send_released(request, ReleasedBlob(found.target, path, released), headers)
    try:
        return await _send_from_temp(request, found, source, (status, start, end), headers)
    finally:
        os.close(source)


async def _send_from_temp(
    request: web.Request,
    found: InFlightBlob,
    source: int,
    span: tuple[int, int, int],
    headers: dict[str, str],
) -> web.StreamResponse:
    """The temp file's bytes from `start` to `end` as far as they are cleared (`status`: 200 or
    206); the connection is cut on a bad verdict."""
    status, start, end = span
    size = found.target.entry.size
    response = web.StreamResponse(status=status, headers=headers)
    response[SERVED_FROM] = "cold"
    response.content_length = end - start
    if status == 206:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    writer = await response.prepare(request)
    try:
        if writer is not None:
            await writer.drain()  # the headers, before the kernel sends the body (as FileResponse)
        with os.fdopen(source, "rb", closefd=False) as fileobj:
            if await _send_as_cleared(request, found, fileobj, (start, end)):
                await response.write_eof()
    except ConnectionResetError:
        logger.info("client went away during %s", found.target.entry.path)
    return response


async def _send_as_cleared(
    request: web.Request,
    found: InFlightBlob,
    fileobj: BinaryIO,
    wanted: tuple[int, int],
) -> bool:
    """Send [start, end) by sendfile as the ingest clears it. False: the connection was cut."""
    job = found.job
    transport = request.transport
    if transport is None:
        return False
    loop = asyncio.get_running_loop()
    position, end = wanted
    while position < end:
        try:
            available = min(job.sendable(), end)
        except HubwardenError as exc:
            logger.warning("cutting %s: %s", found.target.entry.path, exc.message)
            _cut(request)
            return False
        if available <= position:
            await job.wait_change(KEEPALIVE_WAIT_S)
            continue
        count = min(available - position, STREAM_CHUNK_BYTES)
        sent = await loop.sendfile(transport, fileobj, position, count)
        if not sent:
            await job.wait_change(KEEPALIVE_WAIT_S)
            continue
        position += sent
    return True


async def _wait_for_verdict(found: InFlightBlob, wait_s: float, retry_s: int) -> str:
    """The released blob's sha256 once the ingest releases it within `wait_s`; else NotReady
    with a Retry-After sized from the fetch's progress. Raises the ingest's failure (Held...)."""
    job = found.job
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not job.done:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise NotReady(job.spec.entry.path, job.retry_after_s(retry_s))
        await job.wait_change(remaining)
    job.sendable()  # raises the failure, if that is how it ended
    assert job.sha256 is not None
    return job.sha256


async def _wait_first_bytes(job: IngestJob, start: int, wait_s: float, retry_s: int) -> None:
    """Wait briefly for the first sendable byte; past that, tell the client to come back."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        available = job.sendable()  # raises the failure (Held, upstream error) if there is one
        if job.released or available > start:
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise NotReady(job.spec.entry.path, retry_s)
        await job.wait_change(remaining)


def _open_source(temp: Path, store: BlobStore, job: IngestJob) -> int:
    """The temp file being written; if the ingest released it meanwhile, the released blob."""
    try:
        return os.open(temp, os.O_RDONLY)
    except FileNotFoundError:
        if job.sha256 is None:
            raise
        # Renamed meanwhile (rename is atomic): released, or quarantined and about to be cut
        # (then opening fails and the connection is cut). A remote store has no local file:
        # the cut client's retry is served from the store.
        released = store.released_file(job.sha256)
        if released is None:
            raise
        return os.open(released, os.O_RDONLY)


def _cut(request: web.Request) -> None:
    """Close the connection mid-body: the client keeps no complete unverified file, and its
    retry gets the 403 with the message."""
    transport = request.transport
    if transport is not None:
        transport.close()
