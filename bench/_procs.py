"""The processes a benchmark runs: Hubwarden, the fake upstream, nginx; their memory.

Every start waits for readiness with a deadline; every stop is SIGTERM, a bounded wait, then
SIGKILL, of the one process this module started (never by name).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
READY_LINE_MAX_BYTES = 64 * 1024
NGINX_INSTALL_HINT = (
    "nginx is not installed; install it with `apt-get install -y nginx` (Debian/Ubuntu) "
    "and run the bench again"
)


class BenchError(RuntimeError):
    """A benchmark step could not run (what failed and what to do)."""


def free_port() -> int:
    """A loopback port free right now (a tiny race with other programs, fine for a bench)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait up to STOP_TIMEOUT_S, then SIGKILL; always reaps the process."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _spawn(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` in the repository root, stdout and stderr to ``log``."""
    with log.open("wb") as log_file:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _tail(path: Path, limit: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-limit:]
    return ""


# -- the fake upstream --------------------------------------------------------------------------


@dataclass
class Upstream:
    """The fake Hub process (bench/_upstream.py) and its control API."""

    process: subprocess.Popen[bytes]
    hub: str
    cdn: str
    control: str
    commit: str
    log: Path

    @classmethod
    def start(cls, repo_id: str, files: dict[str, Path], log: Path) -> Upstream:
        spec = json.dumps({"repo": repo_id, "files": {k: str(v) for k, v in files.items()}})
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "bench" / "_upstream.py"), spec],
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            )
        try:
            ready = _read_ready_line(process, START_TIMEOUT_S)
        except BaseException:
            stop_process(process)
            raise
        if ready is None:
            stop_process(process)
            raise BenchError(f"the fake upstream did not start; its log:\n{_tail(log)}")
        info = json.loads(ready)
        return cls(process, info["hub"], info["cdn"], info["control"], info["commit"], log)

    def stop(self) -> None:
        stop_process(self.process)

    async def _call(self, method: str, route: str, **query: str) -> dict[str, int]:
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, f"{self.control}{route}", params=query) as response,
        ):
            response.raise_for_status()
            answer: dict[str, int] = await response.json()
            return answer

    async def throttle(self, bytes_per_s: float, glob: str) -> None:
        await self._call("POST", "/throttle", bytes_per_s=str(bytes_per_s), glob=glob)

    async def clear(self) -> None:
        await self._call("POST", "/clear")

    async def reset(self) -> None:
        await self._call("POST", "/reset")

    async def stats(self, glob: str) -> dict[str, int]:
        return await self._call("GET", "/stats", glob=glob)


def _read_ready_line(process: subprocess.Popen[bytes], timeout_s: float) -> bytes | None:
    """The first stdout line of ``process``, or None if it exits or the deadline passes first."""
    assert process.stdout is not None
    stdout: IO[bytes] = process.stdout
    os.set_blocking(stdout.fileno(), False)
    deadline = time.monotonic() + timeout_s
    buffer = b""
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(BlockingIOError):
            chunk = os.read(stdout.fileno(), 4096)
            buffer += chunk or b""
        if b"\n" in buffer:
            return buffer.split(b"\n", 1)[0]
        if len(buffer) > READY_LINE_MAX_BYTES:
            return None
        time.sleep(0.05)
    return None


# -- Hubwarden ----------------------------------------------------------------------------------


@dataclass
class Hubwarden:
    """`python -m proxy serve` as a subprocess (its pid is the server's: no shell in between)."""

    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log: Path

    @classmethod
    async def start(
        cls, data_dir: Path, upstream: str, log: Path, *, workers: int = 1,
        settings: dict[str, str] | None = None,
    ) -> Hubwarden:  # fmt: skip
        """`settings`: HUBWARDEN_* variables for this server (e.g. a shared database URL)."""
        port = free_port()
        command = [
            sys.executable, "-m", "proxy", "serve",
            "--data-dir", str(data_dir), "--upstream", upstream,
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBWARDEN_", "HF_"))}
        env.update(settings or {})
        process = await asyncio.to_thread(
            _spawn, command, log, {**env, "PYTHONPATH": str(REPO_ROOT)}
        )
        server = cls(process, f"http://127.0.0.1:{port}", data_dir, log)
        try:
            await server._wait_healthy(START_TIMEOUT_S)
        except BaseException:
            server.stop()
            raise
        return server

    async def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise BenchError(f"hubwarden exited at start; its log:\n{_tail(self.log)}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise BenchError(f"hubwarden not healthy after {timeout_s:.0f} s; log:\n{_tail(self.log)}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)


# -- memory -------------------------------------------------------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS since start) of ``pid``, in KiB, from /proc/<pid>/status."""
    values: dict[str, int] = {}
    with Path(f"/proc/{pid}/status").open() as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def cpu_s(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used (its threads included, children not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class RssSampler:
    """Samples VmRSS of ``pid`` every ``interval_s`` while running (a background task)."""

    pid: int
    interval_s: float = 0.02
    peak_kib: int = 0
    samples: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def _run(self) -> None:
        while True:
            rss = memory_kib(self.pid).get("VmRSS", 0)
            self.peak_kib = max(self.peak_kib, rss)
            self.samples += 1
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# -- nginx --------------------------------------------------------------------------------------

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
{user}
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /blob {{
            alias {blob};
            default_type application/octet-stream;
        }}
    }}
}}
"""


def _nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        raise BenchError(NGINX_INSTALL_HINT)
    return found


def _spawn_nginx(argv: list[str], conf: Path, text: str) -> subprocess.Popen[bytes]:
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(text)
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@dataclass
class Nginx:
    """nginx serving one file at ``{url}/blob``, from a temp config (stopped by `stop`)."""

    process: subprocess.Popen[bytes]
    url: str
    root: Path

    @classmethod
    async def start(cls, blob: Path, root: Path, workers: int) -> Nginx:
        binary, port = _nginx_binary(), free_port()
        conf = root / "nginx.conf"
        # As root, nginx workers switch to "nobody", who cannot read the 0600 blob: stay root.
        user = "user root;" if os.geteuid() == 0 else ""
        text = NGINX_CONF.format(workers=workers, user=user, root=root, port=port, blob=blob)
        argv = [binary, "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")]
        process = await asyncio.to_thread(_spawn_nginx, argv, conf, text)
        server = cls(process, f"http://127.0.0.1:{port}", root)
        try:
            await server._wait_ready(START_TIMEOUT_S / 4)
        except BaseException:
            server.stop()
            raise
        return server

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        timeout = aiohttp.ClientTimeout(total=2)
        headers = {"Range": "bytes=0-0"}
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    log = _tail(self.root / "error.log")
                    raise BenchError(f"nginx exited at start; error.log:\n{log}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.url}/blob", headers=headers) as response:
                        if response.status == 206:
                            return
                        log = _tail(self.root / "error.log")
                        raise BenchError(f"nginx answered {response.status}; error.log:\n{log}")
                await asyncio.sleep(0.1)
        raise BenchError(f"nginx not ready after {timeout_s:.0f} s")

    def stop(self) -> None:
        stop_process(self.process)
