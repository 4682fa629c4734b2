"""Warm small-file latency under connection pressure (issue 10, item 3).

    python bench/pressure_bench.py [--connections 500] [--seconds 15] [--json FILE]

Starts the fake upstream Hub (its own process) holding a `config.json`, and Hubwarden
(`python -m proxy serve`, its own process, the connection limits raised so that every bench
connection is admitted from the one loopback address). After one cold fetch releases the file,
N client connections (one aiohttp client each, in this process) send requests back to back for
the given time, each picking at random between

- `GET /{repo}/resolve/{commit}/config.json`: the warm small-file answer, and
- `GET /healthz`: the same server's floor (no routing to a repo, no checks, no file),

so both kinds see the same load at the same moments. It prints the p50/p99 of each, and the ratio
of the p99s (DESIGN.md wants the small file within 3x of /healthz). Also printed: the same for
`GET /{repo}/resolve/main/config.json` with its 307 followed (what a client that asks by branch
waits), requests that failed or timed out, and the server's CPU seconds. This is a measurement,
never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from _procs import Hubwarden, Upstream, _spawn, cpu_s, free_port

REPO_ID = "bench/pressure"
SMALL_FILE = "config.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 3.0
REQUEST_TIMEOUT_S = 30.0
SERVER_LIMITS = {  # every bench connection comes from 127.0.0.1: admit them all
    "HUBWARDEN_MAX_CONNECTIONS": "4096",
    "HUBWARDEN_MAX_CONNECTIONS_PER_CLIENT": "4096",
    "HUBWARDEN_LOG_LEVEL": "WARNING",  # no access line per request, as a busy site would set
}


@dataclass
class Samples:
    latencies_s: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def line(self, name: str) -> str:
        failed = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items())) or "none"
        return (
            f"  {name:<28} n={len(self.latencies_s):>6}  p50={self.quantile(0.50) * 1000:7.1f} ms"
            f"  p99={self.quantile(0.99) * 1000:7.1f} ms  failed: {failed}"
        )


async def start_hubwarden(root: Path, upstream: str) -> Hubwarden:
    """Hubwarden as `_procs.Hubwarden.start` runs it, with SERVER_LIMITS in its environment."""
    port = free_port()
    command = [
        sys.executable, "-m", "proxy", "serve",
        "--data-dir", str(root / "data"), "--upstream", upstream,
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBWARDEN_", "HF_"))}
    env.update(SERVER_LIMITS, PYTHONPATH=str(REPO_ROOT))
    log = root / "hubwarden.log"
    process = await asyncio.to_thread(_spawn, command, log, env)
    server = Hubwarden(process, f"http://127.0.0.1:{port}", root / "data", log)
    try:
        await server._wait_healthy(120.0)
    except BaseException:
        server.stop()
        raise
    return server


async def warm_up(url: str) -> None:
    """Fetch until the file is released (the first GET may stream or answer 429)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.get(url) as response:
                await response.read()
                if response.status == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} was never served")


async def pressure(
    urls: dict[str, str], connections: int, seconds: float, seed: int
) -> dict[str, Samples]:
    samples = {name: Samples() for name in urls}
    names = list(urls)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    start = asyncio.Event()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(number: int) -> None:
            rng = random.Random(seed + number)
            await start.wait()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                name = rng.choice(names)
                began = time.monotonic()
                try:
                    async with session.get(urls[name]) as response:
                        await response.read()
                        if response.status != 200:
                            samples[name].fail(f"status {response.status}")
                            continue
                except TimeoutError:
                    samples[name].fail("timeout")
                    continue
                except aiohttp.ClientError as exc:
                    samples[name].fail(type(exc).__name__)
                    continue
                samples[name].latencies_s.append(time.monotonic() - began)

        tasks = [asyncio.create_task(client(n)) for n in range(connections)]
        start.set()
        await asyncio.gather(*tasks)
    return samples


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="hubwarden-pressure-") as temp:
        root = Path(temp)
        small = root / SMALL_FILE
        small.write_text(json.dumps({"model_type": "bench", "hidden_size": 64}, indent=2))
        upstream = Upstream.start(REPO_ID, {SMALL_FILE: small}, root / "upstream.log")
        try:
            server = await start_hubwarden(root, upstream.hub)
            try:
                by_commit = f"{server.url}/{REPO_ID}/resolve/{upstream.commit}/{SMALL_FILE}"
                by_branch = f"{server.url}/{REPO_ID}/resolve/main/{SMALL_FILE}"
                await warm_up(by_commit)
                urls = {"config.json (by commit)": by_commit}
                if args.by_branch:
                    urls["config.json (by branch, 307)"] = by_branch
                urls["/healthz"] = f"{server.url}/healthz"
                await pressure(urls, min(args.connections, 50), 2.0, args.seed)  # warm the pool
                cpu_before = cpu_s(server.pid)
                samples = await pressure(urls, args.connections, args.seconds, args.seed)
                cpu_used = cpu_s(server.pid) - cpu_before
            finally:
                server.stop()
        finally:
            upstream.stop()
    return report(samples, args, cpu_used)


def report(
    samples: dict[str, Samples], args: argparse.Namespace, cpu_used: float
) -> dict[str, object]:
    print(f"{args.connections} connections for {args.seconds:.0f} s (server CPU {cpu_used:.1f} s):")
    for name, sample in samples.items():
        print(sample.line(name))
    floor = samples["/healthz"].quantile(0.99)
    ratios = {name: s.quantile(0.99) / floor for name, s in samples.items() if name != "/healthz"}
    for name, ratio in ratios.items():
        verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
        print(f"  -> p99 {name} / p99 /healthz = {ratio:.2f}x  [{verdict} target {TARGET_RATIO}x]")
    return {
        "connections": args.connections,
        "seconds": args.seconds,
        "server_cpu_s": cpu_used,
        "ratios_p99": ratios,
        "figures": {
            name: {
                "n": len(s.latencies_s),
                "p50_ms": s.quantile(0.5) * 1000,
                "p99_ms": s.quantile(0.99) * 1000,
                "mean_ms": statistics.fmean(s.latencies_s) * 1000 if s.latencies_s else None,
                "failures": s.failures,
            }
            for name, s in samples.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--by-branch",
        action="store_true",
        help="also ask for the file by branch (the 307 to the commit URL, followed)",
    )
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
