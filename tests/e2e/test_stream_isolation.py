"""No hostile byte is parsed in the server process (issue 13): the real client downloads hostile
files from the fake Hub through Hubwarden, whose stream scan runs in limited worker processes.
The file is held with a finding, the server keeps answering other requests meanwhile, its RSS
stays flat, the worker that scanned it is replaced and the next file scans fine; shutting down
leaves no worker process."""

from __future__ import annotations

import asyncio
import io
import pickle
import socket
import sys
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from huggingface_hub.errors import HfHubHTTPError
from safetensors.numpy import save

from proxy.app import FORKS
from proxy.hub.context import SERVICES
from proxy.store.models import BlobState
from tests.fakehub.hub import FakeHub
from tests.processes import STREAM_WORKER, scan_processes
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy
from tests.scanners.corpus_headers import make_gguf

pytestmark = pytest.mark.timeout(120)

MODEL = "org/hostile"
MiB = 1024 * 1024
# str.replace builds 3e9 characters before any sandbox hook sees the result: 3 GB in whatever
# process renders it (the server, before issue 13)
ALLOCATES = '{{ ("a" * 60000) | replace("a", "b" * 50000) }}'
# runs until the render's own 2 s bound, in each template
LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
CONFIG = b'{"model_type": "llama"}\n'
RSS_BOUND_KIB = 100 * 1024  # the allocating template alone would lift it by ~3 GB
ANSWER_BOUND_S = 2.0
WORKERS_TIMEOUT_S = 30.0

ProxyFactory = Callable[..., Awaitable[RunningProxy]]


def _gguf(tmp: Path, template: str, copies: int = 1) -> bytes:
    names = ["", *(f"extra{i}" for i in range(1, copies))]
    path = make_gguf(tmp / "m.gguf", templates=dict.fromkeys(names, template))
    return path.read_bytes()


def _zip_bomb() -> bytes:
    """A torch-style checkpoint whose storage record is 64 MiB of zeros deflated about a
    thousand-fold (PyTorch inflates it on load)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        archive.writestr("archive/data/0", bytes(64 * MiB))
        archive.writestr("archive/version", b"3\n")
    return buffer.getvalue()


def _safetensors() -> bytes:
    return save({"w": np.arange(500_000, dtype=np.float32)})


HOSTILE: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "allocates.gguf": (lambda tmp: _gguf(tmp, ALLOCATES), "GGUF_TEMPLATE_RENDER_LIMIT"),
    "loops.gguf": (lambda tmp: _gguf(tmp, LOOPS), "GGUF_TEMPLATE_RENDER_LIMIT"),
    "bomb.pt": (lambda tmp: _zip_bomb(), "ARCHIVE_RATIO_RESOURCE"),
}


@pytest.fixture
async def make_proxy(fake_hub: FakeHub, tmp_path: Path) -> AsyncIterator[ProxyFactory]:
    runners = []

    async def make(**overrides: object) -> RunningProxy:
        values: dict[str, object] = {"scan.max_memory_mb": 1024, **overrides}
        settings = proxy_settings(fake_hub, tmp_path / "data", **values)
        running, runner = await start_proxy(settings, tmp_path / "client-cache")
        runners.append(runner)
        await until(lambda: len(stream_workers()) == settings.scan.stream_workers)
        return running

    try:
        yield make
    finally:
        for runner in runners:
            await runner.cleanup()


def stream_workers(*, zombies: bool = False, parent: int | None = None) -> set[int]:
    """The stream scan workers forked for server `parent` (default: this process), zombies
    included when asked for."""
    return scan_processes(STREAM_WORKER, server=parent, zombies=zombies)


def vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def until(condition: Callable[[], bool], timeout_s: float = WORKERS_TIMEOUT_S) -> None:
    """Poll outside state (processes) until `condition` holds."""
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


class Watch:
    """While a hostile download runs: the server's RSS peak (sampled every 10 ms) and the
    slowest answer to /healthz and to a GET of an already released file."""

    def __init__(self, proxy: RunningProxy, warm_url: str) -> None:
        self.proxy = proxy
        self.warm_url = warm_url
        self.rss_before_kib = vm_rss_kib()
        self.rss_peak_kib = self.rss_before_kib
        self.slowest_s = 0.0
        self.answers = 0

    async def during(self, download: asyncio.Task[Path]) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            sampler = asyncio.create_task(self._sample(download))
            while not download.done():
                for url in (f"{self.proxy.url}/healthz", self.warm_url):
                    started = time.monotonic()
                    async with session.get(url) as response:
                        assert response.status == 200
                        await response.read()
                    self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                    self.answers += 1
                await asyncio.sleep(0.05)
            await sampler

    async def _sample(self, download: asyncio.Task[Path]) -> None:
        while not download.done():
            self.rss_peak_kib = max(self.rss_peak_kib, vm_rss_kib())
            await asyncio.sleep(0.01)


async def _warm_url(proxy: RunningProxy, fake_hub: FakeHub) -> str:
    await proxy.download(MODEL, "config.json")  # released: a warm file from now on
    return f"{proxy.url}/{MODEL}/resolve/{fake_hub.repo(MODEL).head()}/config.json"


async def _held_findings(proxy: RunningProxy, path: str) -> set[tuple[str, str]]:
    repository = proxy.app[SERVICES].repository
    (blob,) = [
        b for b in await repository.list_blobs([BlobState.QUARANTINED]) if b.first_path == path
    ]
    return {(f.scanner, f.code) for f in await repository.list_findings(blob.pk)}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_file_is_held_and_the_server_keeps_serving(
    make_proxy: ProxyFactory, fake_hub: FakeHub, tmp_path: Path, name: str
) -> None:
    build, code = HOSTILE[name]
    files = {name: build(tmp_path), "config.json": CONFIG, "model.safetensors": _safetensors()}
    fake_hub.create_repo(MODEL, files=files)
    proxy = await make_proxy()
    watch = Watch(proxy, await _warm_url(proxy, fake_hub))
    workers_before = stream_workers()
    download = asyncio.create_task(proxy.download(MODEL, name))
    await watch.during(download)
    with pytest.raises(HfHubHTTPError, match="held in quarantine"):
        await download
    assert code in {code for _, code in await _held_findings(proxy, name)}
    assert watch.answers >= 2 and watch.slowest_s < ANSWER_BOUND_S
    assert watch.rss_peak_kib - watch.rss_before_kib < RSS_BOUND_KIB
    await until(lambda: len(stream_workers() - workers_before) == 1)  # its worker replaced
    again = await proxy.download(MODEL, "model.safetensors")
    assert again.read_bytes() == files["model.safetensors"]


async def test_stream_worker_over_its_cpu_limit_is_replaced_and_the_file_held(
    make_proxy: ProxyFactory, fake_hub: FakeHub, tmp_path: Path
) -> None:
    files = {"loops.gguf": _gguf(tmp_path, LOOPS, copies=4), "model.safetensors": _safetensors()}
    fake_hub.create_repo(MODEL, files=files)
    proxy = await make_proxy(**{"scan.max_cpu_s": 1})
    workers_before = stream_workers()
    with pytest.raises(HfHubHTTPError, match="held in quarantine"):
        await proxy.download(MODEL, "loops.gguf")
    assert ("stream", "SCAN_CPU_RESOURCE") in await _held_findings(proxy, "loops.gguf")
    await until(lambda: len(stream_workers() - workers_before) == 1)
    again = await proxy.download(MODEL, "model.safetensors")
    assert again.read_bytes() == files["model.safetensors"]


async def test_shutdown_leaves_no_stream_worker_process(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.create_repo(MODEL, files={"model.safetensors": _safetensors()})
    settings = proxy_settings(fake_hub, tmp_path / "data")
    proxy, runner = await start_proxy(settings, tmp_path / "client-cache")
    try:
        await proxy.download(MODEL, "model.safetensors")
        await until(lambda: len(stream_workers()) == settings.scan.stream_workers)
        workers = stream_workers()
        fork_server = proxy.app[FORKS].pid
        assert fork_server is not None
    finally:
        await runner.cleanup()
    # every process is gone and reaped, not even a zombie left
    assert [p for p in [*workers, fork_server] if Path(f"/proc/{p}").exists()] == []
    assert stream_workers(zombies=True) == set()


async def test_killed_server_takes_its_stream_workers_with_it(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    port = _free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "serve", "--data-dir", str(tmp_path / "data"),
        "--upstream", fake_hub.url, "--port", str(port), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await until(lambda: len(stream_workers(parent=server.pid)) == 2)
        workers = stream_workers(parent=server.pid)
        server.kill()
        await server.wait()
        await until(lambda: not any(_alive(pid) for pid in workers), 10)  # PDEATHSIG
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it is dead)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
