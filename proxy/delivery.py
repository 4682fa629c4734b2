"""From a file request to something servable: a released blob, an in-flight ingest, or an error.

This is the core of the resolve route: resolve the entry, check access, pins and blocks, then look
at the blob's state. It never waits for content; the edge decides how to wait (progressive
streaming, or 429 + Retry-After).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from proxy.caching import WARM_TTL_S, TtlCache
from proxy.catalog import Caller, Catalog, Resolved
from proxy.errors import AccessDenied, Held, NotReady, UpstreamRateLimited, UpstreamUnavailable
from proxy.ingest import IngestJob, Ingestor, IngestSpec
from proxy.lifecycle import BlobLifecycle
from proxy.metadata import TreeEntry
from proxy.repos import RepoPath, RepoRef, Revision
from proxy.store.blob_protocol import BlobStore
from proxy.store.models import BlobState
from proxy.store.repository import Repository
from proxy.trust.gate import Gate

logger = logging.getLogger(__name__)

MAX_CACHED_PATHS = 10_000


@dataclass(frozen=True, slots=True)
class FileTarget:
    """A file of a repo at a commit, with the entry upstream advertised for it."""

    resolved: Resolved
    entry: TreeEntry

    @property
    def commit(self) -> str:
        return self.resolved.commit


@dataclass(frozen=True, slots=True)
class ReleasedBlob:
    """A released blob to send: from `path` by sendfile (local store), else from the store
    (`BlobStore.read_released`, `presigned_url`)."""

    target: FileTarget
    path: Path | None
    sha256: str


@dataclass(frozen=True, slots=True)
class InFlightBlob:
    target: FileTarget
    job: IngestJob


class Delivery:
    """Finds what to send for a file request."""

    def __init__(
        self,
        catalog: Catalog,
        repository: Repository,
        store: BlobStore,
        ingestor: Ingestor,
        gate: Gate,
        lifecycle: BlobLifecycle,
        retry_after_s: int,
    ) -> None:
        self._lifecycle = lifecycle
        self._catalog = catalog
        self._db = repository
        self._store = store
        self._ingestor = ingestor
        self._gate = gate
        self._retry_after_s = retry_after_s
        self._released: TtlCache[str, str] = TtlCache(WARM_TTL_S)  # etag -> sha256
        self._paths: dict[str, Path | None] = {}  # sha256 -> local file (derived, never stale)
        # The warm path: (raw request path, caller key) -> released blob, checked at most
        # WARM_TTL_S ago, and only while no block was placed since (the gate's generation).
        self._warm: TtlCache[tuple[str, str], tuple[int, ReleasedBlob]] = TtlCache(WARM_TTL_S)

    async def locate(
        self, repo: RepoRef, revision: Revision, path: RepoPath, caller: Caller
    ) -> FileTarget:
        """The file's entry at a commit revision, after the access check (blocks and pins are
        checked by `open`: a HEAD answers from metadata even for held files, hub-protocol §6.3).
        Raises RepoNotFound, GatedRepo, RevisionNotFound, EntryNotFound, Upstream*."""
        resolved = await self._catalog.resolve(repo, revision, caller, allow_blocked=True)
        entry = await self._catalog.file_entry(resolved, path.value, caller)
        await self._catalog.check_access(resolved.repo, caller, probe=(resolved.commit, entry.path))
        return FileTarget(resolved, entry)

    async def prefetch(self, target: FileTarget, caller: Caller) -> None:
        """For HEAD: start the ingest of an absent blob in the background; never waits. Nothing
        is fetched that the GET would refuse (blocked repo, policy rule, pin)."""
        try:
            await self._gate.check(target.resolved.repo, target.commit, target.entry, caller.token)
        except Held:
            return
        blob = await self._db.get_blob(target.entry.etag)
        if blob is None:
            try:
                await self._ingestor.start(self._spec(target, caller))
            except (UpstreamUnavailable, UpstreamRateLimited, AccessDenied) as exc:
                # a backoff, a full store, or an upstream mirror refusing: the GET will say so
                logger.info("no prefetch of %s: %s", target.entry.path, exc.message)

    async def open(self, target: FileTarget, caller: Caller) -> ReleasedBlob | InFlightBlob:
        """What to send for a GET. Raises Held (quarantined, rejected) or NotReady."""
        entry = target.entry
        await self._gate.check(target.resolved.repo, target.commit, entry, caller.token)
        sha256 = self._released.get(entry.etag)
        if sha256 is not None:
            return await self._released_blob(target, sha256, caller)
        blob = await self._db.get_blob(entry.etag)
        if blob is None:
            job = await self._ingestor.start(self._spec(target, caller))
            if job is None:
                raise NotReady(entry.path, self._retry_after_s)
            return InFlightBlob(target, job)
        if blob.state is BlobState.RELEASED and blob.sha256:
            self._released.put(entry.etag, blob.sha256)
            return await self._released_blob(target, blob.sha256, caller)
        if blob.state in (BlobState.QUARANTINED, BlobState.REJECTED):
            raise self._lifecycle.held(blob, entry.path)
        job = self._ingestor.job(entry.etag)
        if job is None:
            # Between our read and now the ingest may have finished: read the state once more.
            blob = await self._db.get_blob(entry.etag)
            if blob is not None and blob.state is BlobState.RELEASED and blob.sha256:
                return await self._released_blob(target, blob.sha256, caller)
            if blob is None:
                job = await self._ingestor.start(self._spec(target, caller))
            else:  # a row whose ingest died with its process is taken over, not waited for
                job = await self._ingestor.recover(self._spec(target, caller), blob)
            if job is None:
                raise NotReady(entry.path, self._retry_after_s)
        return InFlightBlob(target, job)

    def warm(self, key: tuple[str, str]) -> ReleasedBlob | None:
        """A released blob this exact request was answered with less than WARM_TTL_S ago."""
        item = self._warm.get(key)
        if item is None or item[0] != self._gate.generation:
            return None
        return item[1]

    def remember_warm(self, key: tuple[str, str], found: ReleasedBlob) -> None:
        self._warm.put(key, (self._gate.generation, found))

    async def _released_blob(self, target: FileTarget, sha256: str, caller: Caller) -> ReleasedBlob:
        await self._gate.after_release(
            target.resolved.repo, target.commit, target.entry, caller.token
        )
        if sha256 in self._paths:
            path = self._paths[sha256]
        else:
            if len(self._paths) >= MAX_CACHED_PATHS:
                self._paths.clear()
            path = self._paths[sha256] = self._store.released_file(sha256)
        return ReleasedBlob(target, path, sha256)

    @staticmethod
    def _spec(target: FileTarget, caller: Caller) -> IngestSpec:
        return IngestSpec(
            repo=target.resolved.repo, commit=target.commit, entry=target.entry, token=caller.token
        )
