"""Cold download through Hubwarden's parallel ranged fetch vs a direct one (issue 9, item 4).

    python bench/parallel_bench.py [--file-mib 1024] [--upstream-mb-s 100] [--pairs 1]

The fake upstream (its own process) caps each connection at `--upstream-mb-s`, as a CDN does.
Each pair downloads a file new to both sides with curl: directly from the upstream (one
connection, following the CDN redirect) and through Hubwarden (`python -m proxy serve` with its
defaults: files of 64 MiB and more fetched by 4 concurrent ranges). It prints both times, the
ratio (target: Hubwarden < 0.6x the direct time) and how many ranged requests the upstream saw.
A measurement, never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from _clients import Download, download
from _files import write_safetensors
from _procs import BenchError, Hubwarden, Upstream

REPO_ID = "bench/parallel"
MiB = 1024 * 1024
MB = 1_000_000
TARGET_RATIO = 0.6


def say(message: str) -> None:
    print(message, flush=True)


def checked(what: str, got: Download, size: int) -> Download:
    if got.status != 200 or got.size != size:
        raise BenchError(f"{what}: status {got.status}, {got.size} of {size} bytes")
    return got


async def one_pair(
    server: Hubwarden, upstream: Upstream, name: str, size: int, order: int
) -> tuple[Download, Download, int]:
    """(direct, through Hubwarden, upstream requests for the file by Hubwarden)."""
    direct_url = f"{upstream.hub}/{REPO_ID}/resolve/{upstream.commit}/{name}"
    proxy_url = f"{server.url}/{REPO_ID}/resolve/{upstream.commit}/{name}"
    got: dict[str, Download] = {}
    requests = 0
    # Alternate the order so that neither side always runs on a warmer machine.
    for side in ("direct", "proxy") if order % 2 == 0 else ("proxy", "direct"):
        if side == "direct":
            got[side] = checked("direct", await download(direct_url, follow=True), size)
        else:
            await upstream.reset()
            got[side] = checked("hubwarden", await download(proxy_url, timeout_s=900), size)
            requests = (await upstream.stats(f"/models/*/{name}"))["requests"]
        say(f"    {name} {side}: {got[side].total_s:.2f} s")
    return got["direct"], got["proxy"], requests


async def run(file_mib: int, upstream_mb_s: float, pairs: int) -> dict[str, object]:
    size = file_mib * MiB
    with tempfile.TemporaryDirectory(prefix="hubwarden-parallel-bench-") as tmp:
        root = Path(tmp)
        names = [f"cold-{n + 1}.safetensors" for n in range(pairs)]
        say(f"writing {pairs} file(s) of {file_mib} MiB in {root}...")
        for seed, name in enumerate(names):
            await asyncio.to_thread(write_safetensors, root / name, size, seed)
        files = {name: root / name for name in names}
        upstream = await asyncio.to_thread(Upstream.start, REPO_ID, files, root / "upstream.log")
        try:
            server = await Hubwarden.start(root / "data", upstream.hub, root / "hubwarden.log")
            try:
                await upstream.throttle(upstream_mb_s * MB, "*/cold-*.safetensors")
                results = [
                    await one_pair(server, upstream, name, size, n) for n, name in enumerate(names)
                ]
            finally:
                server.stop()
        finally:
            upstream.stop()
    best_direct = min(d.total_s for d, _, _ in results)
    best_proxy = min(p.total_s for _, p, _ in results)
    ratio = best_proxy / best_direct
    verdict = "meets" if ratio < TARGET_RATIO else "misses"
    say(
        f"cold {file_mib} MiB, upstream {upstream_mb_s:.0f} MB/s per connection: Hubwarden "
        f"{best_proxy:.2f} s / direct {best_direct:.2f} s = {ratio:.3f}x ({verdict} target "
        f"< {TARGET_RATIO}x); CDN requests by Hubwarden per file: {[r for _, _, r in results]}"
    )
    return {
        "file_mib": file_mib,
        "upstream_mb_s": upstream_mb_s,
        "direct_s": [d.total_s for d, _, _ in results],
        "hubwarden_s": [p.total_s for _, p, _ in results],
        "hubwarden_ttfb_s": [p.ttfb_s for _, p, _ in results],
        "ratio": ratio,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--file-mib", type=int, default=1024)
    parser.add_argument("--upstream-mb-s", type=float, default=100.0)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args(argv)
    result = asyncio.run(run(options.file_mib, options.upstream_mb_s, options.pairs))
    if options.json is not None:
        options.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
