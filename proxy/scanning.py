"""Runs `scanners.scan_file` in a separate worker process with CPU, memory and wall-time limits.

A scan parses hostile bytes, so it never runs in the server process: a crash, a limit hit or a
garbled answer becomes a fail-closed finding, never a dead server (DESIGN.md rule 6).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from scanners.report import Finding, Outcome, ScanReport, Severity

logger = logging.getLogger(__name__)

MAX_REPORT_BYTES = 16 * 1024 * 1024


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


class ScannerPool:
    """At most `workers` scans at once, each in a fresh `python -m scanners.worker` process."""

    def __init__(self, limits: ScanLimits) -> None:
        self._limits = limits
        self._slots = asyncio.Semaphore(max(1, limits.workers))

    async def scan(self, path: Path, name: str) -> ScanReport:
        """Scan one file. Never raises for a scanner failure: it becomes an ERROR finding."""
        async with self._slots:
            return await self._scan(path, name)

    async def _scan(self, path: Path, name: str) -> ScanReport:
        size = (await asyncio.to_thread(path.stat)).st_size
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scanners.worker",
            f"--name={name}",  # one item: a name starting with "-" is not an option
            "--max-memory-mb",
            str(self._limits.max_memory_mb),
            "--max-cpu-s",
            str(self._limits.max_cpu_s),
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(
                process.communicate(), timeout=self._limits.timeout_s
            )
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
