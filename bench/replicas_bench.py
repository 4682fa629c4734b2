"""Scale-out figures (issue 9): `serve --workers 2` on 64 KiB Range requests against nginx, and a
cold crowd split across two replicas on one PostgreSQL database → exactly one upstream fetch.

    apt-get install -y nginx wrk          # nginx required, wrk optional (aiohttp loop otherwise)
    python bench/replicas_bench.py        # about 2 minutes; --quick for a smoke run
    python bench/replicas_bench.py --postgres-url postgresql+asyncpg://user@host:5432/db

The PostgreSQL server (default: $HUBWARDEN_TEST_POSTGRES_URL, else 127.0.0.1:5432 database
`test`, trust auth) gets a fresh database for the run, dropped at the end. Each server is its own
process (`python -m proxy serve`), the fake Hub too (bench/_upstream.py), so clients and servers
do not share an interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]
from _clients import crowd, curl_once, range_rate
from _files import write_safetensors
from _procs import BenchError, Hubwarden, Nginx, Upstream
from sqlalchemy.engine import make_url

REPO_ID = "bench/replicas"
WARM_FILE = "warm.safetensors"
CROWD_FILE = "crowd.safetensors"
MiB = 1024 * 1024
MB = 1_000_000
TARGET_RANGE_RATIO = 0.30
TARGET_CROWD_S = 30.0
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True, slots=True)
class Options:
    file_mib: int
    crowd_mib: int
    crowd_clients: int
    range_seconds: float
    range_connections: int
    upstream_mb_s: float
    postgres_url: str


def say(message: str) -> None:
    print(message, flush=True)


def url_of(base: str, commit: str, name: str) -> str:
    return f"{base}/{REPO_ID}/resolve/{commit}/{name}"


async def _admin(server_url: str, statement: str) -> None:
    url = make_url(server_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def range_phase(upstream: Upstream, root: Path, options: Options, sha256: str) -> list[str]:
    """Range req/s of Hubwarden with 1 and 2 workers against nginx with 1 and 2 workers."""
    size = options.file_mib * MiB
    data_dir = root / "range-data"
    lines = []
    rates: dict[str, float] = {}
    for workers in (1, 2):
        server = await Hubwarden.start(
            data_dir, upstream.hub, root / f"hw-{workers}.log", workers=workers
        )
        try:
            await curl_once(url_of(server.url, upstream.commit, WARM_FILE), timeout_s=300)
            path = f"/{REPO_ID}/resolve/{upstream.commit}/{WARM_FILE}"
            rate = await range_rate(
                server.url, path, size, connections=options.range_connections,
                seconds=options.range_seconds, script_dir=root,
            )  # fmt: skip
            rates[f"hubwarden x{workers}"] = rate.requests_per_s
        finally:
            server.stop()
    blob = data_dir / "blobs" / sha256[:2] / sha256
    for workers in (1, 2):
        nginx = await Nginx.start(blob, root / f"nginx-{workers}", workers)
        try:
            rate = await range_rate(
                nginx.url, "/blob", size, connections=options.range_connections,
                seconds=options.range_seconds, script_dir=root,
            )  # fmt: skip
            rates[f"nginx x{workers}"] = rate.requests_per_s
        finally:
            nginx.stop()
    for name, value in rates.items():
        lines.append(f"  64 KiB Range req/s, {name}: {value:.0f} ({rate.tool})")
    for nginx_workers in (1, 2):
        ratio = rates["hubwarden x2"] / rates[f"nginx x{nginx_workers}"]
        verdict = "meets" if ratio >= TARGET_RANGE_RATIO else "MISSES"
        lines.append(
            f"  Hubwarden --workers 2 / nginx {nginx_workers} worker(s): {ratio:.3f} "
            f"(target >= {TARGET_RANGE_RATIO}) {verdict}"
        )
    gain = rates["hubwarden x2"] / rates["hubwarden x1"]
    lines.append(f"  Hubwarden --workers 2 / --workers 1: {gain:.2f}x")
    return lines


async def crowd_phase(upstream: Upstream, root: Path, options: Options, sha256: str) -> list[str]:
    """`crowd_clients` cold clients split over two replicas on one PostgreSQL database."""
    name = f"hw_bench_{secrets.token_hex(6)}"
    await _admin(options.postgres_url, f'CREATE DATABASE "{name}"')
    database = make_url(options.postgres_url).set(database=name)
    settings = {"HUBWARDEN_DATABASE_URL": database.render_as_string(hide_password=False)}
    try:
        data_dir = root / "crowd-data"
        first = await Hubwarden.start(data_dir, upstream.hub, root / "r1.log", settings=settings)
        second = await Hubwarden.start(data_dir, upstream.hub, root / "r2.log", settings=settings)
        try:
            await upstream.reset()
            await upstream.throttle(options.upstream_mb_s * MB, f"*/{CROWD_FILE}")
            half = options.crowd_clients // 2
            started = time.monotonic()
            split = ((first, half), (second, options.crowd_clients - half))
            results = await asyncio.gather(
                *(
                    crowd(
                        url_of(s.url, upstream.commit, CROWD_FILE), n, hash_every=20, deadline_s=180
                    )
                    for s, n in split
                )
            )
            total_s = time.monotonic() - started
            await upstream.clear()
            fetched = await upstream.stats(f"*/{CROWD_FILE}")
        finally:
            first.stop()
            second.stop()
    finally:
        await _admin(options.postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    size = options.crowd_mib * MiB
    served = sum(r.served(size) for r in results)
    hashes = {c.sha256 for r in results for c in r.clients if c.sha256 is not None}
    finished = sorted(c.finished_s for r in results for c in r.clients)
    # one fetch = the file's bytes came from upstream once; a file at or over
    # `[fetch] parallel_threshold_bytes` is that one fetch in several Range requests
    copies = fetched["bytes_served"] / size
    ok = copies == 1 and served == options.crowd_clients and hashes == {sha256}
    return [
        f"  {options.crowd_clients} cold clients on two replicas, one {options.crowd_mib} MiB file"
        f" (upstream {options.upstream_mb_s:.0f} MB/s/conn): upstream sent the file "
        f"{copies:.2f} times (in {fetched['body_fetches']} body requests), served "
        f"{served}/{options.crowd_clients}, sampled sha256 "
        f"{'ok' if hashes == {sha256} else 'WRONG'}, 429 honoured "
        f"{sum(r.retries_429 for r in results)} ({'meets' if ok else 'MISSES'}: 1 fetch)",
        f"  total {total_s:.2f} s (median client {statistics.median(finished):.2f} s; "
        f"target <= {TARGET_CROWD_S:.0f} s) {'meets' if total_s <= TARGET_CROWD_S else 'MISSES'}",
    ]


async def run(options: Options) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="hubwarden-replicas-") as tmp:
        root = Path(tmp)
        say("writing the files...")
        warm_sha = await asyncio.to_thread(
            write_safetensors, root / WARM_FILE, options.file_mib * MiB, 1
        )
        crowd_sha = await asyncio.to_thread(
            write_safetensors, root / CROWD_FILE, options.crowd_mib * MiB, 2
        )
        files = {WARM_FILE: root / WARM_FILE, CROWD_FILE: root / CROWD_FILE}
        upstream = await asyncio.to_thread(Upstream.start, REPO_ID, files, root / "up.log")
        try:
            say("[1] 64 KiB Range requests: Hubwarden --workers 1 and 2, nginx 1 and 2 workers")
            lines = await range_phase(upstream, root, options, warm_sha)
            say("[2] a cold crowd across two replicas on one PostgreSQL database")
            lines += await crowd_phase(upstream, root, options, crowd_sha)
        finally:
            upstream.stop()
    return lines


def parse_options(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file-mib", type=int, default=256)
    parser.add_argument("--crowd-mib", type=int, default=64)
    parser.add_argument("--crowd-clients", type=int, default=200)
    parser.add_argument("--range-seconds", type=float, default=10.0)
    parser.add_argument("--range-connections", type=int, default=16)
    parser.add_argument("--upstream-mb-s", type=float, default=200.0)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("HUBWARDEN_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the bench")
    args = parser.parse_args(argv)
    if args.quick:
        args.file_mib, args.crowd_mib, args.crowd_clients, args.range_seconds = 16, 8, 40, 2.0
    return Options(
        args.file_mib, args.crowd_mib, args.crowd_clients, args.range_seconds,
        args.range_connections, args.upstream_mb_s, args.postgres_url,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    try:
        lines = asyncio.run(run(options))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    say("\n".join(["", "Scale-out figures:", *lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
