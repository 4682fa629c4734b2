"""`python -m scanners.forkserver --scan-dir DIR [--parent-pid PID]`: starts the proxy's scan
processes by forking itself, so that each costs a fork rather than a new interpreter that
imports every scanner again (about 0.4 s of CPU per file scanned, and per stream worker).

The server starts one fork server (`proxy.forkserver.ForkServer`) and talks to it over a Unix
`SOCK_SEQPACKET` socket given as stdin. The fork server imports the scanners once, then serves
requests, one datagram each, JSON:

    -> {"op": "spawn", "id": 3, "kind": "worker", "args": ["--name=x", "PATH"]}  + 3 fds
    <- {"id": 3, "pid": 4321}                          (or {"id": 3, "error": "..."})
    <- {"exited": 4321, "status": 0}                   when the child has ended (reaped)
    -> {"op": "kill", "pid": 4321}                     SIGKILL, if it is still our child

The three file descriptors attached to a spawn become the child's stdin, stdout and stderr;
`kind` picks the program the child runs, `scanners.worker` (one full scan) or
`scanners.stream_worker` (the long-lived stream scans), with `args` as its command line: the
child is that program, with its protocol and limits, minus the interpreter start-up. Its exit
status is reported as asyncio reports one (a negative number: killed by that signal).

Safety: the fork server is single-threaded (it forks from its only thread, so no lock of
another thread is inherited), reaps its children itself (a pid it was asked to kill is still
its own child, never a recycled pid), and parses no model bytes; it dies with the server
(PR_SET_PDEATHSIG) and its children die with it. Each child names itself in /proc/PID/comm
(`hw-scan`, `hw-stream`), so operators and tests can tell the kinds apart.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Callable

from scanners import stream_worker, worker
from scanners.worker import add_parent_argument, die_with_parent

MAX_REQUEST_BYTES = 64 * 1024
FDS_PER_SPAWN = 3
PR_SET_NAME = 15  # linux/prctl.h
EXIT_FAILED = 70  # the child could not become its program

PROGRAMS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "worker": ("hw-scan", worker.main),
    "stream_worker": ("hw-stream", stream_worker.main),
}


class ForkServer:
    """The request loop: fork on `spawn`, kill on `kill`, report every child's end."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._children: set[int] = set()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def run(self) -> None:
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select through the pipe
        while True:
            control = self._control.fileno()
            readable, _, _ = select.select([control, self._wake_r], [], [])
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                self._reap()
            if control in readable and not self._serve_one():
                return  # the server closed its end

    def _serve_one(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self._control, MAX_REQUEST_BYTES, FDS_PER_SPAWN)
        except InterruptedError:
            return True
        if not data:
            return False
        try:
            request = json.loads(data)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            if request.get("op") == "spawn":
                self._spawn(request, fds)
            elif request.get("op") == "kill":
                self._kill(request.get("pid"))
            else:
                raise ValueError(f"unknown op {request.get('op')!r}")
        except (ValueError, OSError) as exc:
            self._send({"id": _ident(data), "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _spawn(self, request: dict[str, object], fds: list[int]) -> None:
        kind, args, ident = request.get("kind"), request.get("args"), request.get("id")
        if kind not in PROGRAMS:
            raise ValueError(f"unknown kind {kind!r}")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError("args must be a list of strings")
        if len(fds) != FDS_PER_SPAWN:
            raise ValueError(f"a spawn carries {FDS_PER_SPAWN} file descriptors")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            self._become(str(kind), [str(a) for a in args], fds)
        self._children.add(pid)
        self._send({"id": ident, "pid": pid})

    def _become(self, kind: str, args: list[str], fds: list[int]) -> None:
        code = EXIT_FAILED
        try:
            signal.set_wakeup_fd(-1)
            for number in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
                signal.signal(number, signal.SIG_DFL)
            die_with_parent(os.getppid())  # the fork server; it dies with the server
            self._control.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for fd in fds:
                if fd > 2:
                    os.close(fd)
            title, program = PROGRAMS[kind]
            _set_name(title)
            sys.argv = [kind, *args]
            code = program(args)
            sys.stdout.flush()
            sys.stderr.flush()
        except SystemExit as exc:  # argparse on bad arguments
            code = exc.code if isinstance(exc.code, int) else EXIT_FAILED
        except BaseException:  # noqa: BLE001 - the child's last resort: say why, then exit
            with contextlib.suppress(Exception):
                import traceback

                traceback.print_exc()
                sys.stderr.flush()
        finally:
            os._exit(code)

    def _kill(self, pid: object) -> None:
        if type(pid) is int and pid in self._children:  # ours and not reaped: not recycled
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._children.discard(pid)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            self._send({"exited": pid, "status": code})

    def _send(self, message: dict[str, object]) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._control.send(json.dumps(message).encode())


def _ident(data: bytes) -> object:
    with contextlib.suppress(ValueError, AttributeError):
        return json.loads(data).get("id")
    return None


def _set_name(title: str) -> None:
    """Name this process in /proc/PID/comm (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_NAME, title.encode(), 0, 0, 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scanners.forkserver", description=__doc__)
    parser.add_argument("--scan-dir", required=True, help="for `kill_leftover_workers` to match")
    add_parent_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve spawn requests on the socket given as stdin until the server closes it."""
    args = _parser().parse_args(argv)
    die_with_parent(args.parent_pid)
    control = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # nothing printed can reach a pipe that is not a child's
    ForkServer(control).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
