"""The AI-BOM of a mirrored revision: a CycloneDX 1.6 ML-BOM built with cyclonedx-python-lib
and checked with its strict JSON validator before it leaves (never hand-written JSON).

The repo is one component (`machine-learning-model`, or `data` for a dataset) whose version is the
commit; its files are nested `file` components. A file's SHA-256 is listed only when this mirror
verified the bytes itself (a stored blob); a file never fetched says so in a property instead, with
the hash upstream advertised for LFS files kept apart (`hubwarden:advertised-sha256`). Scan
verdicts and findings, the file format, the upstream commit, when it was mirrored and the
signature status are properties in the `hubwarden:` namespace. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.contact import OrganizationalEntity
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion

from proxy.repos import RepoRef, RepoType
from scanners.report import Finding

MAX_FINDINGS_PER_FILE = 20
MAX_TEXT = 500
NOT_CHECKED = "not checked"  # a file whose signature status is not known (yet)


class BomInvalid(Exception):
    """The library's validator refused what we built: a bug, never a client's fault."""


@dataclass(frozen=True, slots=True)
class FileFacts:
    """One file of the revision, as the mirror knows it."""

    path: str
    size: int
    git_oid: str
    advertised_sha256: str | None  # upstream's LFS oid (not verified by itself)
    state: str  # released, quarantined, rejected, or "not fetched"
    sha256: str | None = None  # the bytes' hash, computed here (None: never fetched)
    file_format: str = ""
    outcome: str = ""
    reason: str = ""
    findings: Sequence[Finding] = ()


@dataclass(frozen=True, slots=True)
class RevisionFacts:
    repo: RepoRef
    revision: str
    commit: str
    mirrored_at: dt.datetime | None
    licence: str | None  # the card metadata's licence, as the Hub gives it
    files: Sequence[FileFacts] = field(default_factory=tuple)
    complete: bool = True  # every file of the commit is listed (its whole tree was recorded)
    signature: str = NOT_CHECKED


def build_bom(facts: RevisionFacts, *, tool_version: str) -> str:
    """The validated CycloneDX 1.6 JSON of one revision. Raises BomInvalid."""
    repo = facts.repo
    namespace = repo.repo_id.split("/", 1)[0] if "/" in repo.repo_id else ""
    kind = ComponentType.DATA if repo.repo_type is RepoType.DATASET else (
        ComponentType.MACHINE_LEARNING_MODEL
    )  # fmt: skip
    model = Component(
        name=repo.repo_id,
        type=kind,
        version=facts.commit,
        bom_ref=f"{repo.repo_type.value}/{repo.repo_id}@{facts.commit}",
        publisher=namespace or None,
        supplier=OrganizationalEntity(name=namespace) if namespace else None,
        licenses=[LicenseFactory().make_from_string(facts.licence)] if facts.licence else None,
        properties=[
            Property(name="hubwarden:repo-type", value=repo.repo_type.value),
            Property(name="hubwarden:revision", value=facts.revision),
            Property(name="hubwarden:upstream-commit", value=facts.commit),
            Property(name="hubwarden:signature", value=facts.signature),
            Property(
                name="hubwarden:file-list",
                value="complete" if facts.complete else "partial: only the files asked for",
            ),
            *(
                [Property(name="hubwarden:mirrored-at", value=facts.mirrored_at.isoformat())]
                if facts.mirrored_at is not None
                else []
            ),
        ],
    )
    for number, file in enumerate(facts.files):
        model.components.add(_file(file, f"{model.bom_ref.value}#{number}"))
    bom = Bom()
    bom.metadata.component = model
    bom.metadata.tools.components.add(
        Component(name="hubwarden", type=ComponentType.APPLICATION, version=tool_version)
    )
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    # imported here: the validator's jsonschema formats build an RFC 3987 grammar on import
    # (about 2 s), which every server and CLI start would pay for a BOM it may never build
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise BomInvalid(f"the CycloneDX validator refused the BOM: {error}")
    return text


def _file(file: FileFacts, ref: str) -> Component:
    properties = [
        Property(name="hubwarden:path", value=file.path),
        Property(name="hubwarden:size", value=str(file.size)),
        Property(name="hubwarden:git-oid", value=file.git_oid),
        Property(name="hubwarden:state", value=file.state),
    ]
    if file.advertised_sha256 and file.sha256 is None:
        properties.append(
            Property(name="hubwarden:advertised-sha256", value=file.advertised_sha256)
        )
    for name, value in (("format", file.file_format), ("verdict", file.outcome),
                        ("reason", file.reason)):  # fmt: skip
        if value:
            properties.append(Property(name=f"hubwarden:{name}", value=value[:MAX_TEXT]))
    for finding in list(file.findings)[:MAX_FINDINGS_PER_FILE]:
        text = f"{finding.severity.value} {finding.code}: {finding.message}"
        properties.append(Property(name="hubwarden:finding", value=text[:MAX_TEXT]))
    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=file.sha256)] if file.sha256 else None
    return Component(
        name=file.path, type=ComponentType.FILE, bom_ref=ref, hashes=hashes, properties=properties
    )
