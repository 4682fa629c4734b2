"""The clients a benchmark drives: curl for single downloads, wrk (or aiohttp) for Range requests
per second, and a crowd of aiohttp clients that honour ``429 Retry-After``.

curl and wrk are C programs: on two cores they keep the client from being the bottleneck of a
throughput figure. Every call has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

CURL_FORMAT = (
    "%{http_code} %{size_download} %{time_starttransfer} %{time_total} %header{retry-after}"
)
MAX_RETRY_AFTER_S = 30.0
MAX_ATTEMPTS = 20
RANGE_BYTES = 64 * 1024
READ_CHUNK_BYTES = 1024 * 1024


class ClientError(RuntimeError):
    """A client could not run or got an answer a benchmark cannot use."""


@dataclass(frozen=True, slots=True)
class Download:
    """One complete download: status, bytes, seconds to the first byte and to the last."""

    status: int
    size: int
    ttfb_s: float
    total_s: float
    retries_429: int = 0

    @property
    def bytes_per_s(self) -> float:
        return self.size / self.total_s if self.total_s > 0 else 0.0


async def _run(argv: Sequence[str], timeout_s: float) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise ClientError(f"{argv[0]} did not finish within {timeout_s:.0f} s") from None
    if process.returncode != 0:
        message = stderr.decode(errors="replace").strip()[-500:]
        raise ClientError(f"{argv[0]} exited {process.returncode}: {message}")
    return stdout.decode(errors="replace")


async def curl_once(
    url: str, *, follow: bool = False, timeout_s: float = 300.0, range_: str | None = None
) -> tuple[int, int, float, float, float | None]:
    """One GET to /dev/null: (status, bytes, ttfb s, total s, Retry-After s or None)."""
    if shutil.which("curl") is None:
        raise ClientError("curl is not installed; install it with `apt-get install -y curl`")
    argv = ["curl", "-s", "-o", "/dev/null", "--max-time", str(int(timeout_s)), "-w", CURL_FORMAT]
    if follow:
        argv += ["-L", "--max-redirs", "5"]
    if range_ is not None:
        argv += ["-H", f"Range: {range_}"]
    fields = (await _run([*argv, url], timeout_s + 10)).split()
    if len(fields) < 4:
        raise ClientError(f"curl printed {fields!r}; expected status, size and times")
    retry_after = None
    if len(fields) > 4:
        with contextlib.suppress(ValueError):
            retry_after = min(float(fields[4]), MAX_RETRY_AFTER_S)
    return int(fields[0]), int(fields[1]), float(fields[2]), float(fields[3]), retry_after


async def download(url: str, *, follow: bool = False, timeout_s: float = 300.0) -> Download:
    """GET ``url`` with curl until it is not a 429, waiting Retry-After as the Hub client does.

    Times count from the first attempt: waits and refused attempts are part of the download.
    """
    spent = 0.0
    for attempt in range(MAX_ATTEMPTS):
        status, size, ttfb, total, retry_after = await curl_once(
            url, follow=follow, timeout_s=timeout_s
        )
        if status != 429:
            return Download(status, size, spent + ttfb, spent + total, attempt)
        wait_s = retry_after if retry_after is not None else 1.0
        await asyncio.sleep(wait_s)
        spent += total + wait_s
    raise ClientError(f"{url} still answered 429 after {MAX_ATTEMPTS} attempts")


# -- Range requests per second -------------------------------------------------------------------

WRK_SCRIPT = """\
math.randomseed({seed})
local blocks = {blocks}
request = function()
  local offset = math.random(0, blocks - 1) * {chunk}
  local last = offset + {chunk} - 1
  return wrk.format("GET", "{path}", {{["Range"] = "bytes=" .. offset .. "-" .. last}})
end
"""


@dataclass(frozen=True, slots=True)
class RangeRate:
    """Range requests per second, how they were measured, and any answer that was not a 206."""

    requests_per_s: float
    tool: str
    bad_answers: int


async def range_rate(
    base: str, path: str, size: int, *, connections: int, seconds: float, script_dir: Path
) -> RangeRate:
    """64 KiB Range GETs at random aligned offsets of a ``size``-byte file, for ``seconds``."""
    if shutil.which("wrk") is not None:
        return await _wrk_rate(base, path, size, connections, seconds, script_dir)
    return await _aiohttp_rate(f"{base}{path}", size, connections, seconds)


async def _wrk_rate(
    base: str, path: str, size: int, connections: int, seconds: float, script_dir: Path
) -> RangeRate:
    script = script_dir / "range.lua"
    script.write_text(
        WRK_SCRIPT.format(seed=1234, blocks=size // RANGE_BYTES, chunk=RANGE_BYTES, path=path)
    )
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "-s", str(script), base]
    output = await _run(argv, seconds + 60)
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    if rate is None:
        raise ClientError(f"wrk printed no Requests/sec:\n{output[-1000:]}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    bad_answers = int(bad.group(1)) if bad else 0
    if errors is not None:
        bad_answers += sum(int(n) for n in re.findall(r"\d+", errors.group(0)))
    return RangeRate(float(rate.group(1)), "wrk", bad_answers)


async def _aiohttp_rate(url: str, size: int, connections: int, seconds: float) -> RangeRate:
    """Fallback without wrk: ``connections`` aiohttp clients in a loop (the client is slower
    than wrk, so both servers look slower; the ratio still compares them on equal terms)."""
    blocks = size // RANGE_BYTES
    count = bad = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)

    async def worker(session: aiohttp.ClientSession, rng: random.Random) -> None:
        nonlocal count, bad
        while time.monotonic() < deadline:
            offset = rng.randrange(blocks) * RANGE_BYTES
            headers = {"Range": f"bytes={offset}-{offset + RANGE_BYTES - 1}"}
            async with session.get(url, headers=headers) as response:
                await response.read()
                count += 1
                bad += response.status != 206

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session, random.Random(i)) for i in range(connections)))
    return RangeRate(count / (time.monotonic() - started), "aiohttp", bad)


# -- a crowd of cold clients ----------------------------------------------------------------------


@dataclass
class CrowdClient:
    index: int
    status: int = 0
    size: int = 0
    sha256: str | None = None
    retries_429: int = 0
    finished_s: float = 0.0
    error: str | None = None


@dataclass
class Crowd:
    clients: list[CrowdClient] = field(default_factory=list)
    total_s: float = 0.0

    def served(self, size: int) -> int:
        return sum(1 for c in self.clients if c.status == 200 and c.size == size)

    @property
    def retries_429(self) -> int:
        return sum(c.retries_429 for c in self.clients)


async def crowd(
    url: str, count: int, *, hash_every: int, deadline_s: float, connect_limit: int = 0
) -> Crowd:
    """``count`` clients GET ``url`` at once, each on its own connection, honouring 429.

    Every ``hash_every``-th client hashes what it received (hashing all would make the client
    the bottleneck on two cores); every client checks its status and length.
    """
    result = Crowd([CrowdClient(i) for i in range(count)])
    connector = aiohttp.TCPConnector(limit=connect_limit, force_close=True)
    timeout = aiohttp.ClientTimeout(total=deadline_s, sock_connect=30, sock_read=30)
    started = time.monotonic()
    gate = asyncio.Event()

    async def one(session: aiohttp.ClientSession, client: CrowdClient) -> None:
        await gate.wait()
        try:
            for _ in range(MAX_ATTEMPTS):
                async with session.get(url) as response:
                    if response.status == 429:
                        client.retries_429 += 1
                        wait_s = _retry_after(response.headers.get("Retry-After"))
                        await response.release()
                        await asyncio.sleep(wait_s)
                        continue
                    digest = hashlib.sha256() if client.index % hash_every == 0 else None
                    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
                        client.size += len(chunk)
                        if digest is not None:
                            digest.update(chunk)
                    client.status = response.status
                    client.sha256 = digest.hexdigest() if digest is not None else None
                    break
        except (aiohttp.ClientError, TimeoutError) as exc:
            client.error = f"{type(exc).__name__}: {exc}"[:200]
        client.finished_s = time.monotonic() - started

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session, c)) for c in result.clients]
        started = time.monotonic()
        gate.set()
        await asyncio.gather(*tasks)
    result.total_s = time.monotonic() - started
    return result


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or 1), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return 1.0
