"""The stream scan of one file, as the ingest sees it and as the pool's worker driver updates
it (`proxy.stream_scans` runs it), with the limits every job gets."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from scanners.report import Finding, JsonValue, Outcome, ScanReport, Severity

logger = logging.getLogger(__name__)


class ScanHost(Protocol):
    """The worker a job is on, as far as the job needs it."""

    @property
    def pid(self) -> int | None: ...

    def wake(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The pool's size and each job's limits (`[scan]` settings)."""

    workers: int
    jobs_per_worker: int
    max_memory_mb: int
    max_cpu_s: int
    timeout_s: float
    start_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if min(self.workers, self.jobs_per_worker, self.max_memory_mb, self.max_cpu_s) <= 0:
            raise ValueError("StreamLimits values must be positive")
        if self.timeout_s <= 0 or self.start_timeout_s <= 0:
            raise ValueError("StreamLimits timeouts must be positive")


class StreamScanJob:
    """One file's stream scan, as the ingest sees it: `written` says how far the temp file is
    written; `cleared` and `alarmed` follow the worker's answers; `finding` holds the file when
    a worker failed on it."""

    def __init__(self, ident: int, temp: Path, name: str, size: int, limits: StreamLimits) -> None:
        self.ident = ident
        self.temp = temp
        self.name = name
        self.size = size
        self.limits = limits
        self.written_end = 0  # bytes [0, written_end) are in the temp file
        self.scanned = 0  # the worker has read up to here (0 again on a new worker)
        self.known = False  # the current worker has the job open
        self.closing = False
        self.busy_s = 0.0
        self.cpu_s = 0.0
        self.worker: ScanHost | None = None
        self._cleared = 0
        self._alarmed = False
        self._clears_rest = False
        self._final = False
        self._failure: Finding | None = None
        self._settled = asyncio.Event()
        self._on_change: Callable[[], None] | None = None

    # -- what the ingest reads and calls -------------------------------------------------------
    @property
    def cleared(self) -> int:
        """Bytes from the start that may go out before the verdict (never decreases)."""
        if self._clears_rest:
            return max(self._cleared, self.written_end)
        return self._cleared

    @property
    def alarmed(self) -> bool:
        """The scan saw something bad, or failed: nothing more goes out."""
        return self._alarmed or self._failure is not None

    @property
    def worker_pid(self) -> int | None:
        """The process scanning this file (None before one is started, or once it is gone)."""
        return None if self.worker is None else self.worker.pid

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` whenever `cleared` or `alarmed` may have changed."""
        self._on_change = on_change

    async def written(self, end: int) -> None:
        """Bytes [0, end) of the temp file are written (and visible to other processes)."""
        self.written_end = end
        if self._clears_rest:
            self._changed()
        elif self.needs_work and self.worker is not None:
            self.worker.wake()

    async def settled(self) -> None:
        """Wait until every byte written is judged (or the job failed); a scan that does not
        keep up within `timeout_s` fails with SCAN_TIMEOUT (held)."""
        try:
            async with asyncio.timeout(self.limits.timeout_s):
                await self._settled.wait()
        except TimeoutError:
            self.fail(
                "SCAN_TIMEOUT",
                f"the stream scan did not catch up with the download within "
                f"{self.limits.timeout_s:g} s",
            )

    def finding(self) -> Finding | None:
        """The ERROR finding that holds the file, if a worker failed on it."""
        return self._failure

    def judged(self, report: ScanReport) -> ScanReport:
        """The final report with the stream scan's failure added, if it failed."""
        if self._failure is None:
            return report
        return dataclasses.replace(report, findings=(*report.findings, self._failure))

    def close(self) -> None:
        """The ingest is over: the worker may forget the job."""
        self.closing = True
        self._settled.set()
        if self.worker is not None:
            self.worker.wake()

    # -- what the worker driver updates ----------------------------------------------------------
    @property
    def needs_work(self) -> bool:
        if self.closing:
            return self.known
        if self._final or self._failure is not None:
            return False
        return self.written_end > self.scanned

    @property
    def attached(self) -> bool:
        """Still on its worker's list: work to do, or open in the worker."""
        return self.known or not (self.closing or self._final or self._failure is not None)

    def record(self, reply: dict[str, object]) -> None:
        """Take a scan command's reply."""
        self.known = True
        self.scanned = reply_count(reply, "position")
        self._cleared = max(self._cleared, reply_count(reply, "cleared"))
        self._alarmed = self._alarmed or reply.get("alarmed") is True
        self._clears_rest = self._clears_rest or reply.get("rest") is True
        cpu = reply.get("cpu_s")
        self.cpu_s += float(cpu) if isinstance(cpu, int | float) else 0.0
        if reply.get("done") is True:
            self.known = False
            self._final = True
        if self._final or self.scanned >= self.size or self.alarmed:
            self._settled.set()
        self._changed()

    def restart(self) -> None:
        """Its worker is gone: scan again from byte 0 on another (what was cleared stays)."""
        self.known = False
        self.scanned = 0
        self.worker = None

    def fail(self, code: str, message: str, **details: JsonValue) -> None:
        """Hold the file: the stream scan could not finish on it."""
        if self._failure is None:
            logger.error("stream scan of %s failed: %s", self.name[:200], message)
            self._failure = Finding(
                "stream",
                code,
                Severity.HIGH,
                Outcome.ERROR,
                f"{message}; the file is held until an admin looks at it",
                details,
            )
        self.known = False
        self._settled.set()
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


def reply_count(reply: dict[str, object], key: str) -> int:
    value = reply.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
