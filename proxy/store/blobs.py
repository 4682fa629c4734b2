"""The blob store on the local filesystem: `data_dir/{tmp,quarantine,blobs}`.

Every path in here derives from a sha256 that Hubwarden computed itself (checked to be 64 hex
characters), never from a name a client or upstream sent. Files arrive in `tmp/`, are fsynced, and
move by atomic rename into `blobs/` (released) or `quarantine/` (held for review).

`LocalBlobStore` keeps the blocking methods it always had (`release`, `quarantine`,
`released_path`...: `hubwarden doctor` and the air-gap import work on the directory itself) and
adds the asynchronous `proxy.store.blob_protocol.BlobStore` methods the server uses.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from proxy.errors import UpstreamUnavailable, shown
from proxy.ops.owners import pid_is_alive
from proxy.store.blob_protocol import BlobPlace, checked_sha256

logger = logging.getLogger(__name__)

_TEMP_NAME = re.compile(r"(?:([0-9]{1,10})-)?[0-9a-f]{32}\.part")
STORE_FULL_STATUS = 507
READ_CHUNK_BYTES = 1024 * 1024


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


_checked = checked_sha256


class LocalBlobStore:
    """Local directory store. Its synchronous methods block briefly (rename, fsync): call them
    via to_thread; the `BlobStore` protocol's methods do so themselves."""

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
        return self.clear_dead_temps()

    def clear_dead_temps(self) -> int:
        """Delete the temp files in tmp/ of processes that no longer run; returns how many."""
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

    # -- the BlobStore protocol -------------------------------------------------------------

    async def start(self) -> int:
        return await asyncio.to_thread(self.prepare)

    async def publish(self, temp: Path, sha256: str, place: BlobPlace) -> None:
        move = self.release if place is BlobPlace.RELEASED else self.quarantine
        await asyncio.to_thread(move, temp, sha256)

    async def release_held(self, sha256: str) -> None:
        await asyncio.to_thread(self.release_from_quarantine, sha256)

    async def hold_again(self, sha256: str) -> None:
        await asyncio.to_thread(self.return_to_quarantine, sha256)

    async def contains(self, sha256: str, place: BlobPlace) -> bool:
        return await asyncio.to_thread(self._place_path(sha256, place).is_file)

    async def probe(self) -> str:
        """The released and quarantine directories are there (a data directory deleted or
        unmounted under a running server is not ready)."""
        await asyncio.to_thread(_require_directories, (self.blobs_dir, self.quarantine_dir))
        return "blob directories present"

    def released_file(self, sha256: str) -> Path:
        return self.released_path(sha256)

    @asynccontextmanager
    async def read_released(
        self, sha256: str, start: int, end: int
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        handle = await asyncio.to_thread(self.released_path(sha256).open, "rb")
        try:
            yield _chunks_of(handle.fileno(), start, end)
        finally:
            handle.close()

    async def presigned_url(self, sha256: str, content_disposition: str) -> None:
        return None  # the server sends local files itself (sendfile)

    @asynccontextmanager
    async def local_copy(self, sha256: str, place: BlobPlace) -> AsyncIterator[Path]:
        path = self._place_path(sha256, place)
        if not await asyncio.to_thread(path.is_file):
            raise FileNotFoundError(f"{place.value} blob {sha256} is not in the store")
        yield path

    def _place_path(self, sha256: str, place: BlobPlace) -> Path:
        if place is BlobPlace.RELEASED:
            return self.released_path(sha256)
        return self.quarantined_path(sha256)

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


# The local store's former name, kept for the code and tests that build the local store by it
# (doctor, the air-gap import, tests/service); new code types against blob_protocol.BlobStore.
BlobStore = LocalBlobStore


async def _chunks_of(fd: int, start: int, end: int) -> AsyncIterator[bytes]:
    """[start, end) of an open file, read on worker threads; stops early at end of file."""
    position = start
    while position < end:
        data = await asyncio.to_thread(
            os.pread, fd, min(READ_CHUNK_BYTES, end - position), position
        )
        if not data:
            return
        position += len(data)
        yield data


def _require_directories(directories: tuple[Path, ...]) -> None:
    for directory in directories:
        if not directory.is_dir():
            raise FileNotFoundError(errno.ENOENT, "blob directory missing", str(directory))
