"""What a mirrored revision's AI-BOM says, gathered from the mirror's own records (never upstream):
one place for `hubwarden bom`, the admin API and the export bundles."""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.store.repository import RepoRecord, Repository
from proxy.store.review import ReviewQueries, RevisionFile
from proxy.trust.bom import FileFacts, RevisionFacts
from proxy.trust.signatures import Signatures
from scanners.report import JsonValue

MAX_LICENCE_CHARS = 100


@dataclass(frozen=True, slots=True)
class BomSources:
    """The records a BOM is read from; `signatures` None leaves its signature out."""

    repository: Repository
    queries: ReviewQueries
    signatures: Signatures | None


async def revision_facts(
    sources: BomSources, repo: RepoRecord, revision: str, commit: str
) -> RevisionFacts | None:
    """The facts of `repo` at `commit` (asked as `revision`); None when it was never recorded."""
    found = await sources.queries.revision_files(repo.pk, commit)
    if found is None:
        return None
    recorded_at, complete, files = found
    info = await sources.repository.get_commit(repo.pk, commit)
    facts = RevisionFacts(
        repo=repo.ref,
        revision=revision,
        commit=commit,
        mirrored_at=recorded_at,
        licence=declared_licence(info.info if info is not None else None),
        files=[await _file_facts(sources.repository, f) for f in files],
        complete=complete,
    )
    if sources.signatures is None:
        return facts
    report = await sources.signatures.report(repo, commit)
    return dataclasses.replace(facts, signature=report.summary)


async def _file_facts(repository: Repository, file: RevisionFile) -> FileFacts:
    findings = await repository.list_findings(file.blob_pk) if file.blob_pk else []
    return FileFacts(
        path=file.path,
        size=file.size,
        git_oid=file.git_oid,
        advertised_sha256=file.lfs_sha256,
        state=file.state,
        sha256=file.sha256,
        file_format=file.file_format,
        outcome=file.outcome,
        reason=file.reason,
        findings=findings,
    )


def declared_licence(info: Mapping[str, JsonValue] | None) -> str | None:
    """The licence the repo card declares (`cardData.license`, the first of a list), if one."""
    card = info.get("cardData") if info else None
    value = card.get("license") if isinstance(card, dict) else None
    if isinstance(value, list):
        value = value[0] if value else None
    return value[:MAX_LICENCE_CHARS] if isinstance(value, str) and value else None


def tool_version() -> str:
    """Hubwarden's installed version, as BOMs name the tool that made them."""
    try:
        return importlib.metadata.version("hubwarden")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
