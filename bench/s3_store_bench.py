"""Downloads through Hubwarden with the S3 blob store against the local store (issue 9, item 1).

    python bench/s3_store_bench.py [--file-mib 256]

Starts the fake upstream, moto's S3 server (`python -m moto.server`, its own process; in-memory,
so a lower bound of any real store's cost) and three Hubwardens on one upstream: `[store] kind =
"local"`, `kind = "s3"` (streamed through Hubwarden) and `kind = "s3"` with `presign = true` (the
client follows a 302 to the bucket). Each downloads a file new to it with curl, cold then warm,
and the bench prints the times and the S3/local ratios. A measurement, never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _clients import Download, download
from _files import write_safetensors
from _procs import REPO_ROOT, BenchError, Hubwarden, Upstream, free_port, stop_process

sys.path.insert(0, str(REPO_ROOT))
from proxy.config import Secret, StoreKind, StoreSettings
from proxy.store.s3 import s3_client

REPO_ID = "bench/s3"
MiB = 1024 * 1024
KEY_ID, SECRET = "bench", "bench-secret"  # moto accepts any credentials
SIDES = ("local", "s3", "s3-presign")


def say(message: str) -> None:
    print(message, flush=True)


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    stop_process(process)
    raise BenchError("moto's S3 server did not start")


async def new_bucket(endpoint: str) -> str:
    bucket = f"bench-{uuid.uuid4().hex[:16]}"
    settings = StoreSettings(
        kind=StoreKind.S3,
        bucket=bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id=Secret(KEY_ID),
        secret_access_key=Secret(SECRET),
    )
    async with s3_client(settings) as client:
        await client.create_bucket(Bucket=bucket)
    return bucket


def store_env(side: str, endpoint: str, bucket: str) -> dict[str, str]:
    if side == "local":
        return {}
    return {
        "HUBWARDEN_STORE_KIND": "s3",
        "HUBWARDEN_STORE_BUCKET": bucket,
        "HUBWARDEN_STORE_ENDPOINT_URL": endpoint,
        "HUBWARDEN_STORE_REGION": "us-east-1",
        "HUBWARDEN_STORE_ACCESS_KEY_ID": KEY_ID,
        "HUBWARDEN_STORE_SECRET_ACCESS_KEY": SECRET,
        "HUBWARDEN_STORE_PRESIGN": "true" if side == "s3-presign" else "false",
    }


def checked(what: str, got: Download, size: int) -> Download:
    if got.status != 200 or got.size != size:
        raise BenchError(f"{what}: status {got.status}, {got.size} of {size} bytes")
    return got


async def measure(
    side: str, root: Path, upstream: Upstream, endpoint: str, size: int
) -> dict[str, float]:
    """Cold then warm download of the side's own file through its own Hubwarden."""
    env = store_env(side, endpoint, await new_bucket(endpoint))
    server = await Hubwarden.start(
        root / f"data-{side}", upstream.hub, root / f"hubwarden-{side}.log", settings=env
    )
    try:
        url = f"{server.url}/{REPO_ID}/resolve/{upstream.commit}/{side}.safetensors"
        cold = checked(f"{side} cold", await download(url, follow=True, timeout_s=900), size)
        warm = checked(f"{side} warm", await download(url, follow=True, timeout_s=900), size)
    finally:
        server.stop()
    say(f"  {side}: cold {cold.total_s:.2f} s, warm {warm.total_s:.2f} s "
        f"({warm.bytes_per_s / MiB:.0f} MiB/s)")  # fmt: skip
    return {"cold_s": cold.total_s, "warm_s": warm.total_s, "warm_ttfb_s": warm.ttfb_s}


async def run(file_mib: int) -> dict[str, dict[str, float]]:
    size = file_mib * MiB
    with tempfile.TemporaryDirectory(prefix="hubwarden-s3-bench-") as tmp:
        root = Path(tmp)
        say(f"writing 3 files of {file_mib} MiB in {root}...")
        files = {f"{side}.safetensors": root / f"{side}.safetensors" for side in SIDES}
        for seed, path in enumerate(files.values()):
            await asyncio.to_thread(write_safetensors, path, size, seed)
        upstream = await asyncio.to_thread(Upstream.start, REPO_ID, files, root / "upstream.log")
        moto, endpoint = await asyncio.to_thread(start_moto, root / "moto.log")
        try:
            results = {side: await measure(side, root, upstream, endpoint, size) for side in SIDES}
        finally:
            stop_process(moto)
            upstream.stop()
    local = results["local"]
    for side in SIDES[1:]:
        got = results[side]
        say(f"{side} / local: cold {got['cold_s'] / local['cold_s']:.2f}x, "
            f"warm {got['warm_s'] / local['warm_s']:.2f}x")  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--file-mib", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args(argv)
    result = asyncio.run(run(options.file_mib))
    if options.json is not None:
        options.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
