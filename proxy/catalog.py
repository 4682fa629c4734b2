"""What the mirror knows about repos: revisions → commits, repo info, trees and entries.

Immutable facts (a commit's info and tree) are recorded in the database the first time upstream
tells them, so warm requests for a commit cost no upstream call. Mutable facts (where a branch
points, who may see a private or gated repo) come from upstream through a short-TTL cache. In
offline mode everything comes from the database.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.caching import IMMUTABLE_TTL_S, WARM_TTL_S, TtlCache
from proxy.errors import EntryNotFound, OfflineMiss, RepoNotFound, RevisionNotFound
from proxy.metadata import EntryType, RepoInfo, TreeEntry, strip_xet
from proxy.repos import RepoRef, Revision
from proxy.store.repository import RepoRecord, Repository
from proxy.upstream import Upstream
from scanners.report import JsonValue

logger = logging.getLogger(__name__)

MAX_PATHS_PER_QUERY = 1000
MAX_HISTORY_PAGES = 100
HistoryRewritten = Callable[[RepoRecord, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: the client's bearer token (in memory for upstream calls only, never stored)."""

    token: str | None

    @property
    def key(self) -> str:
        """A stable, non-reversible key for caches: never the token itself."""
        if self.token is None:
            return "anonymous"
        return hashlib.sha256(self.token.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Resolved:
    """A revision resolved to a commit of a recorded repo."""

    repo: RepoRecord
    commit: str


class Catalog:
    """Revision resolution, repo info, trees and entries, from the database or upstream."""

    def __init__(
        self,
        repository: Repository,
        upstream: Upstream | None,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_history_rewritten: HistoryRewritten | None = None,
    ) -> None:
        self._db = repository
        self._upstream = upstream
        self._on_history_rewritten = on_history_rewritten
        self._info_cache: TtlCache[tuple[RepoRef, str, str], RepoInfo] = TtlCache(ttl_s, clock)
        self._access_cache: TtlCache[tuple[RepoRef, str], bool] = TtlCache(ttl_s, clock)
        # The warm path: a commit's recorded info (short: access flags may change) and entries.
        self._recorded: TtlCache[tuple[RepoRef, str], tuple[RepoRecord, RepoInfo]] = TtlCache(
            max(ttl_s, WARM_TTL_S), clock
        )
        self._entries: TtlCache[tuple[int, str, str], TreeEntry] = TtlCache(IMMUTABLE_TTL_S, clock)
        self._absent: TtlCache[tuple[int, str, str], bool] = TtlCache(IMMUTABLE_TTL_S, clock)

    @property
    def offline(self) -> bool:
        return self._upstream is None

    # -- repo info and revisions ---------------------------------------------------------------

    async def repo_info(
        self, repo: RepoRef, revision: Revision | None, caller: Caller
    ) -> tuple[RepoRecord, RepoInfo]:
        """Repo info at a revision (None: default branch). Raises RepoNotFound, GatedRepo,
        RevisionNotFound, Upstream* errors, OfflineMiss."""
        if revision is not None and revision.is_commit:
            recorded = await self._recorded_info(repo, revision.name, caller)
            if recorded is not None:
                return recorded
        if self._upstream is None:
            return await self._offline_info(repo, revision)
        rev_key = revision.name if revision is not None else ""
        cache_key = (repo, rev_key, caller.key)
        info = self._info_cache.get(cache_key)
        if info is None:
            info = await self._upstream.repo_info(
                repo, revision.name if revision else None, caller.token
            )
            self._info_cache.put(cache_key, info)
        record = await self._record_info(repo, info, revision, caller)
        return record, info

    async def _record_info(
        self, repo: RepoRef, info: RepoInfo, revision: Revision | None, caller: Caller
    ) -> RepoRecord:
        record = await self._db.upsert_repo(
            repo, private=info.private, gated=str(info.gated).lower()
        )
        await self._db.save_commit(record.pk, info.sha, dict(info.raw))
        if revision is None or not revision.is_commit:
            name = revision.name if revision is not None else ""
            previous = await self._db.set_ref(record.pk, name, info.sha)
            if previous is not None and previous != info.sha and not name.startswith("refs/"):
                await self._check_descends(record, name, (previous, info.sha), caller)
        return record

    async def _check_descends(
        self, record: RepoRecord, name: str, moved: tuple[str, str], caller: Caller
    ) -> None:
        """A branch or tag that moved must still have its previous commit in its history
        (DESIGN.md rule 4); the Hub's listing carries no parents, its order is the history."""
        assert self._upstream is not None
        previous, head = moved
        cursor: str | None = None
        for _ in range(MAX_HISTORY_PAGES):
            page = await self._upstream.commits_page(record.ref, head, cursor, caller.token)
            if any(c.commit_id == previous for c in page.items):
                return
            cursor = page.cursor
            if cursor is None:
                break
        detail = (
            f'"{name or "default branch"}" moved from {previous[:12]} to {head[:12]}, '
            f"which does not descend from it"
        )
        logger.warning("history of %s rewritten: %s", record.ref, detail)
        if self._on_history_rewritten is not None:
            await self._on_history_rewritten(record, detail)

    async def _recorded_info(
        self, repo: RepoRef, sha: str, caller: Caller
    ) -> tuple[RepoRecord, RepoInfo] | None:
        cached = self._recorded.get((repo, sha))
        if cached is not None:
            await self.check_access(cached[0], caller)
            return cached
        record = await self._db.find_repo(repo)
        if record is None:
            return None
        commit = await self._db.get_commit(record.pk, sha)
        if commit is None or commit.info is None:
            return None
        await self.check_access(record, caller)
        found = record, _info_from_json(repo, sha, commit.info, record)
        self._recorded.put((repo, sha), found)
        return found

    async def _offline_info(
        self, repo: RepoRef, revision: Revision | None
    ) -> tuple[RepoRecord, RepoInfo]:
        record = await self._db.find_repo(repo)
        if record is None:
            raise RepoNotFound(repo.repo_id, authenticated=True)
        name = revision.name if revision is not None else ""
        sha = name if revision is not None and revision.is_commit else None
        if sha is None:
            sha = await self._db.get_ref(record.pk, name)
        if sha is None and not name:
            # The default branch is recorded as "" when asked for without a revision; most
            # clients name it, and it is nearly always "main".
            sha = await self._db.get_ref(record.pk, "main")
        if sha is None:
            raise RevisionNotFound(name or "main")
        commit = await self._db.get_commit(record.pk, sha)
        if commit is None or commit.info is None:
            raise RevisionNotFound(name or sha)
        return record, _info_from_json(repo, sha, commit.info, record)

    async def resolve(self, repo: RepoRef, revision: Revision, caller: Caller) -> Resolved:
        """The commit a revision names. Raises as `repo_info`."""
        record, info = await self.repo_info(repo, revision, caller)
        return Resolved(record, info.sha)

    async def check_access(
        self, record: RepoRecord, caller: Caller, probe: tuple[str, str] | None = None
    ) -> None:
        """For private and gated repos, ask upstream (cached) whether the caller may see them;
        for gated repos the file `probe` = (commit, path) is asked for, since gated metadata is
        public. Raises RepoNotFound or GatedRepo. Offline the recorded copy is served (no local
        ACL yet)."""
        gated = record.gated not in ("false", "")
        if not record.private and not gated:
            return
        if self._upstream is None:
            return
        key = (record.ref, caller.key)
        if self._access_cache.get(key):
            return
        if gated and probe is not None:
            commit, path = probe
            await self._upstream.file_metadata(record.ref, commit, path, caller.token)
        else:
            await self._upstream.repo_info(record.ref, None, caller.token)
        self._access_cache.put(key, True)

    # -- trees and entries ---------------------------------------------------------------------

    async def tree(self, resolved: Resolved, caller: Caller) -> list[TreeEntry]:
        """Every file and folder at the commit, recorded on first use."""
        commit = await self._db.get_commit(resolved.repo.pk, resolved.commit)
        if commit is None:
            commit = await self._db.save_commit(resolved.repo.pk, resolved.commit, None)
        if commit.tree_complete:
            return await self._db.list_entries(commit.pk)
        if self._upstream is None:
            raise OfflineMiss(
                f"offline: the file list of {resolved.repo.ref} at {resolved.commit} was never "
                "mirrored; import it or fetch it while online"
            )
        entries = await self._upstream.list_tree(resolved.repo.ref, resolved.commit, caller.token)
        await self._db.save_tree(commit.pk, entries)
        return sorted(entries, key=lambda e: e.path)

    async def entries(
        self, resolved: Resolved, paths: list[str], caller: Caller
    ) -> list[TreeEntry]:
        """Entries for the given paths (unknown ones left out), recorded on first use."""
        paths = paths[:MAX_PATHS_PER_QUERY]
        commit = await self._db.get_commit(resolved.repo.pk, resolved.commit)
        if commit is None:
            commit = await self._db.save_commit(resolved.repo.pk, resolved.commit, None)
        known = await self._db.get_entries(commit.pk, paths)
        absent_key = (resolved.repo.pk, resolved.commit)
        missing = sorted(
            p
            for p in set(paths) - {e.path for e in known}
            if self._absent.get((*absent_key, p)) is None
        )
        if not missing or commit.tree_complete or self._upstream is None:
            return known
        fetched = await self._upstream.paths_info(
            resolved.repo.ref, resolved.commit, missing, caller.token
        )
        wanted = set(missing)
        fetched = [e for e in fetched if e.path in wanted]
        await self._db.save_entries(commit.pk, fetched)
        # A commit never changes: remember what it lacks (clients probe optional files a lot).
        for path in wanted - {e.path for e in fetched}:
            self._absent.put((*absent_key, path), True)
        return known + fetched

    async def file_entry(self, resolved: Resolved, path: str, caller: Caller) -> TreeEntry:
        """The file at `path`. Raises EntryNotFound (with the commit) when absent or a folder."""
        key = (resolved.repo.pk, resolved.commit, path)
        cached = self._entries.get(key)
        if cached is not None:
            return cached
        found = await self.entries(resolved, [path], caller)
        for entry in found:
            if entry.path == path and entry.entry_type is EntryType.FILE:
                self._entries.put(key, entry)
                return entry
        raise EntryNotFound(path, commit=resolved.commit)


def _info_from_json(
    repo: RepoRef, sha: str, raw: dict[str, JsonValue], record: RepoRecord
) -> RepoInfo:
    clean = strip_xet(raw)
    assert isinstance(clean, dict)
    gated: str | bool = record.gated if record.gated not in ("false", "") else False
    return RepoInfo(
        repo_id=repo.repo_id,
        sha=sha,
        private=record.private,
        gated=gated,
        disabled=clean.get("disabled") is True,
        raw=clean,
    )
