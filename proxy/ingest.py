"""Fetch → verify → scan → verdict, once per blob however many clients ask.

An `IngestJob` is the in-flight life of one blob: bytes stream from upstream into a temp file while
sha256 (and the git blob sha1 for regular files) are computed and a `StreamScan` is fed, in large
batches on a worker thread (per-chunk thread hand-offs halve throughput on 2 cores). Clients that
ask meanwhile read the temp file as it grows, but only as far as `sendable()` allows: what the
stream scan cleared, minus a held-back tail, until the verdict. The blob row in the database
(state `fetching`/`scanning`) is the claim that makes the ingest single-flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from proxy.errors import HubwardenError, IntegrityError, UpstreamUnavailable
from proxy.lifecycle import BlobLifecycle, BlobOrigin, Settlement
from proxy.metadata import TreeEntry
from proxy.scanning import ScannerPool
from proxy.store.blobs import BlobStore
from proxy.store.repository import RepoRecord
from proxy.trust.gate import Gate
from proxy.upstream import Upstream
from scanners.report import ScanReport

logger = logging.getLogger(__name__)

FIRST_BATCH_BYTES = 256 * 1024
SYNC_EVERY_BYTES = 64 * 1024 * 1024


class StreamScanLike(Protocol):
    """What the ingest needs of `scanners.StreamScan`."""

    def feed(self, chunk: bytes) -> None: ...

    @property
    def cleared(self) -> int: ...

    @property
    def alarmed(self) -> bool: ...

    def close(self) -> None: ...


StreamScanFactory = Callable[[str, int], StreamScanLike]
VerdictFor = Callable[["IngestSpec", ScanReport], Awaitable[Settlement]]


@dataclass(frozen=True, slots=True)
class IngestSettings:
    hold_tail_bytes: int
    write_batch_bytes: int
    chunk_bytes: int
    retries: int


@dataclass(frozen=True, slots=True)
class IngestSpec:
    """What to fetch: the file at `entry.path` of `repo` at `commit`."""

    repo: RepoRecord
    commit: str
    entry: TreeEntry
    token: str | None

    @property
    def origin(self) -> BlobOrigin:
        return BlobOrigin(self.repo, self.commit, self.entry)


@dataclass
class _Digests:
    """Hash and sync state advanced on the writer thread only."""

    sha256: hashlib._Hash = field(default_factory=hashlib.sha256)
    git_sha1: hashlib._Hash | None = None
    unsynced: int = 0


class IngestJob:
    """The in-flight state of one blob, shared by the fetch task and the readers."""

    def __init__(self, spec: IngestSpec, temp: Path, scan: StreamScanLike, tail: int) -> None:
        self.spec = spec
        self.temp = temp
        self.scan = scan
        self.size = spec.entry.size
        self.tail = min(tail, self.size)
        self.flushed = 0
        self.released = False
        self.started_s = time.monotonic()
        self.sha256: str | None = None
        self.failure: HubwardenError | None = None
        self._changed = asyncio.Condition()

    @property
    def etag(self) -> str:
        return self.spec.entry.etag

    @property
    def done(self) -> bool:
        return self.released or self.failure is not None

    def sendable(self) -> int:
        """How many bytes from the start may go out now. Raises the failure once there is one."""
        if self.failure is not None:
            raise self.failure
        if self.released:
            return self.size
        if self.scan.alarmed:
            return 0
        return max(0, min(self.flushed, self.scan.cleared, self.size - self.tail))

    def retry_after_s(self, floor_s: int) -> int:
        """Seconds a waiting client should sleep, from the fetch rate so far: about a fifth of
        what remains (the client retries 5 times), at least `floor_s`, at most 60."""
        elapsed = max(time.monotonic() - self.started_s, 0.001)
        rate = self.flushed / elapsed
        remaining_s = (self.size - self.flushed) / rate if rate > 0 else 5.0 * floor_s
        return int(max(floor_s, min(60.0, remaining_s / 5 + 1)))

    async def wait_change(self, timeout_s: float) -> None:
        """Wait until progress or the verdict (or the timeout)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout_s)

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


class Ingestor:
    """Owns every in-flight ingest task; `cleanup` cancels and awaits them."""

    def __init__(
        self,
        lifecycle: BlobLifecycle,
        store: BlobStore,
        upstream: Upstream | None,
        scanner: ScannerPool,
        gate: Gate,
        verdict_for: VerdictFor,
        stream_scan: StreamScanFactory,
        settings: IngestSettings,
    ) -> None:
        self._lifecycle = lifecycle
        self._verdict_for = verdict_for
        self._store = store
        self._upstream = upstream
        self._scanner = scanner
        self._gate = gate
        self._stream_scan = stream_scan
        self._settings = settings
        self._jobs: dict[str, IngestJob] = {}
        self._starting: dict[str, asyncio.Future[IngestJob | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def job(self, etag: str) -> IngestJob | None:
        return self._jobs.get(etag)

    async def start(self, spec: IngestSpec) -> IngestJob | None:
        """Start the ingest of a blob unless one runs; returns the running job (None when another
        replica or a finished ingest holds the claim)."""
        etag = spec.entry.etag
        running = self._jobs.get(etag)
        if running is not None:
            return running
        if self._upstream is None:
            return None
        starting = self._starting.get(etag)
        if starting is not None:  # another request of this process is claiming it right now
            return await asyncio.shield(starting)
        future: asyncio.Future[IngestJob | None] = asyncio.get_running_loop().create_future()
        self._starting[etag] = future
        job: IngestJob | None = None
        try:
            job = await self._claim_and_launch(spec)
        finally:
            future.set_result(job)
            del self._starting[etag]
        return job

    async def _claim_and_launch(self, spec: IngestSpec) -> IngestJob | None:
        etag = spec.entry.etag
        if not await self._lifecycle.claim(spec.origin):
            return self._jobs.get(etag)
        try:
            temp = await asyncio.to_thread(self._store.new_temp)
        except OSError as exc:
            await self._lifecycle.abandon(
                spec.origin, Path(os.devnull), UpstreamUnavailable(str(exc))
            )
            raise
        job = IngestJob(
            spec,
            temp,
            self._stream_scan(spec.entry.path, spec.entry.size),
            self._settings.hold_tail_bytes,
        )
        self._jobs[etag] = job
        task = asyncio.create_task(self._run(job), name=f"ingest {etag[:12]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def cleanup(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, job: IngestJob) -> None:
        spec = job.spec
        try:
            digests = await self._fetch(job)
            sha256 = digests.sha256.hexdigest()
            job.sha256 = sha256  # before any rename: readers find the blob by it
            await self._lifecycle.verified(spec.origin, sha256)
            report = await self._scanner.scan(job.temp, spec.entry.path)
            await self._settle(job, report)
        except IntegrityError as exc:
            job.failure = await self._lifecycle.tampered(spec.origin, job.temp, exc)
        except HubwardenError as exc:
            await self._abandon(job, exc)
        except asyncio.CancelledError:
            await asyncio.shield(self._abandon(job, UpstreamUnavailable("the mirror is stopping")))
            raise
        except Exception as exc:  # task supervisor: log, fail the job closed
            logger.exception("ingest of %s failed", job.etag)
            await self._abandon(job, UpstreamUnavailable(f"ingest failed: {type(exc).__name__}"))
        finally:
            # The final verdict comes from the worker process; the stream scan only cleared bytes.
            await asyncio.to_thread(job.scan.close)
            self._jobs.pop(job.etag, None)
            await job.notify()

    async def _fetch(self, job: IngestJob) -> _Digests:
        """Stream upstream bytes to the temp file, hashing and scanning in batches."""
        assert self._upstream is not None
        entry = job.spec.entry
        digests = _Digests()
        if entry.lfs is None:
            digests.git_sha1 = hashlib.sha1(  # noqa: S324 - the git blob id the protocol fixes
                f"blob {entry.size}\0".encode()
            )
        attempts = 0
        fd = os.open(job.temp, os.O_WRONLY)
        try:
            while True:
                try:
                    await self._fetch_from(job, fd, digests)
                    break
                except UpstreamUnavailable:
                    attempts += 1
                    if attempts > self._settings.retries:
                        raise
                    logger.warning("resuming %s at byte %d", entry.path, job.flushed)
                    await asyncio.sleep(min(attempts, 3))
        finally:
            os.close(fd)
        self._verify(job, digests)
        return digests

    async def _fetch_from(self, job: IngestJob, fd: int, digests: _Digests) -> None:
        assert self._upstream is not None
        spec, entry = job.spec, job.spec.entry
        start = job.flushed
        batch: list[bytes] = []
        batched = 0
        loop = asyncio.get_running_loop()
        last_flush = loop.time()
        async with self._upstream.open_file(
            spec.repo.ref, spec.commit, entry.path, spec.token, start=start
        ) as body:
            if start and body.status != 206:
                raise UpstreamUnavailable("upstream ignored the Range of a resumed download")
            try:
                async for chunk in body.content.iter_chunked(self._settings.chunk_bytes):
                    batch.append(chunk)
                    batched += len(chunk)
                    if job.flushed + batched > entry.size:
                        raise IntegrityError(
                            entry.path, "size", str(entry.size), f"more than {entry.size}"
                        )
                    # Large batches keep throughput; a time bound keeps slow bodies flowing
                    # to readers (they must never wait ~10 s for a byte).
                    now = loop.time()
                    # The first bytes go out early: time to first byte matters (bench/).
                    limit = (
                        FIRST_BATCH_BYTES if job.flushed == 0 else self._settings.write_batch_bytes
                    )
                    if batched >= limit or now - last_flush > 0.5:
                        await self._write(job, fd, digests, batch)
                        batch, batched, last_flush = [], 0, now
            except (TimeoutError, ConnectionError, OSError) as exc:
                await self._write(job, fd, digests, batch)
                raise UpstreamUnavailable(f"upstream body broke off: {exc!r}") from exc
            except Exception as exc:
                if exc.__class__.__module__.startswith("aiohttp"):
                    await self._write(job, fd, digests, batch)
                    raise UpstreamUnavailable(f"upstream body broke off: {exc!r}") from exc
                raise
        await self._write(job, fd, digests, batch)

    async def _write(self, job: IngestJob, fd: int, digests: _Digests, batch: list[bytes]) -> None:
        if not batch:
            return
        data = b"".join(batch)
        await asyncio.to_thread(_write_batch, fd, data, digests, job.scan)
        job.flushed += len(data)
        await job.notify()

    @staticmethod
    def _verify(job: IngestJob, digests: _Digests) -> None:
        entry = job.spec.entry
        if job.flushed != entry.size:
            raise IntegrityError(entry.path, "size", str(entry.size), str(job.flushed))
        if entry.lfs is not None:
            got = digests.sha256.hexdigest()
            if got != entry.lfs.sha256:
                raise IntegrityError(entry.path, "sha256", entry.lfs.sha256, got)
        elif digests.git_sha1 is not None:
            got = digests.git_sha1.hexdigest()
            if got != entry.oid:
                raise IntegrityError(entry.path, "git blob sha1", entry.oid, got)

    async def _settle(self, job: IngestJob, report: ScanReport) -> None:
        spec = job.spec
        verdict = await self._verdict_for(spec, report)
        refusal = await self._lifecycle.settle(spec.origin, job.temp, report, verdict)
        if refusal is not None:
            job.failure = refusal
            return
        await self._gate.after_release(spec.repo, spec.commit, spec.entry, spec.token)
        job.released = True

    async def _abandon(self, job: IngestJob, exc: HubwardenError) -> None:
        """Upstream trouble: nothing is recorded as verified; the next request starts again."""
        job.failure = exc
        await self._lifecycle.abandon(job.spec.origin, job.temp, exc)


def _write_batch(fd: int, data: bytes, digests: _Digests, scan: StreamScanLike) -> None:
    """On a worker thread: write, hash and feed the stream scan one batch."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    digests.sha256.update(data)
    if digests.git_sha1 is not None:
        digests.git_sha1.update(data)
    digests.unsynced += len(data)
    if digests.unsynced >= SYNC_EVERY_BYTES:
        # Sync as we go, so the fsync before the release does not stall on gigabytes.
        os.fdatasync(fd)
        digests.unsynced = 0
    scan.feed(data)
