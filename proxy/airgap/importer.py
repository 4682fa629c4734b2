"""`hubwarden import`: a signed bundle into this mirror, checked, scanned here, all or nothing.

In order, each step before the next:

1. verify: the signature must be from a key trusted with `hubwarden keys trust` and cover
   exactly the bundle's manifests, state and BOMs (`VerifiedBundle`); each state is parsed as
   hostile input and checked against its manifest (`proxy.airgap.state.parse`), each BOM against
   the files the bundle carries (`proxy.airgap.boms.check_bom`);
2. judge against this mirror's records (`proxy.airgap.judge`): blocks, recorded commits, pins,
   history rewrites; omitted files (an incremental bundle's) must be here already; the free
   space must hold the new files;
3. stage: every file this mirror lacks streams into `data_dir/tmp/` (a temp file named after
   this process, fsynced), its size and sha256 checked as it streams and, for a regular
   (non-LFS) file, its git blob sha1 against the tree's oid; files already here stream past,
   checked too; then each commit's model signature is verified offline against this mirror's
   `[signing]` trust (`proxy.airgap.import_signatures`);
4. scan each staged file with the local scanners in worker processes (`ScannerPool`, forks of
   one fork server; the server's limits) and judge it with the local policy: its rules,
   waivers, and the verdict (`Policy.before_fetch`, `Policy.after_scan`, `decide`, as
   `PolicyGate.settle` does, whose side effects are recorded here in the one transaction
   instead), with the signature rules
   (`signature_invalid`, `uncovered_files`, `require_signature`). `--trust-scans` takes the
   exporter's findings instead of scanning; the local policy still decides;
5. write: the staged files move into `blobs/` (released) or `quarantine/` (held here), then ONE
   database transaction records everything (`BundleQueries.apply_import`); should it fail, the
   files just moved are removed again. A file that already had its place stays untouched.
   Then the signatures are recorded (`revision_signatures`, as the server records them) and each
   revision's BOM is kept as `data_dir/boms/<type>/<org>/<name>/<commit>.cdx.json`.

A failure at any step leaves the database and the blob store as they were: staged files are
deleted on the way out, and a crash leaves only temp files of a dead process, which the next
import, the server's start and `hubwarden doctor --repair` remove. An import that would change
nothing (the same bundle again) writes nothing, not even its audit event.

Files the exporter held are not in the bundle; each is recorded here as rejected without bytes
("withheld by the exporting mirror …"), so that clients get the held refusal with its reason
rather than "not mirrored"; a later bundle carrying the file (released there) fills the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proxy.airgap import state as state_format
from proxy.airgap.boms import CarriedBom, check_bom, keep_bom
from proxy.airgap.bundle import VerifiedBundle
from proxy.airgap.errors import BundleError, KeysError
from proxy.airgap.import_signatures import Holdings, ImportSignatures, SignatureLine
from proxy.airgap.judge import (
    ImportRefused,
    RepoFacts,
    RepoJudgement,
    judge_repo,
    relevant_heads,
)
from proxy.airgap.keys import KeyStore
from proxy.airgap.state import RevisionState, StateFile
from proxy.config import Settings
from proxy.errors import shown
from proxy.forkserver import ForkServer
from proxy.metadata import TreeEntry
from proxy.repos import RepoRef, Revision
from proxy.scanning import ScanLimits, ScannerPool
from proxy.store import db
from proxy.store.blob_stores import require_local_store
from proxy.store.blobs import BlobStore
from proxy.store.bundles import (
    WITHHELD_PREFIX,
    AuditWrite,
    BlobView,
    BlobWrite,
    BundleQueries,
    CommitWrite,
    ImportWrite,
    LocalCommit,
    RepoWrite,
)
from proxy.store.models import BlobState
from proxy.store.repository import Repository
from proxy.store.signatures import SignatureRecords
from proxy.store.waivers import Waivers
from proxy.trust.pins import Pins
from proxy.trust.policy_source import PolicySource
from proxy.trust.rules import Policy
from proxy.trust.signatures import Signatures
from proxy.trust.verdicts import Verdict, decide
from scanners.report import JsonValue, Outcome, ScanReport

COPY_CHUNK = 1024 * 1024
MAX_AUDITED_DECISIONS = 50
_STATES = {
    Verdict.RELEASE: BlobState.RELEASED,
    Verdict.QUARANTINE: BlobState.QUARANTINED,
    Verdict.REJECT: BlobState.REJECTED,
}


class Status:
    IMPORTED = "imported"
    PRESENT = "already present"
    HELD = "held"
    WITHHELD = "withheld"


@dataclass(frozen=True, slots=True)
class FileLine:
    repo: RepoRef
    ref: str
    commit: str
    path: str
    size: int
    sha256: str
    status: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RefLine:
    repo: RepoRef
    ref: str
    commit: str
    status: str
    detail: str = ""


@dataclass(slots=True)
class ImportReport:
    digest: str
    key_name: str
    fingerprint: str
    created: str
    exporter: str
    files: list[FileLine] = field(default_factory=list)
    refs: list[RefLine] = field(default_factory=list)
    signatures: list[SignatureLine] = field(default_factory=list)
    boms: list[CarriedBom] = field(default_factory=list)
    bom_paths: list[Path] = field(default_factory=list)
    """Where each BOM was kept (empty when the import changed nothing)."""
    changed: bool = False

    def counts(self) -> dict[str, int]:
        found = dict.fromkeys((Status.IMPORTED, Status.PRESENT, Status.HELD, Status.WITHHELD), 0)
        for line in self.files:
            found[line.status] += 1
        return found


class Progress:
    """What the import tells a progress display (all optional)."""

    def staging(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def scanning(self, total: int) -> None: ...

    def scanned(self) -> None: ...


@dataclass(slots=True)
class _Staged:
    temp: Path
    git_sha1: str | None = None


@dataclass(frozen=True, slots=True)
class _Use:
    """One carried file of one revision."""

    state: RevisionState
    file: StateFile
    entry: TreeEntry


@dataclass(slots=True)
class _Verdict:
    state: BlobState
    reason: str
    report: ScanReport
    audited: list[tuple[str, str, str]] = field(default_factory=list)
    """(rule, action, message) of audit-mode rules."""
    waiver: tuple[int, str, str] | None = None
    """(waiver pk, its creator, what the file was held for)."""


async def import_bundle(
    settings: Settings,
    path: Path,
    *,
    actor: str,
    trust_scans: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import the bundle at `path` into the mirror `settings` name. Raises BundleError
    (SignatureError, ImportRefused), KeysError, ImportConflict, DatabaseUnavailable."""
    trusted = KeyStore(settings.data_dir).trusted()
    if not trusted:
        raise KeysError(
            "this mirror trusts no key, so it imports no bundle; trust the exporter's key with "
            "`hubwarden keys trust PUBLIC_KEY_FILE --name NAME` (the file `hubwarden keys show` "
            "prints there)"
        )
    require_local_store(settings.store, "import")  # it writes blob files directly
    store = BlobStore(settings.data_dir)
    await asyncio.to_thread(store.prepare)  # removes what a crashed import left in tmp/
    engine = db.create_engine(settings.effective_database_url)
    try:
        await db.prepare_schema(engine, upgrade=settings.upgrade_on_start)
        queries = BundleQueries(db.session_maker(engine), db.read_session_maker(engine))
        waivers = Waivers(db.session_maker(engine), db.read_session_maker(engine))
        records = SignatureRecords(db.session_maker(engine), db.read_session_maker(engine))
        # offline whatever the settings say: an import never opens a connection
        signatures = Signatures(records, settings.signing, offline=True)
        bundle = await asyncio.to_thread(VerifiedBundle, path, trusted)
        try:
            repository = Repository(db.session_maker(engine), db.read_session_maker(engine))
            job = _Import(
                settings, store, queries, waivers, repository, bundle, actor, trust_scans, progress,
                signatures=ImportSignatures(signatures, records),
            )  # fmt: skip
            return await job.run()
        finally:
            bundle.close()
    finally:
        await engine.dispose()


class _Import:
    def __init__(
        self,
        settings: Settings,
        store: BlobStore,
        queries: BundleQueries,
        waivers: Waivers,
        repository: Repository,
        bundle: VerifiedBundle,
        actor: str,
        trust_scans: bool,
        progress: Progress | None,
        *,
        signatures: ImportSignatures,
    ) -> None:
        self._settings = settings
        self._store = store
        self._queries = queries
        self._waivers = waivers
        self._bundle = bundle
        self._actor = actor
        self._trust_scans = trust_scans
        self._progress = progress or Progress()
        self._policy: Policy = PolicySource(settings.policy).current()
        self._pins = Pins(repository, lambda: self._policy.settings.unpinned_paths)
        self._claimed: set[str] = set()
        """Etags given a row by an earlier repo of this import (a row is written once)."""
        self._signatures = signatures
        self.report = ImportReport(
            bundle.digest, bundle.key_name, bundle.fingerprint, bundle.created, bundle.exporter
        )

    # -- the steps ----------------------------------------------------------------------------

    async def run(self) -> ImportReport:
        states = [state_format.parse(r.state, r) for r in self._bundle.revisions]
        self.report.boms = await asyncio.to_thread(_checked_boms, self._bundle, states)
        repos = _by_repo(states)
        facts = {repo: await self._facts(repo, group) for repo, group in repos.items()}
        uses = _uses(states)
        blobs = await self._queries.blobs({u.file.etag for u in uses} | _withheld_etags(states))
        self._check_known_blobs(uses, blobs)
        for repo, group in repos.items():  # refusals first, before any byte is written
            self._judge(facts[repo], group, released=lambda _etag: True)
        needed = self._needed(uses, blobs)
        self._check_space(needed)
        staged = await asyncio.to_thread(self._stage, needed, _regular_digests(uses, needed))
        try:
            self._check_git_sha1(uses, staged)
            signature_blobs = await self._queries.blobs(self._signatures.etags(states) - set(blobs))
            known = {**blobs, **signature_blobs}  # a signature file held here, not carried
            holdings = Holdings({d: s.temp for d, s in staged.items()}, known, self._store)
            await self._signatures.judge(states, holdings)
            self.report.signatures = self._signatures.lines()
            verdicts = await self._verdicts(uses, blobs, staged, facts)
            writes = [
                self._repo_write(repo, group, facts[repo], blobs, verdicts)
                for repo, group in repos.items()
            ]
            self._report_files(uses, blobs, verdicts, states)
            self.report.changed = any(w.changes for w in writes)
            if not self.report.changed:
                return self.report
            await self._write(writes, staged, verdicts)
            await self._keep(writes)
            return self.report
        finally:
            for item in staged.values():
                with contextlib.suppress(FileNotFoundError):
                    item.temp.unlink()

    async def _facts(self, repo: RepoRef, states: Sequence[RevisionState]) -> RepoFacts:
        local = await self._queries.local_repo(repo)
        if local is None:
            return RepoFacts(repo, None, {}, {})
        commits: dict[str, LocalCommit] = {}
        for state in states:
            if state.commit not in commits:
                found = await self._queries.local_commit(local.pk, state.commit)
                if found is not None:
                    commits[state.commit] = found
        histories = await self._queries.history_shas(local.pk, relevant_heads(local, states))
        return RepoFacts(repo, local, commits, histories)

    def _judge(
        self, facts: RepoFacts, states: Sequence[RevisionState], released: Callable[[str], bool]
    ) -> RepoJudgement:
        return judge_repo(
            facts,
            states,
            pinned_path=self._pins.is_pinned_path,
            pinned_change=self._policy.settings.pinned_change,
            released=released,
        )

    def _check_known_blobs(self, uses: Sequence[_Use], blobs: Mapping[str, BlobView]) -> None:
        """A file this mirror holds must be the same bytes; an omitted one must be here."""
        for use in uses:
            known = blobs.get(use.file.etag)
            if known is not None and known.sha256 is not None and known.sha256 != use.file.sha256:
                raise ImportRefused(
                    f'"{shown(use.file.path)}" of {use.state.repo} (hash {use.file.etag[:12]}) '
                    f"is sha256 {known.sha256[:12]} on this mirror and {use.file.sha256[:12]} in "
                    "the bundle; refused as a replaced file is; nothing was imported"
                )
            present = known is not None and not known.is_placeholder
            if use.file.sha256 in self._bundle.omitted and not present:
                raise ImportRefused(
                    f'the bundle leaves out "{shown(use.file.path)}" of {use.state.repo} '
                    f"(sha256 {use.file.sha256[:12]}), made --since a bundle this mirror has "
                    "not imported; import that bundle first; nothing was imported"
                )

    def _needed(self, uses: Sequence[_Use], blobs: Mapping[str, BlobView]) -> set[str]:
        """The digests whose bytes this mirror lacks (a file some etag has no row for)."""
        return {
            u.file.sha256
            for u in uses
            if (u.file.etag not in blobs or blobs[u.file.etag].is_placeholder)
            and u.file.sha256 not in self._bundle.omitted
        }

    def _check_space(self, needed: set[str]) -> None:
        size = sum(self._bundle.files[d] for d in needed)
        margin = self._settings.ingest.free_space_margin_bytes
        free = self._store.free_bytes()
        if size + margin > free:
            raise BundleError(
                f"the bundle brings {size} bytes of new files and the data directory has {free} "
                f"free (with a margin of {margin}); free space there first; nothing was imported"
            )

    def _stage(self, needed: set[str], regular: set[str]) -> dict[str, _Staged]:
        """Stream every carried file; those in `needed` are written to temp files. Runs in a
        thread. Raises BundleError (the temp files written so far are deleted)."""
        staged: dict[str, _Staged] = {}
        self._progress.staging(self._bundle.carried_bytes)
        try:
            for blob in self._bundle.blobs():
                if blob.digest not in needed:
                    for chunk in blob.chunks():
                        self._progress.advance(len(chunk))
                    continue
                temp = self._store.new_temp()
                staged[blob.digest] = item = _Staged(temp)
                git = hashlib.sha1(b"blob %d\0" % blob.size) if blob.digest in regular else None  # noqa: S324 - git's blob id, fixed by the protocol
                with temp.open("wb") as out:
                    for chunk in blob.chunks():
                        out.write(chunk)
                        if git is not None:
                            git.update(chunk)
                        self._progress.advance(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
                item.git_sha1 = git.hexdigest() if git is not None else None
        except BaseException:
            for item in staged.values():
                with contextlib.suppress(FileNotFoundError):
                    item.temp.unlink()
            raise
        return staged

    @staticmethod
    def _check_git_sha1(uses: Sequence[_Use], staged: Mapping[str, _Staged]) -> None:
        for use in uses:
            item = staged.get(use.file.sha256)
            if item is None or use.entry.lfs is not None:
                continue
            if item.git_sha1 != use.entry.oid:
                raise ImportRefused(
                    f'"{shown(use.file.path)}" of {use.state.repo}: its bytes are git blob '
                    f"{item.git_sha1}, the commit's tree says {use.entry.oid}: the bundle is "
                    "inconsistent or was altered; nothing was imported"
                )

    # -- scans and verdicts ---------------------------------------------------------------------

    async def _verdicts(
        self,
        uses: Sequence[_Use],
        blobs: Mapping[str, BlobView],
        staged: Mapping[str, _Staged],
        facts: Mapping[RepoRef, RepoFacts],
    ) -> dict[str, _Verdict]:
        """etag → verdict, for each file that gets a new row (judged at its first use)."""
        first: dict[str, _Use] = {}
        for use in uses:
            known = blobs.get(use.file.etag)
            if known is None or known.is_placeholder:
                first.setdefault(use.file.etag, use)
        reports = await self._reports(first.values(), staged)
        verdicts: dict[str, _Verdict] = {}
        for etag, use in first.items():
            local = facts[use.state.repo].local
            new_repo = local is None or not local.pins
            verdicts[etag] = await self._verdict(use, reports[use.file.sha256], new_repo=new_repo)
        return verdicts

    async def _reports(
        self, uses: Iterable[_Use], staged: Mapping[str, _Staged]
    ) -> dict[str, ScanReport]:
        by_digest: dict[str, _Use] = {}
        for use in uses:
            by_digest.setdefault(use.file.sha256, use)
        self._progress.scanning(len(by_digest))
        if self._trust_scans:
            return {d: self._exporter_report(u) for d, u in by_digest.items()}
        scan = self._settings.scan
        # each scan a fork of one process that imported the scanners, not a new interpreter
        forks = ForkServer(BlobStore(self._settings.data_dir).tmp_dir)
        pool = ScannerPool(
            ScanLimits(scan.timeout_s, scan.max_memory_mb, scan.max_cpu_s, scan.workers),
            forks=forks,
        )

        async def one(digest: str, use: _Use) -> tuple[str, ScanReport]:
            report = await pool.scan(staged[digest].temp, use.file.path)
            self._progress.scanned()
            return digest, report

        try:
            done = await asyncio.gather(*(one(d, u) for d, u in by_digest.items()))
        finally:
            await forks.close()
        return dict(done)

    def _exporter_report(self, use: _Use) -> ScanReport:
        scanners = {f.scanner: "exporter" for f in use.file.findings}
        return ScanReport(
            path=use.file.path,
            file_format=use.file.file_format,
            size=use.file.size,
            findings=use.file.findings,
            scanners=scanners or {"exporter": self._bundle.key_name},
            elapsed_s=0.0,
        )

    async def _verdict(self, use: _Use, report: ScanReport, *, new_repo: bool) -> _Verdict:
        """The local policy's verdict, as `PolicyGate.settle` gives it (its writes are made
        in the import's transaction)."""
        policy = self._policy
        revision = Revision(use.state.ref_name or use.state.commit)
        hits = policy.before_fetch(use.state.repo, revision, use.entry)
        hits += policy.after_scan(use.state.repo, use.entry, report, new_repo=new_repo)
        hits += self._signatures.hits(policy, use.state, use.file.path, use.file.sha256)
        decision = decide(report, hits, waived=policy.waived)
        verdict = _Verdict(_STATES[decision.verdict], decision.reason, report)
        verdict.audited = [(h.rule, h.action.value, h.message) for h in decision.audited]
        if decision.verdict is Verdict.QUARANTINE and report.outcome is not Outcome.ERROR:
            waiver = await self._waivers.covering(use.state.repo, use.file.path)
            if waiver is not None:
                verdict.state = BlobState.RELEASED
                verdict.waiver = (waiver.pk, waiver.created_by, decision.reason)
                verdict.reason = f"waiver {waiver.pk} ({waiver.covers})"
        if verdict.state is BlobState.RELEASED and verdict.waiver is None:
            verdict.reason = ""
        return verdict

    # -- what is written ------------------------------------------------------------------------

    def _repo_write(
        self,
        repo: RepoRef,
        states: Sequence[RevisionState],
        facts: RepoFacts,
        blobs: Mapping[str, BlobView],
        verdicts: Mapping[str, _Verdict],
    ) -> RepoWrite:
        def released(etag: str) -> bool:
            if etag in verdicts:
                return verdicts[etag].state is BlobState.RELEASED
            known = blobs.get(etag)
            return known is not None and known.state is BlobState.RELEASED

        judgement = self._judge(facts, states, released)
        local = facts.local
        last = states[-1]
        write = RepoWrite(repo, last.private, last.gated, local.pk if local else None)
        write.update_access = local is not None and (local.private, local.gated) != (
            last.private,
            last.gated,
        )
        write.refs, write.pins = judgement.refs, judgement.pins
        for outcome in judgement.outcomes:
            self.report.refs.append(
                RefLine(repo, outcome.name, outcome.commit, outcome.status, outcome.detail)
            )
        self._commits(write, states, facts)
        self._blobs(write, states, blobs, verdicts)
        if write.changes:
            self._audit(write, states, judgement)
        return write

    @staticmethod
    def _commits(write: RepoWrite, states: Sequence[RevisionState], facts: RepoFacts) -> None:
        seen: set[str] = set()
        known_heads = set(facts.histories)
        for state in states:
            if state.commit in seen:
                continue
            seen.add(state.commit)
            local = facts.commits.get(state.commit)
            if local is None or local.info is None or not local.tree_complete:
                tree = None if local is not None and local.tree_complete else state.tree
                write.commits.append(CommitWrite(state.commit, state.info, tree))
            if state.history is not None and state.commit not in known_heads:
                write.histories[state.commit] = state.history
                write.items.update(state.items)

    def _blobs(
        self,
        write: RepoWrite,
        states: Sequence[RevisionState],
        blobs: Mapping[str, BlobView],
        verdicts: Mapping[str, _Verdict],
    ) -> None:
        written: set[str] = set()
        for state in states:
            for file in state.files:
                verdict = verdicts.get(file.etag)
                if verdict is None or file.etag in written or file.etag in self._claimed:
                    continue
                written.add(file.etag)
                self._claimed.add(file.etag)
                entry = state.entries()[file.path]
                placeholder = file.etag in blobs and blobs[file.etag].is_placeholder
                write.blobs.append(
                    BlobWrite(
                        file.etag,
                        file.sha256,
                        None if entry.lfs else entry.oid,
                        file.size,
                        verdict.state,
                        verdict.reason,
                        verdict.report.file_format[:32],
                        verdict.report.outcome.value,
                        file.path,
                        verdict.report.findings,
                        replaces_placeholder=placeholder,
                    )
                )
                if verdict.waiver is not None:
                    waiver_pk, by, held_for = verdict.waiver
                    write.waived.append((waiver_pk, file.etag, held_for))
                    waived: dict[str, JsonValue] = {
                        "waiver": waiver_pk,
                        "path": file.path,
                        "held_for": held_for,
                    }
                    write.audit.append(AuditWrite("waiver.applied", waived, file.etag, by))
                for rule, action, message in verdict.audited:  # as PolicyGate records them
                    details: dict[str, JsonValue] = {
                        "rule": rule,
                        "action": action,
                        "path": file.path,
                        "message": message,
                        "source": "import",
                    }
                    write.audit.append(AuditWrite("policy.audited", details))
            for withheld in state.withheld:
                if withheld.etag in blobs or withheld.etag in self._claimed:
                    continue
                self._claimed.add(withheld.etag)
                reason = (
                    f"{WITHHELD_PREFIX} ({self._bundle.key_name}), {withheld.state.value} "
                    f"there: {withheld.reason}"
                )[:2000]
                write.blobs.append(
                    BlobWrite(
                        withheld.etag,
                        None,
                        None,
                        withheld.size,
                        BlobState.REJECTED,
                        reason,
                        "",
                        "",
                        withheld.path,
                    )
                )

    def _audit(
        self, write: RepoWrite, states: Sequence[RevisionState], judgement: RepoJudgement
    ) -> None:
        by_etag: dict[str, tuple[RevisionState, StateFile]] = {}
        for state in states:
            for file in state.files:
                by_etag.setdefault(file.etag, (state, file))
        for blob in write.blobs:
            if blob.sha256 is None:
                details: dict[str, JsonValue] = {
                    "path": blob.first_path,
                    "reason": blob.reason,
                    "source": "import",
                    "bundle": self.report.digest,
                }
                write.audit.append(AuditWrite("blob.rejected", details, blob.etag))
                continue
            state, file = by_etag[blob.etag]
            details = {
                "path": blob.first_path,
                "commit": state.commit,
                "sha256": blob.sha256,
                "outcome": blob.outcome,
                "format": blob.file_format,
                "reason": blob.reason,
                "source": "import",
                "bundle": self.report.digest,
                "scanned": "exporter" if self._trust_scans else "here",
                "exporter_outcome": file.outcome.value,
                "exporter_decisions": [d.to_json() for d in file.decisions[:MAX_AUDITED_DECISIONS]],
            }
            write.audit.append(AuditWrite(f"blob.{blob.state.value}", details, blob.etag))
        for ref, path, detail in judgement.held_changes:
            write.audit.append(
                AuditWrite(
                    "pin.change_held",
                    {"path": path, "ref": ref, "detail": detail, "source": "import"},
                )
            )
        for pin, before in judgement.moved_pins:
            write.audit.append(
                AuditWrite(
                    "pin.moved",
                    {
                        "path": pin.path,
                        "commit": pin.commit,
                        "from": before,
                        "to": pin.etag,
                        "source": "import",
                    },
                )
            )
        decisions: list[JsonValue] = [d.to_json() for s in states for d in s.decisions]
        decisions = decisions[-MAX_AUDITED_DECISIONS:]
        write.audit.append(
            AuditWrite(
                "bundle.imported",
                {
                    "bundle": self.report.digest,
                    "key": self.report.key_name,
                    "fingerprint": self.report.fingerprint,
                    "created": self.report.created,
                    "exporter": self.report.exporter,
                    "revisions": [f"{s.ref_name or s.commit}@{s.commit}" for s in states],
                    "new_files": sum(1 for b in write.blobs if b.sha256 is not None),
                    "held": sum(
                        1
                        for b in write.blobs
                        if b.sha256 is not None and b.state is not BlobState.RELEASED
                    ),
                    "exporter_decisions": decisions,
                    "signatures": [
                        s.to_json() for s in self.report.signatures if s.repo == write.ref
                    ],
                    "boms": [b.to_json() for b in self.report.boms if b.repo == write.ref],
                },
            )
        )

    async def _keep(self, writes: Sequence[RepoWrite]) -> None:
        """After the transaction: record the signatures and keep the BOMs."""
        for write in writes:
            local = await self._queries.local_repo(write.ref)
            if local is not None:
                await self._signatures.record(write.ref, local.pk)
        data_dir = self._settings.data_dir
        for bom in self.report.boms:
            try:
                self.report.bom_paths.append(await asyncio.to_thread(keep_bom, data_dir, bom))
            except OSError as exc:
                raise BundleError(
                    f"the bundle was imported, but the AI-BOM of {bom.repo} at {bom.commit[:12]} "
                    f"could not be kept under {data_dir}: {exc}; the bundle still carries it "
                    "(an OCI referrer of the revision's manifest)"
                ) from exc

    def _report_files(
        self,
        uses: Sequence[_Use],
        blobs: Mapping[str, BlobView],
        verdicts: Mapping[str, _Verdict],
        states: Sequence[RevisionState],
    ) -> None:
        for use in uses:
            state, file = use.state, use.file
            verdict = verdicts.get(file.etag)
            if verdict is None:
                status, detail = Status.PRESENT, blobs[file.etag].state.value
            elif verdict.state is BlobState.RELEASED:
                status, detail = Status.IMPORTED, verdict.reason
            else:
                status, detail = Status.HELD, f"{verdict.state.value}: {verdict.reason}"
            self.report.files.append(
                FileLine(
                    state.repo,
                    state.ref_name,
                    state.commit,
                    file.path,
                    file.size,
                    file.sha256,
                    status,
                    detail,
                )
            )
        for state in states:
            for withheld in state.withheld:
                self.report.files.append(
                    FileLine(
                        state.repo,
                        state.ref_name,
                        state.commit,
                        withheld.path,
                        withheld.size,
                        "",
                        Status.WITHHELD,
                        f"{withheld.state.value} on the exporting mirror: {withheld.reason}",
                    )
                )

    async def _write(
        self,
        writes: Sequence[RepoWrite],
        staged: Mapping[str, _Staged],
        verdicts: Mapping[str, _Verdict],
    ) -> None:
        """Move the staged files into place, then write the transaction; on failure, take
        the files just placed away again."""
        targets: dict[str, set[Path]] = {}
        for write in writes:
            for blob in write.blobs:
                if blob.sha256 is None or blob.sha256 not in staged:
                    continue
                place = (
                    self._store.released_path(blob.sha256)
                    if blob.state is BlobState.RELEASED
                    else self._store.quarantined_path(blob.sha256)
                )
                targets.setdefault(blob.sha256, set()).add(place)
        placed = await asyncio.to_thread(self._place, targets, staged)
        try:
            await self._queries.apply_import(
                ImportWrite(
                    self.report.digest,
                    self._bundle.key_name,
                    self._bundle.fingerprint,
                    self._bundle.exporter,
                    self._bundle.created,
                    self._actor,
                    {"revisions": len(self._bundle.revisions), **self.report.counts()},
                    writes,
                    {"role": "os-user", "remote": "local"},
                )
            )
        except BaseException:
            for path in placed:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            raise

    def _place(self, targets: Mapping[str, set[Path]], staged: Mapping[str, _Staged]) -> list[Path]:
        """Move (or, for a second place, copy) each staged file where its rows say; returns the
        paths that did not exist before. Runs in a thread."""
        placed: list[Path] = []
        try:
            for digest, places in targets.items():
                source = staged[digest].temp
                for place in sorted(places):
                    if place.exists():
                        continue
                    if place == self._store.released_path(digest):
                        self._store.release(source, digest)
                    else:
                        self._store.quarantine(source, digest)
                    placed.append(place)
                    if len(places) > 1:  # a second place (rare): from a copy of the first
                        shutil.copyfile(place, source)
        except BaseException:
            for path in placed:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            raise
        return placed


def _checked_boms(bundle: VerifiedBundle, states: Sequence[RevisionState]) -> list[CarriedBom]:
    """Each revision's BOM, checked against the bundle (blocking: the validator). Raises
    ImportRefused."""
    return [
        check_bom(entry.bom, state)
        for entry, state in zip(bundle.revisions, states, strict=True)
        if entry.bom is not None
    ]


def _by_repo(states: Sequence[RevisionState]) -> dict[RepoRef, list[RevisionState]]:
    grouped: dict[RepoRef, list[RevisionState]] = {}
    for state in states:
        grouped.setdefault(state.repo, []).append(state)
    return grouped


def _uses(states: Sequence[RevisionState]) -> list[_Use]:
    uses: list[_Use] = []
    for state in states:
        entries = state.entries()
        uses += [_Use(state, f, entries[f.path]) for f in state.files]
    return uses


def _withheld_etags(states: Sequence[RevisionState]) -> set[str]:
    return {w.etag for s in states for w in s.withheld}


def _regular_digests(uses: Sequence[_Use], needed: set[str]) -> set[str]:
    """Digests some regular (non-LFS) file uses: their git blob sha1 is checked."""
    return {u.file.sha256 for u in uses if u.entry.lfs is None and u.file.sha256 in needed}
