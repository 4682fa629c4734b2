"""The server's side of `scanners.forkserver`: scan processes for the price of a fork.

`ForkServer.spawn(kind, args)` starts `python -m scanners.<kind> ARGS` as a fork of a process
that has the scanners imported already, and returns a `ForkedProcess`: the parts of
`asyncio.subprocess.Process` the scan pools use (pid, stdin, stdout, stderr, wait, kill,
communicate, returncode). The fork server itself starts on the first spawn (or `start`), is
started again after it died, and is ended by `close`; one belongs to one app (one event loop).

If the fork server dies, its children die with it (PR_SET_PDEATHSIG): their `wait` answers
SIGKILL, and the pools treat that as any dead worker (the file is held or moved).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import logging
import os
import signal
import socket
import sys
import weakref
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

FORK_SERVER_MODULE = "scanners.forkserver"
MAX_MESSAGE_BYTES = 64 * 1024
PIPE_CLOSE_WAIT_S = 1.0
SPAWN_TIMEOUT_S = 30.0
KINDS = ("worker", "stream_worker")
_STDERR_FD = 2  # the process's own stderr, whatever `sys.stderr` is now (a test's capture)


class ForkFailed(OSError):
    """No process could be started (the fork server could not start, or refused the spawn)."""


class ForkedProcess:
    """A child of the fork server, as the pools drive an `asyncio.subprocess.Process`."""

    def __init__(
        self,
        server: ForkServer,
        pid: int,
        stdin: asyncio.StreamWriter,
        pipes: list[_Pipe],
        exited: asyncio.Future[int],
    ) -> None:
        self._server = server
        self.pid = pid
        self.stdin = stdin
        self.stdout = pipes[0].reader
        self.stderr = pipes[1].reader if len(pipes) > 1 else None
        self._pipes = pipes
        self._exited = exited
        exited.add_done_callback(lambda _: stdin.close())  # as asyncio's transport does

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        """The exit status, once the process has ended and its output pipes are read to their
        end (or, if something else holds them open, closed a moment later)."""
        status = await asyncio.shield(self._exited)
        pending = [p.closed for p in self._pipes if not p.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=PIPE_CLOSE_WAIT_S)
        self.release()
        return status

    def release(self) -> None:
        """Close this side of its pipes (done by `wait`, and for every child by the fork
        server's `close`, so that no pipe outlives the event loop)."""
        self.stdin.close()
        for pipe in self._pipes:
            pipe.close()

    def on_exit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the process has ended."""
        self._exited.add_done_callback(lambda _: callback())

    def kill(self) -> None:
        if not self._exited.done():
            self._server.kill(self.pid)

    async def communicate(self) -> tuple[bytes, bytes]:
        """Close stdin, read stdout and stderr to their ends, wait for the exit."""
        self.stdin.close()
        readers = [p.reader.read() for p in self._pipes]
        out, *err = await asyncio.gather(*readers)
        await self.wait()
        return out, err[0] if err else b""


class _Pipe(asyncio.StreamReaderProtocol):
    """A read pipe from a child: its reader, and a future done when the pipe is closed."""

    def __init__(self, limit: int) -> None:
        loop = asyncio.get_running_loop()
        self.reader = asyncio.StreamReader(limit=limit, loop=loop)
        super().__init__(self.reader, loop=loop)
        self.closed: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


class ForkServer:
    """One `python -m scanners.forkserver` process and the task that reads its messages."""

    def __init__(self, scan_dir: Path) -> None:
        self.scan_dir = scan_dir
        self._process: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._next_id = 0
        self._spawns: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._children: weakref.WeakSet[ForkedProcess] = weakref.WeakSet()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The fork server's own pid while it runs (tests and diagnostics)."""
        alive = self._process is not None and self._process.returncode is None
        return self._process.pid if alive and self._process is not None else None

    async def start(self) -> None:
        """Start the fork server now (else the first spawn does)."""
        await self._ensure()

    async def spawn(
        self, kind: str, args: list[str], *, limit: int = 2**16, capture_stderr: bool = True
    ) -> ForkedProcess:
        """Start a child running `scanners.<kind>` with `args`, its stdin and stdout pipes to
        this process, its stderr a pipe too or (`capture_stderr=False`) this process's own
        (a long-lived child whose stderr nobody reads must not block on a full pipe).
        Raises ForkFailed."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        control = await self._ensure()
        loop = asyncio.get_running_loop()
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        theirs, ours = [stdin_r, stdout_w], [stdin_w, stdout_r]
        if capture_stderr:
            stderr_r, stderr_w = os.pipe()
            theirs.append(stderr_w)
            ours.append(stderr_r)
        self._next_id += 1
        ident = self._next_id
        spawned: asyncio.Future[int] = loop.create_future()
        self._spawns[ident] = spawned
        request = {"op": "spawn", "id": ident, "kind": kind, "args": args}
        try:
            try:
                fds = theirs if capture_stderr else [*theirs, _STDERR_FD]
                socket.send_fds(control, [json.dumps(request).encode()], fds)
            finally:
                for fd in theirs:
                    os.close(fd)
            async with asyncio.timeout(SPAWN_TIMEOUT_S):
                pid = await asyncio.shield(spawned)
        except BaseException as exc:  # failed or cancelled: nobody will read these pipes
            for fd in ours:
                os.close(fd)
            if isinstance(exc, OSError | TimeoutError):
                raise ForkFailed(f"the fork server did not start a {kind}: {exc}") from exc
            raise
        finally:
            self._spawns.pop(ident, None)
        exited = self._exits.setdefault(pid, loop.create_future())
        if self._control is None and not exited.done():  # the fork server died meanwhile
            exited.set_result(-signal.SIGKILL)
        files = [os.fdopen(ours[0], "wb", 0), *(os.fdopen(fd, "rb", 0) for fd in ours[1:])]
        stdin: asyncio.StreamWriter | None = None
        pipes: list[_Pipe] = []
        try:
            stdin = await _writer(files[0])
            for file in files[1:]:
                pipe = _Pipe(limit)
                await loop.connect_read_pipe(functools.partial(_same, pipe), file)
                pipes.append(pipe)
        except BaseException:  # no pipe left open, no child left running
            self.kill(pid)
            if stdin is not None:
                stdin.close()
            for pipe in pipes:
                pipe.close()
            for file in files:
                file.close()
            raise
        child = ForkedProcess(self, pid, stdin, pipes, exited)
        self._children.add(child)
        return child

    def kill(self, pid: int) -> None:
        """SIGKILL a child (the fork server checks it is still its own)."""
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._control.send(json.dumps({"op": "kill", "pid": pid}).encode())

    async def close(self) -> None:
        """End the fork server; its children die with it, and their pipes are closed."""
        self._closed = True
        await self._stop()
        for child in list(self._children):
            child.release()

    # -- the fork server process ------------------------------------------------------------------
    async def _ensure(self) -> socket.socket:
        async with self._starting:
            if self._closed:
                raise ForkFailed("the mirror is stopping")
            if self._control is not None and self._reader is not None and not self._reader.done():
                return self._control
            await self._stop()
            return await self._launch()

    async def _launch(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                FORK_SERVER_MODULE,
                "--scan-dir",
                str(self.scan_dir.resolve()) + os.sep,  # `kill_leftover_workers` matches it
                f"--parent-pid={os.getpid()}",  # it dies with this process
                stdin=theirs.fileno(),
            )
        except OSError as exc:
            ours.close()
            raise ForkFailed(f"the fork server could not start: {exc}") from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        self._control = ours
        self._reader = asyncio.create_task(self._read(ours), name="fork server reader")
        return ours

    async def _read(self, control: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(control, MAX_MESSAGE_BYTES):
                self._dispatch(data)
        except OSError as exc:
            logger.warning("the fork server's socket failed: %s", exc)
        finally:
            self._lost()

    def _dispatch(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            logger.error("the fork server answered garbage")
            return
        if not isinstance(message, dict):
            return
        if "exited" in message:
            pid, status = message.get("exited"), message.get("status")
            if type(pid) is int and type(status) is int:
                future = self._exits.pop(pid, None)
                if future is None:  # ended before `spawn` registered it
                    future = asyncio.get_running_loop().create_future()
                    self._exits[pid] = future
                    asyncio.get_running_loop().call_later(60, self._exits.pop, pid, None)
                if not future.done():
                    future.set_result(status)
            return
        spawned = self._spawns.get(message.get("id"))  # type: ignore[arg-type]
        if spawned is None or spawned.done():
            return
        if type(message.get("pid")) is int:
            spawned.set_result(message["pid"])
        else:
            spawned.set_exception(ForkFailed(str(message.get("error"))[:300]))

    def _lost(self) -> None:
        """The fork server is gone: so are its children (SIGKILL with it)."""
        if self._control is not None:
            self._control.close()
            self._control = None
        for future in self._spawns.values():
            if not future.done():
                future.set_exception(ForkFailed("the fork server ended"))
        for future in self._exits.values():
            if not future.done():
                future.set_result(-signal.SIGKILL)
        self._exits.clear()

    async def _stop(self) -> None:
        if self._control is not None:
            self._control.close()  # it exits when its socket closes
            self._control = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            # killed, not asked: it keeps nothing, may still be importing the scanners (a
            # shutdown would wait for that), and its children die with it (PR_SET_PDEATHSIG)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def _same(pipe: _Pipe) -> _Pipe:
    return pipe


async def _writer(pipe: io.RawIOBase) -> asyncio.StreamWriter:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop), pipe
    )
    return asyncio.StreamWriter(transport, protocol, None, loop)
