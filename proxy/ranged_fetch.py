"""One large file fetched with several concurrent Range requests (issue 9, item 4).

An upstream that caps each connection (a CDN does) makes one stream the bottleneck of a cold
download. Above a threshold, and always past the client's 50 GB plain-HTTP cap, the file is cut
into `connections` spans fetched side by side from the resolved (CDN) URL and written in place
(`pwrite` at their offsets into the temp file). The caller hashes and hands out only the
contiguous prefix (`prefix`), so hashing stays in order and a client streaming the file during
the fetch still gets its bytes in order. A span that breaks off is fetched again from where it
stopped, after the usual resume delay (`proxy.backoff`); nothing already written is asked twice.

Nothing here hashes, judges or knows the blob's state: `proxy.ingest` does, through `advance`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from proxy.backoff import resume_delay_s
from proxy.errors import IntegrityError, UpstreamUnavailable, shown
from proxy.upstream_body import FileLocation, UpstreamBody

logger = logging.getLogger(__name__)

# huggingface_hub's constants.MAX_HTTP_DOWNLOAD_SIZE (hub-protocol.md §1.2): decimal.
PLAIN_HTTP_CAP_BYTES = 50 * 1000 * 1000 * 1000
MIN_BATCH_BYTES = 1024 * 1024
FIRST_BATCH_BYTES = 256 * 1024
IOV_MAX = 1024  # POSIX minimum of the buffers one pwritev takes (Linux: 1024)
FLUSH_EVERY_S = 0.5  # a slow span still reaches the disk (and the readers) this often

OpenSpan = Callable[[int, int, FileLocation | None], AbstractAsyncContextManager[UpstreamBody]]
"""Open the bytes [start, end) of the file, at a known location or through the resolve URL."""


class RangesIgnored(UpstreamUnavailable):
    """The upstream answered a Range request with the whole file (`200`): it does not serve
    ranges, so the file is fetched with one plain GET instead. Never retried by range."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"upstream ignores Range requests for {shown(path)}")


@dataclass(frozen=True, slots=True)
class RangedLimits:
    connections: int
    threshold_bytes: int
    batch_bytes: int
    chunk_bytes: int
    retries: int

    def applies_to(self, size: int) -> bool:
        """Whether a file of `size` bytes is fetched by ranges."""
        return size > PLAIN_HTTP_CAP_BYTES or (size >= self.threshold_bytes and size > 0)


@dataclass(slots=True)
class Span:
    """Bytes [start, end) of the file; `written` of them, from `start`, are on disk."""

    start: int
    end: int
    written: int = 0

    @property
    def next_byte(self) -> int:
        return self.start + self.written

    @property
    def done(self) -> bool:
        return self.next_byte >= self.end


def split_spans(size: int, count: int) -> list[Span]:
    """`count` contiguous spans covering [0, size), the first ones one byte longer."""
    count = max(1, min(count, size))
    share, extra = divmod(size, count)
    spans, start = [], 0
    for index in range(count):
        end = start + share + (1 if index < extra else 0)
        spans.append(Span(start, end))
        start = end
    return spans


def contiguous_prefix(spans: Sequence[Span]) -> int:
    """How many bytes from 0 are written without a gap."""
    for span in spans:
        if not span.done:
            return span.next_byte
    return spans[-1].end if spans else 0


class RangedFetch:
    """Fetch [0, size) by spans into `fd`; `advance(prefix)` is awaited (one call at a time, in
    order) each time the contiguous prefix grows, and once more at the end."""

    def __init__(
        self,
        open_span: OpenSpan,
        fd: int,
        size: int,
        path: str,
        limits: RangedLimits,
    ) -> None:
        self._open_span = open_span
        self._fd = fd
        self._size = size
        self._path = path
        self._limits = limits
        self.spans = split_spans(size, limits.connections)
        self._location: FileLocation | None = None
        self._located = asyncio.Event()
        self._progress = asyncio.Event()

    @property
    def prefix(self) -> int:
        return contiguous_prefix(self.spans)

    @property
    def untouched(self) -> bool:
        """Whether no byte was written yet (the file may still be fetched another way)."""
        return all(span.written == 0 for span in self.spans)

    async def run(self, advance: Callable[[int], Awaitable[None]]) -> None:
        """Fetch every span; raises the first failure (the others are cancelled): Upstream*
        errors after `retries` resumptions of one span, IntegrityError when a span holds more
        bytes than asked, OSError when the disk refuses a write."""
        tasks = [asyncio.create_task(self._fetch_span(index)) for index in range(len(self.spans))]
        tasks.append(asyncio.create_task(self._follow_prefix(advance)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the first failure
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow_prefix(self, advance: Callable[[int], Awaitable[None]]) -> None:
        """Hand the growing prefix to `advance` in order, apart from the spans' tasks, so that
        hashing one span's bytes never stalls another span's socket."""
        handed = 0
        while handed < self._size:
            await self._progress.wait()
            self._progress.clear()
            prefix = self.prefix
            if prefix > handed:
                await advance(prefix)
                handed = prefix

    async def _fetch_span(self, index: int) -> None:
        span, attempts = self.spans[index], 0
        if index > 0:
            # The first span follows the redirect; the others go straight where it led, so the
            # resolve URL is asked once and each span is one ranged request (bounded wait: a
            # first span failing for good cancels this task).
            await self._located.wait()
        while not span.done:
            location = self._location if attempts == 0 else None  # a retry re-resolves: the
            try:  # signed CDN URL may have expired meanwhile
                await self._stream_span(span, location)
            except RangesIgnored:
                raise
            except UpstreamUnavailable as exc:
                attempts += 1
                if attempts > self._limits.retries:
                    raise
                delay_s = resume_delay_s(attempts)
                logger.warning(
                    "range %d-%d of %s broke off at %d (%s); resuming in %.0f s",
                    span.start,
                    span.end - 1,
                    shown(self._path),
                    span.next_byte,
                    exc.message,
                    delay_s,
                )
                await asyncio.sleep(delay_s)

    async def _stream_span(self, span: Span, location: FileLocation | None) -> None:
        async with self._open_span(span.next_byte, span.end, location) as body:
            self._check_answer(span, body)
            self._location = body.location
            self._located.set()
            batch: list[bytes] = []
            try:
                await self._copy(span, body, batch)
            except UpstreamUnavailable:  # keep what arrived: the retry resumes after it
                await self._write(span, batch)
                raise
            await self._write(span, batch)
        if not span.done:
            raise UpstreamUnavailable(f"upstream range of {shown(self._path)} ended early")

    async def _copy(self, span: Span, body: UpstreamBody, batch: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        batch_bytes = max(MIN_BATCH_BYTES, self._limits.batch_bytes // max(1, len(self.spans)))
        batched, last_flush = 0, loop.time()
        async for chunk in body.chunks(self._limits.chunk_bytes):
            batch.append(chunk)
            batched += len(chunk)
            if span.next_byte + batched > span.end:
                raise IntegrityError(
                    self._path, "size", str(self._size), f"more bytes in range {span.start}-"
                )
            now = loop.time()
            # The file's first bytes go out early: time to first byte matters (bench/).
            limit = FIRST_BATCH_BYTES if span.next_byte == 0 else batch_bytes
            if batched >= limit or now - last_flush > FLUSH_EVERY_S:
                await self._write(span, batch)
                batched, last_flush = 0, now

    def _check_answer(self, span: Span, body: UpstreamBody) -> None:
        length = span.end - span.next_byte
        if body.status == 200:
            raise RangesIgnored(self._path)
        if body.total_size is not None and body.total_size != self._size:
            # What a whole GET finds by counting bytes: the file upstream is not the one its
            # metadata advertises (tampering, DESIGN.md rule 3).
            raise IntegrityError(self._path, "size", str(self._size), str(body.total_size))
        if body.status != 206 or body.first_byte != span.next_byte:
            raise UpstreamUnavailable(
                f"upstream ignored the Range of {shown(self._path)} (answered {body.status})"
            )
        if body.content_length is not None and body.content_length != length:
            raise UpstreamUnavailable(
                f"upstream answered {body.content_length} bytes for a range of {length}"
            )

    async def _write(self, span: Span, batch: list[bytes]) -> None:
        """Write the batch at the span's next byte (emptying it); OSError is the store's."""
        if not batch:
            return
        chunks, size = list(batch), sum(len(chunk) for chunk in batch)
        batch.clear()
        await in_thread_to_the_end(_pwrite_all, self._fd, chunks, span.next_byte)
        span.written += size
        self._progress.set()


async def in_thread_to_the_end(func: Callable[..., None], *args: object) -> None:
    """`func(*args)` on a worker thread; when cancelled, still wait for the thread to finish,
    so that the caller never closes an fd a pending write still uses (a reused fd number would
    take the bytes into another file)."""
    future = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(OSError):
            await future
        raise


def _pwrite_all(fd: int, chunks: list[bytes], offset: int) -> None:
    """Write the chunks at `offset` with pwritev: no joined copy of the batch (peak RSS)."""
    pending = [memoryview(chunk) for chunk in chunks if chunk]
    while pending:
        written = os.pwritev(fd, pending[:IOV_MAX], offset)
        offset += written
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending.pop(0)
        if pending and written:
            pending[0] = pending[0][written:]
