"""The gate in front of every file and every ref: blocks, pins by lineage, history rewrites.

A file whose hash differs from its pin at commit C is judged by where C stands relative to the
pinned commit P (DESIGN.md rule 4): C = P is tampering (the repo is blocked); C older than P on
the branch's history is history (served after its own checks, the pin stays); C newer than P on a
branch is a pinned change (`pinned_change`: hold, block or allow); C on no branch's current
history (a pull request, a deleted branch, a stray commit) is served after its own checks and
never moves a pin or blocks the repo. A branch or tag whose new head does not descend from its
previous head is a history rewrite: the repo is blocked.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.caching import IMMUTABLE_TTL_S, TtlCache
from proxy.config import PinnedChange
from proxy.errors import Held, shown
from proxy.metadata import TreeEntry
from proxy.repos import Revision
from proxy.store.models import BlockReason
from proxy.store.repository import PinRecord, RepoRecord, Repository
from proxy.trust.blocks import SYSTEM_ACTOR, Blocks
from proxy.trust.lineage import Lineage
from proxy.trust.pins import Pins
from proxy.trust.policy_gate import PolicyGate

logger = logging.getLogger(__name__)

MAX_PINS_CHECKED = 1000
MAX_REPO_LOCKS = 10_000
EntriesAt = Callable[[list[str]], Awaitable[list[TreeEntry]]]


class Standing(enum.StrEnum):
    """Where a file at a commit stands against its pin."""

    UNPINNED = "unpinned"  # a documentation path, or no pin yet
    MATCHES = "matches"
    TAMPERED = "tampered"  # the pinned commit itself now advertises another hash
    OLDER = "older"  # history: an older tag or commit of the pinned branch
    NEWER = "newer"  # a new commit on a branch: a pinned change
    OFF_BRANCH = "off_branch"  # a pull request, a deleted branch, a stray commit
    UNKNOWN = "unknown"  # offline, and never recorded


@dataclass(frozen=True, slots=True)
class Judged:
    standing: Standing
    pin: PinRecord | None = None


class Gate:
    """Checks blocks and pins before a file or a ref is served; pins after a release."""

    def __init__(
        self,
        repository: Repository,
        blocks: Blocks,
        pins: Pins,
        lineage: Lineage,
        *,
        pinned_change: Callable[[], PinnedChange],
        contact: str,
        policy: PolicyGate | None = None,
    ) -> None:
        self._db = repository
        self._policy = policy
        self.blocks = blocks
        self.pins = pins
        self._lineage = lineage
        self._pinned_change = pinned_change
        self._contact = contact
        self._locks: dict[int, asyncio.Lock] = {}
        self._refreshed: TtlCache[tuple[int, str], bool] = TtlCache(IMMUTABLE_TTL_S)
        self._held_noted: TtlCache[tuple[int, str, str], bool] = TtlCache(IMMUTABLE_TTL_S)

    @property
    def generation(self) -> int:
        """Bumped by every block this process places: caches of "may be served" compare it."""
        return self.blocks.generation

    @property
    def contact(self) -> str:
        return self._contact

    # -- files ---------------------------------------------------------------------------------

    async def judge(
        self, repo: RepoRecord, commit: str, entry: TreeEntry, token: str | None
    ) -> Judged:
        """Where the file at `commit` stands against its pin (no side effect)."""
        if not self.pins.is_pinned_path(entry.path):
            return Judged(Standing.UNPINNED)
        pin = await self.pins.pin_of(repo.pk, entry.path)
        if pin is None:
            return Judged(Standing.UNPINNED)
        if pin.etag == entry.etag:
            return Judged(Standing.MATCHES, pin)
        if pin.commit == commit:
            return Judged(Standing.TAMPERED, pin)
        older = await self._lineage.is_ancestor(repo, commit, pin.commit, token)
        if older:
            return Judged(Standing.OLDER, pin)
        newer = await self._lineage.is_ancestor(repo, pin.commit, commit, token)
        on_branch = await self._lineage.on_current_history(repo, commit, token)
        if newer and on_branch:
            return Judged(Standing.NEWER, pin)
        if older is None or newer is None or on_branch is None:
            return Judged(Standing.UNKNOWN, pin)
        return Judged(Standing.OFF_BRANCH, pin)

    async def check(
        self, repo: RepoRecord, commit: str, entry: TreeEntry, token: str | None
    ) -> Judged:
        """Raise Held when the repo is blocked, a policy rule refuses the file (PolicyRefused)
        or the file's pin forbids it at this commit."""
        await self.blocks.check(repo, entry.path)
        if self._policy is not None:
            await self._policy.check_file(repo, commit, entry, token)
        judged = await self.judge(repo, commit, entry, token)
        if judged.standing is Standing.TAMPERED:
            raise await self._tampered(repo, commit, entry, judged)
        if judged.standing is Standing.NEWER:
            await self._pinned_changed(repo, commit, entry, judged)
        if judged.standing is Standing.UNKNOWN:
            raise Held(
                f"held: {shown(entry.path)} at {commit[:12]} differs from the approved version "
                f"and this offline mirror cannot tell where the commit stands; ask {self._contact}",
                path=entry.path,
            )
        return judged

    async def _tampered(
        self, repo: RepoRecord, commit: str, entry: TreeEntry, judged: Judged
    ) -> Held:
        assert judged.pin is not None
        detail = f"{entry.path} at {commit} now advertises {entry.etag}, pinned {judged.pin.etag}"
        block = await self.blocks.place(repo, BlockReason.TAMPERED, detail)
        return self.blocks.held(repo, block, entry.path)

    async def _pinned_changed(
        self, repo: RepoRecord, commit: str, entry: TreeEntry, judged: Judged
    ) -> None:
        """A new commit on a branch changes a pinned file: the `pinned_change` policy."""
        assert judged.pin is not None
        pin = judged.pin
        detail = (
            f"{entry.path} changed at {commit[:12]} (pinned {pin.etag[:12]} at {pin.commit[:12]})"
        )
        rule = self._pinned_change()
        if rule is PinnedChange.ALLOW:
            return
        if rule is PinnedChange.BLOCK:
            block = await self.blocks.place(repo, BlockReason.PINNED_CHANGED, detail)
            raise self.blocks.held(repo, block, entry.path)
        await self._note_held_change(repo, commit, entry.path, detail)
        raise Held(
            f"held in quarantine: {shown(detail)}; the change awaits review; ask {self._contact}",
            path=entry.path,
        )

    async def _note_held_change(
        self, repo: RepoRecord, commit: str, path: str, detail: str
    ) -> None:
        key = (repo.pk, commit, path)
        if self._held_noted.get(key):
            return
        self._held_noted.put(key, True)
        await self._db.audit(
            SYSTEM_ACTOR,
            "pin.change_held",
            repo_pk=repo.pk,
            details={"path": path, "commit": commit, "detail": detail},
        )
        logger.warning("held a pinned change of %s: %s", repo.ref, shown(detail))

    async def after_release(
        self, repo: RepoRecord, commit: str, entry: TreeEntry, token: str | None
    ) -> None:
        """Pin a released file: the first version seen at a branch head, or a newer one on a
        branch when `pinned_change = "allow"`. Pull requests and older commits never pin."""
        if not self.pins.is_pinned_path(entry.path):
            return
        pin = await self.pins.pin_of(repo.pk, entry.path)
        if pin is not None and pin.etag == entry.etag:
            return
        if pin is None:
            # Only a branch head pins first: an older tag pinned first would make its branch's
            # newer head, which existed before the mirror looked, a "pinned change".
            heads = await self._lineage.heads(repo, token)
            if commit in heads.branches.values():
                await self.pins.set(repo.pk, PinRecord(entry.path, entry.etag, commit))
            return
        if self._pinned_change() is not PinnedChange.ALLOW:
            return
        judged = await self.judge(repo, commit, entry, token)
        if judged.standing is Standing.NEWER:
            await self.pins.set(repo.pk, PinRecord(entry.path, entry.etag, commit))
            await self._db.audit(
                SYSTEM_ACTOR,
                "pin.moved",
                repo_pk=repo.pk,
                details={"path": entry.path, "commit": commit, "from": pin.etag, "to": entry.etag},
            )

    # -- refs ----------------------------------------------------------------------------------

    async def check_repo(self, repo: RepoRecord, revision: Revision | None) -> None:
        """Raise Held when the repo is blocked, PolicyRefused when a repo-level rule refuses
        it (publishers, pull requests)."""
        await self.blocks.check(repo)
        if self._policy is not None:
            await self._policy.check_repo(repo, revision)

    async def on_ref_moved(
        self, repo: RepoRecord, name: str, moved: tuple[str, str], token: str | None
    ) -> None:
        """A branch or tag moved: its previous head must be in its new history, else the
        repo is blocked as history_rewritten."""
        previous, head = moved
        if name.startswith("refs/"):  # pull requests and conversions have their own histories
            return
        if await self._lineage.is_ancestor(repo, previous, head, token) is not False:
            return
        detail = (
            f'"{shown(name) or "default branch"}" moved from {previous[:12]} to {head[:12]}, '
            "which does not descend from it"
        )
        await self.blocks.place(repo, BlockReason.HISTORY_REWRITTEN, detail)

    async def on_new_commit(self, repo: RepoRecord, commit: str, token: str | None) -> None:
        """A commit never seen before in a pinned repo: refresh the repo's refs (once per new
        commit, one request at a time per repo) and check every ref that moved."""
        if self._refreshed.get((repo.pk, commit)) or not await self._db.has_pins(repo.pk):
            return
        if len(self._locks) > MAX_REPO_LOCKS:
            self._locks.clear()
        async with self._locks.setdefault(repo.pk, asyncio.Lock()):
            if self._refreshed.get((repo.pk, commit)):
                return
            heads = await self._lineage.heads(repo, token, fresh=True)
            for name, target in {**heads.tags, **heads.branches}.items():
                previous = await self._db.set_ref(repo.pk, name, target)
                if previous is not None and previous != target:
                    await self.on_ref_moved(repo, name, (previous, target), token)
            self._refreshed.put((repo.pk, commit), True)

    async def served_commit(
        self,
        repo: RepoRecord,
        name: str,
        head: str,
        entries_at: EntriesAt,
        token: str | None,
    ) -> str:
        """The commit clients asking for ref `name` are served: its upstream head, unless the
        head changes a pinned file and `pinned_change = "hold"` keeps the last approved commit.
        Raises Held when the change blocks the repo (`pinned_change = "block"`)."""
        ref = await self._db.get_ref_record(repo.pk, name)
        if ref is not None and ref.approved_commit == head:
            return head
        changed = await self._changed_pins(repo, head, entries_at, token)
        if not changed:
            await self._db.set_approved(repo.pk, name, head)
            return head
        rule = self._pinned_change()
        entry, judged = changed[0]
        if rule is PinnedChange.ALLOW:
            await self._db.set_approved(repo.pk, name, head)
            return head
        if rule is PinnedChange.BLOCK:
            # The block stops every route; the resolve HEAD still answers from metadata, so that
            # the client shows the message the GET carries (hub-protocol.md §6.3).
            assert judged.pin is not None
            detail = f"{entry.path} changed at {head[:12]} (pinned {judged.pin.etag[:12]})"
            await self.blocks.place(repo, BlockReason.PINNED_CHANGED, detail)
            return head
        assert judged.pin is not None
        served = (
            ref.approved_commit if ref is not None and ref.approved_commit else judged.pin.commit
        )
        await self._note_held_change(repo, head, entry.path, f"{name} moved to {head[:12]}")
        logger.info(
            "serving %s@%s as %s: a pinned change awaits review", repo.ref, name, served[:12]
        )
        return served

    async def _changed_pins(
        self, repo: RepoRecord, head: str, entries_at: EntriesAt, token: str | None
    ) -> list[tuple[TreeEntry, Judged]]:
        """The pinned files that `head` changes as a newer commit on a branch."""
        pins = (await self.pins.all_of(repo.pk))[:MAX_PINS_CHECKED]
        if not pins:
            return []
        by_path = {p.path: p for p in pins}
        entries = await entries_at(list(by_path))
        changed: list[tuple[TreeEntry, Judged]] = []
        for entry in entries:
            pin = by_path.get(entry.path)
            if pin is None or pin.etag == entry.etag:
                continue
            judged = await self.judge(repo, head, entry, token)
            if judged.standing is Standing.TAMPERED:
                # Block, but let the resolve HEAD answer: its GET carries the message (§6.3).
                await self._tampered(repo, head, entry, judged)
            if judged.standing is Standing.NEWER:
                changed.append((entry, judged))
        return changed
