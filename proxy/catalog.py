"""What the mirror knows about repos: revisions → commits, repo info, trees and entries.

Immutable facts (a commit's info and tree) are recorded in the database the first time upstream
tells them, so warm requests for a commit cost no upstream call. Mutable facts (where a branch
points, who may see a private or gated repo) come from upstream through a short-TTL cache. In
offline mode everything comes from the database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from proxy.caching import IMMUTABLE_TTL_S, WARM_TTL_S, TtlCache
from proxy.errors import EntryNotFound, OfflineMiss, RepoNotFound, RevisionNotFound, shown
from proxy.metadata import EntryType, RepoInfo, TreeEntry, strip_xet
from proxy.repos import RepoRef, Revision
from proxy.store.repository import RepoRecord, Repository
from proxy.trust.access import AccessChecker, LocalAccess
from proxy.upstream import Upstream
from scanners.report import JsonValue

logger = logging.getLogger(__name__)

MAX_PATHS_PER_QUERY = 1000
EntriesAt = Callable[[list[str]], Awaitable[list[TreeEntry]]]


class TrustGuard(Protocol):
    """What the catalog asks of the trust rules (`proxy.trust.gate.Gate`) about refs."""

    async def check_repo(self, repo: RepoRecord, revision: Revision | None) -> None: ...

    async def on_new_commit(self, repo: RepoRecord, commit: str, token: str | None) -> None: ...

    async def on_ref_moved(
        self, repo: RepoRecord, name: str, moved: tuple[str, str], token: str | None
    ) -> None: ...

    async def served_commit(
        self, repo: RepoRecord, name: str, head: str, entries_at: EntriesAt, token: str | None
    ) -> str: ...


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
    notice: str = ""


class Catalog:
    """Revision resolution, repo info, trees and entries, from the database or upstream."""

    def __init__(
        self,
        repository: Repository,
        upstream: Upstream | None,
        *,
        ttl_s: float,
        access_ttl_s: float = 300.0,
        local_access: LocalAccess | None = None,
        clock: Callable[[], float] = time.monotonic,
        guard: TrustGuard | None = None,
    ) -> None:
        self._db = repository
        self._upstream = upstream
        self._guard = guard
        self._info_cache: TtlCache[tuple[RepoRef, str, str], RepoInfo] = TtlCache(ttl_s, clock)
        self._access = AccessChecker(upstream, access_ttl_s, clock, local=local_access)
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
        self,
        repo: RepoRef,
        revision: Revision | None,
        caller: Caller,
        *,
        allow_blocked: bool = False,
    ) -> tuple[RepoRecord, RepoInfo]:
        """Repo info at a revision (None: default branch). A branch or tag gives its approved
        commit (`Gate.served_commit`). Raises RepoNotFound, GatedRepo, RevisionNotFound,
        Upstream* errors, OfflineMiss, and Held when the repo is blocked (unless
        `allow_blocked`: the file routes answer HEAD from metadata and refuse the GET)."""
        found = await self._repo_info(repo, revision, caller)
        if self._guard is not None and not allow_blocked:
            await self._guard.check_repo(found[0], revision)
        return found

    async def _repo_info(
        self, repo: RepoRef, revision: Revision | None, caller: Caller
    ) -> tuple[RepoRecord, RepoInfo]:
        if revision is not None and revision.is_commit:
            recorded = await self._recorded_info(repo, revision.name, caller)
            if recorded is not None:
                return recorded
        if self._upstream is None:
            return await self._offline_info(repo, revision, caller)
        rev_key = revision.name if revision is not None else ""
        cache_key = (repo, rev_key, caller.key)
        info = self._info_cache.get(cache_key)
        if info is None:
            info = await self._upstream.repo_info(
                repo, revision.name if revision else None, caller.token
            )
            self._info_cache.put(cache_key, info)
        record = await self._record_info(repo, info, revision, caller)
        if revision is not None and revision.is_commit:
            return record, info
        served = await self._served_commit(record, rev_key, info.sha, caller)
        if served == info.sha:
            return record, info
        record, approved = await self._repo_info(repo, Revision(served), caller)
        branch = shown(rev_key) or "the default branch"
        notice = (
            f"serving the last approved commit {served[:12]} of {branch}; its newer head "
            f"{info.sha[:12]} changes a pinned file and awaits review"
        )
        return record, dataclasses.replace(approved, notice=notice)

    async def _served_commit(self, record: RepoRecord, name: str, head: str, caller: Caller) -> str:
        if self._guard is None or name.startswith("refs/"):
            return head

        async def entries_at(paths: list[str]) -> list[TreeEntry]:
            return await self.entries(Resolved(record, head), paths, caller)

        return await self._guard.served_commit(record, name, head, entries_at, caller.token)

    async def _record_info(
        self, repo: RepoRef, info: RepoInfo, revision: Revision | None, caller: Caller
    ) -> RepoRecord:
        record = await self._db.upsert_repo(
            repo, private=info.private, gated=str(info.gated).lower()
        )
        is_new = await self._db.get_commit(record.pk, info.sha) is None
        await self._db.save_commit(record.pk, info.sha, dict(info.raw))
        guard = self._guard
        if revision is None or not revision.is_commit:
            name = revision.name if revision is not None else ""
            previous = await self._db.set_ref(record.pk, name, info.sha)
            if guard is not None and previous is not None and previous != info.sha:
                await guard.on_ref_moved(record, name, (previous, info.sha), caller.token)
        if guard is not None and is_new:
            # A commit never seen: every ref of a pinned repo is checked before any of its files
            # is served, whether it was asked for by branch or by hash (DESIGN.md rule 4).
            await guard.on_new_commit(record, info.sha, caller.token)
        return record

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
        self, repo: RepoRef, revision: Revision | None, caller: Caller
    ) -> tuple[RepoRecord, RepoInfo]:
        record = await self._db.find_repo(repo)
        if record is None:
            raise RepoNotFound(repo.repo_id, authenticated=True)
        await self.check_access(record, caller)
        name = revision.name if revision is not None else ""
        sha = name if revision is not None and revision.is_commit else None
        if sha is None:
            sha = await self._served_ref(record.pk, name)
        if sha is None and not name:
            # The default branch is recorded as "" when asked for without a revision; most
            # clients name it, and it is nearly always "main".
            sha = await self._served_ref(record.pk, "main")
        if sha is None:
            raise RevisionNotFound(name or "main")
        commit = await self._db.get_commit(record.pk, sha)
        if commit is None or commit.info is None:
            raise RevisionNotFound(name or sha)
        return record, _info_from_json(repo, sha, commit.info, record)

    async def refs(
        self, repo: RepoRef, caller: Caller, *, include_prs: bool
    ) -> dict[str, JsonValue]:
        """The refs listing, each branch and tag at the commit clients are served (its approved
        commit while a newer head awaits review). Raises as `repo_info`, OfflineMiss."""
        record, _ = await self.repo_info(repo, None, caller)
        if self._upstream is None:
            raise OfflineMiss(f"offline: the refs of {repo} are not mirrored")
        body = await self._upstream.refs(repo, caller.token, include_prs=include_prs)
        assert isinstance(body, dict)
        approved = {
            r.name: r.approved_commit
            for r in await self._db.list_refs(record.pk)
            if r.approved_commit and r.approved_commit != r.commit
        }
        for key in ("branches", "converts", "tags"):
            items = body.setdefault(key, [])
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and approved.get(str(item.get("name"))):
                    item["targetCommit"] = approved[str(item.get("name"))]
        return body

    async def _served_ref(self, repo_pk: int, name: str) -> str | None:
        """Offline: the approved commit of a recorded ref (its head if never judged)."""
        ref = await self._db.get_ref_record(repo_pk, name)
        if ref is None:
            return None
        return ref.approved_commit or ref.commit

    async def resolve(
        self, repo: RepoRef, revision: Revision, caller: Caller, *, allow_blocked: bool = False
    ) -> Resolved:
        """The commit a revision names. Raises as `repo_info`."""
        record, info = await self.repo_info(repo, revision, caller, allow_blocked=allow_blocked)
        return Resolved(record, info.sha, info.notice)

    async def check_access(
        self, record: RepoRecord, caller: Caller, probe: tuple[str, str] | None = None
    ) -> None:
        """Whether the caller may see a private or gated repo (DESIGN.md rule 8): asked upstream
        with the caller's own token, for a file request by its `probe` = (commit, path), since
        gated metadata is public; positive answers cached for `access_ttl_s`. Raises RepoNotFound
        or GatedRepo; offline, gated and private repos are refused (no local access list yet).
        See `proxy.trust.access.AccessChecker`."""
        await self._access.check(record, caller, probe)

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
