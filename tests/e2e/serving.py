"""`hubwarden serve` as a real subprocess for the end-to-end tests that need one (restarts, kill -9,
replicas, workers): started on a port, awaited until /healthz answers, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

READY_TRIES = 300
READY_POLL_S = 0.1
STOP_WAIT_S = 30.0


@dataclass
class Served:
    process: asyncio.subprocess.Process
    url: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_serve(
    data_dir: Path, upstream: str, env: dict[str, str], *flags: str, port: int | None = None
) -> Served:
    """`python -m proxy serve` on 127.0.0.1:`port` (a free one by default), once it answers."""
    port = port or free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "--data-dir",
        str(data_dir),
        "--upstream",
        upstream,
        "--port",
        str(port),
        *flags,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    served = Served(process, f"http://127.0.0.1:{port}")
    await _wait_ready(served)
    return served


async def _wait_ready(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(READY_TRIES):
            if served.process.returncode is not None:
                raise AssertionError(f"hubwarden serve exited with {served.process.returncode}")
            try:
                async with session.get(f"{served.url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(READY_POLL_S)
    served.process.kill()
    raise AssertionError("hubwarden serve did not start")


async def stop_serve(served: Served) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within STOP_WAIT_S."""
    if served.process.returncode is None:
        served.process.terminate()
        try:
            await asyncio.wait_for(served.process.wait(), STOP_WAIT_S)
        except TimeoutError:
            served.process.kill()
            await served.process.wait()
