"""The stream scan pool: files being downloaded are scanned as they arrive in a few long-lived
worker processes (`python -m scanners.stream_worker`), never in the server (issue 13).

**Process model.** `workers` processes take new jobs (one job = one file being ingested); a job
stays on its worker while it needs scanning and shares it with others, taking turns command by
command (each reads at most 32 MiB). Workers start with the app as forks of the app's fork
server (`proxy.forkserver`: a fork, not an interpreter importing every scanner), ask the kernel
for SIGKILL when it goes (PR_SET_PDEATHSIG; it goes with the server) and are killed at shutdown.

**IPC.** The ingest writes the temp file and says how far (`written`); the worker is told "bytes
up to N of file F are written" and reads them from F itself, so file content never crosses the
pipe and a slow scan never slows the download (the ingest does not wait for it). Commands that
arrive while the worker is busy coalesce into one. Once the worker says every byte from now on
is cleared (a clean safetensors or GGUF header, a data format), the job needs no more commands:
the download then runs with no IPC at all, at the speed of the in-process scan it replaced.

**Limits, per job.** Memory: RLIMIT_AS of the worker (`max_memory_mb`). CPU: before each command
the worker's soft RLIMIT_CPU is set to what it used plus what the job has left of `max_cpu_s`
(the kernel kills it with SIGXCPU past that). Wall: the job's commands may take `timeout_s` in
all (the worker is killed past that). A job whose worker hits a limit, crashes or answers
garbage is held: its `finding()` (SCAN_MEMORY_RESOURCE, SCAN_CPU_RESOURCE, SCAN_TIMEOUT or
SCANNER_CRASHED, outcome ERROR) joins the final report (DESIGN.md rule 6). The other jobs of a
dead worker start again from byte 0 on another worker (the temp file has every byte).

**Recycling.** A worker takes `jobs_per_worker` jobs, then is replaced; so is a worker that met a
limit, left a render thread running, grew past half its address space limit, or scanned a file
it alarmed on (a hostile file costs a worker, never the server). A replaced worker takes no new
jobs and exits when its last job ends; its successor starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path

from proxy.forkserver import ForkedProcess, ForkServer
from proxy.stream_scan_job import StreamLimits, StreamScanJob
from scanners.report import JsonValue

logger = logging.getLogger(__name__)

__all__ = ["StreamLimits", "StreamScanJob", "StreamScanPool"]

MAX_REPLY_BYTES = 64 * 1024
DROP_TIMEOUT_S = 10.0
EXIT_WAIT_S = 5.0
CLOSE_RETRY_S = 1.0
RESPAWN_DELAY_S = (1.0, 30.0)  # after a worker failed to start: first and longest wait


class _WorkerLost(Exception):
    """The worker died, timed out or answered garbage while working on `job` (None: on no one's
    file, e.g. while idle or forgetting a job)."""

    def __init__(self, job: StreamScanJob | None, code: str, message: str) -> None:
        super().__init__(message)
        self.job = job
        self.code = code
        self.message = message


class StreamScanPool:
    """The long-lived stream scan workers (see the module docstring). `start` and `close` are
    called by the app's cleanup context."""

    def __init__(self, limits: StreamLimits, scan_dir: Path, forks: ForkServer) -> None:
        self.limits = limits
        self.scan_dir = scan_dir
        self.forks = forks
        self._workers: list[_Worker] = []
        self._next_job = 0
        self._next_worker = 0
        self._closing = False
        self._failed_starts = 0

    async def start(self) -> None:
        """Start the workers (they finish starting in the background)."""
        self._fill()

    def open(self, temp: Path, name: str, size: int) -> StreamScanJob:
        """A stream scan for the file being written to `temp`."""
        self._next_job += 1
        job = StreamScanJob(self._next_job, temp, name, size, self.limits)
        self._assign(job)
        return job

    @property
    def closing(self) -> bool:
        return self._closing

    def pids(self) -> list[int]:
        """The worker processes' ids (tests and diagnostics)."""
        return [w.pid for w in self._workers if w.pid is not None]

    async def close(self) -> None:
        """Kill every worker and wait for them: nothing outlives the server."""
        self._closing = True
        workers = list(self._workers)
        tasks = [w.task for w in workers]
        while pending := [t for t in tasks if not t.done()]:
            # asked again until ended: a cancellation can be lost in a race with the very
            # reply it interrupts, and an idle worker also ends when woken while closing
            for worker in workers:
                worker.task.cancel()
                worker.wake()
            await asyncio.wait(pending, timeout=CLOSE_RETRY_S)
        self._workers.clear()

    # -- workers ----------------------------------------------------------------------------------
    def _fill(self) -> None:
        """Start workers until `workers` of them take new jobs."""
        while not self._closing and len(self._takers()) < self.limits.workers:
            self._next_worker += 1
            delay = 0.0
            if self._failed_starts:
                first, longest = RESPAWN_DELAY_S
                delay = min(longest, first * 2 ** (self._failed_starts - 1))
            self._workers.append(_Worker(self, self._next_worker, delay))

    def _takers(self) -> list[_Worker]:
        return [w for w in self._workers if not w.retiring]

    def _assign(self, job: StreamScanJob) -> None:
        self._fill()
        takers = self._takers()
        if not takers:  # closing: nobody will scan it
            job.fail("SCANNER_CRASHED", "the mirror is stopping")
            return
        min(takers, key=lambda w: (w.busy, len(w.jobs))).take(job)

    def retired(self, worker: _Worker) -> None:
        """`worker` takes no new jobs any more: start its successor."""
        self._fill()

    def started(self, worker: _Worker, ok: bool) -> None:
        self._failed_starts = 0 if ok else self._failed_starts + 1

    def ended(self, worker: _Worker, lost: _WorkerLost | None) -> None:
        """`worker` is gone: fail the job it was lost on, move its other jobs, replace it."""
        with contextlib.suppress(ValueError):
            self._workers.remove(worker)
        if lost is not None and lost.job is not None:
            lost.job.fail(lost.code, lost.message, worker_pid=worker.pid)
        orphans = [j for j in worker.jobs if j.attached and not j.closing]
        worker.jobs.clear()
        if self._closing:
            for job in orphans:
                job.fail("SCANNER_CRASHED", "the mirror stopped during the stream scan")
            return
        for job in orphans:
            job.restart()
            self._assign(job)
        self._fill()


class _Worker:
    """One worker process and the task that drives it."""

    def __init__(self, pool: StreamScanPool, number: int, delay_s: float) -> None:
        self.pool = pool
        self.number = number
        self.jobs: list[StreamScanJob] = []
        self.taken = 0
        self.retiring = False
        self.busy = False
        self.process: ForkedProcess | None = None
        self._wake = asyncio.Event()
        self._turn = 0
        self.task = asyncio.create_task(self._run(delay_s), name=f"stream scan worker {number}")

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def take(self, job: StreamScanJob) -> None:
        job.worker = self
        self.jobs.append(job)
        self.taken += 1
        if self.taken >= self.pool.limits.jobs_per_worker:
            self.retire("it took its last job")
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def retire(self, why: str) -> None:
        if not self.retiring:
            self.retiring = True
            logger.info("replacing stream scan worker %s: %s", self.pid, why)
            self.pool.retired(self)

    async def _run(self, delay_s: float) -> None:
        lost: _WorkerLost | None = None
        clean = False
        try:
            if delay_s:
                await asyncio.sleep(delay_s)
            await self._start()
            await self._serve()
            clean = True
        except _WorkerLost as exc:
            lost = exc
        except Exception:  # task supervisor: its files go to another worker
            logger.exception("stream scan worker %s failed", self.pid)
        finally:
            await self._stop(kill=not clean)
            self.pool.ended(self, lost)

    async def _start(self) -> None:
        limits = self.pool.limits
        try:
            self.process = await self.pool.forks.spawn(
                "stream_worker",
                [
                    "--scan-dir",
                    str(self.pool.scan_dir.resolve()) + os.sep,
                    f"--max-memory-mb={limits.max_memory_mb}",
                ],
                limit=MAX_REPLY_BYTES,
                capture_stderr=False,  # it logs its warnings to the server's stderr
            )
        except OSError as exc:  # no process slot, no file descriptor: try again later
            self.pool.started(self, ok=False)
            raise _WorkerLost(None, "SCANNER_CRASHED", f"no stream scan worker: {exc}") from exc
        try:
            reply = await self._read(None, limits.start_timeout_s)
        except _WorkerLost:
            self.pool.started(self, ok=False)
            raise
        if reply.get("ready") is not True:
            self.pool.started(self, ok=False)
            raise _WorkerLost(None, "SCANNER_CRASHED", "the stream scan worker did not start")
        self.pool.started(self, ok=True)
        self.process.on_exit(self.wake)  # an idle worker that dies is replaced at once

    async def _serve(self) -> None:
        while True:
            assert self.process is not None
            if self.process.returncode is not None:
                raise await self._died(None)
            if self.pool.closing:
                raise asyncio.CancelledError  # killed on the way out, as if cancelled
            job = self._next()
            if job is None:
                if self.retiring and not self.jobs:
                    return  # replaced, and its last job is done
                self._wake.clear()
                if (job := self._next()) is None:
                    if self.process.returncode is None:
                        await self._wake.wait()
                    continue
            self.busy = True
            try:
                await self._step(job)
            finally:
                self.busy = False

    def _next(self) -> StreamScanJob | None:
        """The next job with work, taking turns."""
        self.jobs = [j for j in self.jobs if j.attached]
        count = len(self.jobs)
        for offset in range(count):
            job = self.jobs[(self._turn + offset) % count]
            if job.needs_work:
                self._turn = (self._turn + offset + 1) % count
                return job
        return None

    async def _step(self, job: StreamScanJob) -> None:
        if job.closing:
            await self._call({"op": "drop", "job": job.ident}, None, DROP_TIMEOUT_S)
            job.known = False
            return
        limits = self.pool.limits
        wall_left_s = limits.timeout_s - job.busy_s
        cpu_left_s = limits.max_cpu_s - job.cpu_s
        if wall_left_s <= 0 or cpu_left_s <= 0:
            self._failed_on(job, *_over_budget(limits, wall_left_s <= 0))
            return
        command: dict[str, object] = {
            "op": "scan",
            "job": job.ident,
            "end": job.written_end,
            "cpu_s": cpu_left_s,
        }
        if not job.known:
            command |= {"path": str(job.temp), "name": job.name, "size": job.size}
        started = asyncio.get_running_loop().time()
        try:
            reply = await self._call(command, job, wall_left_s)
        finally:
            job.busy_s += asyncio.get_running_loop().time() - started
        self._judge(job, reply)

    def _judge(self, job: StreamScanJob, reply: dict[str, object]) -> None:
        if reply.get("limit") == "memory":
            self._failed_on(
                job,
                "SCAN_MEMORY_RESOURCE",
                f"the stream scan ran out of its {self.pool.limits.max_memory_mb} MB memory "
                "limit on this file",
            )
        elif reply.get("error") is not None:
            error = str(reply["error"])[:200]
            self._failed_on(
                job, "SCANNER_CRASHED", "the stream scan failed on this file", error=error
            )
        else:
            job.record(reply)
        if reply.get("recycle") is True:
            self.retire("it met a limit")
        elif job.alarmed:
            self.retire("it scanned a file it alarmed on")

    def _failed_on(self, job: StreamScanJob, code: str, message: str, **details: JsonValue) -> None:
        job.fail(code, message, **details)
        self.retire(message)

    async def _call(
        self, command: dict[str, object], job: StreamScanJob | None, timeout_s: float
    ) -> dict[str, object]:
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(command).encode() + b"\n")
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise await self._died(job) from exc
        reply = await self._read(job, timeout_s)
        if reply.get("job") != command["job"]:
            raise _WorkerLost(job, "SCANNER_CRASHED", "the stream scan worker answered garbage")
        return reply

    async def _read(self, job: StreamScanJob | None, timeout_s: float) -> dict[str, object]:
        assert self.process is not None and self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                line = await self.process.stdout.readline()
        except TimeoutError:
            raise _WorkerLost(
                job, "SCAN_TIMEOUT", f"the stream scan took over {timeout_s:g} s on this file"
            ) from None
        except ValueError as exc:  # a line over the limit
            raise _WorkerLost(job, "SCANNER_CRASHED", "the stream scan worker garbled") from exc
        if not line:
            raise await self._died(job)
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise _WorkerLost(job, "SCANNER_CRASHED", "the stream scan worker answered garbage")
        return reply

    async def _died(self, job: StreamScanJob | None) -> _WorkerLost:
        assert self.process is not None
        try:
            async with asyncio.timeout(EXIT_WAIT_S):
                status = await self.process.wait()
        except TimeoutError:
            status = None
        if status == -signal.SIGXCPU:
            limit = self.pool.limits.max_cpu_s
            message = f"the stream scan used over its {limit} CPU seconds on this file"
            return _WorkerLost(job, "SCAN_CPU_RESOURCE", message)
        return _WorkerLost(
            job, "SCANNER_CRASHED", f"the stream scan worker died ({_exit_text(status)})"
        )

    async def _stop(self, *, kill: bool) -> None:
        """End the process: a replaced worker ends when its stdin closes; a lost one, or any at
        shutdown (even cancelled meanwhile), is killed. Waited for either way: no zombie,
        nothing outlives the server."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        try:
            if not kill and process.stdin is not None:
                process.stdin.close()
                async with asyncio.timeout(EXIT_WAIT_S):
                    await asyncio.shield(process.wait())
        except TimeoutError:
            pass
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                # bounded: should the kill be lost, the fork server's end takes the worker
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(EXIT_WAIT_S):
                        await asyncio.shield(process.wait())


def _over_budget(limits: StreamLimits, wall: bool) -> tuple[str, str]:
    if wall:
        return "SCAN_TIMEOUT", f"the stream scan took over {limits.timeout_s:g} s on this file"
    return "SCAN_CPU_RESOURCE", f"the stream scan used over {limits.max_cpu_s} CPU seconds"


def _exit_text(status: int | None) -> str:
    if status is None:
        return "no exit status"
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-status).name}"
        return f"signal {-status}"
    return f"exit status {status}"
