"""The fork server (`proxy.forkserver` + `scanners.forkserver`): full scans and stream workers as
forks of one process that imported the scanners once, with the limits, exit statuses and
clean-up of a process of their own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from proxy.forkserver import ForkFailed, ForkServer
from proxy.scanning import ScanLimits, ScannerPool, kill_leftover_workers
from scanners.report import Outcome
from tests.processes import FULL_SCAN, alive, scan_processes
from tests.scanners.corpus_headers import make_gguf

EVIL_PICKLE = b"\x80\x02cos\nsystem\n(S'id'\ntR."  # written, scanned, never loaded
SLOW_TEMPLATE = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.fixture
async def forks(tmp_path: Path) -> AsyncIterator[ForkServer]:
    server = ForkServer(tmp_path)
    try:
        yield server
    finally:
        await server.close()


async def until(condition: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def _limits(**overrides: float) -> ScanLimits:
    values = {"timeout_s": 60.0, "max_memory_mb": 1024, "max_cpu_s": 30, "workers": 2}
    values.update(overrides)
    return ScanLimits(**values)  # type: ignore[arg-type]


async def test_forked_scans_give_the_reports_of_a_fresh_worker(
    forks: ForkServer, tmp_path: Path
) -> None:
    evil = tmp_path / "evil.part"
    evil.write_bytes(EVIL_PICKLE)
    config = tmp_path / "config.part"
    config.write_text('{"model_type": "bert"}')
    forked = ScannerPool(_limits(), forks=forks)
    fresh = ScannerPool(_limits())
    for path, name in [(evil, "model.pkl"), (config, "config.json")]:
        mine, theirs = await forked.scan(path, name), await fresh.scan(path, name)
        assert (mine.file_format, mine.outcome, [f.code for f in mine.findings]) == (
            theirs.file_format,
            theirs.outcome,
            [f.code for f in theirs.findings],
        )
    assert (await forked.scan(evil, "model.pkl")).outcome is Outcome.MALICIOUS


async def test_forked_scan_over_its_cpu_limit_is_killed_and_held(
    forks: ForkServer, tmp_path: Path
) -> None:
    path = make_gguf(tmp_path / "m.part", templates={"": SLOW_TEMPLATE})
    report = await ScannerPool(_limits(max_cpu_s=1), forks=forks).scan(path, "m.gguf")
    (finding,) = report.findings
    assert (finding.code, finding.outcome) == ("SCANNER_CRASHED", Outcome.ERROR)
    assert f"exit status {-signal.SIGXCPU}" in finding.message  # the kernel's SIGXCPU


async def test_forked_scan_over_its_wall_time_is_killed_and_leaves_no_process(
    forks: ForkServer, tmp_path: Path
) -> None:
    path = make_gguf(tmp_path / "m.part", templates={"": SLOW_TEMPLATE})
    report = await ScannerPool(_limits(timeout_s=0.5), forks=forks).scan(path, "m.gguf")
    assert [f.code for f in report.findings] == ["SCAN_TIMEOUT"]
    assert scan_processes(FULL_SCAN, zombies=True) == set()


async def test_fork_server_killed_mid_scan_holds_that_file_and_the_next_scan_works(
    forks: ForkServer, tmp_path: Path
) -> None:
    slow = make_gguf(tmp_path / "m.part", templates={"": SLOW_TEMPLATE})
    pool = ScannerPool(_limits(), forks=forks)
    scan = asyncio.create_task(pool.scan(slow, "m.gguf"))
    await until(lambda: bool(scan_processes(FULL_SCAN)), 30)
    (child,) = scan_processes(FULL_SCAN)
    first = forks.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    report = await asyncio.wait_for(scan, 30)
    assert report.outcome is Outcome.ERROR  # held, never clean
    await until(lambda: not alive(child), 10)  # died with its fork server (PR_SET_PDEATHSIG)
    config = tmp_path / "config.part"
    config.write_text("{}")
    assert (await pool.scan(config, "config.json")).outcome is Outcome.CLEAN
    assert forks.pid not in (None, first)  # a new fork server


async def test_fork_server_kills_only_its_own_children(forks: ForkServer) -> None:
    stranger = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)"
    )
    try:
        await forks.start()
        forks.kill(stranger.pid)  # not its child: refused (a recycled pid is never killed)
        forks.kill(os.getpid())
        child = await forks.spawn("worker", ["/nonexistent"])
        out, _ = await child.communicate()
        assert stranger.returncode is None and alive(stranger.pid)
        assert child.returncode == 0  # a missing file is a report, not a crash
        assert json.loads(out)["findings"][0]["outcome"] == "error"
    finally:
        stranger.kill()
        await stranger.wait()


async def test_fork_server_answers_garbage_requests_with_errors_and_keeps_serving(
    forks: ForkServer, tmp_path: Path
) -> None:
    await forks.start()
    with pytest.raises(ValueError, match="unknown kind"):
        await forks.spawn("shell", ["-c", "id"])
    # straight onto its socket: bad JSON, an unknown op and kind, no file descriptors
    control = forks._control
    assert control is not None
    for request in [b"{not json", b"[]", b'{"op": "exec"}', b'{"op": "spawn", "kind": "sh"}']:
        socket.send_fds(control, [request], [])
    socket.send_fds(
        control, [json.dumps({"op": "spawn", "kind": "worker", "args": []}).encode()], []
    )
    config = tmp_path / "config.part"
    config.write_text("{}")
    report = await ScannerPool(_limits(), forks=forks).scan(config, "config.json")
    assert report.outcome is Outcome.CLEAN


async def test_spawn_after_close_is_refused(forks: ForkServer) -> None:
    await forks.close()
    with pytest.raises(ForkFailed, match="stopping"):
        await forks.spawn("worker", ["x"])


async def test_a_live_servers_fork_server_and_its_children_are_not_leftovers(
    tmp_path: Path,
) -> None:
    """`--workers N` share one data directory: a worker starting up kills the leftovers of dead
    servers, never a live sibling's fork server or its forks (whose parent is the fork server)."""
    scan_dir = tmp_path / "tmp"
    scan_dir.mkdir()
    forks = ForkServer(scan_dir)
    try:
        child = await forks.spawn("stream_worker", ["--scan-dir", str(scan_dir)])
        assert forks.pid is not None
        assert kill_leftover_workers(scan_dir) == 0
        assert alive(forks.pid) and alive(child.pid) and child.returncode is None
    finally:
        await forks.close()


async def test_spawn_failing_after_the_fork_leaves_no_pipe_open_and_no_child(
    forks: ForkServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should wiring a child's pipes into the event loop fail (no file descriptor left, say),
    the spawn fails whole: every pipe end closed, the child killed."""
    await forks.start()
    loop = asyncio.get_running_loop()
    real = loop.connect_read_pipe
    calls = 0

    async def second_fails(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(24, "Too many open files")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    await asyncio.sleep(0.1)  # let the fork server's start settle
    before = set(Path("/proc/self/fd").iterdir())
    monkeypatch.setattr(loop, "connect_read_pipe", second_fails)
    with pytest.raises(OSError, match="Too many open files"):
        await forks.spawn("worker", ["/nonexistent"])
    monkeypatch.undo()
    await until(lambda: not scan_processes(FULL_SCAN, zombies=True), 10.0)
    await asyncio.sleep(0)  # closed transports drop their pipes on the next turn
    assert set(Path("/proc/self/fd").iterdir()) - before == set()


async def test_forked_scan_reads_keras_h5_through_its_own_hdf5_child(
    forks: ForkServer, tmp_path: Path
) -> None:
    """A scan worker is a single-threaded fork: its HDF5 reader is a fork of it in turn."""
    from tests.scanners.test_keras import _h5_lambda, keras2_config, make_h5

    clean = make_h5(tmp_path / "clean.part", keras2_config([]))
    evil = _h5_lambda(tmp_path / "evil.part")
    pool = ScannerPool(_limits(), forks=forks)
    assert (await pool.scan(clean, "model.h5")).outcome is Outcome.CLEAN
    report = await pool.scan(evil, "model.h5")
    assert (report.outcome, [f.code for f in report.findings]) == (
        Outcome.MALICIOUS,
        ["KERAS_LAMBDA_CODE"],
    )
