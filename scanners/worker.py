"""`python -m scanners.worker [--name NAME] PATH`: one scan in a process with resource limits.

Prints exactly one line, the `ScanReport` as JSON, and exits 0 — also when the scan itself fails
(the report then carries one `SCANNER_CRASHED` error finding). The proxy runs this with a wall-time
limit and treats a missing or garbled line as a failed scan (fail closed).

With `--parent-pid PID` (the server's), the worker dies with its server: on Linux the kernel sends
it SIGKILL when its parent ends (PR_SET_PDEATHSIG); elsewhere a thread watches the parent pid.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path

from scanners.dispatch import scan_file
from scanners.report import Finding, Outcome, ScanReport, Severity

WORKER_VERSION = "1.0"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
EXIT_ORPHANED = 3
WATCH_PARENT_EVERY_S = 0.5


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scanners.worker", description=__doc__)
    parser.add_argument("path", help="the file to scan")
    parser.add_argument("--name", default=None, help="the file's path inside its repo (a hint)")
    parser.add_argument("--max-memory-mb", type=int, default=1024, help="RLIMIT_AS (default 1024)")
    parser.add_argument("--max-cpu-s", type=int, default=60, help="RLIMIT_CPU (default 60)")
    add_parent_argument(parser)
    return parser


def add_parent_argument(parser: argparse.ArgumentParser) -> None:
    """`--parent-pid PID`, for `die_with_parent` (every scan process the server starts has it)."""
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="exit as soon as this process has ended"
    )


def die_with_parent(parent_pid: int | None) -> None:
    """End this process when `parent_pid` (the server that wants the report) ends: a server
    killed with SIGKILL cannot stop its workers itself (issue 10). None: no parent to follow."""
    if parent_pid is None:
        return
    if not _parent_death_signal():
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # the parent ended before the kernel was told to watch it
        os._exit(EXIT_ORPHANED)


def _parent_death_signal() -> bool:
    """Ask Linux for SIGKILL when the parent ends; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_PARENT_EVERY_S)
    os._exit(EXIT_ORPHANED)


def set_limits(max_memory_mb: int, max_cpu_s: int) -> None:
    """Cap this process's address space and CPU time (the kernel enforces them)."""
    memory = max_memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (max_cpu_s, max_cpu_s + 1))


def crashed_report(path: str, exc: BaseException, elapsed_s: float) -> ScanReport:
    """The fail-closed report for a scan that raised (or ran out of memory)."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        size = 0
    finding = Finding(
        "worker",
        "SCANNER_CRASHED",
        Severity.HIGH,
        Outcome.ERROR,
        f"the scan failed ({type(exc).__name__}); the file is held until an admin looks at it",
        {"error": str(exc)[:200]},
    )
    return ScanReport(path, "unknown", size, (finding,), {"worker": WORKER_VERSION}, elapsed_s)


def main(argv: list[str] | None = None) -> int:
    """Run one scan and print its report line; always returns 0 once arguments parse."""
    args = _parser().parse_args(argv)
    die_with_parent(args.parent_pid)
    started = time.perf_counter()
    try:
        set_limits(args.max_memory_mb, args.max_cpu_s)
        report = scan_file(args.path, name=args.name)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        report = crashed_report(args.path, exc, time.perf_counter() - started)
    sys.stdout.write(report.to_json() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
