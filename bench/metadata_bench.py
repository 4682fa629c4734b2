"""Metadata requests per second through Hubwarden against the fake upstream's own (issue 9, item 6).

    python bench/metadata_bench.py [--seconds S] [--connections N] [--json FILE]

Starts the fake upstream Hub (its own process) and Hubwarden (`python -m proxy serve`, defaults:
metadata cached for 30 s), then, for each route, drives the same number of aiohttp clients for the
same time at the upstream directly and at Hubwarden, and prints requests per second and the
ratio (target: Hubwarden >= 0.5 of the upstream's own; olah reaches 688 req/s). Routes:
`/api/models/{repo}/revision/main` (a branch lookup) and `/api/models/{repo}` (repo info).

The clients are Python (no wrk here), so on two cores they cost both servers alike: read the
ratio, not the absolute figures. A measurement, never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from _procs import Hubwarden, Upstream

REPO_ID = "bench/metadata"
TARGET_RATIO = 0.5
ROUTES = {
    "branch lookup": f"/api/models/{REPO_ID}/revision/main",
    "repo info": f"/api/models/{REPO_ID}",
}


@dataclass(frozen=True, slots=True)
class Rate:
    requests_per_s: float
    bad_answers: int


async def request_rate(url: str, connections: int, seconds: float) -> Rate:
    """GETs of `url` by `connections` clients in a loop for `seconds`; answers not 200 counted."""
    count = bad = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal count, bad
        while time.monotonic() < deadline:
            async with session.get(url) as response:
                await response.read()
                count += 1
                bad += response.status != 200

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    return Rate(count / (time.monotonic() - started), bad)


async def run(seconds: float, connections: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="hubwarden-metadata-bench-") as tmp:
        root = Path(tmp)
        (root / "config.json").write_bytes(b'{"model_type": "bench"}')
        files = {"config.json": root / "config.json"}
        upstream = await asyncio.to_thread(Upstream.start, REPO_ID, files, root / "upstream.log")
        try:
            server = await Hubwarden.start(root / "data", upstream.hub, root / "hubwarden.log")
            try:
                for name, route in ROUTES.items():
                    await request_rate(f"{server.url}{route}", 1, 0.5)  # records the repo
                    direct = await request_rate(f"{upstream.hub}{route}", connections, seconds)
                    ours = await request_rate(f"{server.url}{route}", connections, seconds)
                    results[name] = report(name, direct, ours)
            finally:
                server.stop()
        finally:
            upstream.stop()
    return results


def report(name: str, direct: Rate, ours: Rate) -> dict[str, float]:
    ratio = ours.requests_per_s / direct.requests_per_s if direct.requests_per_s else 0.0
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(
        f"{name:14} hubwarden {ours.requests_per_s:8.0f} req/s, upstream "
        f"{direct.requests_per_s:8.0f} req/s, ratio {ratio:.2f} ({verdict} target "
        f">= {TARGET_RATIO}); non-200 answers: {ours.bad_answers} / {direct.bad_answers}"
    )
    return {
        "hubwarden_req_s": ours.requests_per_s,
        "upstream_req_s": direct.requests_per_s,
        "ratio": ratio,
        "bad_answers": float(ours.bad_answers + direct.bad_answers),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args(argv)
    results = asyncio.run(run(options.seconds, options.connections))
    if options.json is not None:
        options.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["bad_answers"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
