"""Where a commit stands in a repo's history (DESIGN.md rule 4).

The Hub's commit listing carries no parent ids: its order is the history, newest first. "Is A in
the history of B?" is answered by walking B's listing until A appears or the listing ends, and the
answer is recorded (commits never change, so neither does the answer): each pair is asked upstream
at most once. Branch heads come from the upstream's refs listing through a short cache.

Offline, the recorded answers are known, and so is what a recorded commit listing (the
`histories` table: a head's complete listing, recorded online or imported from a bundle) says:
`older` is in the history of `newer` exactly when `newer`'s listing names it, and it is not when
`older`'s listing names `newer` (a history has no cycle). Anything else is `None` (unknown), and
callers fail closed. Offline heads are the recorded refs, branches and tags told apart by the
kind recorded with each (refs of unknown kind count as branches; pull requests and conversions
are neither).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.caching import TtlCache
from proxy.metadata import RefKind
from proxy.repos import is_commit_sha
from proxy.store.repository import RefRecord, RepoRecord, Repository
from proxy.upstream import Upstream

logger = logging.getLogger(__name__)

MAX_HISTORY_PAGES = 100


@dataclass(frozen=True, slots=True)
class RefHeads:
    """The upstream's branches and tags, name → commit."""

    branches: dict[str, str]
    tags: dict[str, str]


class Lineage:
    """Ancestry questions about a repo's commits, answered from the upstream and recorded."""

    def __init__(
        self,
        repository: Repository,
        upstream: Upstream | None,
        *,
        refs_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = repository
        self._upstream = upstream
        self._heads: TtlCache[int, RefHeads] = TtlCache(refs_ttl_s, clock)

    def _token(self, token: str | None) -> str | None:
        """Lineage facts never reach a client: the caller's token, else the service token."""
        if token is not None or self._upstream is None:
            return token
        return self._upstream.service_token

    async def is_ancestor(
        self, repo: RepoRecord, older: str, newer: str, token: str | None
    ) -> bool | None:
        """Whether `older` is in the history of `newer` (a commit is its own ancestor); None when
        it cannot be told (offline and never recorded, or a history longer than we walk)."""
        if older == newer:
            return True
        recorded = await self._db.get_ancestry(repo.pk, older, newer)
        if recorded is not None:
            return recorded
        if self._upstream is None:
            return await self._from_histories(repo, older, newer)
        cursor: str | None = None
        for _ in range(MAX_HISTORY_PAGES):
            page = await self._upstream.commits_page(repo.ref, newer, cursor, self._token(token))
            if any(c.commit_id == older for c in page.items):
                await self._db.record_ancestry(repo.pk, older, newer, is_ancestor=True)
                return True
            cursor = page.cursor
            if cursor is None:
                await self._db.record_ancestry(repo.pk, older, newer, is_ancestor=False)
                return False
        logger.warning("history of %s at %s is longer than %d pages", repo.ref, newer[:12], 100)
        return None

    async def _from_histories(self, repo: RepoRecord, older: str, newer: str) -> bool | None:
        """What the recorded commit listings of `newer` and `older` tell (None: neither is
        recorded, or neither names the other)."""
        listing = await self._db.get_history(repo.pk, newer)
        if listing is not None:
            return any(c.commit_id == older for c in listing)
        listing = await self._db.get_history(repo.pk, older)
        if listing is not None and any(c.commit_id == newer for c in listing):
            return False
        return None

    async def heads(self, repo: RepoRecord, token: str | None, *, fresh: bool = False) -> RefHeads:
        """Branch and tag heads upstream (cached briefly; `fresh` asks again). Offline: the
        recorded refs by their recorded kinds (unknown kinds as branches; the default branch,
        recorded unnamed, as "main")."""
        cached = None if fresh else self._heads.get(repo.pk)
        if cached is not None:
            return cached
        if self._upstream is None:
            return _recorded_heads(await self._db.list_refs(repo.pk))
        body = await self._upstream.refs(repo.ref, self._token(token), include_prs=False)
        heads = RefHeads(_targets(body, "branches"), _targets(body, "tags"))
        self._heads.put(repo.pk, heads)
        return heads

    async def on_current_history(
        self, repo: RepoRecord, commit: str, token: str | None
    ) -> bool | None:
        """Whether `commit` is a branch head or in a branch's history now (a pull request, a
        deleted branch or a stray commit is not). None: cannot be told."""
        heads = await self.heads(repo, token)
        if commit in heads.branches.values():
            return True
        unknown = False
        for head in dict.fromkeys(heads.branches.values()):
            answer = await self.is_ancestor(repo, commit, head, token)
            if answer:
                return True
            unknown = unknown or answer is None
        return None if unknown else False


def _recorded_heads(refs: list[RefRecord]) -> RefHeads:
    branches: dict[str, str] = {}
    tags: dict[str, str] = {}
    for ref in refs:
        if ref.kind is RefKind.TAG:
            tags[ref.name] = ref.commit
        elif ref.kind in (None, RefKind.BRANCH) and ref.name:
            branches[ref.name] = ref.commit
    default = next((r for r in refs if r.kind is RefKind.DEFAULT or not r.name), None)
    if default is not None:
        branches.setdefault("main", default.commit)
    return RefHeads(branches, tags)


def _targets(body: object, key: str) -> dict[str, str]:
    """`{"branches": [{"name": ..., "targetCommit": ...}]}` → name → commit (invalid items
    dropped: upstream JSON is hostile)."""
    items = body.get(key) if isinstance(body, dict) else None
    found: dict[str, str] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        name, target = item.get("name"), item.get("targetCommit")
        if isinstance(name, str) and isinstance(target, str) and is_commit_sha(target):
            found[name[:256]] = target
    return found
