"""`StreamScanPool`: stream scans in long-lived limited worker processes (issue 13). Real
workers, real files written with safetensors, torch, gguf and zipfile; the clearance they give
is the in-process `StreamScan`'s, and a hostile file costs a worker, never the caller."""

from __future__ import annotations

import asyncio
import functools
import io
import os
import pickle
import signal
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save

from proxy.forkserver import ForkServer
from proxy.stream_scans import StreamLimits, StreamScanJob, StreamScanPool
from scanners import StreamScan
from tests.processes import STREAM_WORKER, scan_processes
from tests.scanners.corpus_headers import CHATML, make_gguf
from tests.scanners.corpus_resource import torch_zip_storage_bomb

pytestmark = pytest.mark.timeout(90)

MiB = 1024 * 1024
EVIL_PICKLE = b"\x80\x02cos\nsystem\n(S'id'\ntR."  # written, scanned, never loaded
# str.replace builds 3e9 characters before any sandbox hook sees the result
ALLOCATES = '{{ ("a" * 60000) | replace("a", "b" * 50000) }}'
# runs until the render's own 2 s bound
LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
SETTLE_S = 30.0

PoolFactory = Callable[..., Awaitable[StreamScanPool]]


@pytest.fixture
def scan_dir(tmp_path: Path) -> Path:
    path = tmp_path / "tmp"
    path.mkdir()
    return path


@pytest.fixture
async def make_pool(scan_dir: Path) -> AsyncIterator[PoolFactory]:
    pools: list[StreamScanPool] = []

    async def make(**overrides: object) -> StreamScanPool:
        values: dict[str, object] = {
            "workers": 1,
            "jobs_per_worker": 100,
            "max_memory_mb": 1024,
            "max_cpu_s": 60,
            "timeout_s": 60.0,
        }
        values.update(overrides)
        forks = ForkServer(scan_dir)
        pool = StreamScanPool(StreamLimits(**values), scan_dir, forks)  # type: ignore[arg-type]
        pools.append(pool)
        await pool.start()
        await until(lambda: len(pool.pids()) == pool.limits.workers)
        return pool

    try:
        yield make
    finally:
        for pool in pools:
            await pool.close()
            await pool.forks.close()


async def until(condition: Callable[[], bool], timeout_s: float = SETTLE_S) -> None:
    """Poll outside state (worker processes, the pool's answers) until `condition` holds."""
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def streamed(
    pool: StreamScanPool, path: Path, name: str, batch_bytes: int = 256 * 1024
) -> StreamScanJob:
    """The file at `path` told to the pool as written batch by batch, as the ingest does."""
    size = path.stat().st_size
    job = pool.open(path, name, size)
    for end in [*range(batch_bytes, size, batch_bytes), size]:
        await job.written(end)
    await job.settled()
    return job


def in_process(path: Path, name: str) -> tuple[int, bool]:
    data = path.read_bytes()
    scan = StreamScan(name=name, size=len(data), second_opinion=None)
    scan.feed(data)
    scan.close()
    return scan.cleared, scan.alarmed


def _safetensors(path: Path) -> Path:
    path.write_bytes(save({"w": np.arange(300_000, dtype=np.float32)}))
    return path


def _torch(path: Path) -> Path:
    torch.save({"w": torch.arange(1000, dtype=torch.float32)}, path)
    return path


def _pickle(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"ids": list(range(200_000))}, protocol=4))
    return path


def _evil(path: Path) -> Path:
    path.write_bytes(EVIL_PICKLE)
    return path


def _gguf(path: Path) -> Path:
    return make_gguf(path, templates={"": CHATML})


def _bomb(path: Path) -> Path:
    path.write_bytes(torch_zip_storage_bomb())
    return path


def _inflating_member(path: Path, megabytes: int) -> Path:
    """A zip whose one member inflates to `megabytes` of incompressible-ish data (within the
    ratio limit): the stream scan inflates it to scan it."""
    rng = np.random.default_rng(0)
    member = rng.integers(0, 16, size=megabytes * MiB, dtype=np.uint8).tobytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("payload.pkl", member)
    path.write_bytes(buffer.getvalue())
    return path


def _hostile_gguf(path: Path, template: str, copies: int = 1) -> Path:
    names = ["", *(f"extra{i}" for i in range(1, copies))]
    return make_gguf(path, templates=dict.fromkeys(names, template))


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("model.safetensors", _safetensors),
        ("pytorch_model.bin", _torch),
        ("state.pkl", _pickle),
        ("evil.pkl", _evil),
        ("model.gguf", _gguf),
        ("bomb.pt", _bomb),
    ],
)
async def test_stream_scan_pool_clearance_is_the_in_process_clearance(
    make_pool: PoolFactory, scan_dir: Path, name: str, build: Callable[[Path], Path]
) -> None:
    path = build(scan_dir / name)
    pool = await make_pool()
    job = await streamed(pool, path, name)
    assert (job.cleared, job.alarmed, job.finding()) == (*in_process(path, name), None)


async def test_stream_scan_pool_clean_header_clears_later_bytes_without_asking_the_worker(
    make_pool: PoolFactory, scan_dir: Path
) -> None:
    path = _safetensors(scan_dir / "model.safetensors")
    pool = await make_pool()
    job = pool.open(path, "model.safetensors", path.stat().st_size)
    await job.written(64 * 1024)
    await until(lambda: job.cleared == 64 * 1024)
    await job.written(path.stat().st_size)
    assert job.cleared == path.stat().st_size  # at once: no command, no round trip


async def test_stream_scan_pool_worker_is_replaced_after_its_last_job(
    make_pool: PoolFactory, scan_dir: Path
) -> None:
    path = _pickle(scan_dir / "state.pkl")
    pool = await make_pool(jobs_per_worker=2)
    jobs = [await streamed(pool, path, "state.pkl") for _ in range(3)]
    first, second, third = (job.worker_pid for job in jobs)
    assert first == second != third
    await until(lambda: pool.pids() == [third])  # the first worker ended once its jobs did


async def test_stream_scan_pool_template_allocating_without_bound_costs_a_worker(
    make_pool: PoolFactory, scan_dir: Path
) -> None:
    pool = await make_pool(max_memory_mb=512)
    (before,) = pool.pids()
    job = await streamed(pool, _hostile_gguf(scan_dir / "m.gguf", ALLOCATES), "m.gguf")
    assert (job.alarmed, job.cleared) == (True, 0)
    await until(lambda: pool.pids() not in ([], [before]))


async def test_stream_scan_pool_memory_limit_holds_the_file_with_a_resource_finding(
    make_pool: PoolFactory, scan_dir: Path
) -> None:
    pool = await make_pool(max_memory_mb=64)  # a worker starts in ~27 MB of address space
    path = _inflating_member(scan_dir / "big.zip", 48)  # the scan inflates it in memory
    job = await streamed(pool, path, "big.zip")
    finding = job.finding()
    assert finding is not None and finding.code == "SCAN_MEMORY_RESOURCE"
    assert job.alarmed


async def test_stream_scan_pool_wall_limit_holds_the_file_and_replaces_the_worker(
    make_pool: PoolFactory, scan_dir: Path
) -> None:
    pool = await make_pool(timeout_s=0.5)
    (before,) = pool.pids()
    job = await streamed(pool, _hostile_gguf(scan_dir / "m.gguf", LOOPS), "m.gguf")
    finding = job.finding()
    assert finding is not None and (finding.code, finding.scanner) == ("SCAN_TIMEOUT", "stream")
    await until(lambda: pool.pids() not in ([], [before]))


async def test_stream_scan_pool_cpu_limit_holds_the_file(
    make_pool: PoolFactory, scan_dir: Path
) -> None:
    pool = await make_pool(max_cpu_s=1)
    path = _hostile_gguf(scan_dir / "m.gguf", LOOPS, copies=4)  # ~8 CPU seconds of renders
    job = await streamed(pool, path, "m.gguf")
    finding = job.finding()
    assert finding is not None and finding.code == "SCAN_CPU_RESOURCE"


async def test_stream_scan_pool_worker_killed_mid_scan_holds_the_file(
    make_pool: PoolFactory, scan_dir: Path
) -> None:
    pool = await make_pool()
    (victim,) = pool.pids()
    path = _hostile_gguf(scan_dir / "m.gguf", LOOPS)
    job = pool.open(path, "m.gguf", path.stat().st_size)
    await job.written(path.stat().st_size)
    await asyncio.sleep(0.5)  # the render runs for 2 s
    os.kill(victim, signal.SIGKILL)
    await job.settled()
    finding = job.finding()
    assert finding is not None and finding.code == "SCANNER_CRASHED"
    assert "SIGKILL" in finding.message


async def test_stream_scan_pool_recovers_after_a_killed_worker(
    make_pool: PoolFactory, scan_dir: Path
) -> None:
    pool = await make_pool()
    (victim,) = pool.pids()
    os.kill(victim, signal.SIGKILL)
    path = _safetensors(scan_dir / "model.safetensors")
    await until(lambda: pool.pids() not in ([], [victim]))
    job = await streamed(pool, path, "model.safetensors")
    assert (job.cleared, job.alarmed, job.finding()) == (path.stat().st_size, False, None)


async def test_stream_scan_pool_files_sharing_a_lost_worker_are_scanned_again(
    make_pool: PoolFactory, scan_dir: Path
) -> None:
    pool = await make_pool(timeout_s=1.0)
    benign = _pickle(scan_dir / "state.pkl")
    size = benign.stat().st_size
    sharing = pool.open(benign, "state.pkl", size)
    await sharing.written(size // 2)
    await until(lambda: sharing.cleared > 0)
    hostile = await streamed(pool, _hostile_gguf(scan_dir / "m.gguf", LOOPS), "m.gguf")
    assert hostile.finding() is not None
    await sharing.written(size)
    await sharing.settled()
    assert (sharing.cleared, sharing.alarmed, sharing.finding()) == (
        *in_process(benign, "state.pkl"),
        None,
    )


async def test_stream_scan_pool_files_share_a_worker_in_turns(
    make_pool: PoolFactory, scan_dir: Path
) -> None:
    pool = await make_pool()
    paths = [_pickle(scan_dir / f"s{i}.pkl") for i in range(3)]
    jobs = await asyncio.gather(*(streamed(pool, p, p.name, 16 * 1024) for p in paths))
    assert [(j.cleared, j.alarmed) for j in jobs] == [in_process(p, p.name) for p in paths]


async def test_stream_scan_pool_close_leaves_no_worker_process(
    make_pool: PoolFactory, scan_dir: Path
) -> None:
    pool = await make_pool(workers=2)
    pids = pool.pids()
    await pool.close()
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
    assert stream_worker_children() == []


def has_workers(pool: StreamScanPool, count: int) -> bool:
    return len(pool.pids()) == count


def stream_worker_children() -> list[int]:
    """Stream scan workers forked for this process (zombies included)."""
    return sorted(scan_processes(STREAM_WORKER, zombies=True))


async def test_stream_scan_pool_closes_while_its_workers_say_ready(scan_dir: Path) -> None:
    """A close that lands as a worker's "ready" reply arrives still ends it. On Python 3.11,
    `asyncio.wait_for` returned the reply and dropped the cancellation in that race, and the
    pool's close then waited for ever on an idle worker (seen in CI, reproduced under load)."""
    forks = ForkServer(scan_dir)
    try:
        for attempt in range(12):
            limits = StreamLimits(
                workers=2, jobs_per_worker=100, max_memory_mb=1024, max_cpu_s=60, timeout_s=60.0
            )
            pool = StreamScanPool(limits, scan_dir, forks)
            await pool.start()
            await until(functools.partial(has_workers, pool, 2))  # spawned; "ready" on its way
            await asyncio.sleep(0.002 * (attempt % 4))
            async with asyncio.timeout(15):
                await pool.close()
            await until(lambda: stream_worker_children() == [])
    finally:
        await forks.close()
