"""The admins' review, as one service the CLI (and later the REST API and pages) call: held
files, blocked repos and pinned changes waiting for a decision (DESIGN.md rule 7).

Every decision names its actor and a comment, goes through the blob lifecycle or the trust rules,
and is audited. Nothing here knows HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import HubwardenError, shown
from proxy.lifecycle import BlobLifecycle
from proxy.repos import RepoRef
from proxy.store.models import BlobState, BlockReason
from proxy.store.repository import AuditRecord, BlobRecord, PinRecord, RepoRecord, Repository
from proxy.store.review import BlockedRepo, HeldBlob, HeldRef, ReviewQueries
from proxy.trust.blocks import Blocks
from proxy.trust.pins import Pins
from scanners.report import Finding

MAX_COMMENT_CHARS = 2000


class ReviewError(HubwardenError):
    """A review call asks for something that cannot be decided as it stands."""


class ReviewNotFound(ReviewError):
    """A review call names a file, repo or change that does not exist here."""


@dataclass(frozen=True, slots=True)
class HeldItem:
    """A held file with everything a reviewer reads."""

    blob: HeldBlob
    findings: tuple[Finding, ...]
    history: tuple[AuditRecord, ...]


@dataclass(frozen=True, slots=True)
class PinnedChange:
    """A branch whose new head changes pinned files, waiting while clients get `approved`."""

    held: HeldRef
    changed: tuple[tuple[str, str, str], ...]  # (path, pinned etag, etag at head)


def _no_review(review_id: int) -> ReviewNotFound:
    return ReviewNotFound(f"review {review_id} does not exist; see `hubwarden quarantine list`")


def _comment(comment: str) -> str:
    text = comment.strip()
    if not text:
        raise ReviewError("a comment is required: say why, for the audit log")
    return text[:MAX_COMMENT_CHARS]


class Review:
    def __init__(
        self,
        repository: Repository,
        queries: ReviewQueries,
        lifecycle: BlobLifecycle,
        blocks: Blocks,
        pins: Pins,
    ) -> None:
        self._db = repository
        self._queries = queries
        self._lifecycle = lifecycle
        self._blocks = blocks
        self._pins = pins

    # -- held files ------------------------------------------------------------------------

    async def held(self, *, include_rejected: bool = True) -> list[HeldBlob]:
        states = [BlobState.QUARANTINED] + ([BlobState.REJECTED] if include_rejected else [])
        return await self._queries.held_blobs(states)

    async def item(self, review_id: int) -> HeldItem:
        blob = await self._queries.held_blob(review_id)
        if blob is None:
            raise ReviewNotFound(
                f"review {review_id} does not exist; see `hubwarden quarantine list`"
            )
        findings = await self._db.list_findings(blob.pk)
        history = await self._queries.blob_history(blob.pk)
        return HeldItem(blob, tuple(findings), tuple(history))

    async def release(self, review_id: int, actor: str, comment: str) -> None:
        """Release a quarantined file (these bytes): the next download is served."""
        text = _comment(comment)
        await self._lifecycle.release_held(await self._blob(review_id), actor, text)

    async def reject(self, review_id: int, actor: str, comment: str) -> None:
        text = _comment(comment)
        await self._lifecycle.reject_held(await self._blob(review_id), actor, text)

    async def _blob(self, review_id: int) -> BlobRecord:
        blob = await self._db.get_blob_by_pk(review_id)
        if blob is None:
            raise ReviewNotFound(
                f"review {review_id} does not exist; see `hubwarden quarantine list`"
            )
        return blob

    # -- repos -----------------------------------------------------------------------------

    async def blocked(self) -> list[BlockedRepo]:
        return await self._queries.blocked_repos()

    async def block(self, repo: RepoRef, actor: str, comment: str) -> None:
        """Block a repo, mirrored already or not (a block ahead of its first request)."""
        record = await self._db.find_repo(repo)
        if record is None:
            record = await self._db.upsert_repo(repo, private=False, gated="false")
        await self._blocks.place(record, BlockReason.ADMIN, _comment(comment), by=actor)

    async def unblock(self, repo: RepoRef, actor: str, comment: str) -> None:
        """Lift the repo's blocks. Its pins stay: a tampered file still differs from its pin
        and blocks it again; approve a pinned change first where that is the cause."""
        record = await self._repo(repo)
        text = _comment(comment)
        lifted = await self._queries.lift_blocks(record.pk, actor)
        if not lifted:
            raise ReviewError(f"{repo} is not blocked")
        self._blocks.forget(record.pk)
        await self._db.audit(actor, "repo.unblocked", repo_pk=record.pk, details={"comment": text})

    async def _repo(self, repo: RepoRef) -> RepoRecord:
        record = await self._db.find_repo(repo)
        if record is None:
            raise ReviewNotFound(f"{shown(repo)} was never mirrored here")
        return record

    # -- pinned changes --------------------------------------------------------------------

    async def changes(self) -> list[PinnedChange]:
        found: list[PinnedChange] = []
        for held in await self._queries.held_refs():
            pins = await self._queries.pins(held.repo.pk)
            at_head = await self._queries.entries_at(
                held.repo.pk, held.head, [p for p, _, _ in pins]
            )
            changed = tuple(
                (path, etag, at_head[path])
                for path, etag, _ in pins
                if path in at_head and at_head[path] != etag
            )
            found.append(PinnedChange(held, changed))
        return found

    async def approve_change(self, repo: RepoRef, ref: str, actor: str, comment: str) -> None:
        """Re-pin the changed files to the branch's head and serve the head from now on."""
        text = _comment(comment)
        change = await self._change(repo, ref)
        pk = change.held.repo.pk
        for path, _, etag in change.changed:
            await self._pins.set(pk, PinRecord(path, etag, change.held.head), by=actor)
        await self._db.set_approved(pk, ref, change.held.head)
        await self._db.audit(
            actor,
            "change.approved",
            repo_pk=pk,
            details={
                "ref": ref,
                "from": change.held.approved,
                "to": change.held.head,
                "paths": [p for p, _, _ in change.changed],
                "comment": text,
            },
        )

    async def reject_change(self, repo: RepoRef, ref: str, actor: str, comment: str) -> None:
        """Record the refusal; clients keep the approved commit (the head stays held)."""
        text = _comment(comment)
        change = await self._change(repo, ref)
        await self._db.audit(
            actor,
            "change.rejected",
            repo_pk=change.held.repo.pk,
            details={"ref": ref, "head": change.held.head, "comment": text},
        )

    async def _change(self, repo: RepoRef, ref: str) -> PinnedChange:
        for change in await self.changes():
            if change.held.repo.ref == repo and change.held.name == ref:
                return change
        raise ReviewNotFound(
            f'no pinned change waits for "{shown(ref)}" of {repo}; see `hubwarden changes list`'
        )

    # -- audit -----------------------------------------------------------------------------

    async def audit(self, *, action: str | None = None, limit: int = 100) -> list[AuditRecord]:
        """The newest `limit` audit events (of one action), oldest first."""
        return await self._queries.audit_log(action=action, limit=limit)
