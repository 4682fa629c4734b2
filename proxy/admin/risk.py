"""The risk card service: gathers what the mirror knows about a revision (the repo's access
flags, the recorded repo info, its files with their blobs and findings, its refs and commit
listings, what the upstream watch saw) plus at most a few cached upstream calls (the publisher's
account, the refs listing, the Hub's own scan results: `proxy.upstream_facts`), and hands them to
the pure `proxy.trust.risk.assess`.

Offline (no `UpstreamFacts`), everything comes from the records and what needs the upstream says
"unknown offline". Online, the Hub's own scan results are also recorded beside ours, as findings
of scanner "hub" on the blobs this mirror holds (`proxy.trust.hub_scans`): never deciding, and
shown offline later. The API, the pages and the CLI call `RiskCards.card`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from proxy.admin.review import ReviewNotFound
from proxy.config import PolicySettings
from proxy.errors import HubwardenError, shown
from proxy.metadata import RefKind
from proxy.repos import RepoRef, Revision, is_commit_sha
from proxy.store.blobs import BlobStore
from proxy.store.models import SignatureStatus as StoredSignature
from proxy.store.repository import RefRecord, RepoRecord, Repository, utcnow
from proxy.store.review import ReviewQueries, RevisionFile
from proxy.store.signatures import SignatureRecords
from proxy.store.watches import WatchRecords
from proxy.trust.hub_scans import (
    HUB_SCANNER,
    HubFileStatus,
    HubVerdict,
    hub_finding,
    merged,
)
from proxy.trust.licences import MAX_TEXT_CHARS, classify_text, is_licence_file
from proxy.trust.risk import (
    Account,
    LicenceFile,
    PublisherFacts,
    RepoFile,
    RiskCard,
    RiskFacts,
    SignatureStatus,
    TimelinessFacts,
    assess,
)
from proxy.trust.rules import ALLOW_PUBLISHERS, DENY_PUBLISHERS, Policy
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
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
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
        found = await self._queries.revision_files(record.pk, served.commit)
        if found is None:
            raise ReviewNotFound(f"{shown(repo)} at {served.commit[:12]} was never mirrored here")
        _, complete, files = found
        commit = await self._db.get_commit(record.pk, served.commit)
        info = commit.info if commit is not None and commit.info is not None else {}
        hub = await self._hub_security(record, served.commit, files)
        repo_files = await self._repo_files(files, hub, served.commit)
        return assess(
            RiskFacts(
                repo=repo,
                revision=revision,
                commit=served.commit,
                now=self._clock(),
                offline=self._facts is None,
                private=record.private,
                gated=record.gated,
                card_licence=_licence_of(info),
                licence_files=await self._licence_files(files),
                files=repo_files,
                complete_tree=complete,
                auto_map=_has_auto_map(info),
                publisher=await self._publisher(record, served.commit),
                timeliness=await self._timeliness(record, served, info),
                hub_scans_done=hub.repo.scans_done if hub and hub.repo else None,
            )
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
        finding = hub_finding(status, commit)
        if any(f.scanner == HUB_SCANNER and f.code == finding.code for f in findings):
            return findings
        await self._db.add_findings(blob_pk, [finding])
        return [*findings, finding]

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

    async def _licence_files(self, files: Sequence[RevisionFile]) -> list[LicenceFile]:
        found = []
        for file in files:
            if not is_licence_file(file.path):
                continue
            text = await self._released_text(file)
            found.append(
                LicenceFile(file.path, classify_text(file.path, text) if text is not None else None)
            )
        return found

    async def _released_text(self, file: RevisionFile) -> str | None:
        """The head of a released file's text (None: not released here)."""
        if file.state != "released" or file.sha256 is None:
            return None
        path = self._store.released_path(file.sha256)

        def read() -> bytes | None:
            try:
                with path.open("rb") as handle:
                    return handle.read(MAX_TEXT_CHARS)
            except OSError:
                return None

        data = await asyncio.to_thread(read)
        return None if data is None else data.decode("utf-8", errors="replace")

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
