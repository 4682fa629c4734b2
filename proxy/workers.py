"""`hubwarden serve --workers N`: N server processes on one host and one port.

The parent binds N listening sockets to the same address with SO_REUSEPORT (the first one picks
the port when 0 is asked for), so the kernel spreads new connections evenly over the workers,
then forks one worker per socket and supervises them: SIGTERM/SIGINT are passed on, and a worker
that dies unasked is started again, unless workers keep dying right after their start (then all
stop, so a broken configuration does not spin). Workers share nothing but the database and the
blob store: single flight across them is the database lease (proxy.store.leases), exactly as
across replicas.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024
# A worker that dies within this many seconds of its start counts towards a crash loop.
EARLY_DEATH_S = 10.0
MAX_EARLY_DEATHS = 3
EXIT_WORKERS_FAILED = 1


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on host:port with SO_REUSEPORT. Raises OSError."""
    first = _listening(host, port)
    bound_port = int(first.getsockname()[1])
    sockets = [first]
    try:
        sockets.extend(_listening(host, bound_port) for _ in range(count - 1))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _listening(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class Supervisor:
    """Forks the workers, passes signals on, restarts the ones that die unasked."""

    sockets: list[socket.socket]
    run_worker: Callable[[socket.socket], int]
    """What a worker runs with its socket; its return value is the worker's exit code."""
    worker_ended: Callable[[int], None] = lambda pid: None
    """Called in the parent with the pid of each worker that ended (metrics clean-up)."""
    children: dict[int, int] = field(default_factory=dict)  # pid → socket index
    started: dict[int, float] = field(default_factory=dict)  # pid → monotonic start
    stopping: bool = False
    early_deaths: int = 0

    def run(self) -> int:
        """Serve until asked to stop; returns the exit code of the whole."""
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(len(self.sockets)):
                self._fork(index)
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in self.sockets:
                sock.close()

    def _fork(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: default signal handling until its event loop takes over
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = self.run_worker(self.sockets[index])
            except BaseException:
                logger.exception("worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = index
        self.started[pid] = time.monotonic()
        logger.info("worker %d started (%d of %d)", pid, index + 1, len(self.sockets))

    def _supervise(self) -> int:
        failed = False
        while self.children:
            pid, status = os.waitpid(-1, 0)
            index = self.children.pop(pid, None)
            if index is None:
                continue
            lived_s = time.monotonic() - self.started.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            try:
                self.worker_ended(pid)
            except Exception:  # a clean-up must not stop the supervision
                logger.exception("after worker %d ended", pid)
            if self.stopping:
                logger.info("worker %d stopped (%d)", pid, code)
                continue
            logger.error("worker %d ended unasked (exit %d) after %.1f s", pid, code, lived_s)
            self.early_deaths = self.early_deaths + 1 if lived_s < EARLY_DEATH_S else 0
            if self.early_deaths >= MAX_EARLY_DEATHS:
                logger.error("workers keep dying at start; stopping them all (see above)")
                failed = True
                self._stop(signal.SIGTERM, None)
                continue
            self._fork(index)
        return EXIT_WORKERS_FAILED if failed else 0

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
