"""Blocks: repo-wide stops (DESIGN.md rules 3 and 4), and the message every route answers with.

A block is placed once (the first reason wins until an admin lifts it) and read on every request
through a cache of at most `WARM_TTL_S`; a block placed by this process is seen at once.
"""

from __future__ import annotations

import logging

from proxy.caching import WARM_TTL_S, TtlCache
from proxy.errors import Held, shown
from proxy.store.models import BlockReason
from proxy.store.repository import BlockRecord, RepoRecord, Repository

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "hubwarden"


class Blocks:
    """Places and reads blocks; `generation` grows with every block this process places."""

    def __init__(self, repository: Repository, contact: str, notice: str = "") -> None:
        """`notice`: `[admin] held_message`, appended to every blocked message."""
        self._db = repository
        self._contact = contact
        self._notice = notice
        self._cache: TtlCache[int, tuple[BlockRecord | None]] = TtlCache(WARM_TTL_S)
        self.generation = 0

    async def active(self, repo_pk: int) -> BlockRecord | None:
        cached = self._cache.get(repo_pk)
        if cached is not None:
            return cached[0]
        generation = self.generation
        block = await self._db.active_block(repo_pk)
        if generation == self.generation:  # no block placed while we read
            self._cache.put(repo_pk, (block,))
        return block

    def message(self, repo: RepoRecord, block: BlockRecord) -> str:
        """`blocked: <repo> (<reason>: <detail>); since <time>; review <id>; ask <contact>`."""
        since = block.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return (
            f"blocked: {repo.ref} ({block.reason}: {shown(block.detail)}); since {since}; "
            f"review {block.pk}; ask {self._contact}"
        ) + (f"; {self._notice}" if self._notice else "")

    def held(self, repo: RepoRecord, block: BlockRecord, path: str = "") -> Held:
        return Held(self.message(repo, block), path=path, review_id=block.pk)

    async def check(self, repo: RepoRecord, path: str = "") -> None:
        """Raise Held with the blocked message when the repo is blocked."""
        block = await self.active(repo.pk)
        if block is not None:
            raise self.held(repo, block, path)

    async def place(
        self, repo: RepoRecord, reason: BlockReason, detail: str, by: str = SYSTEM_ACTOR
    ) -> BlockRecord:
        """Block the repo (unless it already is); returns the active block."""
        existing = await self._db.active_block(repo.pk)
        if existing is not None:
            return existing
        block = await self._db.add_block(repo.pk, reason.value, detail, by)
        self.generation += 1
        self._cache.forget(repo.pk)
        await self._db.audit(
            by,
            "repo.blocked",
            repo_pk=repo.pk,
            details={
                "reason": reason.value,
                "detail": detail,
                "block": block.pk,
                "before": "serving",
                "after": "blocked",
            },
        )
        logger.warning("blocked %s: %s (%s)", repo.ref, reason.value, shown(detail))
        return block

    def forget(self, repo_pk: int) -> None:
        """Drop what this process cached about a repo's blocks (after an unblock)."""
        self._cache.forget(repo_pk)
