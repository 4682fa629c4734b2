"""The scan processes on this machine, read from /proc (Linux): the fork server's children name
themselves in /proc/PID/comm (`hw-scan` for a full scan, `hw-stream` for a stream worker) and
keep the fork server's command line (`--scan-dir DATA/tmp/ --parent-pid=SERVER`)."""

from __future__ import annotations

import os
from pathlib import Path

from proxy.scanning import parent_pid_in

PROC = Path("/proc")
FULL_SCAN = "hw-scan"
STREAM_WORKER = "hw-stream"


def scan_processes(
    kind: str, *, server: int | None = None, under: Path | None = None, zombies: bool = False
) -> set[int]:
    """Pids of `kind` processes forked for `server` (default: this process) whose command line
    names a directory under `under` (if given); zombies only when asked for."""
    server = os.getpid() if server is None else server
    root = None if under is None else str(under.resolve())
    found = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if comm != kind:
            continue
        zombie = "\nState:\tZ" in status
        if zombie and not zombies:
            continue
        if not cmdline:  # a zombie has none: its parent, the fork server, has the same
            cmdline = _cmdline(parent_pid_in(status))
        if root is not None and root not in cmdline:
            continue
        if f"--parent-pid={server}" in cmdline.split("\0"):
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is dead)."""
    try:
        return "\nState:\tZ" not in (PROC / str(pid) / "status").read_text()
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
