"""The admins' review, as one service the CLI (and later the REST API and pages) call: held
files, blocked repos and pinned changes waiting for a decision (DESIGN.md rule 7).

Every decision names its actor and a comment, goes through the blob lifecycle or the trust rules,
and is audited. Nothing here knows HTTP.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass

from proxy.admin.rescan import Rescanner
from proxy.errors import HubwardenError, shown
from proxy.lifecycle import BlobLifecycle, NotHeld
from proxy.repos import RepoRef
from proxy.store.models import BlobState, BlockReason, WaiverScope
from proxy.store.repository import (
    AuditRecord,
    BlobRecord,
    PinRecord,
    RepoRecord,
    Repository,
    utcnow,
)
from proxy.store.review import (
    AuditFilter,
    BlockedRepo,
    HeldBlob,
    HeldFilter,
    HeldRef,
    ReviewQueries,
)
from proxy.store.waivers import WaiverRecord, Waivers
from proxy.trust.blocks import Blocks
from proxy.trust.bom import build_bom
from proxy.trust.bom_facts import BomSources, revision_facts, tool_version
from proxy.trust.pins import Pins
from proxy.trust.signature_report import SignatureReport
from proxy.trust.signatures import Signatures
from proxy.trust.waiver_sweep import WaiverSweep
from scanners.report import Finding, Severity

MAX_COMMENT_CHARS = 2000
MAX_JUSTIFICATION_CHARS = 2000
MAX_REQUESTS_PER_FILE = 1000
MAX_REASON_CHARS = 160
MAX_BULK = 500  # files one bulk decision may touch


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
class PublicView:
    """What anyone refused a file may read about it: no payloads, no details, no admin names."""

    review_id: int
    path: str
    repo: str
    state: str
    reasons: tuple[str, ...]  # finding titles: code and message, cut
    since: str
    requests: int
    decision: str  # the reviewer's comment once decided, else ""


_DECISIONS = frozenset(
    {
        "review.released",
        "review.rejected",
        "review.rescanned",
        "change.approved",
        "change.rejected",
        "repo.unblocked",
        "waiver.created",
        "waiver.revoked",
    }
)


@dataclass(frozen=True, slots=True)
class Summary:
    quarantined: int
    rejected: int
    blocked: int
    changes: int
    recent: tuple[AuditRecord, ...]
    by_severity: dict[str, int]  # held files by worst finding ("none" without findings)
    waivers: int = 0  # active waivers
    requests: int = 0  # exception requests on held files


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which audit events: of one action, by one actor, about one repo, since a time."""

    action: str | None = None
    actor: str | None = None
    repo: RepoRef | None = None
    since: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a bulk decision did: the review ids decided, and those it could not decide."""

    decided: tuple[int, ...]
    failed: tuple[tuple[int, str], ...]
    more: bool  # more files matched than one bulk decision may touch


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
        rescanner: Rescanner | None = None,
        waivers: Waivers | None = None,
        *,
        signatures: Signatures | None = None,
    ) -> None:
        """`rescanner`: how to scan a held file again (None: rescan is refused); `waivers`: where
        releases wider than the bytes are kept (None: only `blob` releases); `signatures`: the
        model signatures of revisions (None: shown as not checked)."""
        self._rescanner = rescanner
        self._signatures = signatures
        self._waivers = waivers
        self._sweep = WaiverSweep(waivers, repository, lifecycle) if waivers else None
        self._db = repository
        self._queries = queries
        self._lifecycle = lifecycle
        self._blocks = blocks
        self._pins = pins

    # -- held files ------------------------------------------------------------------------

    async def held(
        self, found: HeldFilter | None = None, *, after: int = 0, limit: int = 1000
    ) -> list[HeldBlob]:
        """Held and rejected files (those `found` matches), by review id, after `after`."""
        return await self._queries.held_blobs(found or HeldFilter(), after_pk=after, limit=limit)

    async def bulk(self, found: HeldFilter, decision: str, actor: str, comment: str) -> BulkResult:
        """Release or reject (`decision`) every quarantined file `found` matches, each audited
        on its own; at most MAX_BULK at a time."""
        text = _comment(comment)
        if decision not in ("release", "reject"):
            raise ReviewError(f'decision "{shown(decision)}" is neither release nor reject')
        found = dataclasses.replace(found, states=(BlobState.QUARANTINED,))
        matched = await self.held(found, limit=MAX_BULK + 1)
        decided: list[int] = []
        failed: list[tuple[int, str]] = []
        for blob in matched[:MAX_BULK]:
            try:
                if decision == "release":
                    await self.release(blob.pk, actor, text)
                else:
                    await self.reject(blob.pk, actor, text)
            except (ReviewError, NotHeld) as exc:  # decided by someone else meanwhile
                failed.append((blob.pk, str(exc)))
            else:
                decided.append(blob.pk)
        return BulkResult(tuple(decided), tuple(failed), len(matched) > MAX_BULK)

    async def item(self, review_id: int) -> HeldItem:
        blob = await self._queries.held_blob(review_id)
        if blob is None:
            raise ReviewNotFound(
                f"review {review_id} does not exist; see `hubwarden quarantine list`"
            )
        findings = await self._db.list_findings(blob.pk)
        history = await self._queries.blob_history(blob.pk)
        return HeldItem(blob, tuple(findings), tuple(history))

    async def release(
        self,
        review_id: int,
        actor: str,
        comment: str,
        *,
        scope: str = "blob",
        expires_in: dt.timedelta | None = None,
    ) -> WaiverRecord | None:
        """Release a quarantined file: these bytes (`scope` "blob"), and with "path", "repo" or
        "org" also a waiver that lets later held (never malicious) files of that scope through
        until it expires. Returns the waiver, if one was made."""
        text = _comment(comment)
        if scope != "blob" and scope not in {s.value for s in WaiverScope}:
            raise ReviewError(f'scope "{shown(scope)}" is not one of blob, path, repo, org')
        if expires_in is not None and expires_in <= dt.timedelta(0):
            raise ReviewError("a waiver's expiry must lie in the future")
        blob = await self._blob(review_id)
        waiver = None
        if scope != "blob":
            waiver = await self._add_waiver(blob, WaiverScope(scope), actor, text, expires_in)
        await self._lifecycle.release_held(blob, actor, text)
        return waiver

    async def _add_waiver(
        self,
        blob: BlobRecord,
        scope: WaiverScope,
        actor: str,
        comment: str,
        expires_in: dt.timedelta | None,
    ) -> WaiverRecord:
        if self._waivers is None:
            raise ReviewError("waivers are not available here")
        if blob.state is not BlobState.QUARANTINED:
            raise NotHeld(blob.pk, blob.state)
        repo = await self._db.repo_of_blob(blob.pk)
        if repo is None:
            raise ReviewNotFound(f"review {blob.pk}: the repo it came from is not recorded")
        if scope is WaiverScope.ORG and "/" not in repo.ref.repo_id:
            raise ReviewError(
                f"{shown(repo.ref.repo_id)} belongs to no organisation: waive the repo instead"
            )
        expires_at = utcnow() + expires_in if expires_in is not None else None
        waiver = await self._waivers.add(
            scope, repo.ref, blob.first_path, comment=comment, by=actor, expires_at=expires_at
        )
        await self._db.audit(
            actor,
            "waiver.created",
            repo_pk=repo.pk,
            blob_pk=blob.pk,
            details={"waiver": waiver.pk, "covers": waiver.covers, "comment": comment,
                     "expires_at": expires_at.isoformat() if expires_at else None},
        )  # fmt: skip
        return waiver

    async def waivers(self) -> list[WaiverRecord]:
        return [] if self._waivers is None else await self._waivers.listed()

    async def revoke_waiver(self, pk: int, actor: str, comment: str) -> None:
        text = _comment(comment)
        waivers = self._waivers
        waiver = None if waivers is None else await waivers.get(pk)
        if waivers is None or waiver is None or not await waivers.revoke(pk, actor):
            raise ReviewNotFound(f"waiver {pk} does not exist or is revoked already")
        repo = None
        if waiver.repo_id is not None:
            repo = await self._db.find_repo(RepoRef(waiver.repo_type, waiver.repo_id))
        await self._db.audit(
            actor,
            "waiver.revoked",
            repo_pk=repo.pk if repo is not None else None,
            details={"waiver": pk, "covers": waiver.covers, "comment": text,
                     "before": "active", "after": "revoked"},
        )  # fmt: skip
        await self.sweep_waivers()

    async def waived_counts(self) -> dict[int, int]:
        """waiver id → how many files it let through."""
        return {} if self._waivers is None else await self._waivers.waived_counts()

    async def sweep_waivers(self) -> int:
        """Judge again the files that ended waivers let through; returns how many are held."""
        return 0 if self._sweep is None else await self._sweep.sweep()

    async def reject(self, review_id: int, actor: str, comment: str) -> None:
        text = _comment(comment)
        await self._lifecycle.reject_held(await self._blob(review_id), actor, text)

    async def rescan(self, review_id: int, actor: str, comment: str) -> BlobState:
        """Scan a quarantined file again with today's scanners and policy; returns its state."""
        _comment(comment)
        if self._rescanner is None:
            raise ReviewError("rescanning needs the scanners: run it on the server")
        blob = await self._blob(review_id)
        if blob.state is not BlobState.QUARANTINED:
            raise NotHeld(blob.pk, blob.state)
        report, settlement = await self._rescanner(blob)
        return await self._lifecycle.rescanned(blob, report, settlement, actor, _comment(comment))

    async def _blob(self, review_id: int) -> BlobRecord:
        blob = await self._db.get_blob_by_pk(review_id)
        if blob is None:
            raise ReviewNotFound(
                f"review {review_id} does not exist; see `hubwarden quarantine list`"
            )
        return blob

    # -- the person who was refused --------------------------------------------------------

    async def public_view(self, review_id: int) -> PublicView:
        """What a refused user may see about a held (or since decided) file."""
        item = await self.item(review_id)
        blob = item.blob
        decisions = ("review.released", "review.rejected")
        decided = [e for e in item.history if e.action in decisions]
        if blob.state is BlobState.RELEASED and not decided:
            raise _no_review(review_id)  # never held: nothing to say about it
        record = await self._db.find_repo(blob.repo) if blob.repo else None
        hidden = record is None or record.private or record.gated not in ("false", "")
        requests = await self._queries.requests_for(blob.pk)
        comment = decided[-1].details.get("comment", "") if decided else ""
        return PublicView(
            review_id=blob.pk,
            # Ids can be guessed: a private or gated repo's names are not told to anyone.
            path="(a file of a private or gated repo)" if hidden else blob.path,
            repo="" if hidden else str(blob.repo),
            state=blob.state.value,
            reasons=()
            if hidden
            else tuple(
                shown(f"{f.code}: {f.message}")[:MAX_REASON_CHARS]
                for f in sorted(item.findings, key=lambda f: -f.outcome.rank)[:5]
            ),
            since=blob.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            requests=len(requests),
            decision=str(comment),
        )

    async def request_exception(
        self, review_id: int, justification: str, requester: str, remote: str
    ) -> int:
        """Record a refused user's request; returns how many requests the file has."""
        text = justification.strip()
        if not text:
            raise ReviewError("say why you need this file: the justification is empty")
        blob = await self._blob(review_id)
        if blob.state is not BlobState.QUARANTINED:
            raise ReviewError(f"review {review_id} is {blob.state.value}: nothing to request")
        known = await self._queries.requests_for(blob.pk, limit=MAX_REQUESTS_PER_FILE)
        if len(known) >= MAX_REQUESTS_PER_FILE:
            raise ReviewError(f"review {review_id} has {len(known)} requests already")
        await self._queries.add_request(
            blob.pk, text[:MAX_JUSTIFICATION_CHARS], requester[:64], remote[:64]
        )
        await self._db.audit(
            requester[:64],
            "review.requested",
            blob_pk=blob.pk,
            details={"justification": text[:MAX_JUSTIFICATION_CHARS], "remote": remote[:64]},
        )
        return len(known) + 1

    # -- repos -----------------------------------------------------------------------------

    async def blocked(self) -> list[BlockedRepo]:
        return await self._queries.blocked_repos()

    async def block(self, repo: RepoRef, actor: str, comment: str) -> None:
        """Block a repo, mirrored already or not (a block ahead of its first request)."""
        record = await self._db.find_repo(repo)
        if record is None:
            record = await self._db.upsert_repo(repo, private=False, gated="false")
        existing = await self._db.active_block(record.pk)
        if existing is not None:
            raise ReviewError(f"{shown(repo)} is blocked already ({existing.reason}: "
                              f"{shown(existing.detail)})")  # fmt: skip
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
        await self._db.audit(
            actor,
            "repo.unblocked",
            repo_pk=record.pk,
            details={"comment": text, "lifted": lifted, "before": "blocked", "after": "serving"},
        )

    async def _repo(self, repo: RepoRef) -> RepoRecord:
        record = await self._db.find_repo(repo)
        if record is None:
            raise ReviewNotFound(f"{shown(repo)} was never mirrored here")
        return record

    # -- the AI-BOM ------------------------------------------------------------------------

    async def bom(self, repo: RepoRef, revision: str) -> str:
        """The CycloneDX ML-BOM of a mirrored revision (a branch or tag: the commit clients are
        served; or a commit). Raises ReviewNotFound for what was never mirrored."""
        record = await self._repo(repo)
        commit = await self._served(record, revision)
        sources = BomSources(self._db, self._queries, self._signatures)
        facts = await revision_facts(sources, record, revision, commit)
        if facts is None:
            raise ReviewNotFound(f"{shown(repo)} at {commit[:12]} was never mirrored here")
        return build_bom(facts, tool_version=tool_version())

    async def signature(self, repo: RepoRef, revision: str) -> SignatureReport:
        """The model signature of a mirrored revision (a branch or tag: the commit clients are
        served; or a commit), verified now if it never was. Raises ReviewNotFound."""
        record = await self._repo(repo)
        commit = await self._served(record, revision)
        if await self._db.get_commit(record.pk, commit) is None:
            raise ReviewNotFound(f"{shown(repo)} at {commit[:12]} was never mirrored here")
        if self._signatures is None:
            raise ReviewError("model signatures are not checked by this process")
        return await self._signatures.report(record, commit)

    async def _served(self, record: RepoRecord, revision: str) -> str:
        if re.fullmatch(r"[0-9a-f]{40}", revision):
            return revision
        ref = await self._db.get_ref_record(record.pk, revision)
        if ref is None:
            raise ReviewNotFound(
                f"revision {shown(revision)} of {shown(record.ref)} was never mirrored here"
            )
        return ref.approved_commit or ref.commit

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
                "before": f"{ref} served at {change.held.approved}",
                "after": f"{ref} served at {change.held.head}",
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
            details={
                "ref": ref,
                "head": change.held.head,
                "comment": text,
                "before": f"{ref} served at {change.held.approved}",
                "after": f"{ref} stays at {change.held.approved}, {change.held.head} refused",
            },
        )

    async def _change(self, repo: RepoRef, ref: str) -> PinnedChange:
        for change in await self.changes():
            if change.held.repo.ref == repo and change.held.name == ref:
                return change
        raise ReviewNotFound(
            f'no pinned change waits for "{shown(ref)}" of {repo}; see `hubwarden changes list`'
        )

    # -- audit -----------------------------------------------------------------------------

    async def audit(
        self, query: AuditQuery | None = None, *, limit: int = 100, after: int | None = None
    ) -> list[AuditRecord]:
        """Audit events, oldest first: the newest `limit` that match, or with `after` the
        `limit` that follow event `after` (to follow or stream the log)."""
        query = query or AuditQuery()
        repo_pk = None
        if query.repo is not None:
            record = await self._db.find_repo(query.repo)
            if record is None:
                return []
            repo_pk = record.pk
        found = AuditFilter(query.actor, query.action, repo_pk, query.since)
        return await self._queries.audit_log(found, limit=limit, after_pk=after)

    # -- overview --------------------------------------------------------------------------

    async def summary(self) -> Summary:
        """Counts a reviewer starts from, and the latest decisions."""
        held = await self.held()
        decisions = [e for e in await self._queries.audit_log(limit=500) if e.action in _DECISIONS]
        by_severity = {s.value: 0 for s in reversed(Severity)} | {"none": 0}
        for blob in held:
            if blob.state is BlobState.QUARANTINED:
                by_severity[blob.worst.severity.value if blob.worst else "none"] += 1
        now = utcnow()
        return Summary(
            quarantined=sum(1 for b in held if b.state is BlobState.QUARANTINED),
            rejected=sum(1 for b in held if b.state is BlobState.REJECTED),
            blocked=len(await self.blocked()),
            changes=len(await self.changes()),
            recent=tuple(decisions[-10:]),
            by_severity=by_severity,
            waivers=sum(1 for w in await self.waivers() if w.is_active(now)),
            requests=sum(b.requests for b in held if b.state is BlobState.QUARANTINED),
        )

    async def pins(self, repo: RepoRef) -> list[PinRecord]:
        """The pins of one repo, by path."""
        record = await self._repo(repo)
        return sorted(
            (
                PinRecord(path, etag, commit)
                for path, etag, commit in await self._queries.pins(record.pk)
            ),
            key=lambda p: p.path,
        )
