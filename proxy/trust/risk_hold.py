"""`[policy] max_risk`: the files of a repo whose risk card rates it above the limit are held.

Judged at verdict time, when a file has been verified and scanned (`PolicyGate.settle`), never on
the request path: a held file is a quarantined file like any other, so the held message, the
review queue, a reviewer's release and a waiver (path, repo or organisation) work unchanged, and
a file served once is not judged again on every request.

The card's facts (`RiskFacts`: the repo's access flags, licence, every file with its findings,
the publisher, the timeliness; `proxy.admin.risk.RiskCards.hold_facts` gathers them, with at most
a few cached upstream calls) are read once per repo and commit and kept `TTL_S`, since a snapshot
settles many files of one commit at once; one task reads them while the others wait. The file
being settled is put into them from its own scan report before the card is assessed (pure and
cheap), so a file is judged with its own format and findings. A settle that changes what the card
reads (a file held or rejected for another reason, a finding of medium severity or more, a licence
file) forgets the cached facts of that commit, so the next file sees it; another replica's settle
is seen within `TTL_S`.

What `max_risk` reads is each dimension's settled rating (`Dimension.settled_rating`): files not
scanned yet are judged by their own scan when fetched, so "not scanned yet" holds nothing; files
max_risk held itself are not counted as held files.

What it holds: every file but those the scanners read as text, JSON or empty (model cards,
configs, tokenizers, licences, the signature file, `.gitattributes`). A verdict belongs to the
bytes, not to a repo, and those files are shared byte for byte across repos (`.gitattributes` is
the same in nearly every one): holding them for one repo would hold them for all. What makes a
repo usable (weights in any model format, code, data) is held; text and JSON stay under every
other rule (remote code in a config's `auto_map` is `remote_code`'s). Licence files not fetched
yet are fetched (verified and scanned like any file) before the card is assessed, so the licence
is judged from its text, not from its absence; a licence or signature file of another format
(weights named `LICENSE.bin`) is judged like any file, from facts gathered without fetching
(its own fetch may be what the gathering would wait for).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

from proxy.caching import TtlCache
from proxy.errors import HubwardenError, shown
from proxy.store.repository import RepoRecord
from proxy.trust.licences import is_licence_file
from proxy.trust.risk import assess
from proxy.trust.risk_facts import SCANNED, Rating, RepoFile, RiskCard, RiskFacts
from scanners.detect import FileFormat
from scanners.report import Outcome, ScanReport, Severity

TTL_S = 30.0
MAX_LOCKS = 10_000
HoldFacts = Callable[[RepoRecord, str, "str | None", bool], Awaitable[RiskFacts]]
"""(repo, commit, token, fetch) → the facts of the repo's risk card at that commit, its licence
files read (with `fetch`, fetched when not yet mirrored, with `token`). Raises HubwardenError when
they cannot be had (the commit never recorded)."""
FirstCommit = Callable[[str], Awaitable[str]]
"""etag → the commit its blob was first fetched for ("" when not recorded): for a rescan, which
settles a held file without a commit."""
_EXEMPT_FORMATS = frozenset({FileFormat.TEXT.value, FileFormat.JSON.value, FileFormat.EMPTY.value})


def settling_file(path: str, size: int, report: ScanReport, known: RepoFile | None) -> RepoFile:
    """The file being settled as the card sees it: scanned, with its own format and findings."""
    top = max(report.findings, key=lambda f: f.severity.rank, default=None)
    return RepoFile(
        path=path,
        size=size,
        state=SCANNED,
        file_format=report.file_format,
        outcome=report.outcome.value,
        worst=top.severity if top else None,
        worst_text=shown(f"{top.code}: {top.message}")[:200] if top else "",
        codes=tuple(f.code for f in report.findings),
        hub=known.hub if known is not None else None,
    )


def is_exempt(file_format: str) -> bool:
    """Files max_risk never holds: what the scanners read as text, JSON or empty (metadata
    shared byte for byte across repos, licences and the signature file among them)."""
    return file_format in _EXEMPT_FORMATS


def is_read_by_the_card(path: str, signature_file: str) -> bool:
    """A file whose settle the card's own gathering may wait for (a licence file it fetches,
    the signature file a signature check fetches): its card is gathered without fetching."""
    return path == signature_file or is_licence_file(path)


def changes_the_card(path: str, report: ScanReport, held_by_another_rule: bool) -> bool:
    """Whether a file's settlement changes what the card of its commit reads."""
    if held_by_another_rule or is_licence_file(path) or report.outcome is not Outcome.CLEAN:
        return True
    return any(f.severity.rank >= Severity.MEDIUM.rank for f in report.findings)


class RiskCardUnknown(HubwardenError):
    """The card of a file being settled cannot be computed."""


class RiskHold:
    """The risk card of a file being settled, its commit's facts cached (`card`)."""

    def __init__(
        self,
        facts: HoldFacts,
        *,
        first_commit: FirstCommit | None = None,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._facts = facts
        self._first_commit = first_commit
        self._cache: TtlCache[tuple[int, str], RiskFacts] = TtlCache(ttl_s, clock)
        self._generations: dict[tuple[int, str], int] = {}
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}

    async def card(
        self,
        repo: RepoRecord,
        commit: str,
        settling: tuple[str, int, ScanReport],
        token: str | None,
        limit: Rating,
        *,
        fetch: bool = True,
    ) -> RiskCard:
        """The card of `repo` at `commit` with the file being settled (its path, size and scan
        report) put in, compared with `limit`; `fetch` False: nothing is fetched to gather the
        facts (for a file the fetching could be waiting for). Raises HubwardenError as
        `HoldFacts`."""
        path, size, report = settling
        if fetch:
            facts = await self._commit_facts(repo, commit, token)
        else:  # the cached facts, else gathered without fetching (and not kept)
            facts = self._cache.get((repo.pk, commit)) or await self._facts(
                repo, commit, token, False
            )
        files = list(facts.files)
        index = next((i for i, f in enumerate(files) if f.path == path), None)
        mine = settling_file(path, size, report, files[index] if index is not None else None)
        if index is None:
            files.append(mine)
        else:
            files[index] = mine
        return assess(dataclasses.replace(facts, files=tuple(files), max_risk=limit))

    async def commit_of(self, etag: str) -> str:
        """The commit a blob was first fetched for. Raises RiskCardUnknown when not recorded."""
        found = await self._first_commit(etag) if self._first_commit is not None else ""
        if not found:
            raise RiskCardUnknown("the commit this file was fetched for is not recorded")
        return found

    def changed(self, repo_pk: int, commit: str) -> None:
        """A settle changed what the card of `commit` reads: the next file reads it again."""
        key = (repo_pk, commit)
        self._generations[key] = self._generations.get(key, 0) + 1
        self._cache.forget(key)

    async def _commit_facts(self, repo: RepoRecord, commit: str, token: str | None) -> RiskFacts:
        key = (repo.pk, commit)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if len(self._locks) > MAX_LOCKS:
            self._locks.clear()
            self._generations.clear()
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            generation = self._generations.get(key, 0)
            facts = await self._facts(repo, commit, token, True)
            if self._generations.get(key, 0) == generation:  # nothing changed meanwhile
                self._cache.put(key, facts)
            return facts
