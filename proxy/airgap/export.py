"""`hubwarden export`: the released files of mirrored repo revisions, and Hubwarden's state of
them, as one signed bundle (`proxy.airgap.bundle.export_bundle`).

Everything comes from this mirror's database and blob store; nothing is fetched. Per revision
(`[TYPE:]org/name[@REVISION]`, default `main`; TYPE model, dataset or space):

- a branch or tag is exported at the commit this mirror serves for it (its approved commit; a
  newer head that changes a pinned file and awaits review is not exported); a 40-hex revision
  is that commit;
- its file list must have been recorded whole (a prefetch or any client listing records it);
- only released files are carried. The others are left out and listed in the report with the
  reason: held (quarantined or rejected here: also written into the state as `withheld`, so
  that the importer refuses them with that reason), never fetched, being fetched, or released
  but missing from the store (`hubwarden doctor` says why);
- the state (`proxy.airgap.state`) carries the repo's access flags, the ref, the commit's repo
  info and tree, its commit listing, the scan report and release decisions of every carried
  file, the pins of the tree's paths, and the repo's decisions;
- its AI-BOM (`proxy.airgap.boms`): the CycloneDX document `hubwarden bom` gives here for the
  exported commit, signed with the rest.

Refused, naming the revision: a repo never mirrored here, a blocked repo, a revision never
resolved here, a commit whose file list was never recorded, a revision with nothing released.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.airgap import oci
from proxy.airgap.boms import revision_bom
from proxy.airgap.bundle import export_bundle, previous_files
from proxy.airgap.errors import BundleError
from proxy.airgap.keys import KeyStore
from proxy.airgap.state import (
    Decision,
    RevisionState,
    StateFile,
    StateRef,
    Withheld,
    exported_kind,
)
from proxy.config import Settings
from proxy.errors import InvalidInput, shown
from proxy.metadata import EntryType
from proxy.repos import RepoRef, RepoType, Revision
from proxy.store import db
from proxy.store.blob_stores import require_local_store
from proxy.store.blobs import BlobStore
from proxy.store.bundles import BundleQueries
from proxy.store.models import BlobState
from proxy.store.repository import AuditRecord, RefRecord, RepoRecord, Repository
from proxy.store.review import ReviewQueries
from proxy.store.signatures import SignatureRecords
from proxy.trust.bom_facts import BomSources
from proxy.trust.signature_files import StoredFiles
from proxy.trust.signatures import Signatures
from scanners.report import JsonValue

FILE_DECISIONS = ("review.released", "review.rescanned", "waiver.applied")
REPO_DECISIONS = ("change.approved", "repo.unblocked", "pin.moved")
MAX_FILES = 100_000


class ExportRefused(BundleError):
    """A revision cannot be exported from this mirror (never mirrored, blocked, incomplete)."""


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """One revision to export: `[TYPE:]org/name[@REVISION]`."""

    repo: RepoRef
    revision: str = "main"

    @classmethod
    def parse(cls, text: str) -> ExportSpec:
        """Raises InvalidInput."""
        kind, colon, rest = text.partition(":")
        if not colon:
            kind, rest = RepoType.MODEL.value, text
        types = {t.value: t for t in RepoType}
        if kind not in types:
            raise InvalidInput("--repo", text, "must start with model:, dataset: or space:")
        repo_id, at, revision = rest.partition("@")
        if at and not revision:
            raise InvalidInput("--repo", text, "has an empty revision after @; write org/name@main")
        repo = RepoRef.parse(types[kind], repo_id)
        return cls(repo, Revision.parse(revision or "main").name)

    def __str__(self) -> str:
        return f"{self.repo.repo_type.value}:{self.repo.repo_id}@{self.revision}"


@dataclass(frozen=True, slots=True)
class LeftOut:
    path: str
    size: int
    why: str


@dataclass(frozen=True, slots=True)
class Collected:
    """One revision ready to export: the bundle library's input and what was left out."""

    spec: ExportSpec
    content: oci.RevisionContent
    left_out: tuple[LeftOut, ...]
    repo: RepoRecord

    @property
    def repo_pk(self) -> int:
        return self.repo.pk

    @property
    def file_bytes(self) -> int:
        return sum(f.size for f in self.content.files)


@dataclass(slots=True)
class ExportReport:
    revisions: list[Collected] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    files_written: int = 0
    bytes_written: int = 0
    omitted: int = 0
    fingerprint: str = ""


async def collect(
    spec: ExportSpec, repository: Repository, queries: BundleQueries, store: BlobStore
) -> Collected:
    """Read one revision's files and state. Raises ExportRefused."""
    repo = await repository.find_repo(spec.repo)
    if repo is None:
        raise ExportRefused(
            f"{spec.repo} was never mirrored here; prefetch it first (`hubwarden prefetch "
            f"{spec.repo.repo_id}{_type_flag(spec.repo)}`)"
        )
    block = await repository.active_block(repo.pk)
    if block is not None:
        raise ExportRefused(
            f"{spec.repo} is blocked here ({block.reason}: {shown(block.detail)}); it is not "
            "exported until an admin lifts the block"
        )
    ref, commit = await _resolve(spec, repository, repo.pk)
    recorded = await repository.get_commit(repo.pk, commit)
    if recorded is None or recorded.info is None or not recorded.tree_complete:
        raise ExportRefused(
            f"the file list of {spec} (commit {commit[:12]}) was never recorded whole here; "
            f"prefetch it first (`hubwarden prefetch {spec.repo.repo_id}@{spec.revision}"
            f"{_type_flag(spec.repo)}`)"
        )
    tree = await repository.list_entries(recorded.pk)
    files = [e for e in tree if e.entry_type is EntryType.FILE][:MAX_FILES]
    blobs = await queries.blobs(e.etag for e in files)
    findings = await queries.findings(b.pk for b in blobs.values())
    file_decisions = await queries.blob_decisions((b.pk for b in blobs.values()), FILE_DECISIONS)
    carried: list[oci.SourceFile] = []
    state_files: list[StateFile] = []
    withheld: list[Withheld] = []
    left_out: list[LeftOut] = []
    for entry in files:
        blob = blobs.get(entry.etag)
        if blob is None:
            left_out.append(LeftOut(entry.path, entry.size, "never fetched here"))
        elif blob.state in (BlobState.QUARANTINED, BlobState.REJECTED):
            reason = blob.reason or blob.state.value
            withheld.append(Withheld(entry.path, entry.etag, entry.size, blob.state, reason))
            left_out.append(LeftOut(entry.path, entry.size, f"held ({blob.state}): {reason}"))
        elif blob.state is not BlobState.RELEASED or blob.sha256 is None:
            left_out.append(LeftOut(entry.path, entry.size, "being fetched; export it again later"))
        elif blob.size != entry.size or not store.has_released(blob.sha256):
            left_out.append(
                LeftOut(
                    entry.path,
                    entry.size,
                    "released but its file is missing (run `hubwarden doctor`)",
                )
            )
        else:
            source = store.released_path(blob.sha256)
            carried.append(oci.SourceFile(entry.path, source, blob.sha256, entry.size))
            state_files.append(
                StateFile(
                    entry.path,
                    blob.sha256,
                    entry.etag,
                    entry.size,
                    blob.file_format,
                    tuple(findings.get(blob.pk, ())),
                    tuple(_decision(d) for d in file_decisions.get(blob.pk, ())),
                )
            )
    if not carried:
        raise ExportRefused(
            f"nothing of {spec} (commit {commit[:12]}) is released here: "
            + "; ".join(f"{shown(o.path)}: {o.why}" for o in left_out[:3])
        )
    history = await repository.get_history(repo.pk, commit)
    paths = {e.path for e in files}
    pins = [p for p in await repository.list_pins(repo.pk) if p.path in paths]
    decisions = await queries.decisions(repo.pk, REPO_DECISIONS)
    state = RevisionState(
        repo=spec.repo,
        private=repo.private,
        gated=repo.gated,
        commit=commit,
        ref=ref,
        info=recorded.info,
        tree=tuple(tree),
        history=tuple(c.commit_id for c in history) if history is not None else None,
        items={c.commit_id: dict(c.raw) for c in history} if history is not None else {},
        files=tuple(state_files),
        withheld=tuple(withheld),
        pins=tuple(pins),
        decisions=tuple(_decision(d) for d in decisions),
    )
    content = oci.RevisionContent(
        spec.repo.repo_type.value,
        spec.repo.repo_id,
        spec.revision,
        commit,
        carried,
        state.to_json(),
    )
    return Collected(spec, content, tuple(left_out), repo)


async def with_bom(item: Collected, sources: BomSources) -> Collected:
    """The revision with its AI-BOM (as `hubwarden bom` gives it here). Raises BundleError."""
    bom = await revision_bom(sources, item.repo, item.spec.revision, item.content.commit)
    return dataclasses.replace(item, content=dataclasses.replace(item.content, bom=bom))


def bom_sources(settings: Settings, engine: AsyncEngine, store: BlobStore) -> BomSources:
    """The exporter's records a BOM is read from; signatures from what is stored only (an
    export never fetches)."""
    repository = Repository(db.session_maker(engine), db.read_session_maker(engine))
    signatures = Signatures(
        SignatureRecords(db.session_maker(engine), db.read_session_maker(engine)),
        settings.signing,
        offline=True,
        files=StoredFiles(repository, store),
    )
    queries = ReviewQueries(db.session_maker(engine), db.read_session_maker(engine))
    return BomSources(repository, queries, signatures)


async def _resolve(
    spec: ExportSpec, repository: Repository, repo_pk: int
) -> tuple[StateRef | None, str]:
    """The ref (None for a commit) and the commit this mirror serves for the revision."""
    revision = Revision(spec.revision)
    if revision.is_commit:
        return None, revision.name
    record: RefRecord | None = await repository.get_ref_record(repo_pk, revision.name)
    if record is None and revision.name == "main":  # the default branch, asked unnamed
        record = await repository.get_ref_record(repo_pk, "")
    if record is None:
        raise ExportRefused(
            f'revision "{shown(spec.revision)}" of {spec.repo} was never resolved here; '
            f"prefetch it first (`hubwarden prefetch {spec.repo.repo_id}@{spec.revision}"
            f"{_type_flag(spec.repo)}`)"
        )
    commit = record.approved_commit or record.commit
    kind = exported_kind(record.kind, revision.name)
    return StateRef(revision.name, kind, record.commit), commit


def _decision(record: AuditRecord) -> Decision:
    details: dict[str, JsonValue] = {k: v for k, v in record.details.items() if k != "remote"}
    return Decision(_rfc3339(record.at), record.actor[:128], record.action[:64], details)


def _rfc3339(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _type_flag(repo: RepoRef) -> str:
    return "" if repo.repo_type is RepoType.MODEL else f" --type {repo.repo_type.value}"


def check_distinct(specs: Sequence[ExportSpec]) -> None:
    """Raises InvalidInput when a revision is named twice."""
    seen: set[str] = set()
    for spec in specs:
        if str(spec) in seen:
            raise InvalidInput("--repo", str(spec), "is given twice")
        seen.add(str(spec))


async def export(
    settings: Settings,
    specs: Sequence[ExportSpec],
    out: Path,
    *,
    actor: str,
    since: Path | None = None,
    split: int | None = None,
    directory: bool = False,
    progress: Callable[[int], oci.Progress] | None = None,
) -> ExportReport:
    """Export `specs` from the mirror `settings` name into a bundle at `out`. `progress` is
    given the bytes to write and returns the callback told of each chunk written. Raises
    ExportRefused, BundleError, KeysError, DatabaseUnavailable."""
    check_distinct(specs)
    key = KeyStore(settings.data_dir).signing_key()
    previous = await asyncio.to_thread(previous_files, since) if since is not None else frozenset()
    require_local_store(settings.store, "export")  # the bundle reads blob files directly
    store = BlobStore(settings.data_dir)
    engine = db.create_engine(settings.effective_database_url)
    try:
        await db.prepare_schema(engine, upgrade=settings.upgrade_on_start)
        repository = Repository(db.session_maker(engine), db.read_session_maker(engine))
        queries = BundleQueries(db.session_maker(engine), db.read_session_maker(engine))
        collected = [await collect(spec, repository, queries, store) for spec in specs]
        sources = bom_sources(settings, engine, store)
        collected = [await with_bom(item, sources) for item in collected]
        sizes = {f.sha256: f.size for c in collected for f in c.content.files}
        to_write = sum(size for digest, size in sizes.items() if digest not in previous)
        result = await asyncio.to_thread(
            export_bundle,
            out,
            [c.content for c in collected],
            key,
            created=dt.datetime.now(dt.UTC).replace(microsecond=0),
            instance=instance_name(settings),
            since=previous,
            directory=directory,
            split=split,
            progress=progress(to_write) if progress is not None else None,
        )
        report = ExportReport(
            collected,
            [str(p) for p in result.paths],
            result.files_written,
            result.file_bytes,
            result.omitted,
            result.fingerprint,
        )
        for item in collected:
            await repository.audit(
                actor,
                "bundle.exported",
                repo_pk=item.repo_pk,
                details={
                    "role": "os-user",
                    "remote": "local",
                    "revision": item.spec.revision,
                    "commit": item.content.commit,
                    "out": str(out),
                    "files": len(item.content.files),
                    "bytes": item.file_bytes,
                    "left_out": [_left(o) for o in item.left_out[:100]],
                    "fingerprint": result.fingerprint,
                    "since": str(since) if since else None,
                },
            )
        return report
    finally:
        await engine.dispose()


def _left(item: LeftOut) -> JsonValue:
    return f"{item.path}: {item.why}"


def instance_name(settings: Settings) -> str:
    """How the exporting instance names itself in the bundle: its public URL, else its host."""
    return settings.public_url or socket.gethostname()
