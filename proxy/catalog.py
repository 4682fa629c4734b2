"""What the mirror knows about repos: revisions → commits, repo info, trees, entries, refs and
commit listings.

Immutable facts (a commit's info, tree and commit listing) are recorded in the database the first
time upstream tells them, so warm requests for a commit cost no upstream call. Mutable facts (where
a branch points, who may see a private or gated repo) come from upstream through a short-TTL cache;
what each ref is (branch, tag...) is recorded when it is first resolved. Offline, everything comes
from the database: a branch or tag gives the commit last approved for it (`Gate.served_commit`),
and what was never mirrored is the Hub's error for it (`OfflineRepoNotFound`,
`NotMirroredRevision`, `NotMirroredEntry`) saying how to get it mirrored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from proxy.caching import IMMUTABLE_TTL_S, WARM_TTL_S, TtlCache
from proxy.errors import (
    AccessDenied,
    EntryNotFound,
    GatedRepo,
    HubwardenError,
    OfflineMiss,
    RepoNotFound,
    RevisionNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    shown,
)
from proxy.metadata import (
    CommitInfo,
    EntryType,
    RefKind,
    RepoInfo,
    TreeEntry,
    ref_item,
    ref_kinds,
    strip_xet,
)
from proxy.repos import RepoRef, Revision
from proxy.store.repository import RefRecord, RepoRecord, Repository
from proxy.trust.access import AccessChecker, LocalAccess, OfflineRepoNotFound
from proxy.upstream import Upstream
from scanners.report import JsonValue

logger = logging.getLogger(__name__)

MAX_PATHS_PER_QUERY = 1000
# A commit listing is recorded whole or not at all. At first sight of a commit only short
# histories are walked (the Hub lists 50 commits a page), so a HEAD never waits long; the commits
# route walks up to MAX_HISTORY_PAGES, and past MAX_HISTORY_COMMITS passes pages through.
EAGER_HISTORY_PAGES = 2
MAX_HISTORY_PAGES = 100
MAX_HISTORY_COMMITS = 10_000
MAX_REPO_LOCKS = 10_000
ASK_FOR_IT = "ask an administrator to prefetch it or import a bundle that holds it"
# Upstream answers that only leave a fact unrecorded for now (it is asked again later): the
# request that would have recorded it goes on.
_NOT_RECORDED_NOW = (
    UpstreamUnavailable,
    UpstreamRateLimited,
    UpstreamRejected,
    RepoNotFound,
    RevisionNotFound,
    GatedRepo,
    AccessDenied,
)
EntriesAt = Callable[[list[str]], Awaitable[list[TreeEntry]]]


class NotMirroredRevision(RevisionNotFound, OfflineMiss):
    """Offline: the revision, or its file list or commit listing (`what`), was never mirrored.
    A `RevisionNotFound` on the wire, so that the client raises `RevisionNotFoundError`."""

    def __init__(self, repo: RepoRef, revision: str, what: str = "") -> None:
        self.repo = repo
        self.revision = revision
        self.what = what
        named = f'"{shown(revision)}"'
        subject = f"the {what} of {repo} at {named}" if what else f"revision {named} of {repo}"
        HubwardenError.__init__(
            self, f"{subject} was never mirrored here and this mirror is offline; {ASK_FOR_IT}"
        )


class NotMirroredEntry(EntryNotFound, OfflineMiss):
    """Offline: the file (or the entry of that path) at a commit was never mirrored. Sent
    without X-Repo-Commit: the client must not record the file as absent from the commit."""

    def __init__(self, repo: RepoRef, path: str, commit: str) -> None:
        self.repo = repo
        self.path = path
        self.commit = None
        self.folder = False
        self.at = commit
        HubwardenError.__init__(
            self,
            f'"{shown(path)}" of {repo} at {commit[:12]} was never mirrored here and this mirror '
            f"is offline; {ASK_FOR_IT}",
        )


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
    """Revision resolution, repo info, trees, entries, refs and commit listings, from the
    database or upstream."""

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
        # Which upstream answer (by identity: the info cache hands out the same object) was
        # last recorded for (repo, revision): a repeated lookup then neither writes nor reads.
        # Kept only for the warm caches' second, so the database stays the truth (issue 9).
        self._recorded_answers: TtlCache[tuple[RepoRef, str], tuple[RepoInfo, RepoRecord]] = (
            TtlCache(WARM_TTL_S, clock)
        )
        self._approved_heads: TtlCache[tuple[int, str, str], bool] = TtlCache(WARM_TTL_S, clock)
        self._entries: TtlCache[tuple[int, str, str], TreeEntry] = TtlCache(IMMUTABLE_TTL_S, clock)
        self._absent: TtlCache[tuple[int, str, str], bool] = TtlCache(IMMUTABLE_TTL_S, clock)
        self._kinds: TtlCache[tuple[int, str], bool] = TtlCache(IMMUTABLE_TTL_S, clock)
        self._too_long: TtlCache[tuple[int, str], bool] = TtlCache(IMMUTABLE_TTL_S, clock)
        self._locks: dict[int, asyncio.Lock] = {}

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
        Upstream* errors, and Held when the repo is blocked (unless `allow_blocked`: the file
        routes answer HEAD from metadata and refuse the GET). Offline: OfflineRepoNotFound,
        NotMirroredRevision for what was never mirrored."""
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
        if self._approved_heads.get((record.pk, name, head)):
            return head  # approved moments ago: decisions apply within the warm second

        async def entries_at(paths: list[str]) -> list[TreeEntry]:
            return await self.entries(Resolved(record, head), paths, caller)

        served = await self._guard.served_commit(record, name, head, entries_at, caller.token)
        if served == head:
            self._approved_heads.put((record.pk, name, head), True)
        return served

    async def _record_info(
        self, repo: RepoRef, info: RepoInfo, revision: Revision | None, caller: Caller
    ) -> RepoRecord:
        """Record what upstream said, writing only what changed (issue 9: a repeated lookup
        writes nothing); the very answer recorded moments ago is not even compared again."""
        key = (repo, revision.name if revision is not None else "")
        remembered = self._recorded_answers.get(key)
        if remembered is not None and remembered[0] is info:
            return remembered[1]
        record = await self._record_changes(repo, info, revision, caller)
        self._recorded_answers.put(key, (info, record))
        return record

    async def _record_changes(
        self, repo: RepoRef, info: RepoInfo, revision: Revision | None, caller: Caller
    ) -> RepoRecord:
        record = await self._db.upsert_repo(
            repo, private=info.private, gated=str(info.gated).lower()
        )
        commit = await self._db.get_commit(record.pk, info.sha)
        is_new = commit is None
        if commit is None or commit.info is None:
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
        if revision is None or not revision.is_commit:
            # After the gate recorded the repo's other refs, so that the listing names them too.
            await self._record_kind(record, revision.name if revision is not None else "", caller)
        if is_new:
            await self._record_short_history(record, info.sha, caller)
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

    async def _offline_record(self, repo: RepoRef, caller: Caller) -> RepoRecord:
        """Offline: the recorded repo, if this caller may see it. The same refusal for a repo
        never mirrored and for a private one the caller may not see: existence is not told."""
        record = await self._db.find_repo(repo)
        if record is None:
            raise OfflineRepoNotFound(repo.repo_id, authenticated=caller.token is not None)
        await self.check_access(record, caller)
        return record

    async def _offline_info(
        self, repo: RepoRef, revision: Revision | None, caller: Caller
    ) -> tuple[RepoRecord, RepoInfo]:
        record = await self._offline_record(repo, caller)
        name = revision.name if revision is not None else ""
        sha, notice = name, ""
        if revision is None or not revision.is_commit:
            sha, notice = await self._offline_ref(record, name)
        commit = await self._db.get_commit(record.pk, sha) if sha else None
        if commit is None or commit.info is None:
            raise NotMirroredRevision(repo, name or "main")
        info = _info_from_json(repo, sha, commit.info, record)
        return record, dataclasses.replace(info, notice=notice) if notice else info

    async def _offline_ref(self, record: RepoRecord, name: str) -> tuple[str, str]:
        """Offline: the commit a recorded ref serves (its approved commit; its head if never
        judged) and the notice when that is not its head. ("", "") when never recorded."""
        ref = await self._db.get_ref_record(record.pk, name)
        if ref is None and name in ("", "main"):
            # The default branch is recorded as "" when asked for without a revision and as
            # "main" when named; on the Hub it is "main", so either stands for the other.
            ref = await self._db.get_ref_record(record.pk, "main" if not name else "")
        if ref is None:
            return "", ""
        served = _served(ref)
        if served == ref.commit:
            return served, ""
        branch = shown(name) or "the default branch"
        notice = (
            f"serving the last approved commit {served[:12]} of {branch}; its newer head "
            f"{ref.commit[:12]} is not approved on this mirror"
        )
        return served, notice

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
        or GatedRepo; offline, the local access list decides. See
        `proxy.trust.access.AccessChecker`."""
        await self._access.check(record, caller, probe)

    # -- refs ----------------------------------------------------------------------------------

    async def refs(
        self, repo: RepoRef, caller: Caller, *, include_prs: bool
    ) -> dict[str, JsonValue]:
        """The refs listing, each branch and tag at the commit clients are served (its approved
        commit while a newer head awaits review). Offline: the recorded refs whose commit is
        mirrored. Raises as `repo_info`."""
        if self._upstream is None:
            record = await self._offline_record(repo, caller)
            if self._guard is not None:
                await self._guard.check_repo(record, None)
            return await self._recorded_refs(record, include_prs=include_prs)
        record, _ = await self.repo_info(repo, None, caller)
        body = await self._upstream.refs(repo, caller.token, include_prs=include_prs)
        assert isinstance(body, dict)
        await self._record_kinds(record, body)
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

    async def _record_kind(self, record: RepoRecord, name: str, caller: Caller) -> None:
        """Record what a ref just resolved by name is upstream, once: pull requests, conversions
        and the default branch by their names, branches and tags from the refs listing (one
        upstream call per repo, however many ask at once)."""
        if self._kinds.get((record.pk, name)):
            return
        kind = RefKind.of_name(name)
        if kind is not None:
            if await self._db.set_ref_kinds(record.pk, {name: kind}):
                self._kinds.put((record.pk, name), True)
            return
        if len(self._locks) > MAX_REPO_LOCKS:
            self._locks.clear()
        async with self._locks.setdefault(record.pk, asyncio.Lock()):
            ref = await self._db.get_ref_record(record.pk, name)
            if ref is not None and ref.kind is not None:
                self._kinds.put((record.pk, name), True)
                return
            assert self._upstream is not None
            try:
                body = await self._upstream.refs(record.ref, caller.token, include_prs=False)
            except _NOT_RECORDED_NOW as exc:
                logger.warning("refs of %s not recorded now: %s", record.ref, exc.message)
                return
            await self._record_kinds(record, body)
            if not self._kinds.get((record.pk, name)):
                await self._db.set_ref_kinds(record.pk, {name: RefKind.UNLISTED})
                self._kinds.put((record.pk, name), True)

    async def _record_kinds(self, record: RepoRecord, body: JsonValue) -> None:
        for name in await self._db.set_ref_kinds(record.pk, ref_kinds(body)):
            self._kinds.put((record.pk, name), True)

    async def _recorded_refs(
        self, record: RepoRecord, *, include_prs: bool
    ) -> dict[str, JsonValue]:
        """The refs listing from the records: each ref at the commit it serves, when mirrored.
        Refs whose kind was never learnt are listed as branches."""
        groups: dict[str, list[JsonValue]] = {"branches": [], "converts": [], "tags": []}
        if include_prs:
            groups["pullRequests"] = []
        refs = await self._db.list_refs(record.pk)
        named_main = any(r.name == "main" and r.kind in (None, RefKind.BRANCH) for r in refs)
        for ref in refs:
            kind, name = ref.kind or RefKind.BRANCH, ref.name
            if kind is RefKind.DEFAULT:
                if named_main:
                    continue
                kind, name = RefKind.BRANCH, "main"
            group, item = ref_item(kind, name, _served(ref))
            if kind is RefKind.UNLISTED or group not in groups:
                continue
            if not await self._is_mirrored(record, _served(ref)):
                continue
            groups[group].append(item)
        for items in groups.values():
            items.sort(key=lambda item: str(item.get("name")) if isinstance(item, dict) else "")
        return dict(groups)

    async def _is_mirrored(self, record: RepoRecord, sha: str) -> bool:
        commit = await self._db.get_commit(record.pk, sha)
        return commit is not None and commit.info is not None

    # -- commit listings -----------------------------------------------------------------------

    async def history(self, resolved: Resolved, caller: Caller) -> list[CommitInfo] | None:
        """The commit listing of the resolved commit, newest first, recorded on first use. None
        (online only) when it is longer than this mirror records: pass the upstream's pages
        through. Raises Upstream* errors; offline, NotMirroredRevision."""
        repo, commit = resolved.repo, resolved.commit
        recorded = await self._db.get_history(repo.pk, commit)
        if recorded is not None:
            return recorded
        if self._upstream is None:
            raise NotMirroredRevision(repo.ref, commit, "commit history")
        if self._too_long.get((repo.pk, commit)):
            return None
        listing = await self._walk_history(repo, commit, caller, MAX_HISTORY_PAGES)
        if listing is None:
            self._too_long.put((repo.pk, commit), True)
            return None
        await self._db.save_history(repo.pk, commit, listing)
        return listing

    async def _record_short_history(self, record: RepoRecord, commit: str, caller: Caller) -> None:
        """At first sight of a commit, record its listing if it is short (the common case), so
        that an offline mirror can list it; a failure only leaves it for later."""
        try:
            listing = await self._walk_history(record, commit, caller, EAGER_HISTORY_PAGES)
        except _NOT_RECORDED_NOW as exc:
            logger.info("history of %s@%s not recorded now: %s", record.ref, commit, exc.message)
            return
        if listing is not None:
            await self._db.save_history(record.pk, commit, listing)

    async def _walk_history(
        self, record: RepoRecord, commit: str, caller: Caller, max_pages: int
    ) -> list[CommitInfo] | None:
        """The whole upstream listing of `commit` (with the formatted renderings, so that either
        form can be answered); None when longer than `max_pages` or MAX_HISTORY_COMMITS."""
        assert self._upstream is not None
        listing: list[CommitInfo] = []
        cursor: str | None = None
        for _ in range(max_pages):
            page = await self._upstream.commits_page(
                record.ref, commit, cursor, caller.token, formatted=True
            )
            listing.extend(page.items)
            cursor = page.cursor
            if len(listing) > MAX_HISTORY_COMMITS:
                return None
            if cursor is None:
                return _checked_listing(record.ref, commit, listing)
        return None

    # -- trees and entries ---------------------------------------------------------------------

    async def tree(self, resolved: Resolved, caller: Caller) -> list[TreeEntry]:
        """Every file and folder at the commit, recorded on first use. Offline:
        NotMirroredRevision when it was never listed whole."""
        commit = await self._db.get_commit(resolved.repo.pk, resolved.commit)
        if commit is None:
            commit = await self._db.save_commit(resolved.repo.pk, resolved.commit, None)
        if commit.tree_complete:
            return await self._db.list_entries(commit.pk)
        if self._upstream is None:
            raise NotMirroredRevision(resolved.repo.ref, resolved.commit, "file list")
        entries = await self._upstream.list_tree(resolved.repo.ref, resolved.commit, caller.token)
        await self._db.save_tree(commit.pk, entries)
        return sorted(entries, key=lambda e: e.path)

    async def entries(
        self, resolved: Resolved, paths: list[str], caller: Caller
    ) -> list[TreeEntry]:
        """Entries for the given paths (paths the commit lacks are left out), recorded on first
        use. Offline, a path whose entry was never recorded (the commit was never listed whole)
        raises NotMirroredEntry: this mirror cannot tell whether the commit has it."""
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
        if not missing or commit.tree_complete:
            return known
        if self._upstream is None:
            raise NotMirroredEntry(resolved.repo.ref, missing[0], resolved.commit)
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
        """The file at `path`. Raises EntryNotFound (with the commit) when absent or a folder;
        offline, NotMirroredEntry when its entry or its content was never mirrored (a file
        being held here, even quarantined, is mirrored: its GET says why it is held)."""
        key = (resolved.repo.pk, resolved.commit, path)
        cached = self._entries.get(key)
        if cached is not None:
            return cached
        found = await self.entries(resolved, [path], caller)
        for entry in found:
            if entry.path == path and entry.entry_type is EntryType.FILE:
                if self._upstream is None and await self._db.get_blob(entry.etag) is None:
                    raise NotMirroredEntry(resolved.repo.ref, path, resolved.commit)
                self._entries.put(key, entry)
                return entry
        raise EntryNotFound(path, commit=resolved.commit)


def _served(ref: RefRecord) -> str:
    """The commit a recorded ref serves: its approved commit; its head if never judged."""
    return ref.approved_commit or ref.commit


def _checked_listing(repo: RepoRef, commit: str, listing: list[CommitInfo]) -> list[CommitInfo]:
    """A listing fit to record: it starts at `commit` and names each commit once. Raises
    UpstreamRejected."""
    ids = [c.commit_id for c in listing]
    if not ids or ids[0] != commit or len(set(ids)) != len(ids):
        raise UpstreamRejected(f"the commit listing of {repo} at {commit} is inconsistent")
    return listing


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
