"""What the fake Hub saw and how it misbehaves on purpose: request log, faults, throttles, stalls.

Everything here matches request paths **decoded** (``/org/m/resolve/refs/pr/1/x``) with
``fnmatch`` globs, where ``*`` also crosses ``/``. CDN paths end with the repo file path, so a glob
like ``*/model.safetensors`` matches the Hub resolve URL, the resolve-cache URL and the CDN URL.
"""

from __future__ import annotations

import asyncio
import collections
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from aiohttp import web

from tests.fakehub.gitobjects import Content

MAX_LOGGED_REQUESTS = 100_000
CHUNK_BYTES = 1 << 20
THROTTLED_CHUNK_BYTES = 64 * 1024


class Origin(StrEnum):
    HUB = "hub"
    CDN = "cdn"


@dataclass(eq=False)
class RecordedRequest:
    """One request as the fake saw it; ``status`` and ``body_bytes`` are filled when answered."""

    origin: Origin
    method: str
    path: str
    """Decoded path, without the query."""
    query: str
    has_auth: bool
    """Whether an ``Authorization`` header was present (its value is never kept)."""
    range: str | None
    status: int | None = None
    body_bytes: int = 0
    """File bytes sent by resolve-cache or the CDN (0 for every other answer)."""

    def matches(self, glob: str, method: str | None, origin: Origin | None) -> bool:
        if method is not None and self.method != method.upper():
            return False
        return (origin is None or self.origin is origin) and fnmatch.fnmatchcase(self.path, glob)


@dataclass(eq=False)
class Fault:
    """Answer the next ``times`` matching requests with ``status`` instead of the real answer.

    ``hang=True`` makes each of them wait, silent, until ``release()`` (then answer ``status``)
    or until the fake closes: a timeout from the caller's side.
    """

    path_glob: str
    status: int = 500
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    times: int = 1
    method: str | None = None
    origin: Origin | None = None
    hang: bool = False
    hits: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set when a request got this fault (``await fault.reached.wait()`` before releasing)."""
    released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def release(self) -> None:
        self.released.set()


@dataclass(eq=False)
class Throttle:
    """Cap file bodies on matching paths to ``bytes_per_s``, per connection or ``shared``."""

    bytes_per_s: float
    path_glob: str = "*"
    shared: bool = False
    next_free_s: float = 0.0

    def delay_s(self, now_s: float, started_s: float, sent: int, chunk: int) -> float:
        """Seconds to wait before sending ``chunk`` bytes (reserves the slot when shared)."""
        if not self.shared:
            return max(0.0, started_s + (sent + chunk) / self.bytes_per_s - now_s)
        slot = max(now_s, self.next_free_s)
        self.next_free_s = slot + chunk / self.bytes_per_s
        return self.next_free_s - now_s


@dataclass(eq=False)
class Stall:
    """Stop the next ``times`` matching file bodies after ``after_bytes`` bytes.

    ``await stall.reached.wait()`` to know a body is stalled; ``release()`` resumes it,
    ``cut()`` closes the connection (a body cut short). Closing the fake cuts it too.
    """

    path_glob: str
    after_bytes: int = 0
    times: int = 1
    reached: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    is_cut: bool = False

    def release(self) -> None:
        self.released.set()

    def cut(self) -> None:
        self.is_cut = True
        self.released.set()


class Traffic:
    """The request log and the scheduled misbehaviours shared by the Hub and CDN servers."""

    def __init__(self) -> None:
        self.log: collections.deque[RecordedRequest] = collections.deque(maxlen=MAX_LOGGED_REQUESTS)
        self.counts: collections.Counter[tuple[str, Origin, str]] = collections.Counter()
        self.faults: list[Fault] = []
        self.throttles: list[Throttle] = []
        self.stalls: list[Stall] = []
        self.range_ignored: list[str] = []
        """Path globs whose ``Range`` headers are ignored (a whole ``200``, as some servers do)."""
        self.closing = asyncio.Event()

    def record(self, request: web.Request, origin: Origin) -> RecordedRequest:
        recorded = RecordedRequest(
            origin,
            request.method,
            request.path,
            request.query_string,
            "Authorization" in request.headers,
            request.headers.get("Range"),
        )
        self.log.append(recorded)
        self.counts[(recorded.method, origin, recorded.path)] += 1
        return recorded

    def reset(self) -> None:
        self.log.clear()
        self.counts.clear()

    def ignores_range(self, request: web.Request) -> bool:
        recorded = request[RECORD_KEY]
        return any(recorded.matches(glob, None, None) for glob in self.range_ignored)

    def take_fault(self, recorded: RecordedRequest) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and recorded.matches(fault.path_glob, fault.method, fault.origin):
                fault.times -= 1
                fault.hits += 1
                return fault
        return None

    async def answer_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        fault.reached.set()
        if fault.hang and not await self._wait_unless_closing(fault.released):
            return _cut(request)
        body = b"" if request.method == "HEAD" else fault.body
        return web.Response(status=fault.status, headers=dict(fault.headers), body=body)

    async def send_body(
        self, request: web.Request, response: web.StreamResponse, content: Content, span: range
    ) -> web.StreamResponse:
        """Write ``content[span]`` to the prepared ``response``, honouring throttles and stalls."""
        recorded = request[RECORD_KEY]
        stall = self._take_stall(recorded)
        loop = asyncio.get_running_loop()
        started_s, position = loop.time(), span.start
        while position < span.stop:
            # Looked up per chunk: a throttle added or removed mid-body applies at once.
            throttles = [t for t in self.throttles if recorded.matches(t.path_glob, None, None)]
            size = _chunk_size(throttles)
            if stall is not None and position < span.start + stall.after_bytes:
                size = min(size, span.start + stall.after_bytes - position)
            elif stall is not None:
                stall.reached.set()
                if not await self._wait_unless_closing(stall.released) or stall.is_cut:
                    return _cut(request)
                stall = None
                continue
            size = min(size, span.stop - position)
            sent = position - span.start
            delays = [t.delay_s(loop.time(), started_s, sent, size) for t in throttles]
            delay_s = max(delays, default=0.0)
            if delay_s > 0 and not await self._sleep_unless_closing(delay_s):
                return _cut(request)
            chunk = await _read(content, position, size)
            try:
                await response.write(chunk)
            except ConnectionError:
                return response
            position += len(chunk)
            recorded.body_bytes += len(chunk)
        if stall is not None:
            stall.reached.set()
        await response.write_eof()
        return response

    def _take_stall(self, recorded: RecordedRequest) -> Stall | None:
        for stall in self.stalls:
            if stall.times > 0 and recorded.matches(stall.path_glob, None, None):
                stall.times -= 1
                return stall
        return None

    async def _wait_unless_closing(self, event: asyncio.Event) -> bool:
        """Wait for ``event``; False if the fake started closing first."""
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.closing.wait())}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return not self.closing.is_set()

    async def _sleep_unless_closing(self, delay_s: float) -> bool:
        try:
            async with asyncio.timeout(delay_s):  # not wait_for: on 3.11 it can drop a cancel
                await self.closing.wait()
        except TimeoutError:
            return True
        return False


RECORD_KEY = web.RequestKey("fakehub_record", RecordedRequest)


def _chunk_size(throttles: list[Throttle]) -> int:
    if not throttles:
        return CHUNK_BYTES
    slowest = min(t.bytes_per_s for t in throttles)
    return max(1024, min(THROTTLED_CHUNK_BYTES, int(slowest / 20)))


async def _read(content: Content, start: int, size: int) -> bytes:
    if isinstance(content, bytes):
        return content[start : start + size]
    path = content

    def read() -> bytes:
        with path.open("rb") as handle:
            handle.seek(start)
            return handle.read(size)

    return await asyncio.to_thread(read)


def _cut(request: web.Request) -> web.StreamResponse:
    """Close the connection mid-answer, as a crashed server or a dropped link would."""
    if request.transport is not None:
        request.transport.close()
    return web.StreamResponse(status=500)
