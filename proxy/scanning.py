"""Where the proxy's scans run: never in the server process, since they parse hostile bytes.

- The **stream scan** (what may go out before the verdict, as the bytes arrive) runs in a
  long-lived pool of limited worker processes, `proxy.stream_scans.StreamScanPool`: the ingest
  says how far the temp file is written, a worker reads and scans those bytes itself. A worker
  that hits a limit or crashes costs that worker and holds that file, never the server.
- The **full scan** (the verdict, after the last byte) runs `scanners.scan_file` in a fresh
  `scanners.worker` process per file (`ScannerPool`), with CPU, memory and wall-time limits:
  in the server a fork of its fork server (`proxy.forkserver`, a fork instead of a new
  interpreter importing every scanner), in one-off commands a new `python -m scanners.worker`.
  A crash, a limit hit or a garbled answer becomes a fail-closed finding (DESIGN.md rule 6).

Every worker dies with the server: each asks the kernel for SIGKILL when its parent goes
(`scanners.worker.die_with_parent`; a fork's parent is the fork server, which is told the
server's pid); `kill_leftover_workers` ends any a killed server left anyway.
`InProcessStreamScans` runs a stream scan in the server itself: it exists for fault-injection
tests (`create_app(stream_scan=...)`) and is never the default.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from proxy.forkserver import FORK_SERVER_MODULE, ForkedProcess, ForkFailed, ForkServer
from scanners.report import Finding, Outcome, ScanReport, Severity

logger = logging.getLogger(__name__)

MAX_REPORT_BYTES = 16 * 1024 * 1024
WORKER_MODULE = "scanners.worker"
STREAM_WORKER_MODULE = "scanners.stream_worker"
PROC = Path("/proc")
READ_BYTES = 1024 * 1024


class Clearance(Protocol):
    """How far a file being ingested may go out before its verdict."""

    @property
    def cleared(self) -> int: ...

    @property
    def alarmed(self) -> bool: ...


class StreamScanLike(Clearance, Protocol):
    """One file's stream scan, as the ingest drives it (`proxy.stream_scans.StreamScanJob`)."""

    def watch(self, on_change: Callable[[], None]) -> None: ...

    async def written(self, end: int) -> None: ...

    async def settled(self) -> None: ...

    def judged(self, report: ScanReport) -> ScanReport: ...

    def close(self) -> None: ...


class StreamScans(Protocol):
    """Where stream scans run (`proxy.stream_scans.StreamScanPool`)."""

    def open(self, temp: Path, name: str, size: int) -> StreamScanLike: ...


class FeedScan(Protocol):
    """What `InProcessStreamScans` needs of a stream scan (`scanners.StreamScan`, a fake)."""

    def feed(self, chunk: bytes) -> None: ...

    @property
    def cleared(self) -> int: ...

    @property
    def alarmed(self) -> bool: ...

    def close(self) -> None: ...


FeedScanFactory = Callable[[str, int], FeedScan]


class InProcessStreamScans:
    """Stream scans run in the server process, reading the temp file as it is written. For
    fault-injection tests only: the server's default is the worker pool (issue 13)."""

    def __init__(self, make: FeedScanFactory) -> None:
        self._make = make

    def open(self, temp: Path, name: str, size: int) -> StreamScanLike:
        return GuardedStreamScan(lambda: self._make(name, size), temp)


class GuardedStreamScan:
    """An in-process stream scan whose crash is a finding, not a failed ingest (issue 10: a
    4-byte file made format detection raise, and every request refetched it). After a failure
    it clears nothing more and reads as alarmed; `judged` then holds the file (fail closed)."""

    def __init__(self, make: Callable[[], FeedScan], temp: Path) -> None:
        self.error: str | None = None
        self._temp = temp
        self._fed = 0
        self._scan: FeedScan | None = None
        self._on_change: Callable[[], None] | None = None
        try:
            self._scan = make()
        except Exception as exc:  # noqa: BLE001 - scanner boundary: a fail-closed finding
            self._failed("starting", exc)

    def _failed(self, when: str, exc: Exception) -> None:
        if self.error is None:
            logger.error("stream scan failed while %s", when, exc_info=exc)
            self.error = f"{type(exc).__name__} while {when}"

    def watch(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change

    async def written(self, end: int) -> None:
        if self.error is None and self._scan is not None and end > self._fed:
            await asyncio.to_thread(self._feed_to, end)
        if self._on_change is not None:
            self._on_change()

    def _feed_to(self, end: int) -> None:
        assert self._scan is not None
        with self._temp.open("rb") as file:
            file.seek(self._fed)
            while self._fed < end:
                chunk = file.read(min(READ_BYTES, end - self._fed))
                if not chunk:
                    return
                self._fed += len(chunk)
                try:
                    self._scan.feed(chunk)
                except Exception as exc:  # noqa: BLE001 - scanner boundary
                    self._failed("reading the bytes", exc)
                    return

    async def settled(self) -> None:
        return

    @property
    def cleared(self) -> int:
        if self.error is not None or self._scan is None:
            return 0
        try:
            return self._scan.cleared
        except Exception as exc:  # noqa: BLE001 - scanner boundary
            self._failed("clearing bytes", exc)
            return 0

    @property
    def alarmed(self) -> bool:
        if self.error is not None or self._scan is None:
            return True
        try:
            return self._scan.alarmed
        except Exception as exc:  # noqa: BLE001 - scanner boundary
            self._failed("judging bytes", exc)
            return True

    def close(self) -> None:
        if self._scan is None:
            return
        try:
            self._scan.close()
        except Exception as exc:  # noqa: BLE001 - scanner boundary; closing judges nothing
            logger.warning("stream scan failed to close: %r", exc)

    def finding(self) -> Finding | None:
        """The ERROR finding that holds the file, if the stream scan failed."""
        if self.error is None:
            return None
        return Finding(
            scanner="stream",
            code="SCANNER_CRASHED",
            severity=Severity.HIGH,
            outcome=Outcome.ERROR,
            message=f"the stream scan failed ({self.error}); the file is held until an admin "
            "looks at it",
        )

    def judged(self, report: ScanReport) -> ScanReport:
        """The worker's report with the stream scan's failure added, if it failed."""
        finding = self.finding()
        if finding is None:
            return report
        return dataclasses.replace(report, findings=(*report.findings, finding))


@dataclass(frozen=True, slots=True)
class ScanLimits:
    timeout_s: float
    max_memory_mb: int
    max_cpu_s: int
    workers: int


def failed_report(path: Path, size: int, code: str, message: str, elapsed_s: float) -> ScanReport:
    """A report that holds the file: the scan itself failed."""
    finding = Finding(
        scanner="worker",
        code=code,
        severity=Severity.HIGH,
        outcome=Outcome.ERROR,
        message=message,
    )
    return ScanReport(
        path=str(path),
        file_format="unknown",
        size=size,
        findings=(finding,),
        scanners={"worker": "1"},
        elapsed_s=elapsed_s,
    )


# Told of each finished full scan, with its wall time (the `hubwarden_scan*` metrics).
ScanObserver = Callable[[ScanReport, float], None]


class ScannerPool:
    """At most `workers` scans at once, each in a fresh `python -m scanners.worker` process."""

    def __init__(
        self,
        limits: ScanLimits,
        on_scanned: ScanObserver | None = None,
        forks: ForkServer | None = None,
    ) -> None:
        self._limits = limits
        self._slots = asyncio.Semaphore(max(1, limits.workers))
        self._on_scanned = on_scanned
        self._forks = forks

    async def scan(self, path: Path, name: str) -> ScanReport:
        """Scan one file. Never raises for a scanner failure: it becomes an ERROR finding."""
        async with self._slots:
            started = time.monotonic()
            report = await self._scan(path, name)
        if self._on_scanned is not None:
            self._on_scanned(report, time.monotonic() - started)
        return report

    async def _scan(self, path: Path, name: str) -> ScanReport:
        size = (await asyncio.to_thread(path.stat)).st_size
        started = time.monotonic()
        args = [
            f"--name={name}",  # one item: a name starting with "-" is not an option
            "--max-memory-mb",
            str(self._limits.max_memory_mb),
            "--max-cpu-s",
            str(self._limits.max_cpu_s),
            str(path),
        ]
        process: asyncio.subprocess.Process | ForkedProcess
        if self._forks is None:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                WORKER_MODULE,
                f"--parent-pid={os.getpid()}",  # the worker dies with this process
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        else:
            try:
                process = await self._forks.spawn("worker", args)
            except ForkFailed as exc:
                message = f"no scan process could be started: {exc}"
                return failed_report(path, size, "SCANNER_CRASHED", message, 0.0)
        try:
            async with asyncio.timeout(self._limits.timeout_s):
                stdout, stderr = await process.communicate()
        except asyncio.CancelledError:
            process.kill()
            await asyncio.shield(process.communicate())
            raise
        except TimeoutError:
            process.kill()
            await process.communicate()
            return failed_report(
                path,
                size,
                "SCAN_TIMEOUT",
                f"the scan did not finish within {self._limits.timeout_s:g} s",
                time.monotonic() - started,
            )
        elapsed = time.monotonic() - started
        if process.returncode != 0 or len(stdout) > MAX_REPORT_BYTES:
            logger.error(
                "scanner worker for %s exited %s: %s",
                name,
                process.returncode,
                stderr[-2000:].decode(errors="replace"),
            )
            return failed_report(
                path,
                size,
                "SCANNER_CRASHED",
                f"the scanner process failed (exit status {process.returncode})",
                elapsed,
            )
        try:
            return ScanReport.from_dict(json.loads(stdout.strip().splitlines()[-1]))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            logger.error("scanner worker for %s gave an unreadable report: %s", name, exc)
            return failed_report(
                path,
                size,
                "SCANNER_BAD_REPORT",
                "the scanner process gave no readable report",
                elapsed,
            )


def kill_leftover_workers(scan_dir: Path) -> int:
    """Kill the scan workers a killed server left running on files under `scan_dir` (nobody
    waits for their reports, and their temp files are about to go). Linux only (/proc);
    returns how many were killed."""
    killed = 0
    for pid in leftover_workers(scan_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed += 1
    if killed:
        logger.warning("killed %d scan workers a previous run left behind", killed)
    return killed


def leftover_workers(scan_dir: Path) -> list[int]:
    """Pids of scan workers (`python -m scanners.worker … FILE`, FILE under `scan_dir`, or
    `python -m scanners.{stream_worker,forkserver} --scan-dir DIR/`, DIR `scan_dir`, and the
    fork server's children, which share its command line) whose server is gone: neither their
    parent nor their parent's parent is the `--parent-pid` they were started for (or, without
    one, they were handed to init)."""
    if not PROC.is_dir():
        return []
    root = str(scan_dir.resolve()) + os.sep
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = [
                a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0")
            ]
            status = (entry / "status").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        ours = any(m in args for m in (WORKER_MODULE, STREAM_WORKER_MODULE, FORK_SERVER_MODULE))
        if not ours or not any(a.startswith(root) for a in args):
            continue
        if "\nState:\tZ" in status:
            continue  # already dead, waiting to be reaped
        intended, actual = _intended_parent(args), parent_pid_in(status)
        if intended is None:
            if actual == 1:
                found.append(int(entry.name))
        elif intended not in (actual, _parent_of(actual)):  # a fork server's child: its parent's
            found.append(int(entry.name))
    return found


def _parent_of(pid: int) -> int | None:
    try:
        return parent_pid_in((PROC / str(pid) / "status").read_text())
    except OSError:
        return None


def parent_pid_in(status: str) -> int:
    """The PPid of a /proc/PID/status text (1 when it has none)."""
    for line in status.splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return 1


def _intended_parent(args: list[str]) -> int | None:
    for arg in args:
        value = arg.removeprefix("--parent-pid=")
        if value != arg and value.isdigit():
            return int(value)
    return None
