"""The streaming scan through the worker pool against the same scan in this process (issue 13).

    python bench/stream_pool_bench.py            # about a minute
    python bench/stream_pool_bench.py --quick    # smaller files

Before issue 13 the proxy fed `StreamScan` in the server process; now a pool of long-lived,
limited worker processes (`proxy.stream_scans.StreamScanPool`, `python -m
scanners.stream_worker`) reads the temp file the ingest writes. For each file this prints:

- in-process: `StreamScan.feed` with 1 MiB chunks, as the server did (MB/s of wall time);
- pool: the file announced to one worker 1 MiB at a time (`written`), as the ingest does while
  it downloads, until the worker has judged every byte (`settled`): MB/s of wall time, IPC,
  the worker's reads and its start-up excluded (the pool is started and warm first);
- the ratio pool / in-process, and the bytes each cleared (what may go out before the verdict).

The upstream is not involved: this measures the scan side of the cold path only. A ratio below
1 means the pool scans slower than the in-process scan did; it slows a download only where the
scan, not the network, is the bottleneck (safetensors and GGUF are cleared by their header, after
which the pool does no work at all).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _files import write_safetensors

from proxy.forkserver import ForkServer
from proxy.stream_scans import StreamLimits, StreamScanPool
from scanners import StreamScan

MiB = 1 << 20
MB = 1_000_000
CHUNK = MiB


def _torch_zip(path: Path, tensors: int, floats: int) -> None:
    torch.save({f"layers.{i}.weight": torch.randn(floats) for i in range(tensors)}, path)


def _pickle(path: Path, arrays: int, floats: int) -> None:
    state = {f"layers.{i}.weight": np.random.rand(floats).astype(np.float32) for i in range(arrays)}
    path.write_bytes(pickle.dumps(state, protocol=4))


def _opaque(path: Path, size: int) -> None:
    block = np.random.default_rng(5).bytes(8 * MiB)
    block = b"\x00" + block[1:]  # a first byte no unpickler accepts: the opaque stream check
    with path.open("wb") as out:
        for _ in range(size // len(block)):
            out.write(block)


def make_files(root: Path, scale: int) -> dict[str, Path]:
    makers: dict[str, tuple[str, Callable[[Path], object]]] = {
        "safetensors": ("model.safetensors", lambda p: write_safetensors(p, 512 * MiB // scale, 1)),
        "torch zip, 400 tensors": (
            "pytorch_model.bin", lambda p: _torch_zip(p, 400, 100_000 // scale)
        ),
        "raw pickle, 2000 arrays": ("model.pkl", lambda p: _pickle(p, 2000, 25_000 // scale)),
        "opaque binary": ("weights.dat", lambda p: _opaque(p, 256 * MiB // scale)),
    }  # fmt: skip
    files = {}
    for label, (name, make) in makers.items():
        path = root / name
        make(path)
        files[label] = path
    return files


def in_process(path: Path) -> tuple[float, int]:
    """Seconds to feed the whole file, and the bytes it cleared."""
    size = path.stat().st_size
    scan = StreamScan(name=path.name, size=size)
    started = time.perf_counter()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            scan.feed(chunk)
    seconds = time.perf_counter() - started
    cleared = scan.cleared
    scan.close()
    return seconds, cleared


async def through_pool(pool: StreamScanPool, path: Path, size: int) -> tuple[float, int]:
    """Seconds from the first `written` until the worker has judged every byte of the `size`
    bytes at `path`, and the bytes it cleared."""
    job = pool.open(path, path.name, size)
    started = time.perf_counter()
    for end in range(CHUNK, size + CHUNK, CHUNK):
        await job.written(min(end, size))
        await asyncio.sleep(0)  # the download's other work: let the driver run
    await job.settled()
    seconds = time.perf_counter() - started
    cleared = job.cleared
    if job.finding() is not None:
        raise RuntimeError(f"{path.name}: the pool failed the scan: {job.finding()}")
    job.close()
    return seconds, cleared


async def run(scale: int) -> None:
    with tempfile.TemporaryDirectory(prefix="hubwarden-stream-pool-") as tmp:
        root = Path(tmp)
        print("writing the files...", flush=True)
        files = make_files(root, scale)
        limits = StreamLimits(
            workers=1, jobs_per_worker=1000, max_memory_mb=2048, max_cpu_s=600, timeout_s=600
        )
        forks = ForkServer(root)
        pool = StreamScanPool(limits, root, forks)
        await pool.start()
        try:
            warm = root / "warm.safetensors"
            write_safetensors(warm, 4 * MiB, 2)
            # the worker is up and has imported the scanners
            await through_pool(pool, warm, 4 * MiB)
            print(
                f"\nStreaming scan, in-process vs worker pool (1 worker, {os.cpu_count()} cores):"
            )
            print(f"  {'file':<26} {'MB':>7} {'in-process':>12} {'pool':>12} {'ratio':>7}  cleared")
            for label, path in files.items():
                size = path.stat().st_size
                local_s, local_cleared = in_process(path)
                pool_s, pool_cleared = await through_pool(pool, path, size)
                same = "same" if local_cleared == pool_cleared else (
                    f"DIFFER: {local_cleared} vs {pool_cleared}"
                )  # fmt: skip
                print(
                    f"  {label:<26} {size / MB:7.1f} {size / MB / local_s:9.0f} MB/s "
                    f"{size / MB / pool_s:7.0f} MB/s {local_s / pool_s:7.2f}  {same}"
                )
        finally:
            await pool.close()
            await forks.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="files 8x smaller")
    args = parser.parse_args()
    asyncio.run(run(8 if args.quick else 1))


if __name__ == "__main__":
    main()
