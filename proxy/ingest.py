"""Fetch → verify → scan → verdict, once per blob however many clients ask.

An `IngestJob` is the in-flight life of one blob: bytes stream from upstream into a temp file while
sha256 (and the git blob sha1 for regular files) are computed, in large batches on a worker thread
(per-chunk thread hand-offs halve throughput on 2 cores). After each batch the stream scan is told
how far the file is written; it reads and scans those bytes in a worker process
(`proxy.stream_scans`), never here, and the download does not wait for it. Clients that ask
meanwhile read the temp file as it grows, but only as far as `sendable()` allows: what the stream
scan cleared, minus a held-back tail, until the verdict. The blob row in the database (state
`fetching`/`scanning`) is the claim that makes the ingest single-flight. A large file is fetched
by concurrent Range requests instead (`proxy.ranged_fetch`); `flushed` is then the contiguous
prefix, hashed in order, so readers and the stream scan see the same thing either way.

Every ingest ends in a state a person or a retry can act on (issue 10): verified bytes whose scan
or verdict failed are held for review with an ERROR finding; anything before that (upstream
error, disk full, database refusal) abandons the blob, which is fetched again only after a
per-blob backoff (`proxy.backoff`). The job stays the blob's owner until its end is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from proxy.backoff import Backoffs, resume_delay_s
from proxy.errors import HubwardenError, IntegrityError, UpstreamUnavailable
from proxy.lifecycle import BlobLifecycle, BlobOrigin, Settlement, StateNotRecorded
from proxy.metadata import TreeEntry
from proxy.ranged_fetch import (
    RangedFetch,
    RangedLimits,
    RangesIgnored,
    in_thread_to_the_end,
)
from proxy.scanning import Clearance, ScannerPool, StreamScanLike, StreamScans, failed_report
from proxy.store.blob_protocol import BlobStore
from proxy.store.blobs import StoreFull
from proxy.store.models import BlobState
from proxy.store.repository import BlobRecord, RepoRecord
from proxy.trust.gate import Gate
from proxy.upstream import Upstream
from proxy.upstream_body import FileLocation, UpstreamBody
from scanners.report import ScanReport

logger = logging.getLogger(__name__)

FIRST_BATCH_BYTES = 256 * 1024
SYNC_EVERY_BYTES = 64 * 1024 * 1024
HASH_READ_BYTES = 4 * 1024 * 1024


__all__ = ["IngestJob", "IngestSettings", "IngestSpec", "Ingestor", "StreamScanLike"]

VerdictFor = Callable[["IngestSpec", ScanReport], Awaitable[Settlement]]


@dataclass(frozen=True, slots=True)
class IngestSettings:
    hold_tail_bytes: int
    write_batch_bytes: int
    chunk_bytes: int
    retries: int
    free_space_margin_bytes: int = 0
    retry_backoff_s: float = 0.0
    retry_backoff_max_s: float = 0.0
    shutdown_grace_s: float = 0.0
    parallel_threshold_bytes: int = 64 * 1024 * 1024
    parallel_connections: int = 4

    def ranged_limits(self) -> RangedLimits:
        return RangedLimits(
            connections=self.parallel_connections,
            threshold_bytes=self.parallel_threshold_bytes,
            batch_bytes=self.write_batch_bytes,
            chunk_bytes=self.chunk_bytes,
            retries=self.retries,
        )


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

    def __init__(self, spec: IngestSpec, temp: Path, scan: Clearance, tail: int) -> None:
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
        self._changed = asyncio.Event()  # set and replaced at each change: wakes every waiter

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
        """Wait until progress, new clearance or the verdict (or the timeout)."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await changed.wait()

    def changed(self) -> None:
        """Wake every reader waiting in `wait_change` (the stream scan calls it too)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def notify(self) -> None:
        self.changed()


class _StreamedJob(IngestJob):
    """The ingest's side of a job: with its stream scan's controls, not only its clearance."""

    def __init__(self, spec: IngestSpec, temp: Path, stream: StreamScanLike, tail: int) -> None:
        super().__init__(spec, temp, stream, tail)
        self.stream = stream
        stream.watch(self.changed)


class Ingestor:
    """Owns every in-flight ingest task; `drain` lets them finish (within the shutdown grace),
    `cleanup` cancels and awaits the rest."""

    def __init__(
        self,
        lifecycle: BlobLifecycle,
        store: BlobStore,
        upstream: Upstream | None,
        scanner: ScannerPool,
        gate: Gate,
        verdict_for: VerdictFor,
        stream_scans: StreamScans,
        settings: IngestSettings,
    ) -> None:
        self._lifecycle = lifecycle
        self._verdict_for = verdict_for
        self._store = store
        self._upstream = upstream
        self._scanner = scanner
        self._gate = gate
        self._stream_scans = stream_scans
        self._settings = settings
        self._backoffs = Backoffs(settings.retry_backoff_s, settings.retry_backoff_max_s)
        self._jobs: dict[str, _StreamedJob] = {}
        self._starting: dict[str, asyncio.Future[IngestJob | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def job(self, etag: str) -> IngestJob | None:
        return self._jobs.get(etag)

    @property
    def in_flight(self) -> int:
        """Ingests running in this process (the `hubwarden_ingests_in_flight` gauge)."""
        return len(self._jobs)

    async def start(self, spec: IngestSpec) -> IngestJob | None:
        """Start the ingest of a blob unless one runs; returns the running job (None when another
        replica or a finished ingest holds the claim). Raises FetchBackoff (or
        UpstreamRateLimited) while its last fetch failed too recently, StoreFull when the store
        cannot hold it."""
        etag = spec.entry.etag
        running = self._jobs.get(etag)
        if running is not None:
            return running
        if self._upstream is None:
            return None
        starting = self._starting.get(etag)
        if starting is not None:  # another request of this process is claiming it right now
            return await asyncio.shield(starting)
        self._backoffs.check(etag, spec.entry.path)
        future: asyncio.Future[IngestJob | None] = asyncio.get_running_loop().create_future()
        self._starting[etag] = future
        job: IngestJob | None = None
        try:
            await self._check_space(spec)
            job = await self._claim_and_launch(spec)
        finally:
            future.set_result(job)
            del self._starting[etag]
        return job

    async def recover(self, spec: IngestSpec, blob: BlobRecord) -> IngestJob | None:
        """For a blob row left `fetching`/`scanning` with no ingest running here: when its owner
        is gone (killed, or this process lost it), free the row and start again."""
        etag = spec.entry.etag
        if etag in self._jobs or etag in self._starting:
            return self._jobs.get(etag)
        if blob.state not in (BlobState.FETCHING, BlobState.SCANNING):
            return None
        if not await self._lifecycle.take_over_stale(blob):
            return None
        return await self.start(spec)

    async def _check_space(self, spec: IngestSpec) -> None:
        """Refuse before fetching what the store cannot hold, counting what the ingests in
        flight still have to write."""
        free = await asyncio.to_thread(self._store.free_bytes)
        pending = sum(max(0, job.size - job.flushed) for job in self._jobs.values())
        margin = self._settings.free_space_margin_bytes
        if free - pending < spec.entry.size + margin:
            logger.warning(
                "refusing %s (%d bytes): %d bytes free, %d still to write, margin %d",
                spec.entry.path,
                spec.entry.size,
                free,
                pending,
                margin,
            )
            raise StoreFull(spec.entry.path, spec.entry.size, max(0, free - pending), margin)

    async def _claim_and_launch(self, spec: IngestSpec) -> IngestJob | None:
        etag = spec.entry.etag
        if not await self._lifecycle.claim(spec.origin):
            return self._jobs.get(etag)
        try:
            temp = await asyncio.to_thread(self._store.new_temp)
        except OSError as exc:
            await self._lifecycle.unclaim(spec.origin)
            raise StoreFull(
                spec.entry.path, spec.entry.size, 0, 0, reason=exc.strerror or str(exc)
            ) from exc
        stream = self._stream_scans.open(temp, spec.entry.path, spec.entry.size)
        job = _StreamedJob(spec, temp, stream, self._settings.hold_tail_bytes)
        self._jobs[etag] = job
        task = asyncio.create_task(self._run(job), name=f"ingest {etag[:12]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def drain(self) -> None:
        """At shutdown, once no new request comes in (the app's on_shutdown): let the ingests
        in flight finish within `shutdown_grace_s`, their clients still being served, then
        abandon the rest cleanly (absent, temp file gone), which cuts their clients."""
        grace_s = self._settings.shutdown_grace_s
        if self._tasks and grace_s > 0:
            logger.info("letting %d ingests finish (at most %g s)", len(self._tasks), grace_s)
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        await self.cleanup()

    async def cleanup(self) -> None:
        """Cancel the ingests still running (each abandons its blob) and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job: _StreamedJob) -> None:
        task, lost = asyncio.current_task(), asyncio.Event()

        def lease_lost() -> None:  # another replica took the blob over: stop fetching it
            lost.set()
            if task is not None:
                task.cancel()

        async with self._lifecycle.keep_lease(job.etag, lease_lost):
            try:
                await self._ingest(job)
            except asyncio.CancelledError:
                why = "another replica took this file over" if lost.is_set() else "stopping"
                ended = UpstreamUnavailable(f"the mirror is {why}; retry in a moment", status=503)
                await asyncio.shield(self._give_up(job, ended, patient=False))
                raise
            finally:
                # The final verdict comes from the full scan; the stream scan only cleared bytes.
                job.stream.close()
                self._jobs.pop(job.etag, None)
                await job.notify()

    async def _ingest(self, job: _StreamedJob) -> None:
        """Fetch and verify, then scan and settle; every failure ends the blob's ingest in a
        recorded state (task supervisor: nothing escapes but cancellation)."""
        spec = job.spec
        try:
            digests = await self._fetch(job)
        except IntegrityError as exc:
            await self._tampered(job, exc)
            return
        except HubwardenError as exc:
            await self._give_up(job, exc)
            return
        except Exception as exc:  # task supervisor: log, abandon (fetched again after a backoff)
            logger.exception("fetching %s failed", job.etag)
            await self._give_up(job, UpstreamUnavailable(f"fetching failed ({type(exc).__name__})"))
            return
        job.sha256 = digests.sha256.hexdigest()  # before any rename: readers find the blob by it
        try:
            await self._lifecycle.verified(spec.origin, job.sha256)
        except StateNotRecorded as exc:
            await self._give_up(job, exc)
            return
        try:
            report = await self._scanner.scan(job.temp, spec.entry.path)
            await job.stream.settled()  # it scans alongside: usually done long before
            await self._settle(job, job.stream.judged(report))
        except StateNotRecorded as exc:
            await self._give_up(job, exc)
        except Exception as exc:  # task supervisor: verified bytes whose scan or verdict failed
            logger.exception("scanning %s failed", job.etag)
            await self._hold_failed(job, exc)
        else:
            self._backoffs.succeeded(job.etag)

    async def _fetch(self, job: _StreamedJob) -> _Digests:
        """Stream upstream bytes to the temp file, hashing and scanning in batches."""
        assert self._upstream is not None
        entry = job.spec.entry
        digests = _Digests()
        if entry.lfs is None:
            digests.git_sha1 = hashlib.sha1(  # noqa: S324 - the git blob id the protocol fixes
                f"blob {entry.size}\0".encode()
            )
        fd = os.open(job.temp, os.O_RDWR)  # read too: a ranged fetch hashes what it wrote
        try:
            if not self._settings.ranged_limits().applies_to(entry.size):
                await self._fetch_whole(job, fd, digests)
            elif not await self._fetch_ranged(job, fd, digests):
                logger.warning("upstream ignores ranges of %s: one plain GET", entry.path)
                await self._fetch_whole(job, fd, digests)
        finally:
            os.close(fd)
        self._verify(job, digests)
        return digests

    async def _fetch_whole(self, job: _StreamedJob, fd: int, digests: _Digests) -> None:
        """One GET, resumed by a Range from the last byte written when it breaks off."""
        attempts = 0
        while True:
            try:
                await self._fetch_from(job, fd, digests)
                return
            except StoreFull:
                raise
            except UpstreamUnavailable:
                attempts += 1
                if attempts > self._settings.retries:
                    raise
                logger.warning("resuming %s at byte %d", job.spec.entry.path, job.flushed)
                await asyncio.sleep(resume_delay_s(attempts))

    async def _fetch_ranged(self, job: _StreamedJob, fd: int, digests: _Digests) -> bool:
        """Concurrent Range requests written in place (proxy.ranged_fetch); the contiguous
        prefix is hashed in order and only then handed to readers and the stream scan. False
        when the upstream ignores ranges before anything was written (fetch it whole)."""
        upstream, spec = self._upstream, job.spec
        assert upstream is not None

        def open_span(
            start: int, end: int, location: FileLocation | None
        ) -> AbstractAsyncContextManager[UpstreamBody]:
            return upstream.open_file(
                spec.repo.ref, spec.commit, spec.entry.path, spec.token,
                start=start, end=end, location=location,
            )  # fmt: skip

        buffer = bytearray(HASH_READ_BYTES)  # reused: no allocation per read (peak RSS)

        async def advance(prefix: int) -> None:
            await in_thread_to_the_end(_hash_written, fd, (job.flushed, prefix), digests, buffer)
            job.flushed = prefix
            await job.stream.written(prefix)
            job.changed()

        fetch = RangedFetch(
            open_span, fd, job.size, spec.entry.path, self._settings.ranged_limits()
        )
        try:
            await fetch.run(advance)
        except RangesIgnored:
            if fetch.untouched and job.flushed == 0:
                return False
            raise
        except OSError as exc:  # ENOSPC, EIO: the store, not the upstream, failed
            free = await asyncio.to_thread(self._store.free_bytes)
            reason = exc.strerror or str(exc)
            raise StoreFull(spec.entry.path, job.size, free, 0, reason=reason) from exc
        return True

    async def _fetch_from(self, job: _StreamedJob, fd: int, digests: _Digests) -> None:
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
                async for chunk in body.chunks(self._settings.chunk_bytes):
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
            except UpstreamUnavailable:  # keep what arrived: the retry resumes after it
                await self._write(job, fd, digests, batch)
                raise
        await self._write(job, fd, digests, batch)

    async def _write(
        self, job: _StreamedJob, fd: int, digests: _Digests, batch: list[bytes]
    ) -> None:
        if not batch:
            return
        data = b"".join(batch)
        try:
            await asyncio.to_thread(_write_batch, fd, data, digests)
        except OSError as exc:  # ENOSPC, EIO: the store, not the upstream, failed
            free = await asyncio.to_thread(self._store.free_bytes)
            reason = exc.strerror or str(exc)
            raise StoreFull(job.spec.entry.path, job.size, free, 0, reason=reason) from exc
        job.flushed += len(data)
        await job.stream.written(job.flushed)
        job.changed()

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
        job.released = True
        try:
            await self._gate.after_release(spec.repo, spec.commit, spec.entry, spec.token)
        except (HubwardenError, SQLAlchemyError) as exc:  # serving pins it later (Delivery)
            logger.warning("pinning %s after its release failed: %s", spec.entry.path, exc)

    async def _hold_failed(self, job: IngestJob, exc: Exception) -> None:
        """Verified bytes whose scan or verdict crashed: held for review with an ERROR finding,
        once (DESIGN.md rule 6), never fetched again in a loop."""
        spec = job.spec
        elapsed_s = time.monotonic() - job.started_s
        message = f"the scan failed ({type(exc).__name__}); the file is held until an admin looks"
        report = failed_report(job.temp, job.size, "SCANNER_CRASHED", message, elapsed_s)
        settlement = Settlement(BlobState.QUARANTINED, f"scan failed: {type(exc).__name__}")
        try:
            job.failure = await self._lifecycle.settle(spec.origin, job.temp, report, settlement)
        except (HubwardenError, SQLAlchemyError, OSError) as error:
            logger.error("holding %s failed too: %s", job.etag, error)
            await self._give_up(job, StateNotRecorded(job.etag, "the hold", str(error)))

    async def _tampered(self, job: IngestJob, exc: IntegrityError) -> None:
        try:
            job.failure = await self._lifecycle.tampered(job.spec.origin, job.temp, exc)
        except (StateNotRecorded, SQLAlchemyError, OSError) as error:
            # Not recorded: abandoned instead; the next fetch finds the same lie and tries again.
            logger.error("recording %s as tampered failed: %s", job.etag, error)
            await self._give_up(job, exc)

    async def _give_up(self, job: IngestJob, exc: HubwardenError, *, patient: bool = True) -> None:
        """Abandon the blob (→ absent) and start its backoff. Readers see `exc` at once; the
        job stays the blob's owner until the database has recorded the end (patiently retried
        unless stopping), so no row is left `fetching` without a live owner."""
        job.failure = exc
        await job.notify()
        try:
            await self._lifecycle.abandon(job.spec.origin, job.temp, exc, patient=patient)
        except StateNotRecorded:  # stopping: the next start's forget_unfinished removes the row
            return
        wait_s = self._backoffs.failed(job.etag, exc)
        if wait_s:
            logger.info("blob %s is fetched again in %.0f s at the earliest", job.etag, wait_s)


def _hash_written(fd: int, span: tuple[int, int], digests: _Digests, buffer: bytearray) -> None:
    """On a worker thread: hash bytes [start, end) of the file, already written, in order."""
    position, end = span
    view = memoryview(buffer)
    while position < end:
        got = os.preadv(fd, [view[: min(len(view), end - position)]], position)
        if got <= 0:
            raise OSError(f"the temp file ends at {position}, before {end}")
        digests.sha256.update(view[:got])
        if digests.git_sha1 is not None:
            digests.git_sha1.update(view[:got])
        position += got
        digests.unsynced += got
    if digests.unsynced >= SYNC_EVERY_BYTES:
        os.fdatasync(fd)  # as _write_batch: the fsync before the release must not stall
        digests.unsynced = 0


def _write_batch(fd: int, data: bytes, digests: _Digests) -> None:
    """On a worker thread: write and hash one batch."""
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
