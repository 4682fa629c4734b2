"""The blob lifecycle: every state change of a blob, with its audit event, log line and held
message, happens here and nowhere else (DESIGN.md, "One blob lifecycle").

    absent ──claim──▶ fetching ──verified──▶ scanning ──verdict──▶ released | quarantined | rejected
                         │ bytes differ from what upstream advertised ──▶ rejected (repo blocked)
                         ├ upstream trouble, disk full, stop ──▶ absent again (abandoned; a retry
                         │                                       refetches, after a backoff)
                         └ owner gone (crash, kill -9) or its lease expired ──▶ fetching
                           again under a new lease (`take_over_stale`)

Every write of an ingest is fenced by its lease (proxy.store.leases): one that lost its lease to
another replica writes nothing and ends with LeaseLost.

Database writes of a transition are retried when the database refuses them for a while (disk
full, connection lost): a write that still fails raises `StateNotRecorded`, except abandoning,
which a patient caller retries until it is recorded, so no blob is left `fetching` behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

from proxy.errors import Held, HubwardenError, IntegrityError, shown
from proxy.metadata import TreeEntry
from proxy.ops.owners import Liveness, is_alive, this_process
from proxy.store.blob_protocol import BlobPlace, BlobStore
from proxy.store.leases import Lease, NewBlob
from proxy.store.models import BlobState, BlockReason
from proxy.store.repository import BlobRecord, RepoRecord, Repository
from proxy.trust.blocks import SYSTEM_ACTOR, Blocks
from scanners.report import ScanReport

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Database writes refused for a moment (disk full, lock, connection lost): retried this often,
# the delay doubling from the first to the last (about 6 s in all), then StateNotRecorded.
RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
PATIENT_MAX_DELAY_S = 30.0
_DB_REFUSED = (OperationalError, InterfaceError, OSError, TimeoutError)
DEFAULT_LEASE_S = 30.0


class StateNotRecorded(HubwardenError):
    """The database refused a blob's state change (`etag`, `what`) even after retries."""

    def __init__(self, etag: str, what: str, reason: str) -> None:
        self.etag = etag
        self.what = what
        self.reason = reason
        super().__init__(
            f"the mirror could not record {what} of blob {etag[:12]} ({shown(reason)}); "
            "retry later, and if this persists ask its administrator to check the database "
            "and free space (hubwarden doctor)"
        )


class LeaseLost(StateNotRecorded):
    """Another replica took the blob over (this one stalled past its lease): nothing this
    ingest writes any more counts."""

    def __init__(self, etag: str, what: str) -> None:
        super().__init__(etag, what, "another replica took this file over")


async def recorded(
    etag: str, what: str, write: Callable[[], Awaitable[T]], *, patient: bool = False
) -> T:
    """Run a database write, retrying while the database refuses it. Raises StateNotRecorded
    (never when `patient`: then it retries, each failure logged, until cancelled)."""
    for attempt in itertools.count():
        try:
            return await write()
        except _DB_REFUSED as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
            if attempt >= len(RETRY_DELAYS_S) and not patient:
                logger.error("blob %s: %s not recorded: %s", etag, what, reason)
                raise StateNotRecorded(etag, what, reason) from exc
            delay_s = _retry_delay_s(attempt)
            log = logger.warning if attempt < len(RETRY_DELAYS_S) else logger.error
            log("blob %s: %s refused by the database (%s); retry in %.2f s", etag, what, reason,
                delay_s)  # fmt: skip
            await asyncio.sleep(delay_s)
    raise AssertionError("unreachable")


def _retry_delay_s(attempt: int) -> float:
    if attempt < len(RETRY_DELAYS_S):
        return RETRY_DELAYS_S[attempt]
    return min(RETRY_DELAYS_S[-1] * 2.0 ** (attempt - len(RETRY_DELAYS_S) + 1), PATIENT_MAX_DELAY_S)


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
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        """`public_url`: where clients reach the mirror (for the `/held/{id}` link; a path
        alone without it); `notice`: `[admin] held_message`, appended to every refusal;
        `lease_s`: how long an ingest's claim lasts unless renewed."""
        self._db = repository
        self._leases = repository.blob_leases(lease_s)
        self._held: dict[str, Lease] = {}  # etag → the lease an ingest of this process holds
        self._taken: set[str] = set()  # taken over by take_over_stale, not yet launched
        self._final: set[str] = set()  # writing their verdict: the lease ends on purpose
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
        if entry.etag in self._taken:  # take_over_stale made the row ours already
            self._taken.discard(entry.etag)
            return True
        new = NewBlob(entry.etag, entry.size, origin.repo.pk, entry.path)
        lease = await self._leases.claim(new, this_process())
        if lease is None:
            return False
        self._held[entry.etag] = lease
        logger.info(
            "blob %s (%s %s, %d bytes): absent -> fetching",
            entry.etag,
            origin.repo.ref,
            entry.path,
            entry.size,
        )
        return True

    async def forget_unfinished(self) -> None:
        """At start: fetching/scanning rows a stopped process of this host left → absent (its
        temp files are gone with `tmp/`), and rows whose lease expired. Rows a live process
        owns (a server or `hubwarden prefetch` beside this one, another replica) are left to
        it: another replica's are judged by their lease alone."""
        forgotten = 0
        for blob in await self._db.list_blobs((BlobState.FETCHING, BlobState.SCANNING)):
            owner = blob.owner
            dead = owner == this_process() or is_alive(owner) is Liveness.DEAD
            if not dead and not await self._leases.expired(blob.etag):
                continue
            forgotten += await self._db.forget_abandoned_blob(blob.etag, owner)
        if forgotten:
            logger.info("forgot %d blobs a previous run left unfinished", forgotten)

    async def release_held(self, blob: BlobRecord, actor: str, comment: str) -> None:
        """quarantined → released, by a reviewer's decision (rejected blobs stay rejected:
        their bytes were refused as malicious or tampered)."""
        if blob.state is not BlobState.QUARANTINED or blob.sha256 is None:
            raise NotHeld(blob.pk, blob.state)
        await self._store.release_held(blob.sha256)
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
        self,
        blob: BlobRecord,
        report: ScanReport,
        settlement: Settlement,
        actor: str,
        comment: str = "",
    ) -> BlobState:
        """quarantined → released, quarantined or rejected, by a new scan a reviewer asked for
        (new scanners, a changed policy). Returns the new state."""
        if blob.state is not BlobState.QUARANTINED or blob.sha256 is None:
            raise NotHeld(blob.pk, blob.state)
        state = settlement.state
        if state is BlobState.RELEASED:
            await self._store.release_held(blob.sha256)
        await self._db.replace_findings(blob.pk, report.findings)
        reason = "" if state is BlobState.RELEASED else settlement.reason
        fields = {"file_format": report.file_format[:32], "outcome": report.outcome.value}
        await self._db.set_blob_state(blob.etag, state, reason=reason, **fields)
        await self._db.audit(
            actor,
            "review.rescanned",
            repo_pk=await self._repo_pk(blob),
            blob_pk=blob.pk,
            details={"comment": comment, "before": blob.state.value, "after": state.value,
                     "reason": reason, "outcome": report.outcome.value,
                     "path": blob.first_path},
        )  # fmt: skip
        return state

    async def held_again(self, blob: BlobRecord, reason: str, actor: str) -> None:
        """released → quarantined: the waiver that let the file through ended, so it is judged
        again without it (its findings are unchanged; a reviewer decides afresh)."""
        if blob.state is not BlobState.RELEASED or blob.sha256 is None:
            raise NotHeld(blob.pk, blob.state)
        await self._store.hold_again(blob.sha256)
        await self._db.set_blob_state(blob.etag, BlobState.QUARANTINED, reason=reason)
        await self._db.audit(
            actor,
            "blob.quarantined",
            repo_pk=await self._repo_pk(blob),
            blob_pk=blob.pk,
            details={"before": blob.state.value, "after": BlobState.QUARANTINED.value,
                     "reason": reason, "path": blob.first_path, "sha256": blob.sha256},
        )  # fmt: skip
        logger.info("blob %s (%s): released -> quarantined (%s)", blob.etag, blob.first_path,
                    shown(reason))  # fmt: skip

    async def _decided(self, blob: BlobRecord, state: BlobState, actor: str, comment: str) -> None:
        await self._db.audit(
            actor,
            f"review.{state.value}",
            repo_pk=await self._repo_pk(blob),
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

    async def _repo_pk(self, blob: BlobRecord) -> int | None:
        """The repo a blob was first asked for, so that its decisions show under the repo."""
        repo = await self._db.repo_of_blob(blob.pk)
        return repo.pk if repo is not None else None

    async def unclaim(self, origin: BlobOrigin) -> None:
        """fetching → absent before any byte was fetched (no temp file could be made)."""
        await self._forget(origin.entry.etag)
        logger.warning("blob %s: fetching -> absent (no temp file)", origin.entry.etag)

    async def verified(self, origin: BlobOrigin, sha256: str) -> None:
        """fetching → scanning: the bytes hash to what upstream advertised.
        Raises StateNotRecorded."""
        etag = origin.entry.etag
        await recorded(etag, "fetching -> scanning", lambda: self._set(
            etag, BlobState.SCANNING, sha256=sha256))  # fmt: skip

    async def settle(
        self, origin: BlobOrigin, temp: Path, report: ScanReport, settlement: Settlement
    ) -> Held | None:
        """scanning → released, quarantined or rejected; returns the refusal unless released."""
        entry, etag = origin.entry, origin.entry.etag
        blob = await recorded(etag, "reading", lambda: self._db.get_blob(etag))
        assert blob is not None and blob.sha256 is not None
        await recorded(etag, "findings", lambda: self._db.add_findings(blob.pk, report.findings))
        fields = {"file_format": report.file_format[:32], "outcome": report.outcome.value}
        state = settlement.state
        await self._check_lease(etag, f"scanning -> {state.value}")
        place = BlobPlace.RELEASED if state is BlobState.RELEASED else BlobPlace.QUARANTINED
        await self._store.publish(temp, blob.sha256, place)
        reason = "" if state is BlobState.RELEASED else settlement.reason
        await recorded(etag, f"scanning -> {state.value}", lambda: self._set(
            etag, state, reason=reason, **fields))  # fmt: skip
        # The state is recorded: a lost audit event is logged (ERROR), not a failed ingest.
        with contextlib.suppress(StateNotRecorded):
            await recorded(etag, "its audit event", lambda: self._audit(
                origin, blob.pk, f"blob.{state.value}", report, settlement.reason))  # fmt: skip
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
        await self._set(entry.etag, BlobState.REJECTED, reason=f"tampered: {exc.message}")
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

    async def abandon(
        self, origin: BlobOrigin, temp: Path, exc: HubwardenError, *, patient: bool = False
    ) -> None:
        """fetching → absent: nothing is recorded as verified; the next request starts again.
        The temp file goes first (on a full disk that frees the room the database needs).
        Raises StateNotRecorded unless `patient` (then it retries until recorded)."""
        etag = origin.entry.etag
        try:
            await asyncio.to_thread(self._store.discard, temp)
        except OSError as error:  # the row matters more; doctor finds the file
            logger.error("blob %s: temp file %s not removed: %s", etag, temp, error)
        await recorded(etag, "fetching -> absent", lambda: self._forget(etag),
                       patient=patient)  # fmt: skip
        logger.warning("blob %s: fetching -> abandoned (%s)", etag, shown(exc.message))

    async def take_over_stale(self, blob: BlobRecord) -> bool:
        """fetching/scanning → fetching under a new lease of this process, when the process
        that claimed the blob is gone (killed), is this one and no longer runs its ingest, or
        stopped renewing its lease (another replica that died). True when the row is ours:
        the next `claim` of it succeeds without a new row."""
        owner = blob.owner
        gone = owner == this_process() or is_alive(owner) is Liveness.DEAD
        lease = await self._leases.take_over(
            blob.etag, blob.lease_token, this_process(), expired_only=not gone
        )
        if lease is None:
            return False
        if gone:  # its half-written temp file goes now, not at the next start
            await asyncio.to_thread(self._store.clear_dead_temps)
        self._held[blob.etag] = lease
        self._taken.add(blob.etag)
        logger.warning(
            "blob %s (%s): %s -> fetching again (its ingest by %s is gone)",
            blob.etag,
            blob.first_path,
            blob.state.value,
            owner,
        )
        return True

    @contextlib.asynccontextmanager
    async def keep_lease(self, etag: str, on_lost: Callable[[], None]) -> AsyncIterator[None]:
        """Renew the lease this process holds on `etag` while the block runs; `on_lost` is
        called when another replica took it over. The lease is let go at the end."""
        renewing = asyncio.create_task(self._renew(etag, on_lost), name=f"lease {etag[:12]}")
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            self._held.pop(etag, None)
            self._final.discard(etag)
            self._taken.discard(etag)

    async def _renew(self, etag: str, on_lost: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(self._leases.lease_s / 3)
            lease = self._held.get(etag)
            if lease is None or etag in self._final:
                return
            try:
                if await self._leases.renew(lease):
                    continue
            except _DB_REFUSED as exc:  # expiry decides; a later renewal may still make it
                logger.warning("blob %s: renewing its lease failed: %s", etag, exc)
                continue
            if etag in self._final:  # its verdict ended the lease meanwhile
                return
            logger.error("blob %s: its lease was taken over by another replica", etag)
            on_lost()
            return

    async def _check_lease(self, etag: str, what: str) -> None:
        """Raise LeaseLost unless this process still holds its lease on `etag` (checked before
        anything is published in the store)."""
        lease = self._held.get(etag)
        if lease is not None and not await self._leases.renew(lease):
            raise LeaseLost(etag, what)

    async def _set(
        self, etag: str, state: BlobState, *, reason: str = "", **fields: object
    ) -> None:
        """A state write fenced by this process's lease (unfenced for a row it never claimed).
        Raises LeaseLost."""
        lease = self._held.get(etag)
        if lease is None:
            await self._db.set_blob_state(etag, state, reason=reason, **fields)
            return
        if state not in (BlobState.FETCHING, BlobState.SCANNING):
            self._final.add(etag)
        if not await self._leases.set_state(lease, state, reason=reason, **fields):
            raise LeaseLost(etag, f"-> {state.value}")

    async def _forget(self, etag: str) -> None:
        """The unfinished row → absent, fenced like `_set`; a lost lease leaves the row to the
        replica that took it."""
        lease = self._held.get(etag)
        if lease is None:
            await self._db.forget_blob(etag)
            return
        self._final.add(etag)
        if not await self._leases.forget(lease):
            logger.warning("blob %s: not forgotten, another replica holds it now", etag)
