"""What the rest of Hubwarden needs of a blob store, whatever holds the bytes.

Two implementations: the local directory (`proxy.store.blobs.LocalBlobStore`, the default) and an
S3-compatible bucket (`proxy.store.s3.S3BlobStore`). Both take files in through a local temp file
(scanners read a local file), keep released blobs and quarantined ones apart, and address them only
by a sha256 Hubwarden computed itself (64 hex characters), never by a name a client sent.
"""

from __future__ import annotations

import enum
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

from proxy.errors import UpstreamUnavailable, shown

_SHA256 = re.compile(r"[0-9a-f]{64}")
STORE_UNAVAILABLE_STATUS = 503


class BlobPlace(enum.StrEnum):
    """Where a stored blob lives: served (`released`) or kept for review, never served."""

    RELEASED = "released"
    QUARANTINED = "quarantined"


class StoreUnavailable(UpstreamUnavailable):
    """The blob store refused or failed an operation (`operation`, `reason`): an object store
    unreachable, access denied, an object that is not what it should be. Answered 503 (a
    subclass of UpstreamUnavailable only so the hub edge maps its `status`)."""

    def __init__(self, operation: str, reason: str) -> None:
        self.operation = operation
        self.reason = reason
        super().__init__(
            f"the mirror's blob store failed to {operation} ({shown(reason)}); retry in a "
            "moment, and if this persists ask the mirror's administrator to check the store "
            "(its [store] settings: endpoint, bucket, credentials)",
            status=STORE_UNAVAILABLE_STATUS,
        )


def checked_sha256(sha256: str) -> str:
    """`sha256` if it is 64 lowercase hex characters; else ValueError (a bug: stores are only
    ever given hashes Hubwarden computed)."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
    return sha256


class BlobStore(Protocol):
    """Stored blobs, released or quarantined, and the local temp files ingests write.

    `publish`, `release_held` and `hold_again` raise StoreUnavailable (remote stores) or OSError
    (local disk); `local_copy` and `read_released` raise FileNotFoundError for a missing blob."""

    @property
    def tmp_dir(self) -> Path:
        """The local directory of temp files (ingests, scans, local copies)."""
        ...

    async def start(self) -> int:
        """Create what is missing and clean what a stopped run left (temp files; unfinished
        uploads). Returns how many leftovers were removed."""
        ...

    def new_temp(self) -> Path:
        """A fresh, empty, private temp file (created) in `tmp_dir`. Blocks briefly."""
        ...

    def free_bytes(self) -> int:
        """Bytes that may still be written to `tmp_dir`. Blocks briefly."""
        ...

    def discard(self, path: Path) -> None:
        """Delete a temp file (missing: nothing to do). Blocks briefly."""
        ...

    def clear_dead_temps(self) -> int:
        """Delete the temp files of processes of this host that no longer run (an ingest taken
        over from a killed one); returns how many. Blocks briefly."""
        ...

    async def publish(self, temp: Path, sha256: str, place: BlobPlace) -> None:
        """Store a verified temp file under its sha256 and remove the temp file. A blob
        already stored there with the same content is fine (content-addressed)."""
        ...

    async def release_held(self, sha256: str) -> None:
        """quarantined → released (a reviewer's decision, a clean rescan)."""
        ...

    async def hold_again(self, sha256: str) -> None:
        """released → quarantined (the waiver that let it through ended)."""
        ...

    async def contains(self, sha256: str, place: BlobPlace) -> bool:
        """Whether the blob is stored in `place`."""
        ...

    async def probe(self) -> str:
        """Prove the store itself is there and answers (readiness): a short detail, or
        StoreUnavailable / OSError (a deleted bucket or blob directory, no rights, no route)."""
        ...

    def released_file(self, sha256: str) -> Path | None:
        """The local file of a released blob, for sendfile; None when the store is remote
        (then `read_released` or `presigned_url`). Never checks that the file exists."""
        ...

    def read_released(
        self, sha256: str, start: int, end: int
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """The bytes [start, end) of a released blob, as chunks."""
        ...

    async def presigned_url(self, sha256: str, content_disposition: str) -> str | None:
        """A short-lived URL of a released blob the client may fetch directly; None when the
        store does not hand those out (local, or `presign = false`)."""
        ...

    def local_copy(self, sha256: str, place: BlobPlace) -> AbstractAsyncContextManager[Path]:
        """A local file holding the stored blob for the duration of the context (the blob's
        own file for a local store; a verified download, deleted afterwards, for a remote one).
        Never write to it."""
        ...
