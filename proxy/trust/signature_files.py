"""Where signatures get a commit's file list and the signature file's bytes (`RevisionFiles`).

`MirrorFiles` is the server's: the catalog lists the commit (upstream once, then recorded; offline
from what was recorded) and the signature file is fetched, verified against the hash upstream
advertised and scanned like any other file (`Ingestor`), then read from the blob store. Its bytes
are read even while held in quarantine: they are only parsed as JSON and checked, never executed
or served. `StoredFiles` is for commands that run beside the server: recorded data only.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from proxy.catalog import Caller, Catalog, Resolved
from proxy.errors import HubwardenError, OfflineMiss, shown
from proxy.ingest import Ingestor, IngestSpec
from proxy.metadata import EntryType, TreeEntry
from proxy.store.blob_protocol import BlobPlace, BlobStore
from proxy.store.models import BlobState
from proxy.store.repository import BlobRecord, RepoRecord, Repository
from proxy.trust.model_signing_adapter import MAX_SIGNATURE_BYTES
from proxy.trust.signatures import RevisionUnknown, SignatureFileUnavailable

FETCH_TIMEOUT_S = 60.0
POLL_S = 0.2
_READABLE = (BlobState.RELEASED, BlobState.QUARANTINED)


def _read_head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(MAX_SIGNATURE_BYTES + 1)


async def _read_verified(store: BlobStore, sha256: str) -> bytes:
    """The bytes of a stored blob (released or held), checked against its sha256."""
    for place in (BlobPlace.RELEASED, BlobPlace.QUARANTINED):
        try:
            async with store.local_copy(sha256, place) as path:
                data = await asyncio.to_thread(_read_head, path)
        except FileNotFoundError:
            continue  # moved between the two places meanwhile: try the other
        if hashlib.sha256(data).hexdigest() == sha256:
            return data
        raise SignatureFileUnavailable(f"the stored signature file does not hash to {sha256}")
    raise SignatureFileUnavailable("the signature file is not in the blob store")


def _usable(blob: BlobRecord | None) -> str | None:
    """The sha256 of a blob whose bytes can be read, None when there is none yet. Raises
    SignatureFileUnavailable(refused) for a rejected one."""
    if blob is None:
        return None
    if blob.state is BlobState.REJECTED:
        raise SignatureFileUnavailable(
            f"this mirror rejected the signature file ({shown(blob.reason)})", refused=True
        )
    return blob.sha256 if blob.state in _READABLE and blob.sha256 else None


class StoredFiles:
    """A commit's recorded files and the stored signature file; never fetches anything."""

    def __init__(self, repository: Repository, store: BlobStore) -> None:
        self._db = repository
        self._store = store

    async def entry(
        self, repo: RepoRecord, commit: str, path: str, token: str | None
    ) -> TreeEntry | None:
        found = await self._db.get_commit(repo.pk, commit)
        entries = await self._db.get_entries(found.pk, [path]) if found is not None else []
        if entries:
            return entries[0]
        if found is None or not found.tree_complete:
            raise RevisionUnknown(f"the file list of {repo.ref} at {commit[:12]} was not recorded")
        return None

    async def listing(self, repo: RepoRecord, commit: str, token: str | None) -> list[TreeEntry]:
        found = await self._db.get_commit(repo.pk, commit)
        if found is None or not found.tree_complete:
            raise RevisionUnknown(f"the file list of {repo.ref} at {commit[:12]} was not recorded")
        entries = await self._db.list_entries(found.pk)
        return [e for e in entries if e.entry_type is EntryType.FILE]

    async def read(
        self, repo: RepoRecord, commit: str, entry: TreeEntry, token: str | None
    ) -> bytes:
        sha256 = _usable(await self._db.get_blob(entry.etag))
        if sha256 is None:
            raise SignatureFileUnavailable("the signature file was never mirrored here")
        return await _read_verified(self._store, sha256)


class MirrorFiles(StoredFiles):
    """The server's: lists through the catalog and fetches the signature file when needed."""

    def __init__(
        self, catalog: Catalog, ingestor: Ingestor, repository: Repository, store: BlobStore
    ) -> None:
        super().__init__(repository, store)
        self._catalog = catalog
        self._ingestor = ingestor

    async def entry(
        self, repo: RepoRecord, commit: str, path: str, token: str | None
    ) -> TreeEntry | None:
        try:
            found = await self._catalog.entries(Resolved(repo, commit), [path], Caller(token))
        except OfflineMiss as exc:
            raise RevisionUnknown(exc.message) from exc
        except HubwardenError as exc:  # upstream trouble: checked again later
            raise RevisionUnknown(f"the file list cannot be had now ({exc.message})") from exc
        return next((e for e in found if e.path == path and e.entry_type is EntryType.FILE), None)

    async def listing(self, repo: RepoRecord, commit: str, token: str | None) -> list[TreeEntry]:
        try:
            entries = await self._catalog.tree(Resolved(repo, commit), Caller(token))
        except OfflineMiss as exc:
            raise RevisionUnknown(exc.message) from exc
        except HubwardenError as exc:  # upstream trouble: checked again later
            raise RevisionUnknown(f"the file list cannot be had now ({exc.message})") from exc
        return [e for e in entries if e.entry_type is EntryType.FILE]

    async def read(
        self, repo: RepoRecord, commit: str, entry: TreeEntry, token: str | None
    ) -> bytes:
        if entry.size > MAX_SIGNATURE_BYTES:
            raise SignatureFileUnavailable(
                f"the signature file is {entry.size} bytes, more than {MAX_SIGNATURE_BYTES}",
                refused=True,
            )
        spec = IngestSpec(repo=repo, commit=commit, entry=entry, token=token)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FETCH_TIMEOUT_S
        while loop.time() < deadline:
            blob = await self._db.get_blob(entry.etag)
            sha256 = _usable(blob)
            if sha256 is not None:
                return await _read_verified(self._store, sha256)
            if blob is None and self._catalog.offline:
                raise SignatureFileUnavailable("the signature file was never mirrored here")
            await self._wait_for_fetch(spec, blob, deadline - loop.time())
        raise SignatureFileUnavailable(f"fetching it took more than {FETCH_TIMEOUT_S:.0f} s")

    async def _wait_for_fetch(
        self, spec: IngestSpec, blob: BlobRecord | None, timeout_s: float
    ) -> None:
        """Start (or join) the signature file's ingest and wait for its end, or a moment when
        another replica fetches it."""
        try:
            if blob is None:
                job = await self._ingestor.start(spec)
            else:
                job = self._ingestor.job(spec.entry.etag) or await self._ingestor.recover(
                    spec, blob
                )
        except HubwardenError as exc:  # a backoff, a full store, the upstream down
            raise SignatureFileUnavailable(exc.message) from exc
        if job is None:
            await asyncio.sleep(POLL_S)
            return
        while not job.done and timeout_s > 0:  # then its state says what became of it
            await job.wait_change(min(timeout_s, 1.0))
            timeout_s -= 1.0
