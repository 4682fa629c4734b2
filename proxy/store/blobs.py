"""The blob store on the local filesystem: `data_dir/{tmp,quarantine,blobs}`.

Every path in here derives from a sha256 that Hubwarden computed itself (checked to be 64 hex
characters), never from a name a client or upstream sent. Files arrive in `tmp/`, are fsynced, and
move by atomic rename into `blobs/` (released) or `quarantine/` (held for review).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from proxy.errors import UpstreamUnavailable, shown
from proxy.ops.owners import pid_is_alive

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_TEMP_NAME = re.compile(r"(?:([0-9]{1,10})-)?[0-9a-f]{32}\.part")
STORE_FULL_STATUS = 507


class StoreFull(UpstreamUnavailable):
    """The blob store cannot hold a file: before an ingest, less than its `size` plus the
    configured `margin` is free (`free`); during one, a write failed (`reason`, e.g. ENOSPC).
    Answered 507 (a subclass of UpstreamUnavailable only so the hub edge maps its `status`)."""

    def __init__(self, path: str, size: int, free: int, margin: int, reason: str = "") -> None:
        self.path = path
        self.size = size
        self.free = free
        self.margin = margin
        self.reason = reason
        if reason:
            what = f"the mirror cannot store {shown(path)}: writing it failed ({shown(reason)})"
        else:
            what = (
                f"the mirror's store is full: {shown(path)} needs {size} bytes plus a margin of "
                f"{margin}, and {free} are free"
            )
        super().__init__(
            f"{what}; ask the mirror's administrator to free space in its data directory "
            "(hubwarden doctor), then retry",
            status=STORE_FULL_STATUS,
        )


def temp_owner_pid(path: Path) -> int | None:
    """The pid of the process that made a temp file (None: not one of ours, or older)."""
    match = _TEMP_NAME.fullmatch(path.name)
    return int(match[1]) if match and match[1] else None


def _live_temp(path: Path) -> bool:
    """A temp file another process of this host that still runs is writing."""
    pid = temp_owner_pid(path)
    return pid is not None and pid != os.getpid() and pid_is_alive(pid)


def _checked(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
    return sha256


class BlobStore:
    """Local directory store. Methods block briefly (rename, fsync): call them via to_thread."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve()
        self.tmp_dir = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        self.blobs_dir = self.root / "blobs"

    def prepare(self) -> int:
        """Create the directories and delete what a previous run left half-written in tmp/
        (not the files of another live process: a server or `hubwarden prefetch` sharing this
        data directory). Returns how many temp files were removed."""
        for directory in (self.tmp_dir, self.quarantine_dir, self.blobs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        removed = 0
        for leftover in self.tmp_dir.iterdir():
            if (leftover.is_file() or leftover.is_symlink()) and not _live_temp(leftover):
                leftover.unlink(missing_ok=True)
                removed += 1
        if removed:
            logger.info("removed %d half-written temp files from %s", removed, self.tmp_dir)
        return removed

    def new_temp(self) -> Path:
        """A fresh, empty temp file path (created) in tmp/, named after this process so that
        `hubwarden doctor` tells a live ingest's file from one a dead process left."""
        path = self.tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        path.touch(mode=0o600, exist_ok=False)
        return path

    def released_path(self, sha256: str) -> Path:
        sha = _checked(sha256)
        return self.blobs_dir / sha[:2] / sha

    def quarantined_path(self, sha256: str) -> Path:
        sha = _checked(sha256)
        return self.quarantine_dir / sha

    def release(self, temp: Path, sha256: str) -> Path:
        """Move a verified temp file into the content-addressed store."""
        return self._move(temp, self.released_path(sha256))

    def quarantine(self, temp: Path, sha256: str) -> Path:
        """Move a verified temp file into quarantine (kept for review, never served)."""
        return self._move(temp, self.quarantined_path(sha256))

    def release_from_quarantine(self, sha256: str) -> Path:
        """An admin released a quarantined blob."""
        return self._move(self.quarantined_path(sha256), self.released_path(sha256))

    def return_to_quarantine(self, sha256: str) -> Path:
        """A released blob is held again (the waiver that let it through ended)."""
        return self._move(self.released_path(sha256), self.quarantined_path(sha256))

    def discard(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        """Bytes this process may still write under the data directory (statvfs)."""
        return shutil.disk_usage(self.tmp_dir).free

    def has_released(self, sha256: str) -> bool:
        return self.released_path(sha256).is_file()

    @staticmethod
    def _move(source: Path, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(source, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        source.replace(target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return target
