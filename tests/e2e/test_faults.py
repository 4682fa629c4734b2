"""Fault injection (issue 10): an upstream that drops, lies, stalls or refuses; a full disk; a
database that refuses writes; a scanner that crashes; a scan worker or the server killed.

For each fault: no client receives a whole unverified file (nor a 206 of unverified bytes), the
next request succeeds or is held with a message, nothing is left `fetching`/`scanning` or in
tmp/, and no scan worker outlives its ingest or its server.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import pickle
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from safetensors.numpy import save
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from proxy.app import ENGINE, create_app
from proxy.hub.context import SERVICES
from proxy.scanning import FeedScanFactory
from proxy.store.models import BlobState
from proxy.store.repository import BlobRecord
from tests.fakehub.hub import FakeHub
from tests.fakehub.traffic import Origin
from tests.processes import FULL_SCAN, scan_processes
from tests.proxyplugin import proxy_settings

pytestmark = pytest.mark.timeout(60)

MODEL = "org/faulty"
MiB = 1024 * 1024
# Long enough that even a loaded machine asks again within it (the checks that nothing is
# refetched meanwhile), short enough to keep the suite quick.
BACKOFF_S = 2.5
SETTLE_TIMEOUT_S = 10.0
UNFINISHED = (BlobState.FETCHING, BlobState.SCANNING)
ALL_STATES = tuple(BlobState)


def slow_to_scan_pickle() -> bytes:
    """A clean pickle whose full scan takes about a second here (a million memoized strings):
    long enough for a test to find its scan process and kill it mid-scan."""
    return pickle.dumps({"labels": [str(i) for i in range(1_000_000)]}, protocol=4)


def safetensors_bytes(megabytes: int) -> bytes:
    rows = megabytes * MiB // (4 * 256)
    return save({"weight": np.arange(rows * 256, dtype=np.float32).reshape(rows, 256)})


# -- a Hubwarden in-process, with the fault-friendly settings ---------------------------------


@dataclass
class Mirror:
    url: str
    app: web.Application
    data_dir: Path

    def file_url(self, hub: FakeHub, path: str) -> str:
        return f"{self.url}/{MODEL}/resolve/{hub.repo(MODEL).head()}/{path}"

    async def blobs(self, states: tuple[BlobState, ...] = ALL_STATES) -> list[BlobRecord]:
        return await self.app[SERVICES].repository.list_blobs(states)

    async def settled(self) -> list[BlobRecord]:
        """Every blob once nothing is fetching or scanning and tmp/ is empty (else fail)."""

        async def unsettled() -> bool:
            return bool(await self.blobs(UNFINISHED) or any((self.data_dir / "tmp").iterdir()))

        await until_not(unsettled, SETTLE_TIMEOUT_S)
        assert workers_under(self.data_dir) == []  # no scan worker outlives its ingest
        return await self.blobs()


MirrorFactory = Callable[..., Awaitable[Mirror]]


@pytest.fixture
async def make_mirror(fake_hub: FakeHub, tmp_path: Path) -> AsyncIterator[MirrorFactory]:
    runners: list[web.AppRunner] = []

    async def make(
        data_dir: Path | None = None, stream_scan: FeedScanFactory | None = None, **overrides: Any
    ) -> Mirror:
        data_dir = data_dir or tmp_path / "data"
        values: dict[str, object] = {
            "ingest.retry_backoff_s": BACKOFF_S,
            "ingest.retry_backoff_max_s": BACKOFF_S,
            "ingest.shutdown_grace_s": 1.0,
            "ingest.free_space_margin_bytes": 0,
            **overrides,
        }
        settings = proxy_settings(fake_hub, data_dir, **values)
        app = create_app(settings, stream_scan=stream_scan)
        runner = web.AppRunner(app, handle_signals=False)
        runners.append(runner)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return Mirror(f"http://{host}:{port}", app, data_dir)

    try:
        yield make
    finally:
        for runner in runners:
            await runner.cleanup()


# -- what a client got ------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    message: str
    body: bytes
    complete: bool
    """False when the connection was cut before the announced length arrived."""
    retry_after: str | None = None


async def get(url: str, headers: dict[str, str] | None = None) -> Answer:
    timeout = aiohttp.ClientTimeout(total=30, sock_read=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.get(url, headers=headers) as response:
                body, complete = b"", True
                try:
                    body = await response.read()
                except aiohttp.ClientPayloadError:
                    complete = False
                return Answer(
                    response.status,
                    response.headers.get("X-Error-Message", ""),
                    body,
                    complete,
                    response.headers.get("Retry-After"),
                )
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            return Answer(0, "", b"", False)


async def get_past_wait(url: str) -> Answer:
    """GET, coming back while the mirror says the file is still being fetched (429): on a
    loaded machine the upstream's failures may take longer than `first_byte_wait_s`."""
    for _ in range(10):
        answer = await get(url)
        if answer.status != 429 or "being fetched" not in answer.message:
            return answer
        await asyncio.sleep(0.5)
    raise AssertionError(f"{url} stayed 429")


def assert_no_unverified_file(answer: Answer, data: bytes) -> None:
    """A failed ingest gives no client the whole file nor a 206."""
    assert answer.status != 206
    assert not (answer.complete and answer.status == 200), answer
    assert len(answer.body) < len(data) or answer.status != 200


def workers_under(data_dir: Path, server: int | None = None) -> list[int]:
    """Live (non-zombie) full-scan processes forked for `server` (default: this process),
    scanning a file under `data_dir`."""
    return sorted(scan_processes(FULL_SCAN, server=server, under=data_dir))


# -- upstream faults --------------------------------------------------------------------------


async def test_upstream_dropping_mid_body_abandons_then_backs_off_then_serves(
    make_mirror: MirrorFactory, fake_hub: FakeHub
) -> None:
    data = safetensors_bytes(2)
    fake_hub.create_repo(MODEL, files={"model.safetensors": data})
    stall = fake_hub.stall("*/model.safetensors", after_bytes=512 * 1024, times=2)  # 1 + 1 retry
    mirror = await make_mirror()
    url = mirror.file_url(fake_hub, "model.safetensors")
    client = asyncio.create_task(get(url))
    await stall.reached.wait()
    stall.cut()
    assert_no_unverified_file(await client, data)
    assert await mirror.settled() == []  # absent again: retry allowed
    fetches = fake_hub.body_fetches("*/model.safetensors")
    retried = await get(url)
    assert retried.status in (502, 503) and "again in" in retried.message
    assert fake_hub.body_fetches("*/model.safetensors") == fetches  # not hammered meanwhile
    await asyncio.sleep(BACKOFF_S)
    served = await get(url)
    assert (served.status, served.body == data) == (200, True)


@pytest.mark.parametrize("keep_size", [True, False], ids=["hash-lie", "size-lie"])
async def test_upstream_lying_about_size_or_hash_gets_no_206_and_is_refused(
    make_mirror: MirrorFactory, fake_hub: FakeHub, keep_size: bool
) -> None:
    data = safetensors_bytes(1)
    repo = fake_hub.create_repo(MODEL, files={"model.safetensors": data})
    repo.tamper("model.safetensors", keep_size=keep_size)
    mirror = await make_mirror()
    url = mirror.file_url(fake_hub, "model.safetensors")
    ranged, whole = await asyncio.gather(get(url, {"Range": "bytes=0-1023"}), get(url))
    for answer in (ranged, whole):
        assert_no_unverified_file(answer, data)
    again = await get(url)
    assert again.status == 403 and "tampered" in again.message
    (blob,) = await mirror.settled()
    assert blob.state is BlobState.REJECTED


async def test_upstream_stalling_past_the_read_timeout_abandons_and_recovers(
    make_mirror: MirrorFactory, fake_hub: FakeHub
) -> None:
    data = safetensors_bytes(1)
    fake_hub.create_repo(MODEL, files={"model.safetensors": data})
    stall = fake_hub.stall("*/model.safetensors", after_bytes=256 * 1024, times=2)
    mirror = await make_mirror(**{"fetch.read_timeout_s": 0.5})
    url = mirror.file_url(fake_hub, "model.safetensors")
    assert_no_unverified_file(await get(url, {"Range": "bytes=0-99"}), data)
    assert await mirror.settled() == []
    fake_hub.cancel(stall)
    await asyncio.sleep(BACKOFF_S)
    served = await get(url)
    assert (served.status, served.body == data) == (200, True)


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_upstream_refusing_is_passed_on_backed_off_and_retried_later(
    make_mirror: MirrorFactory, fake_hub: FakeHub, status: int
) -> None:
    data = b'{"model_type": "bert"}'
    fake_hub.create_repo(MODEL, files={"config.json": data})
    headers = {"Retry-After": "1"} if status == 429 else {}
    attempts = 1 if status == 429 else 2  # a 5xx is retried once (fetch.retries), a 429 not
    fault = fake_hub.inject(
        f"/{MODEL}/resolve/*", status=status, headers=headers, times=attempts, method="GET",
        origin=Origin.HUB,
    )  # fmt: skip
    mirror = await make_mirror()
    url = mirror.file_url(fake_hub, "config.json")
    first = await get_past_wait(url)
    assert first.status == 429 if status == 429 else first.status in (502, 503, 504)
    assert first.message
    assert await mirror.settled() == []
    hits = fault.hits
    second = await get(url)  # within the backoff: answered here, upstream left alone
    assert second.status >= 429 and second.message
    if status == 429:
        assert second.retry_after is not None
    assert fault.hits == hits
    await asyncio.sleep(BACKOFF_S)
    served = await get(url)
    assert (served.status, served.body) == (200, data)


# -- the disk and the database ----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs as the data directory (root and mount permission needed)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(  # noqa: S603 - fixed arguments
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(  # a skipped disk-full test proves nothing: say what it needs
            f"cannot mount a small tmpfs here ({done.stderr.strip()}): run the tests as root"
        )
    try:
        yield mount_point / "data"
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)  # noqa: S603,S607


async def test_store_too_small_for_the_file_refuses_with_507_before_fetching(
    make_mirror: MirrorFactory, fake_hub: FakeHub, small_disk: Path
) -> None:
    data = safetensors_bytes(4)
    fake_hub.create_repo(MODEL, files={"model.safetensors": data})
    mirror = await make_mirror(small_disk, **{"ingest.free_space_margin_bytes": 22 * MiB})
    answer = await get(mirror.file_url(fake_hub, "model.safetensors"))
    assert answer.status == 507 and "store is full" in answer.message
    assert fake_hub.body_fetches("*/model.safetensors") == 0
    assert await mirror.settled() == []


async def test_disk_filling_up_mid_ingest_ends_absent_and_recovers_once_freed(
    make_mirror: MirrorFactory, fake_hub: FakeHub, small_disk: Path
) -> None:
    data = safetensors_bytes(6)
    fake_hub.create_repo(MODEL, files={"model.safetensors": data})
    stall = fake_hub.stall("*/model.safetensors", after_bytes=MiB)
    mirror = await make_mirror(small_disk)
    url = mirror.file_url(fake_hub, "model.safetensors")
    client = asyncio.create_task(get(url))
    await stall.reached.wait()
    filler = small_disk / "filler"
    await asyncio.to_thread(fill, filler)
    stall.release()
    assert_no_unverified_file(await client, data)
    assert await mirror.settled() == []  # not stuck `fetching` (issue 10: 7 of 11 runs were)
    again = await get(url)
    assert again.status == 507 and "mirror" in again.message
    filler.unlink()
    await asyncio.sleep(BACKOFF_S)
    served = await get(url)
    assert (served.status, served.body == data) == (200, True)


def fill(path: Path) -> None:
    """Write until the filesystem is full."""
    chunk = b"\0" * (256 * 1024)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while len(chunk) >= 512:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)


async def test_database_refusing_the_abandon_is_retried_until_recorded(
    make_mirror: MirrorFactory, fake_hub: FakeHub
) -> None:
    data = b'{"model_type": "bert"}'
    fake_hub.create_repo(MODEL, files={"config.json": data})
    fake_hub.inject(f"/{MODEL}/resolve/*", status=500, times=2, method="GET", origin=Origin.HUB)
    mirror = await make_mirror()
    refusals = refuse_blob_deletes(mirror, times=3)
    first = await get_past_wait(mirror.file_url(fake_hub, "config.json"))
    assert first.status >= 500
    assert await mirror.settled() == []
    assert refusals == []  # each refused write was retried, and the last one got through
    await asyncio.sleep(BACKOFF_S)
    served = await get(mirror.file_url(fake_hub, "config.json"))
    assert (served.status, served.body) == (200, data)


def refuse_blob_deletes(mirror: Mirror, times: int) -> list[int]:
    """The database refuses the next `times` deletions of blob rows, as a full disk does
    ("database or disk is full"); returns the refusals still to come."""
    left = list(range(times))

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM BLOBS") and left:
            left.pop()
            raise OperationalError(statement, None, Exception("database or disk is full"))

    event.listen(mirror.app[ENGINE].sync_engine, "before_cursor_execute", before)
    return left


# -- scanner faults ---------------------------------------------------------------------------


class ExplodingScan:
    """The fault of issue 10: the in-process stream scan raising in format detection."""

    cleared = 0
    alarmed = False

    def feed(self, chunk: bytes) -> None:
        raise IndexError("index out of range")

    def close(self) -> None:
        pass


def exploding_at_start(name: str, size: int) -> ExplodingScan:
    raise IndexError("index out of range")


@pytest.mark.parametrize("where", ["feed", "start"])
async def test_stream_scan_crash_holds_the_file_once_for_review(
    make_mirror: MirrorFactory, fake_hub: FakeHub, where: str
) -> None:
    data = b"\xff\xe0\xe1\x42"
    fake_hub.create_repo(MODEL, files={"labels.bin": data})
    factory: FeedScanFactory = (
        (lambda name, size: ExplodingScan()) if where == "feed" else exploding_at_start
    )
    mirror = await make_mirror(stream_scan=factory)
    url = mirror.file_url(fake_hub, "labels.bin")
    answers = [await get(url) for _ in range(3)]
    for answer in answers:
        assert_no_unverified_file(answer, data)
    assert answers[-1].status == 403 and "held in quarantine" in answers[-1].message
    assert fake_hub.body_fetches("*/labels.bin") == 1  # held once, never refetched in a loop
    (blob,) = await mirror.settled()
    assert blob.state is BlobState.QUARANTINED
    findings = await mirror.app[SERVICES].repository.list_findings(blob.pk)
    assert any(f.scanner == "stream" and f.code == "SCANNER_CRASHED" for f in findings)


async def test_scan_worker_killed_mid_scan_holds_the_file(
    make_mirror: MirrorFactory, fake_hub: FakeHub
) -> None:
    data = slow_to_scan_pickle()
    fake_hub.create_repo(MODEL, files={"labels.pkl": data})
    mirror = await make_mirror()
    client = asyncio.create_task(get(mirror.file_url(fake_hub, "labels.pkl")))
    victim = await first_worker(mirror.data_dir)
    os.kill(victim, signal.SIGKILL)
    assert_no_unverified_file(await client, data)
    (blob,) = await mirror.settled()
    assert blob.state is BlobState.QUARANTINED
    again = await get(mirror.file_url(fake_hub, "labels.pkl"))
    assert again.status == 403 and "held in quarantine" in again.message
    findings = await mirror.app[SERVICES].repository.list_findings(blob.pk)
    assert [(f.scanner, f.code) for f in findings] == [("worker", "SCANNER_CRASHED")]
    assert "SIGKILL" in findings[0].message or "-9" in findings[0].message
    assert fake_hub.body_fetches("*/labels.pkl") == 1


async def first_worker(data_dir: Path, server: int | None = None, timeout_s: float = 10.0) -> int:
    await until_not(lambda: not workers_under(data_dir, server), timeout_s, every_s=0.005)
    return workers_under(data_dir, server)[0]


async def until_not(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float, every_s: float = 0.05
) -> None:
    """Poll outside state (processes, files, the fake's counters) until `condition` is false."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = condition()
            if not (await value if isinstance(value, Awaitable) else value):
                return
            await asyncio.sleep(every_s)


# -- the server killed or stopped (a real `hubwarden serve`) ----------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: asyncio.subprocess.Process
    url: str
    data_dir: Path

    def rows(self) -> list[tuple[str]]:
        with sqlite3.connect(self.data_dir / "hubwarden.db") as db:
            return db.execute("SELECT state FROM blobs").fetchall()


async def serve(data_dir: Path, upstream: str, **env: str) -> Server:
    port = free_port()
    variables = {**os.environ, "HUBWARDEN_SCAN_WORKERS": "1", **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "serve", "--data-dir", str(data_dir), "--upstream",
        upstream, "--port", str(port), env=variables, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return Server(process, url, data_dir)
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    process.kill()
    await process.wait()
    raise AssertionError("hubwarden serve did not start")


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.returncode is None:
            server.process.kill()
            await server.process.wait()


async def test_server_killed_mid_scan_leaves_no_worker_and_restarts_clean(
    fake_hub: FakeHub, tmp_path: Path, servers: list[Server]
) -> None:
    data = slow_to_scan_pickle()
    repo = fake_hub.create_repo(MODEL, files={"labels.pkl": data})
    data_dir = tmp_path / "data"
    server = await serve(data_dir, fake_hub.url)
    servers.append(server)
    url = f"{server.url}/{MODEL}/resolve/{repo.head()}/labels.pkl"
    client = asyncio.create_task(get(url))
    await first_worker(data_dir, server.process.pid)
    server.process.kill()
    await server.process.wait()
    assert_no_unverified_file(await client, data)
    # died with it (PDEATHSIG: the fork server with the server, its children with it)
    await until_not(lambda: bool(workers_under(data_dir, server.process.pid)), 3)
    restarted = await serve(data_dir, fake_hub.url)
    servers.append(restarted)
    assert [s for (s,) in restarted.rows() if s in ("fetching", "scanning")] == []
    assert list((data_dir / "tmp").iterdir()) == []
    served = await get_ready(f"{restarted.url}/{MODEL}/resolve/{repo.head()}/labels.pkl")
    assert served == data


async def test_server_killed_mid_ingest_gives_the_client_no_whole_file(
    fake_hub: FakeHub, tmp_path: Path, servers: list[Server]
) -> None:
    data = safetensors_bytes(4)
    repo = fake_hub.create_repo(MODEL, files={"model.safetensors": data})
    throttle = fake_hub.throttle(1 * MiB, "*/model.safetensors")
    data_dir = tmp_path / "data"
    server = await serve(data_dir, fake_hub.url)
    servers.append(server)
    url = f"{server.url}/{MODEL}/resolve/{repo.head()}/model.safetensors"
    client = asyncio.create_task(get(url))
    await until_not(lambda: fake_hub.bytes_served("*/model.safetensors") < MiB, 10)
    server.process.kill()
    await server.process.wait()
    assert_no_unverified_file(await client, data)
    fake_hub.cancel(throttle)
    restarted = await serve(data_dir, fake_hub.url)
    servers.append(restarted)
    assert [s for (s,) in restarted.rows() if s in ("fetching", "scanning")] == []
    assert await get_ready(f"{restarted.url}/{MODEL}/resolve/{repo.head()}/model.safetensors") == (
        data
    )


async def test_sigterm_lets_a_download_in_flight_finish_and_stops_clean(
    fake_hub: FakeHub, tmp_path: Path, servers: list[Server]
) -> None:
    data = safetensors_bytes(2)
    repo = fake_hub.create_repo(MODEL, files={"model.safetensors": data})
    fake_hub.throttle(1 * MiB, "*/model.safetensors")
    server = await serve(tmp_path / "data", fake_hub.url)
    servers.append(server)
    client = asyncio.create_task(
        get(f"{server.url}/{MODEL}/resolve/{repo.head()}/model.safetensors")
    )
    await until_not(lambda: fake_hub.bytes_served("*/model.safetensors") < 256 * 1024, 10)
    server.process.send_signal(signal.SIGTERM)
    answer = await client
    assert (answer.status, answer.complete, answer.body == data) == (200, True, True)
    assert await asyncio.wait_for(server.process.wait(), 15) == 0
    assert server.rows() == [("released",)]
    assert list((tmp_path / "data" / "tmp").iterdir()) == []


async def test_sigterm_abandons_a_stalled_ingest_after_the_grace_period(
    fake_hub: FakeHub, tmp_path: Path, servers: list[Server]
) -> None:
    data = safetensors_bytes(2)
    repo = fake_hub.create_repo(MODEL, files={"model.safetensors": data})
    stall = fake_hub.stall("*/model.safetensors", after_bytes=512 * 1024)
    server = await serve(tmp_path / "data", fake_hub.url, HUBWARDEN_INGEST_SHUTDOWN_GRACE_S="1")
    servers.append(server)
    client = asyncio.create_task(
        get(f"{server.url}/{MODEL}/resolve/{repo.head()}/model.safetensors")
    )
    await stall.reached.wait()
    server.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.process.wait(), 10) == 0  # within the grace, not 60 s
    assert_no_unverified_file(await client, data)
    assert server.rows() == []  # abandoned: absent, fetched again after a restart
    assert list((tmp_path / "data" / "tmp").iterdir()) == []
    assert workers_under(tmp_path / "data", server.process.pid) == []


async def get_ready(url: str) -> bytes:
    """GET as the real client does: honour 429 + Retry-After."""
    for _ in range(20):
        answer = await get(url)
        if answer.status == 429:
            await asyncio.sleep(int(answer.retry_after or "1"))
            continue
        assert answer.status == 200, answer.message
        return answer.body
    raise AssertionError(f"{url} stayed 429")


def test_fault_helpers_see_a_whole_file_as_a_failure() -> None:
    data = b"x" * 10
    with pytest.raises(AssertionError):
        assert_no_unverified_file(Answer(200, "", data, True), data)
    with pytest.raises(AssertionError):
        assert_no_unverified_file(Answer(206, "", data[:5], True), data)
    assert hashlib.sha256(data).hexdigest()  # the helper itself needs no server
