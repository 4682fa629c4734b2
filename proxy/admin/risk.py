"""The risk card service: gathers what the mirror knows about a revision (the repo's access
flags, the recorded repo info, its files with their blobs and findings, its refs and commit
listings, what the upstream watch saw) plus at most a few cached upstream calls (the publisher's
account, the refs listing, the Hub's own scan results: `proxy.upstream_facts`), and hands them to
the pure `proxy.trust.risk.assess`.

Offline (no `UpstreamFacts`), everything comes from the records and what needs the upstream says
"unknown offline". Online, the Hub's own scan results are also recorded beside ours, as findings
of scanner "hub" on the blobs this mirror holds (`proxy.trust.hub_scans`): never deciding, and
shown offline later. The API, the pages and the CLI call `RiskCards.card`; `[policy] max_risk`
(`proxy.trust.risk_hold`) calls `RiskCards.hold_facts`, which also fetches the licence files not
mirrored yet (through `files`, the mirror's fetching path) so that the licence is judged from its
text. A licence file's text is read whether it was released or held (it is only classified).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.admin.review import ReviewNotFound
from proxy.config import MaxRisk, PolicySettings, Settings
from proxy.errors import HubwardenError, shown
from proxy.metadata import RefKind
from proxy.repos import RepoRef, Revision, is_commit_sha
from proxy.store import db
from proxy.store.blob_protocol import BlobPlace, BlobStore, StoreUnavailable
from proxy.store.models import SignatureStatus as StoredSignature
from proxy.store.repository import RefRecord, RepoRecord, Repository, utcnow
from proxy.store.review import ReviewQueries, RevisionFile
from proxy.store.signatures import SignatureRecords
from proxy.store.watches import WatchRecords
from proxy.trust.hub_records import record_hub_status
from proxy.trust.hub_scans import HUB_SCANNER, HubFileStatus, HubVerdict, merged
from proxy.trust.licences import MAX_TEXT_CHARS, classify_text, is_licence_file
from proxy.trust.policy_source import PolicySource
from proxy.trust.risk import (
    NOT_FETCHED,
    Account,
    LicenceFile,
    PublisherFacts,
    Rating,
    RepoFile,
    RiskCard,
    RiskFacts,
    SignatureStatus,
    TimelinessFacts,
    assess,
)
from proxy.trust.risk_hold import RiskHold
from proxy.trust.rules import ALLOW_PUBLISHERS, DENY_PUBLISHERS, Policy
from proxy.trust.signatures import RevisionFiles, RevisionUnknown, SignatureFileUnavailable
from proxy.upstream import Upstream, UpstreamConfig
from proxy.upstream_facts import HubSecurity, UpstreamFacts, parse_date
from scanners.report import Finding, JsonValue

logger = logging.getLogger(__name__)

MAX_FILES_WITH_FINDINGS = 5000  # files whose findings one card reads
SignatureLookup = Callable[[RepoRecord, str], Awaitable[tuple[SignatureStatus, str]]]
"""(repo, commit) → the signature status and the signer."""
_SIGNATURES = {
    StoredSignature.VERIFIED: SignatureStatus.VERIFIED,
    StoredSignature.UNSIGNED: SignatureStatus.UNSIGNED,
    StoredSignature.INVALID: SignatureStatus.INVALID,
    StoredSignature.UNTRUSTED_SIGNER: SignatureStatus.UNTRUSTED,
    StoredSignature.UNVERIFIABLE: SignatureStatus.UNVERIFIABLE,
}


def recorded_signatures(records: SignatureRecords) -> SignatureLookup:
    """The signature status recorded for a revision (`proxy.trust.signatures` verifies it once
    per commit, when its first file is settled); "not checked" when none was recorded."""

    async def lookup(repo: RepoRecord, commit: str) -> tuple[SignatureStatus, str]:
        found = await records.get(repo.pk, commit)
        if found is None:
            return SignatureStatus.NOT_CHECKED, ""
        return _SIGNATURES.get(found.status, SignatureStatus.NOT_CHECKED), found.signer

    return lookup


class RiskFactsUnavailable(HubwardenError):
    """What a card for `max_risk` needs cannot be had now (the commit's whole file list)."""


@dataclass(frozen=True, slots=True)
class _Fetch:
    """A card gathered for `max_risk`: the whole file list, and (`licences`) the licence files
    not mirrored yet fetched, with `token`."""

    token: str | None
    licences: bool = True


@dataclass(frozen=True, slots=True)
class _Served:
    """The commit a card is about, and the branch or tag it is served for (if any)."""

    commit: str
    ref: RefRecord | None


def _licence_of(info: dict[str, JsonValue]) -> str | None:
    card = info.get("cardData")
    value = card.get("license") if isinstance(card, dict) else None
    if isinstance(value, list):
        value = value[0] if value else None
    return value[:100] if isinstance(value, str) and value else None


def _has_auto_map(info: dict[str, JsonValue]) -> bool:
    """Whether the config the Hub reports (config.json, with its tokenizer_config) names remote
    code in `auto_map`."""
    config = info.get("config")
    if not isinstance(config, dict):
        return False
    tokenizer = config.get("tokenizer_config")
    return "auto_map" in config or (isinstance(tokenizer, dict) and "auto_map" in tokenizer)


def _recorded_hub_status(path: str, findings: Sequence[Finding]) -> HubFileStatus | None:
    """The Hub's word on a file as last recorded here (offline, or the Hub said nothing now)."""
    for finding in reversed(findings):
        if finding.scanner == HUB_SCANNER:
            verdict = finding.details.get("verdict")
            detail = finding.details.get("detail")
            return HubFileStatus(
                path,
                HubVerdict(verdict)
                if verdict in {v.value for v in HubVerdict}
                else HubVerdict.UNKNOWN,
                detail if isinstance(detail, str) else "",
            )
    return None


def _repo_file(
    file: RevisionFile, findings: Sequence[Finding], hub: HubFileStatus | None
) -> RepoFile:
    ours = [f for f in findings if f.scanner != HUB_SCANNER]
    top = max(ours, key=lambda f: f.severity.rank, default=None)
    return RepoFile(
        path=file.path,
        size=file.size,
        state=file.state,
        file_format=file.file_format,
        outcome=file.outcome,
        worst=top.severity if top else None,
        worst_text=shown(f"{top.code}: {top.message}")[:200] if top else "",
        codes=tuple(f.code for f in ours),
        hub=hub or _recorded_hub_status(file.path, findings),
        reason=file.reason,
    )


class RiskCards:
    """Risk cards of mirrored revisions (`card`)."""

    def __init__(
        self,
        repository: Repository,
        queries: ReviewQueries,
        store: BlobStore,
        watches: WatchRecords,
        *,
        facts: UpstreamFacts | None,
        policy: Callable[[], PolicySettings],
        signatures: SignatureLookup | None = None,
        files: RevisionFiles | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        """`files`: how `hold_facts` fetches a licence file not mirrored yet (None: it reads
        what is stored only)."""
        self._files = files
        self._db = repository
        self._queries = queries
        self._store = store
        self._watches = watches
        self._facts = facts
        self._policy = policy
        self._signatures = signatures
        self._clock = clock

    async def card(self, repo: RepoRef, revision: str) -> RiskCard:
        """The risk card of a mirrored revision (a branch or tag: the commit clients are served;
        or a commit). Raises ReviewNotFound for what was never mirrored."""
        record = await self._db.find_repo(repo)
        if record is None:
            raise ReviewNotFound(f"{shown(repo)} was never mirrored here")
        served = await self._served(record, revision)
        return assess(await self._gather(record, revision, served, fetch=None))

    async def hold_facts(
        self, record: RepoRecord, commit: str, token: str | None, fetch: bool = True
    ) -> RiskFacts:
        """The facts of the card of `record` at `commit`, for `[policy] max_risk`: the commit's
        whole file list (listed now when only part of it was recorded) and, with `fetch`, the
        licence files not mirrored yet, fetched first (with `token`, the client's). Raises
        ReviewNotFound when the commit was never recorded, RiskFactsUnavailable when its file
        list cannot be had."""
        served = await self._served(record, commit)
        return await self._gather(record, commit, served, fetch=_Fetch(token, licences=fetch))

    async def first_commit(self, etag: str) -> str:
        """The commit a blob was first fetched for ("" when not recorded): what a rescan of a
        held file judges its repo's card at."""
        blob = await self._db.get_blob(etag)
        held = await self._queries.held_blob(blob.pk) if blob is not None else None
        return held.commit if held is not None else ""

    async def _gather(
        self, record: RepoRecord, revision: str, served: _Served, *, fetch: _Fetch | None
    ) -> RiskFacts:
        repo = record.ref
        found = await self._queries.revision_files(record.pk, served.commit)
        if fetch is not None and self._files is not None and (found is None or not found[1]):
            found = await self._listed(record, served.commit, fetch.token)
        if found is None:
            raise ReviewNotFound(f"{shown(repo)} at {served.commit[:12]} was never mirrored here")
        _, complete, files = found
        commit = await self._db.get_commit(record.pk, served.commit)
        info = commit.info if commit is not None and commit.info is not None else {}
        hub = await self._hub_security(record, served.commit, files)
        repo_files = await self._repo_files(files, hub, served.commit)
        limit = self._policy().max_risk
        return RiskFacts(
            repo=repo,
            revision=revision,
            commit=served.commit,
            now=self._clock(),
            offline=self._facts is None,
            private=record.private,
            gated=record.gated,
            card_licence=_licence_of(info),
            licence_files=await self._licence_files(record, served.commit, files, fetch),
            files=repo_files,
            complete_tree=complete,
            auto_map=_has_auto_map(info),
            publisher=await self._publisher(record, served.commit),
            timeliness=await self._timeliness(record, served, info),
            max_risk=None if limit is MaxRisk.OFF else Rating(limit.value),
            hub_scans_done=hub.repo.scans_done if hub and hub.repo else None,
        )

    async def _served(self, record: RepoRecord, revision: str) -> _Served:
        Revision.parse(revision)  # raises InvalidInput on a hostile name
        default = await self._db.get_ref_record(record.pk, "") or await self._db.get_ref_record(
            record.pk, "main"
        )
        if is_commit_sha(revision):
            return _Served(revision, default)
        ref = await self._db.get_ref_record(record.pk, revision)
        if ref is None and revision == "main":
            ref = default
        if ref is None:
            raise ReviewNotFound(
                f"revision {shown(revision)} of {shown(record.ref)} was never mirrored here"
            )
        return _Served(ref.approved_commit or ref.commit, ref)

    # -- files -------------------------------------------------------------------------------

    async def _repo_files(
        self, files: Sequence[RevisionFile], hub: HubSecurity | None, commit: str
    ) -> list[RepoFile]:
        statuses = merged(hub.repo, hub.files) if hub is not None else {}
        found: list[RepoFile] = []
        for number, file in enumerate(files):
            findings: list[Finding] = []
            if file.blob_pk is not None and number < MAX_FILES_WITH_FINDINGS:
                findings = await self._db.list_findings(file.blob_pk)
                status = statuses.get(file.path)
                if status is not None:
                    findings = await self._record_hub(file.blob_pk, findings, status, commit)
            found.append(_repo_file(file, findings, statuses.get(file.path)))
        return found

    async def _record_hub(
        self, blob_pk: int, findings: list[Finding], status: HubFileStatus, commit: str
    ) -> list[Finding]:
        """Record the Hub's word on a blob this mirror holds, once per verdict."""
        added = await record_hub_status(self._db, blob_pk, findings, status, commit)
        return [*findings, added] if added is not None else findings

    async def _hub_security(
        self, record: RepoRecord, commit: str, files: Sequence[RevisionFile]
    ) -> HubSecurity | None:
        if self._facts is None:
            return None
        try:
            return await self._facts.hub_security(record.ref, commit, [f.path for f in files])
        except HubwardenError as exc:
            logger.warning("risk card of %s: the Hub's scan results not read: %s",
                           record.ref, exc.message)  # fmt: skip
            return None

    async def _licence_files(
        self,
        record: RepoRecord,
        commit: str,
        files: Sequence[RevisionFile],
        fetch: _Fetch | None,
    ) -> list[LicenceFile]:
        found = []
        for file in files:
            if not is_licence_file(file.path):
                continue
            text = await self._stored_text(file)
            if text is None and fetch is not None and fetch.licences and file.state == NOT_FETCHED:
                text = await self._fetched_text(record, commit, file.path, fetch.token)
            found.append(
                LicenceFile(file.path, classify_text(file.path, text) if text is not None else None)
            )
        return found

    async def _listed(
        self, record: RepoRecord, commit: str, token: str | None
    ) -> tuple[dt.datetime, bool, list[RevisionFile]] | None:
        """The commit's files once its whole tree is listed (recorded through the catalog): a
        card judged on part of the files would miss what the rest holds. Raises
        RiskFactsUnavailable when the tree cannot be listed now. (Without `files`, a command
        beside the server, the card is judged on what is recorded, and says "partial".)"""
        files = self._files
        assert files is not None
        try:
            await files.listing(record, commit, token)
        except RevisionUnknown as exc:
            raise RiskFactsUnavailable(exc.message) from exc
        return await self._queries.revision_files(record.pk, commit)

    async def _stored_text(self, file: RevisionFile) -> str | None:
        """The head of a stored file's text, released or held (None: not stored here)."""
        if file.state not in ("released", "quarantined") or file.sha256 is None:
            return None
        places = [BlobPlace.RELEASED, BlobPlace.QUARANTINED]
        if file.state == "quarantined":
            places.reverse()

        def read(path: Path) -> bytes:
            with path.open("rb") as handle:
                return handle.read(MAX_TEXT_CHARS)

        for place in places:  # it may move between the two meanwhile
            try:
                async with self._store.local_copy(file.sha256, place) as path:
                    data = await asyncio.to_thread(read, path)
            except (OSError, StoreUnavailable):
                continue
            return data.decode("utf-8", errors="replace")
        return None

    async def _fetched_text(
        self, record: RepoRecord, commit: str, path: str, token: str | None
    ) -> str | None:
        """A licence file fetched, verified and scanned through the mirror (None: it cannot
        be had now; the card then says it was not read)."""
        files = self._files
        if files is None:
            return None
        try:
            entry = await files.entry(record, commit, path, token)
            data = await files.read(record, commit, entry, token) if entry is not None else None
        except (RevisionUnknown, SignatureFileUnavailable) as exc:
            logger.warning("risk card of %s: %s not read: %s", record.ref, shown(path),
                           exc.message)  # fmt: skip
            return None
        return None if data is None else data[:MAX_TEXT_CHARS].decode("utf-8", errors="replace")

    # -- publisher ---------------------------------------------------------------------------

    async def _publisher(self, record: RepoRecord, commit: str) -> PublisherFacts:
        repo = record.ref
        namespace = repo.repo_id.split("/", 1)[0] if "/" in repo.repo_id else ""
        settings = self._policy()
        hits = {h.rule for h in Policy(settings).before_fetch(repo, Revision("main"), None)}
        account, checked = await self._account(namespace)
        signature, signer = SignatureStatus.NOT_CHECKED, ""
        if self._signatures is not None:
            signature, signer = await self._signatures(record, commit)
        return PublisherFacts(
            namespace=namespace,
            account=account,
            account_checked=checked,
            signature=signature,
            signer=signer,
            allow_listed=(ALLOW_PUBLISHERS not in hits) if settings.allow_publishers else None,
            denied=DENY_PUBLISHERS in hits,
        )

    async def _account(self, namespace: str) -> tuple[Account | None, bool]:
        if self._facts is None or not namespace:
            return None, False
        try:
            return await self._facts.account(namespace), True
        except HubwardenError as exc:
            logger.warning("risk card: the account %s not read: %s", shown(namespace), exc.message)
            return None, False

    # -- timeliness --------------------------------------------------------------------------

    async def _timeliness(
        self, record: RepoRecord, served: _Served, info: dict[str, JsonValue]
    ) -> TimelinessFacts:
        ref = served.ref
        head, seen_at = await self._upstream_head(record, ref)
        behind: int | None = 0 if head == served.commit else None
        last_activity = parse_date(info.get("lastModified"))
        if head is not None and head != served.commit:
            behind, newest = await self._behind(record, head, served.commit)
            last_activity = newest or last_activity
        return TimelinessFacts(
            served_commit=served.commit,
            served_date=parse_date(info.get("lastModified")),
            upstream_head=head,
            upstream_seen_at=seen_at,
            commits_behind=behind,
            last_activity=last_activity,
            held_change=ref is not None and (ref.approved_commit or ref.commit) != ref.commit,
        )

    async def _behind(
        self, record: RepoRecord, head: str, served: str
    ) -> tuple[int | None, dt.datetime | None]:
        """How many commits `head` is ahead of `served`, and the head's date: from the head's
        recorded commit listing, else (online) from the upstream's."""
        listing = await self._db.get_history(record.pk, head)
        if listing is not None:
            shas = [c.commit_id for c in listing]
            newest = parse_date(listing[0].raw.get("date")) if listing else None
            return (shas.index(served) if served in shas else None), newest
        if self._facts is None:
            return None, None
        try:
            since = await self._facts.commits_since(record.ref, head, served)
        except HubwardenError as exc:
            logger.warning("risk card of %s: commits not read: %s", record.ref, exc.message)
            return None, None
        return since.ahead, since.head_date

    async def _upstream_head(
        self, record: RepoRecord, ref: RefRecord | None
    ) -> tuple[str | None, dt.datetime | None]:
        """The ref's head upstream: asked now (online), else as the watch last saw it, else as
        last recorded (the head a client's request or an import recorded)."""
        if ref is None:
            return None, None
        if self._facts is not None:
            try:
                heads = await self._facts.heads(record.ref)
            except HubwardenError as exc:
                logger.warning("risk card of %s: refs not read: %s", record.ref, exc.message)
            else:
                listing = heads.tags if ref.kind is RefKind.TAG else heads.branches
                return listing.get(ref.name or "main"), self._clock()
        for watched in await self._watches.of_repo(record.pk):
            if watched.name == ref.name and watched.upstream_head is not None:
                return watched.upstream_head, watched.checked_at
        if self._facts is None and ref.approved_commit and ref.approved_commit != ref.commit:
            return ref.commit, None  # a newer head recorded, waiting for review
        return None, None


@contextlib.asynccontextmanager
async def upstream_facts_of(settings: Settings) -> AsyncIterator[UpstreamFacts | None]:
    """The upstream calls of a risk card made from the shell, as the server makes them (with
    the service token), in a session of their own; None offline."""
    if settings.offline:
        yield None
        return
    async with aiohttp.ClientSession(
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield UpstreamFacts(Upstream(UpstreamConfig.from_settings(settings), session))


def command_cards(
    settings: Settings,
    engine: AsyncEngine,
    repository: Repository,
    store: BlobStore,
    facts: UpstreamFacts | None,
) -> RiskCards:
    """Risk cards for commands that run beside the server (nothing fetched: no `files`)."""
    sessions, reads = db.session_maker(engine), db.read_session_maker(engine)
    policies = PolicySource(settings.policy)
    return RiskCards(
        repository,
        ReviewQueries(sessions, reads),
        store,
        WatchRecords(sessions, reads),
        facts=facts,
        policy=lambda: policies.current().settings,
        signatures=recorded_signatures(SignatureRecords(sessions, reads)),
    )


def command_hold(
    settings: Settings, engine: AsyncEngine, repository: Repository, store: BlobStore
) -> RiskHold:
    """`max_risk` for `hubwarden quarantine rescan`: the card as `hubwarden risk` computes it
    (online, the same few cached upstream calls as the server's, in a session opened for it;
    offline, from recorded facts), never fetching a file."""

    async def facts(record: RepoRecord, commit: str, token: str | None, fetch: bool) -> RiskFacts:
        async with upstream_facts_of(settings) as upstream:
            cards = command_cards(settings, engine, repository, store, upstream)
            return await cards.hold_facts(record, commit, token, fetch=False)

    first = command_cards(settings, engine, repository, store, None).first_commit
    return RiskHold(facts, first_commit=first)
