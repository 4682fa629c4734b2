"""`python -m scanners.stream_worker --scan-dir DIR [--parent-pid PID] [--max-memory-mb N]`: a
long-lived process that runs the proxy's stream scans, so that no byte of a file being
downloaded is parsed in the server process (issue 13).

The server writes each file to a temp file under DIR and says how far it has written; the worker
reads those bytes from the file itself (no file content crosses the pipe, and the ingest's
writes stay the only copy) and feeds them to a `StreamScan`. Several files may be open at once;
commands come one at a time. One JSON command per line on stdin; one JSON reply per line on
the stdout the worker was started with, which is moved off file descriptor 1 first (fd 1 then
points at stderr), so nothing a dependency prints can garble a reply:

    <- {"ready": true, "pid": 1234}                                        once, after start-up
    -> {"op": "scan", "job": 7, "end": 1048576, "cpu_s": 299.0,
        "path": "DIR/...", "name": "model.bin", "size": 5000000}   path/name/size: first time
    <- {"job": 7, "position": 1048576, "cleared": 65536, "alarmed": false, "rest": false,
        "done": false, "limit": null, "error": null, "recycle": false, "cpu_s": 0.01}
    -> {"op": "drop", "job": 7}
    <- {"job": 7, "done": true}

A scan command reads at most `SLICE_BYTES` (`position` says how far it got; the server asks
again), so the files sharing a worker take turns. `rest`: every byte from now on is cleared as
it is written; `done`: the clearance is final and the worker has forgotten the job; `limit`:
"memory" when a MemoryError reached the stream scan (the address space limit); `error`: the
command failed (a missing file, a short read); `recycle`: this process should be replaced (a
limit met, a template render left running, an address space once past half the limit). Before
each scan command the soft RLIMIT_CPU is set to the CPU time used so far plus the job's
`cpu_s`: past it the kernel ends the process with SIGXCPU. RLIMIT_AS caps memory. The end of
stdin ends the worker (exit 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Imported before "ready" rather than on the first header scan: a client waits for that one.
from scanners import gguf, safetensors  # noqa: F401
from scanners.incremental import StreamScan
from scanners.limits import MIB, ScanLimits
from scanners.worker import add_parent_argument, die_with_parent

SLICE_BYTES = 32 * MIB
READ_BYTES = 4 * MIB
SPOOL_MEMORY_BYTES = 8 * MIB  # several files share a worker: spill held bytes to disk early
HIGH_MEMORY_SHARE = 0.5
MAX_COMMAND_BYTES = 64 * 1024

logger = logging.getLogger(__name__)


class CommandError(Exception):
    """A command the worker cannot carry out (bad fields, a file outside the scan directory,
    a file shorter than the server said)."""


@dataclass
class _Job:
    scan: StreamScan
    fd: int
    size: int
    position: int = 0


class StreamWorker:
    """The jobs of one worker process and the commands that drive them."""

    def __init__(self, scan_dir: Path, max_memory_bytes: int, limits: ScanLimits) -> None:
        self._scan_dir = scan_dir.resolve()
        self._max_memory_bytes = max_memory_bytes
        self._limits = limits
        self._jobs: dict[int, _Job] = {}

    def handle(self, command: dict[str, object]) -> dict[str, object]:
        """Carry out one command and return its reply. Raises CommandError."""
        op, ident = command.get("op"), _integer(command, "job")
        if op == "drop":
            self._drop(ident)
            return {"job": ident, "done": True}
        if op != "scan":
            raise CommandError(f"unknown op {op!r}")
        job = self._jobs.get(ident) or self._open(ident, command)
        set_cpu_budget(_number(command, "cpu_s"))
        started = time.process_time()
        self._feed(job, min(_integer(command, "end"), job.position + SLICE_BYTES))
        return self._reply(ident, job, time.process_time() - started)

    def forget(self, ident: object) -> None:
        """Drop a job whose command failed (the server holds its file)."""
        if isinstance(ident, int):
            self._drop(ident)

    def close(self) -> None:
        for ident in list(self._jobs):
            self._drop(ident)

    def _open(self, ident: int, command: dict[str, object]) -> _Job:
        path = Path(str(command.get("path", ""))).resolve()
        if not path.is_relative_to(self._scan_dir):
            raise CommandError("the file is not under the scan directory")
        size = _integer(command, "size")
        name = str(command.get("name", ""))[:4096]
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            scan = StreamScan(name=name, size=size, limits=self._limits, second_opinion=None)
        except BaseException:
            os.close(fd)
            raise
        job = _Job(scan, fd, size)
        self._jobs[ident] = job
        return job

    @staticmethod
    def _feed(job: _Job, end: int) -> None:
        while job.position < end and job.scan.undecided:
            data = os.pread(job.fd, min(READ_BYTES, end - job.position), job.position)
            if not data:
                raise CommandError(f"the file ends at {job.position}, before {end}")
            job.scan.feed(data)
            job.position += len(data)

    def _reply(self, ident: int, job: _Job, cpu_s: float) -> dict[str, object]:
        scan = job.scan
        limit = "memory" if isinstance(scan.failure, MemoryError) else None
        done = not scan.undecided or job.position >= job.size
        reply: dict[str, object] = {
            "job": ident,
            "position": job.position,
            "cleared": scan.cleared,
            "alarmed": scan.alarmed,
            "rest": scan.clears_rest,
            "done": done,
            "limit": limit,
            "error": None,
            "recycle": limit is not None or self.worn(),
            "cpu_s": cpu_s,
        }
        if done:
            self._drop(ident)
        return reply

    def worn(self) -> bool:
        """This process should be replaced: a render thread outlived its scan (it may still
        burn CPU or hold memory), or its address space once grew past half the limit (a
        scanner may have met the limit and turned the MemoryError into a finding)."""
        return threading.active_count() > 1 or (
            peak_address_space_bytes() > HIGH_MEMORY_SHARE * self._max_memory_bytes
        )

    def _drop(self, ident: int) -> None:
        job = self._jobs.pop(ident, None)
        if job is not None:
            job.scan.close()
            os.close(job.fd)


def _integer(command: dict[str, object], key: str) -> int:
    value = command.get(key)
    if type(value) is not int or value < 0:
        raise CommandError(f"{key} must be a non-negative integer")
    return value


def _number(command: dict[str, object], key: str) -> float:
    value = command.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise CommandError(f"{key} must be a positive number")
    return float(value)


def set_cpu_budget(budget_s: float) -> None:
    """Let this process use `budget_s` more CPU seconds: the kernel sends SIGXCPU past them.
    Only the soft limit moves (a process cannot raise its hard limit back)."""
    soft = max(1, math.ceil(time.process_time() + budget_s))
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def limit_memory(max_memory_mb: int) -> None:
    """Cap the address space (the kernel refuses more: Python raises MemoryError) and write
    no core file when a limit kills the process."""
    memory = max_memory_mb * MIB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def peak_address_space_bytes() -> int:
    """The largest this process's address space has been (VmPeak; Linux, else 0): what
    RLIMIT_AS is compared with."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024
    return 0


def private_pipes() -> tuple[BinaryIO, BinaryIO]:
    """The command and reply pipes, moved off fds 0 and 1: fd 0 then reads /dev/null and fd 1
    writes to stderr, so a dependency that prints or reads cannot touch the protocol."""
    commands = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return commands, replies


def serve(worker: StreamWorker, commands: BinaryIO, replies: BinaryIO) -> None:
    """Answer commands until stdin ends."""
    _send(replies, {"ready": True, "pid": os.getpid()})
    while line := commands.readline(MAX_COMMAND_BYTES):
        _send(replies, _answer(worker, line))
    worker.close()


def _answer(worker: StreamWorker, line: bytes) -> dict[str, object]:
    ident: object = None
    try:
        command = json.loads(line)
        if not isinstance(command, dict):
            raise CommandError("a command is a JSON object")
        ident = command.get("job")
        return worker.handle(command)
    except MemoryError:
        worker.forget(ident)
        return _failed(ident, "MemoryError", limit="memory")
    except Exception as exc:  # noqa: BLE001 - worker boundary: the server holds the file
        logger.warning("stream scan command failed: %r", exc)
        worker.forget(ident)
        return _failed(ident, f"{type(exc).__name__}: {str(exc)[:200]}")


def _failed(ident: object, error: str, *, limit: str | None = None) -> dict[str, object]:
    return {"job": ident, "error": error, "limit": limit, "recycle": True, "done": True}


def _send(replies: BinaryIO, reply: dict[str, object]) -> None:
    replies.write(json.dumps(reply).encode() + b"\n")
    replies.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scanners.stream_worker", description=__doc__)
    parser.add_argument("--scan-dir", type=Path, required=True, help="files must be under it")
    parser.add_argument("--max-memory-mb", type=int, default=1024, help="RLIMIT_AS (1024)")
    add_parent_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve stream scan commands until stdin ends; returns 0."""
    args = _parser().parse_args(argv)
    die_with_parent(args.parent_pid)
    logging.basicConfig(
        level=logging.WARNING, format="stream worker %(process)d: %(levelname)s %(message)s"
    )
    commands, replies = private_pipes()
    limit_memory(args.max_memory_mb)
    limits = ScanLimits(stream_memory_bytes=SPOOL_MEMORY_BYTES)
    serve(StreamWorker(args.scan_dir, args.max_memory_mb * MIB, limits), commands, replies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
