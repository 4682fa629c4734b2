"""The blob lifecycle: every state change of a blob, with its audit event, log line and held
message, happens here and nowhere else (DESIGN.md, "One blob lifecycle").

    absent ──claim──▶ fetching ──verified──▶ scanning ──verdict──▶ released | quarantined | rejected
                         │ bytes differ from what upstream advertised ──▶ rejected (repo blocked)
                         └ upstream trouble, stop ──▶ absent again (abandoned; a retry refetches)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from proxy.errors import Held, HubwardenError, IntegrityError, shown
from proxy.metadata import TreeEntry
from proxy.store.blobs import BlobStore
from proxy.store.models import BlobState, BlockReason
from proxy.store.repository import BlobRecord, RepoRecord, Repository
from proxy.trust.blocks import SYSTEM_ACTOR, Blocks
from scanners.report import ScanReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BlobOrigin:
    """Where a blob was first asked for: the repo, commit and file."""

    repo: RepoRecord
    commit: str
    entry: TreeEntry


@dataclass(frozen=True, slots=True)
class Settlement:
    """What the trust rules made of a scan: `state` released, quarantined or rejected."""

    state: BlobState
    reason: str


class NotHeld(HubwardenError):
    """A review decision was asked for a blob that is not waiting for one."""

    def __init__(self, pk: int, state: BlobState) -> None:
        self.pk = pk
        self.state = state
        hint = (
            "rejected files stay rejected; release the repo's next version instead"
            if state is BlobState.REJECTED
            else "only quarantined files wait for a decision"
        )
        super().__init__(f"review {pk} is {state.value}, not quarantined; {hint}")


class BlobLifecycle:
    """Moves blobs between states in the database and the blob store."""

    def __init__(
        self,
        repository: Repository,
        store: BlobStore,
        blocks: Blocks,
        contact: str,
        *,
        public_url: str | None = None,
        notice: str = "",
    ) -> None:
        """`public_url`: where clients reach the mirror (for the `/held/{id}` link; a path
        alone without it); `notice`: `[admin] held_message`, appended to every refusal."""
        self._db = repository
        self._store = store
        self._blocks = blocks
        self._contact = contact
        self._base = (public_url or "").rstrip("/")
        self._notice = notice

    def held_message(self, path: str, reason: str, review_id: int | None) -> str:
        """`held in quarantine: <file> (<reason>); review <id>; ask <contact>; see <link>`."""
        message = f"held in quarantine: {shown(path)} ({reason})"
        if review_id is not None:
            message += f"; review {review_id}"
        message += f"; ask {self._contact}"
        if review_id is not None:
            message += f"; see {self._base}/held/{review_id}"
        return f"{message}; {self._notice}" if self._notice else message

    def held(self, blob: BlobRecord, path: str) -> Held:
        """The refusal for a blob that is quarantined or rejected."""
        return Held(
            self.held_message(path, blob.reason or blob.state.value, blob.pk),
            path=path,
            review_id=blob.pk,
        )

    async def claim(self, origin: BlobOrigin) -> bool:
        """absent → fetching; False when another task or replica holds the claim."""
        entry = origin.entry
        if not await self._db.claim_blob(entry.etag, entry.size, origin.repo.pk, entry.path):
            return False
        logger.info(
            "blob %s (%s %s, %d bytes): absent -> fetching",
            entry.etag,
            origin.repo.ref,
            entry.path,
            entry.size,
        )
        return True

    async def forget_unfinished(self) -> None:
        """At start: fetching/scanning rows a stopped process left → absent (its temp files are
        gone with `tmp/`)."""
        forgotten = await self._db.forget_unfinished_blobs()
        if forgotten:
            logger.info("forgot %d blobs a previous run left unfinished", forgotten)

    async def release_held(self, blob: BlobRecord, actor: str, comment: str) -> None:
        """quarantined → released, by a reviewer's decision (rejected blobs stay rejected:
        their bytes were refused as malicious or tampered)."""
        if blob.state is not BlobState.QUARANTINED or blob.sha256 is None:
            raise NotHeld(blob.pk, blob.state)
        await asyncio.to_thread(self._store.release_from_quarantine, blob.sha256)
        await self._db.set_blob_state(blob.etag, BlobState.RELEASED)
        await self._decided(blob, BlobState.RELEASED, actor, comment)

    async def reject_held(self, blob: BlobRecord, actor: str, comment: str) -> None:
        """quarantined → rejected, by a reviewer's decision (the bytes stay in quarantine)."""
        if blob.state is not BlobState.QUARANTINED:
            raise NotHeld(blob.pk, blob.state)
        reason = f"rejected by {actor}: {comment}"
        await self._db.set_blob_state(blob.etag, BlobState.REJECTED, reason=reason)
        await self._decided(blob, BlobState.REJECTED, actor, comment)

    async def rescanned(
        self, blob: BlobRecord, report: ScanReport, settlement: Settlement, actor: str
    ) -> BlobState:
        """quarantined → released, quarantined or rejected, by a new scan a reviewer asked for
        (new scanners, a changed policy). Returns the new state."""
        if blob.state is not BlobState.QUARANTINED or blob.sha256 is None:
            raise NotHeld(blob.pk, blob.state)
        state = settlement.state
        if state is BlobState.RELEASED:
            await asyncio.to_thread(self._store.release_from_quarantine, blob.sha256)
        await self._db.replace_findings(blob.pk, report.findings)
        reason = "" if state is BlobState.RELEASED else settlement.reason
        fields = {"file_format": report.file_format[:32], "outcome": report.outcome.value}
        await self._db.set_blob_state(blob.etag, state, reason=reason, **fields)
        await self._db.audit(
            actor,
            "review.rescanned",
            blob_pk=blob.pk,
            details={"before": blob.state.value, "after": state.value, "reason": reason,
                     "outcome": report.outcome.value, "path": blob.first_path},
        )  # fmt: skip
        return state

    async def _decided(self, blob: BlobRecord, state: BlobState, actor: str, comment: str) -> None:
        await self._db.audit(
            actor,
            f"review.{state.value}",
            blob_pk=blob.pk,
            details={
                "comment": comment,
                "before": blob.state.value,
                "after": state.value,
                "path": blob.first_path,
                "sha256": blob.sha256,
            },
        )
        logger.info(
            "blob %s (%s): %s -> %s by %s",
            blob.etag,
            blob.first_path,
            blob.state.value,
            state.value,
            shown(actor),
        )

    async def unclaim(self, origin: BlobOrigin) -> None:
        """fetching → absent before any byte was fetched (no temp file could be made)."""
        await self._db.forget_blob(origin.entry.etag)
        logger.warning("blob %s: fetching -> absent (no temp file)", origin.entry.etag)

    async def verified(self, origin: BlobOrigin, sha256: str) -> None:
        """fetching → scanning: the bytes hash to what upstream advertised."""
        await self._db.set_blob_state(origin.entry.etag, BlobState.SCANNING, sha256=sha256)

    async def settle(
        self, origin: BlobOrigin, temp: Path, report: ScanReport, settlement: Settlement
    ) -> Held | None:
        """scanning → released, quarantined or rejected; returns the refusal unless released."""
        entry = origin.entry
        blob = await self._db.get_blob(entry.etag)
        assert blob is not None and blob.sha256 is not None
        await self._db.add_findings(blob.pk, report.findings)
        fields = {"file_format": report.file_format[:32], "outcome": report.outcome.value}
        state = settlement.state
        if state is BlobState.RELEASED:
            await asyncio.to_thread(self._store.release, temp, blob.sha256)
        else:
            await asyncio.to_thread(self._store.quarantine, temp, blob.sha256)
        reason = "" if state is BlobState.RELEASED else settlement.reason
        await self._db.set_blob_state(entry.etag, state, reason=reason, **fields)
        await self._audit(origin, blob.pk, f"blob.{state.value}", report, settlement.reason)
        logger.info(
            "blob %s (%s %s): scanning -> %s (%s)",
            entry.etag,
            origin.repo.ref,
            entry.path,
            state.value,
            shown(settlement.reason) or report.outcome.value,
        )
        if state is BlobState.RELEASED:
            return None
        return Held(
            self.held_message(entry.path, reason, blob.pk), path=entry.path, review_id=blob.pk
        )

    async def _audit(
        self, origin: BlobOrigin, blob_pk: int, action: str, report: ScanReport, reason: str
    ) -> None:
        blob = await self._db.get_blob(origin.entry.etag)
        await self._db.audit(
            SYSTEM_ACTOR,
            action,
            repo_pk=origin.repo.pk,
            blob_pk=blob_pk,
            details={
                "path": origin.entry.path,
                "commit": origin.commit,
                "sha256": blob.sha256 if blob else None,
                "outcome": report.outcome.value,
                "format": report.file_format,
                "reason": reason,
            },
        )

    async def tampered(self, origin: BlobOrigin, temp: Path, exc: IntegrityError) -> Held:
        """fetching → rejected: the bytes differ from what upstream advertised. The repo is
        blocked first, so a request in between already sees the block (DESIGN.md rule 3)."""
        entry = origin.entry
        await asyncio.to_thread(self._store.discard, temp)
        block = await self._blocks.place(origin.repo, BlockReason.TAMPERED, exc.message)
        await self._db.set_blob_state(
            entry.etag, BlobState.REJECTED, reason=f"tampered: {exc.message}"
        )
        blob = await self._db.get_blob(entry.etag)
        await self._db.audit(
            SYSTEM_ACTOR,
            "blob.rejected",
            repo_pk=origin.repo.pk,
            blob_pk=blob.pk if blob else None,
            details={"path": entry.path, "commit": origin.commit, "reason": exc.message},
        )
        logger.warning("blob %s: fetching -> rejected (%s)", entry.etag, shown(exc.message))
        return self._blocks.held(origin.repo, block, entry.path)

    async def abandon(self, origin: BlobOrigin, temp: Path, exc: HubwardenError) -> None:
        """fetching → absent: nothing is recorded as verified; the next request starts again."""
        await asyncio.to_thread(self._store.discard, temp)
        await self._db.forget_blob(origin.entry.etag)
        logger.warning("blob %s: fetching -> abandoned (%s)", origin.entry.etag, shown(exc.message))
