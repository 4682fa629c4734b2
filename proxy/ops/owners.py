"""Which process owns an ingest, and whether it still lives.

An owner is `host:pid`, recorded on the blob row it claims (`lease_owner`) and in the names of
its temp files. `hubwarden doctor` and a restarted server tell a live ingest from one a dead
process left behind by asking `is_alive`; an owner on another host cannot be judged from here.
"""

from __future__ import annotations

import enum
import os
import socket

MAX_OWNER_CHARS = 64


class Liveness(enum.StrEnum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"
    """Another host (or no owner recorded): nothing on this machine can tell."""


def host_name() -> str:
    return socket.gethostname()[:40] or "localhost"


def this_process() -> str:
    """The owner name of this process: `host:pid`."""
    return f"{host_name()}:{os.getpid()}"[:MAX_OWNER_CHARS]


def pid_of(owner: str | None) -> int | None:
    """The pid in an owner name of this host; None for another host or a malformed name."""
    if not owner:
        return None
    host, _, pid = owner.rpartition(":")
    if host != host_name() or not pid.isdigit():
        return None
    return int(pid)


def pid_is_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def is_alive(owner: str | None) -> Liveness:
    """Whether the process named `owner` runs (pid reuse aside: a new process with the same pid
    counts as alive, so nothing live is ever taken for dead)."""
    if owner is None or owner.rpartition(":")[0] != host_name():
        return Liveness.UNKNOWN
    pid = pid_of(owner)
    if pid is None:
        return Liveness.UNKNOWN
    return Liveness.ALIVE if pid_is_alive(pid) else Liveness.DEAD
