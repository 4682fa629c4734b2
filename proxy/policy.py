"""Policy: findings → verdict, and the gate of pins and blocks in front of every file.

Rules of trust (DESIGN.md): a blob is released only when its verdict is release and no pin or block
says otherwise; a new commit that changes a pinned file follows the `pinned_change` setting; a
repo whose bytes did not match what upstream advertised is blocked as tampered.
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import re
from dataclasses import dataclass

from proxy.caching import WARM_TTL_S, TtlCache
from proxy.config import PinnedChange
from proxy.errors import Held, shown
from proxy.metadata import TreeEntry
from proxy.store.repository import BlockRecord, PinRecord, RepoRecord, Repository
from scanners.report import Outcome, ScanReport

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "hubwarden"


class Verdict(enum.StrEnum):
    RELEASE = "release"
    QUARANTINE = "quarantine"
    REJECT = "reject"


class BlockReason(enum.StrEnum):
    TAMPERED = "tampered"
    HISTORY_REWRITTEN = "history_rewritten"
    PINNED_CHANGED = "pinned_changed"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class PolicyRules:
    pinned_change: PinnedChange
    unpinned_paths: tuple[str, ...]
    contact: str


def verdict_for(report: ScanReport) -> Verdict:
    """Malicious → reject; anything not clean (review, could not scan) → quarantine."""
    outcome = report.outcome
    if outcome is Outcome.CLEAN:
        return Verdict.RELEASE
    if outcome is Outcome.MALICIOUS:
        return Verdict.REJECT
    return Verdict.QUARANTINE


def summary(report: ScanReport, limit: int = 3) -> str:
    """A short reason for a held message: the worst findings' messages."""
    worst = sorted(report.findings, key=lambda f: -f.outcome.rank)[:limit]
    return "; ".join(shown(f.message) for f in worst) or report.outcome.value


class Gate:
    """Checks pins and blocks before a file is served; records pins after a release."""

    def __init__(self, repository: Repository, rules: PolicyRules) -> None:
        self._db = repository
        self._rules = rules
        # Blocks and pins change rarely; the warm path reads them at most once per WARM_TTL_S.
        self._blocks: TtlCache[int, tuple[BlockRecord | None]] = TtlCache(WARM_TTL_S)
        self._pins: TtlCache[tuple[int, str], PinRecord] = TtlCache(WARM_TTL_S)
        self._block_generation = 0
        # One compiled regex for all unpinned globs: this runs on every GET.
        self._unpinned = re.compile(
            "|".join(f"(?:{fnmatch.translate(p)})" for p in rules.unpinned_paths) or "(?!)"
        )

    async def _active_block(self, repo_pk: int) -> BlockRecord | None:
        cached = self._blocks.get(repo_pk)
        if cached is not None:
            return cached[0]
        generation = self._block_generation
        block = await self._db.active_block(repo_pk)
        if generation == self._block_generation:  # no block placed while we read
            self._blocks.put(repo_pk, (block,))
        return block

    async def _pin_of(self, repo_pk: int, path: str) -> PinRecord | None:
        cached = self._pins.get((repo_pk, path))
        if cached is not None:
            return cached
        pin = await self._db.get_pin(repo_pk, path)
        if pin is not None:
            self._pins.put((repo_pk, path), pin)
        return pin

    @property
    def generation(self) -> int:
        """Bumped by every block this process places: caches of "may be served" compare it."""
        return self._block_generation

    @property
    def contact(self) -> str:
        return self._rules.contact

    def is_pinned_path(self, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        return self._unpinned.match(path) is None and self._unpinned.match(name) is None

    def held_message(self, path: str, reason: str, review_id: int | None) -> str:
        review = f"; review {review_id}" if review_id is not None else ""
        return f"held in quarantine: {shown(path)} ({reason}){review}; ask {self._rules.contact}"

    async def check(self, repo: RepoRecord, commit: str, entry: TreeEntry) -> None:
        """Raise Held when the repo is blocked or a pin forbids this file at this commit."""
        block = await self._active_block(repo.pk)
        if block is not None:
            raise Held(
                f"blocked: {repo.ref} ({block.reason}: {shown(block.detail)}); "
                f"ask {self._rules.contact}",
                path=entry.path,
            )
        if not self.is_pinned_path(entry.path):
            return
        pin = await self._pin_of(repo.pk, entry.path)
        if pin is None or pin.etag == entry.etag:
            return
        if pin.commit == commit:
            detail = f"{entry.path} at {commit} now advertises {entry.etag}, pinned {pin.etag}"
            await self.block(repo, BlockReason.TAMPERED, detail)
            raise Held(f"blocked: {repo.ref} (tampered: {shown(detail)}); ask {self.contact}")
        if self._rules.pinned_change is PinnedChange.ALLOW:
            return
        detail = (
            f"{entry.path} changed at {commit[:12]} (pinned {pin.etag[:12]} at {pin.commit[:12]})"
        )
        if self._rules.pinned_change is PinnedChange.BLOCK:
            await self.block(repo, BlockReason.PINNED_CHANGED, detail)
            raise Held(
                f"blocked: {repo.ref} (pinned file changed: {shown(detail)}); an admin must "
                f"approve the change; ask {self.contact}",
                path=entry.path,
            )
        raise Held(
            f"held in quarantine: {shown(detail)}; the change awaits review; ask {self.contact}",
            path=entry.path,
        )

    async def pin(self, repo: RepoRecord, commit: str, entry: TreeEntry) -> None:
        """Record the first verified hash of (repo, path); later changes are checked against it."""
        if not self.is_pinned_path(entry.path):
            return
        current = await self._pin_of(repo.pk, entry.path)
        if current is None or (
            current.etag != entry.etag and self._rules.pinned_change is PinnedChange.ALLOW
        ):
            await self._db.set_pin(repo.pk, entry.path, entry.etag, commit, SYSTEM_ACTOR)
            self._pins.put((repo.pk, entry.path), PinRecord(entry.path, entry.etag, commit))

    async def history_rewritten(self, repo: RepoRecord, detail: str) -> None:
        await self.block(repo, BlockReason.HISTORY_REWRITTEN, detail)

    async def block(self, repo: RepoRecord, reason: BlockReason, detail: str) -> None:
        if await self._db.active_block(repo.pk) is None:
            await self._db.add_block(repo.pk, reason.value, detail, SYSTEM_ACTOR)
            self._block_generation += 1
            self._blocks.forget(repo.pk)
            await self._db.audit(
                SYSTEM_ACTOR,
                "repo.blocked",
                repo_pk=repo.pk,
                details={"reason": reason.value, "detail": detail},
            )
            logger.warning("blocked %s: %s (%s)", repo.ref, reason.value, detail)
