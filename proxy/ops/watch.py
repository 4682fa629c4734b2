"""The upstream watch (issue 11, item 3): every `[watch] interval_s`, each mirrored branch and tag
is compared with the upstream's refs listing, so that a change is seen, judged and surfaced
before anyone pulls it.

For each recorded repo (one refs call per repo, `pause_s` apart), a ref whose upstream head
differs from the recorded one goes through the catalog exactly as a client's request would
(`Catalog.repo_info` with the service token): the new head is recorded, the gate checks that it
descends from the previous one (a rewritten history blocks the repo, DESIGN.md rule 4) and
whether it changes pinned files (rule 5: held for review under `pinned_change = "hold"`). The
change is then recorded (`watched_refs`, and the audit event `repo.update_available`, which the
webhooks are told of) with the files the new head added, modified or deleted against the commit
served until then. With `[watch] prefetch = true` those files are fetched, verified and scanned
through the server's own path (`proxy.admin.prefetch.Prefetcher`), so that a held file waits in
the review queue before any client asks for it. The Hub's own scan results for the changed files
at the new head are then read (`UpstreamFacts.hub_security`) and recorded beside ours: each
file's verdict beside it in the watch's record, and an informational finding of scanner "hub" on
each blob this mirror holds (`proxy.trust.hub_records`); they never decide anything.

A repo checked by another replica less than half an interval ago is skipped; an upstream that
rate-limits us ends the pass (the next one tries again). Offline there is no watch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from proxy.catalog import Caller, Catalog, Resolved
from proxy.config import WatchSettings
from proxy.errors import (
    AccessDenied,
    GatedRepo,
    HubwardenError,
    RepoNotFound,
    UpstreamRateLimited,
    shown,
)
from proxy.metadata import EntryType, RefKind, TreeEntry
from proxy.repos import RepoRef, RepoType, Revision
from proxy.store.repository import RefRecord, RepoRecord, Repository, utcnow
from proxy.store.watches import ChangedFile, WatchRecords, WatchStatus
from proxy.trust.blocks import SYSTEM_ACTOR
from proxy.trust.hub_records import record_hub_scans
from proxy.trust.hub_scans import merged
from proxy.upstream_facts import RefHeads, UpstreamFacts
from scanners.report import JsonValue

logger = logging.getLogger(__name__)

UPDATE_ACTION = "repo.update_available"  # an audit action, and the webhook event of the same name
PrefetchFiles = Callable[[RepoRef, str, Sequence[str]], Awaitable[dict[str, int]]]
"""(repo, commit, paths) → verdict → how many files: fetch, verify and scan those files of that
commit through the server's own path (the app wires `proxy.admin.prefetch.Prefetcher` in)."""
MAX_CHANGED_RECORDED = 1000
MAX_CHANGED_AUDITED = 50
_WATCHED_KINDS = (None, RefKind.BRANCH, RefKind.TAG, RefKind.DEFAULT)
_GONE = (RepoNotFound, GatedRepo, AccessDenied)


@dataclass(frozen=True, slots=True)
class Noticed:
    """A change the watch noticed on one ref, and what it came to."""

    repo: RepoRecord
    ref: str
    previous: str
    head: str
    status: WatchStatus
    changed: tuple[ChangedFile, ...]
    detail: str = ""


@dataclass(slots=True)
class WatchPass:
    """What one pass over the mirrored repos did."""

    repos: int = 0
    skipped: int = 0
    noticed: list[Noticed] = dataclasses.field(default_factory=list)
    failed: int = 0
    stopped: str = ""  # why the pass ended early ("" when it did not)


def _upstream_head(ref: RefRecord, heads: RefHeads) -> str | None:
    if ref.kind is RefKind.TAG:
        return heads.tags.get(ref.name)
    name = ref.name or "main"  # the default branch is recorded unnamed; on the Hub it is main
    found = heads.branches.get(name)
    if found is None and ref.kind is None:
        found = heads.tags.get(name)
    return found


def _same_move(one: Noticed, other: Noticed) -> bool:
    return (one.previous, one.head) == (other.previous, other.head)


def changed_files(before: Sequence[TreeEntry], after: Sequence[TreeEntry]) -> list[ChangedFile]:
    """The files `after` added, modified or deleted against `before`, by path."""
    old = {e.path: e.etag for e in before if e.entry_type is EntryType.FILE}
    new = {e.path: e.etag for e in after if e.entry_type is EntryType.FILE}
    changed = [
        ChangedFile(path, "added" if path not in old else "modified")
        for path, etag in sorted(new.items())
        if old.get(path) != etag
    ]
    changed += [ChangedFile(path, "deleted") for path in sorted(set(old) - set(new))]
    return changed


class Watch:
    """Checks mirrored refs against the upstream; `run` is the background task."""

    def __init__(
        self,
        repository: Repository,
        catalog: Catalog,
        facts: UpstreamFacts,
        records: WatchRecords,
        settings: WatchSettings,
        *,
        prefetch: PrefetchFiles | None = None,
    ) -> None:
        """`prefetch`: how to fetch changed files ahead of clients (None: never, whatever
        `settings.prefetch` says)."""
        self._db = repository
        self._catalog = catalog
        self._facts = facts
        self._records = records
        self._settings = settings
        self._prefetch_files = prefetch if settings.prefetch else None
        self._caller = Caller(facts.service_token)

    async def run(self) -> None:
        """Check every `interval_s`, for ever (a supervisor: a failed pass is logged and the
        next one tries again). Cancelled at shutdown."""
        while True:
            await asyncio.sleep(self._settings.interval_s)
            try:
                done = await self.check_all()
            except Exception:
                logger.exception("upstream watch: the pass failed")
                continue
            logger.info(
                "upstream watch: %d repos checked, %d skipped, %d changes, %d failed%s",
                done.repos, done.skipped, len(done.noticed), done.failed,
                f"; stopped: {done.stopped}" if done.stopped else "",
            )  # fmt: skip

    async def check_all(self) -> WatchPass:
        """One pass over every recorded repo."""
        done = WatchPass()
        repository = self._db
        for repo_type in RepoType:
            for record in await repository.list_repos(repo_type.value, ""):
                if not await self._is_due(record):
                    done.skipped += 1
                    continue
                if done.repos:
                    await asyncio.sleep(self._settings.pause_s)
                try:
                    done.noticed += await self.check_repo(record)
                except UpstreamRateLimited as exc:
                    done.stopped = exc.message
                    return done
                except HubwardenError as exc:
                    done.failed += 1
                    logger.warning("upstream watch: %s not checked: %s", record.ref, exc.message)
                done.repos += 1
        return done

    async def _is_due(self, record: RepoRecord) -> bool:
        """False when every watched ref of the repo was checked less than half an interval ago
        (by another replica, or a pass that ran late)."""
        checks = [r.checked_at for r in await self._records.of_repo(record.pk)]
        if not checks or any(c is None for c in checks):
            return True
        newest_due = utcnow().timestamp() - self._settings.interval_s / 2
        return any(c is not None and c.timestamp() <= newest_due for c in checks)

    async def check_repo(self, record: RepoRecord) -> list[Noticed]:
        """Compare the repo's recorded branches and tags with the upstream's; each moved ref goes
        through the catalog and the gate, and is recorded. Raises UpstreamRateLimited,
        UpstreamUnavailable, UpstreamRejected."""
        refs = [
            r for r in await self._db.list_refs(record.pk)
            if r.kind in _WATCHED_KINDS
        ]  # fmt: skip
        if not refs:
            return []
        try:
            heads = await self._facts.heads(record.ref)
        except _GONE as exc:
            for ref in refs:
                await self._records.checked(record.pk, ref.name, None, f"upstream: {exc.message}")
            return []
        noticed: list[Noticed] = []
        for ref in refs:
            head = _upstream_head(ref, heads)
            if head is None:
                gone = f'"{shown(ref.name or "main")}" is no longer listed upstream'
                await self._records.checked(record.pk, ref.name, None, gone)
            elif head == ref.commit:
                await self._records.checked(record.pk, ref.name, head)
            else:
                found = await self._moved(record, ref, head)
                if found is None or any(_same_move(n, found) for n in noticed):
                    continue  # the default branch, recorded unnamed and as "main", told once
                await self._surface(found)
                if self._prefetch_files is not None and found.status is not WatchStatus.BLOCKED:
                    await self._prefetch(found, self._prefetch_files)
                await self._hub_scans(found)
                noticed.append(found)
        return noticed

    async def _moved(self, record: RepoRecord, ref: RefRecord, upstream: str) -> Noticed | None:
        """A ref whose upstream head moved: recorded through the catalog (which runs the gate)
        and in the watch's records. None when the catalog did not record the new head yet."""
        catalog = self._catalog
        served_before = ref.approved_commit or ref.commit
        revision = Revision(ref.name) if ref.name else None
        try:
            await catalog.repo_info(record.ref, revision, self._caller, allow_blocked=True)
        except UpstreamRateLimited:
            raise
        except HubwardenError as exc:  # a block placed on the way, a refusal: recorded below
            logger.warning("upstream watch: %s@%s: %s", record.ref, ref.name, exc.message)
        now = await self._db.get_ref_record(record.pk, ref.name)
        if now is None or now.commit == ref.commit:
            # The catalog answered from its short cache: the next pass records it.
            await self._records.checked(
                record.pk, ref.name, upstream, "the new head is not recorded yet; next check"
            )
            return None
        noticed = await self._noticed(record, ref, now, served_before)
        await self._records.noticed(
            record.pk, noticed.ref, (noticed.previous, noticed.head), noticed.changed,
            noticed.status, noticed.detail,
        )  # fmt: skip
        return noticed

    async def _noticed(
        self, record: RepoRecord, ref: RefRecord, now: RefRecord, served_before: str
    ) -> Noticed:
        block = await self._db.active_block(record.pk)
        if block is not None:
            status, detail = WatchStatus.BLOCKED, f"{block.reason}: {block.detail}"
        elif (now.approved_commit or now.commit) != now.commit:
            status, detail = WatchStatus.HELD, "the new head changes pinned files"
        else:
            status, detail = WatchStatus.UPDATE_AVAILABLE, ""
        changed: list[ChangedFile] = []
        try:
            changed = await self._changed(record, served_before, now.commit)
        except HubwardenError as exc:
            detail = detail or f"changed files not listed: {exc.message}"
        return Noticed(record, ref.name, ref.commit, now.commit, status, tuple(changed), detail)

    async def _changed(self, record: RepoRecord, before: str, after: str) -> list[ChangedFile]:
        catalog = self._catalog
        old = await catalog.tree(Resolved(record, before), self._caller)
        new = await catalog.tree(Resolved(record, after), self._caller)
        return changed_files(old, new)[:MAX_CHANGED_RECORDED]

    async def _surface(self, noticed: Noticed) -> None:
        """Audit the change (the webhooks are told of `repo.update_available`) and log it."""
        record = noticed.repo
        changed: list[JsonValue] = [c.to_json() for c in noticed.changed[:MAX_CHANGED_AUDITED]]
        await self._db.audit(
            SYSTEM_ACTOR,
            UPDATE_ACTION,
            repo_pk=record.pk,
            details={"ref": noticed.ref or "main", "from": noticed.previous, "to": noticed.head,
                     "status": noticed.status.value, "detail": noticed.detail,
                     "changed": changed, "changed_count": len(noticed.changed)},
        )  # fmt: skip
        logger.info(
            "upstream watch: %s@%s moved %s → %s (%s, %d files changed)", record.ref,
            noticed.ref or "main", noticed.previous[:12], noticed.head[:12],
            noticed.status.value, len(noticed.changed),
        )  # fmt: skip

    async def _hub_scans(self, noticed: Noticed) -> None:
        """Read the Hub's own scan of the files the new head added or modified and record it
        beside ours (after any prefetch, so that the blobs fetched ahead get their finding).
        Upstream trouble leaves it unread: the risk card reads it again later."""
        wanted = [c.path for c in noticed.changed if c.change != "deleted"]
        if not wanted or noticed.status is WatchStatus.BLOCKED:
            return
        record = noticed.repo
        try:
            security = await self._facts.hub_security(record.ref, noticed.head, wanted)
            entries = await self._catalog.tree(Resolved(record, noticed.head), self._caller)
        except UpstreamRateLimited:
            raise
        except HubwardenError as exc:
            logger.warning("upstream watch: %s@%s: the Hub's scan results not read: %s",
                           record.ref, noticed.head[:12], exc.message)  # fmt: skip
            return
        statuses = merged(security.repo, security.files)
        asked = set(wanted)
        verdicts = {
            path: (status.verdict.value, status.detail)
            for path, status in statuses.items()
            if path in asked
        }
        if verdicts:
            await self._records.hub_scanned(record.pk, noticed.ref, noticed.head, verdicts)
        known = [(e.path, e.etag) for e in entries if e.path in verdicts]
        added = await record_hub_scans(self._db, known, noticed.head, statuses)
        flagged = sorted(p for p, (v, _) in verdicts.items() if v in ("caution", "unsafe"))
        logger.info("upstream watch: %s@%s: the Hub's scan: %d files read, %d flagged%s, %d "
                    "findings recorded", record.ref, noticed.head[:12], len(verdicts),
                    len(flagged), f" ({', '.join(shown(p) for p in flagged[:5])})" if flagged
                    else "", added)  # fmt: skip

    async def _prefetch(self, noticed: Noticed, prefetch: PrefetchFiles) -> None:
        """Fetch, verify and scan the files the new head added or modified, by commit."""
        wanted = [c.path for c in noticed.changed if c.change != "deleted"]
        if not wanted:
            return
        found = await prefetch(noticed.repo.ref, noticed.head, wanted)
        counts: dict[str, JsonValue] = {k: v for k, v in found.items() if v}
        await self._records.prefetched(noticed.repo.pk, noticed.ref, counts)
        logger.info("upstream watch: prefetched %s@%s: %s", noticed.repo.ref,
                    noticed.head[:12], counts)  # fmt: skip
