"""The AI-BOM a bundle carries for each revision: made at export from the exporter's records (as
`hubwarden bom` makes it there), checked at import against the files the bundle carries, and kept
in the importing mirror's data directory.

Export: `revision_bom` gathers the facts `hubwarden bom` gathers (the commit's files with the
sha256 of their verified bytes, scan verdicts and findings, licence, signature status) and builds
the CycloneDX 1.6 document with `proxy.trust.bom`, whose validator must accept it. The bundle
carries it as a referrer of the revision's manifest, covered by the bundle's signature.

Import: the BOM is signed, yet it is the exporter's word. `check_bom` parses it as hostile input
(bounded JSON, the CycloneDX 1.6 header, each file component's path and SHA-256; not the library's
validator, whose cost grows with the square of the file count) and refuses the bundle when it
contradicts the bundle: another repo or commit, a file the commit's tree does not hold, or a
carried file whose sha256 is not the one the BOM lists. `keep_bom` writes the checked document as
`data_dir/boms/<type>/<org>/<name>/<commit>.cdx.json`. The importing mirror's own `hubwarden bom`
is computed from its records, which hold the sha256 it verified as each file streamed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.airgap.errors import BundleError
from proxy.airgap.jsonsafe import JsonLimits, JsonRefused, load_json
from proxy.airgap.judge import ImportRefused
from proxy.airgap.state import RevisionState
from proxy.errors import shown
from proxy.metadata import EntryType
from proxy.repos import RepoRef
from proxy.store.repository import RepoRecord
from proxy.trust.bom import BomInvalid, build_bom
from proxy.trust.bom_facts import BomSources, revision_facts, tool_version
from scanners.report import JsonValue

BOMS_DIR = "boms"
MAX_BOM_BYTES = 64 * 1024 * 1024
MAX_BOM_ITEMS = 8_000_000
"""JSON values in one BOM: about 30 per file, for the 100,000 files an export may list."""
_PATH = "hubwarden:path"
_SHA256 = re.compile(r"[0-9a-f]{64}")


async def revision_bom(sources: BomSources, repo: RepoRecord, revision: str, commit: str) -> bytes:
    """The validated CycloneDX JSON of `repo` at `commit` (asked as `revision`), as
    `hubwarden bom` gives it on this mirror. Raises BundleError."""
    facts = await revision_facts(sources, repo, revision, commit)
    if facts is None:
        raise BundleError(f"{repo.ref} at {commit[:12]} was never recorded here: no BOM")
    try:
        text = await asyncio.to_thread(build_bom, facts, tool_version=tool_version())
    except BomInvalid as exc:  # a bug of ours: say so rather than carry an invalid BOM
        raise BundleError(f"the AI-BOM of {repo.ref} at {commit[:12]}: {exc}") from exc
    return text.encode("utf-8")


# -- import ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CarriedBom:
    """A revision's BOM from a bundle, checked against the bundle's files."""

    repo: RepoRef
    commit: str
    ref: str
    sha256: str
    serial: str
    files: int
    """File components listed."""
    hashed: int
    """File components with a sha256 (the others were never fetched by the exporter)."""
    text: bytes

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "repo": self.repo.repo_id,
            "type": self.repo.repo_type.value,
            "ref": self.ref,
            "commit": self.commit,
            "sha256": self.sha256,
            "serial": self.serial,
            "files": self.files,
            "hashed": self.hashed,
        }


def check_bom(data: bytes, state: RevisionState) -> CarriedBom:
    """The BOM of `state`'s revision, parsed and checked (linear in its size). Pure.
    Raises ImportRefused."""
    where = f"the AI-BOM of {state.repo}@{state.ref_name or state.commit}"
    document = _document(data, where)
    component = _field(_field(document, "metadata", dict, where), "component", dict, where)
    if component.get("name") != state.repo.repo_id or component.get("version") != state.commit:
        raise _refused(
            f"{where} is about {shown(component.get('name'))} at "
            f"{shown(component.get('version'))}, not this revision"
        )
    hashes = _file_hashes(component.get("components", []), where)
    tree = {e.path for e in state.tree if e.entry_type is EntryType.FILE}
    stray = sorted(set(hashes) - tree)
    if stray:
        raise _refused(f'{where} lists "{shown(stray[0])}", which the commit\'s tree does not hold')
    for file in state.files:
        listed = hashes.get(file.path)
        if listed != file.sha256:
            said = f"sha256 {listed[:12]}…" if listed else "no sha256"
            raise _refused(
                f'{where} gives "{shown(file.path)}" {said}; the bundle carries sha256 '
                f"{file.sha256[:12]}…"
            )
    serial = document.get("serialNumber")
    return CarriedBom(
        state.repo,
        state.commit,
        state.ref_name,
        hashlib.sha256(data).hexdigest(),
        serial if isinstance(serial, str) else "",
        len(hashes),
        sum(1 for h in hashes.values() if h),
        data,
    )


def _document(data: bytes, where: str) -> dict[str, Any]:
    """The BOM's JSON, bounded, with the CycloneDX 1.6 header. Not the library's validator: its
    schema check grows with the square of the file count (uniqueItems), which a hostile BOM
    would use; the export validated it, the signature says it is what the export made, and
    what the import relies on (repo, commit, paths, sha256) is checked here field by field."""
    try:
        document = load_json(data, JsonLimits(max_bytes=MAX_BOM_BYTES, max_items=MAX_BOM_ITEMS))
    except JsonRefused as exc:
        raise _refused(f"{where} is not acceptable JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _refused(f"{where} is not a JSON object")
    header = (document.get("bomFormat"), document.get("specVersion"))
    if header != ("CycloneDX", "1.6"):
        raise _refused(f"{where} is not a CycloneDX 1.6 document ({shown(header)})")
    return document


def _file_hashes(components: object, where: str) -> dict[str, str | None]:
    """Each file component's path (its `hubwarden:path` property) → its SHA-256 (None: none)."""
    if not isinstance(components, list):
        raise _refused(f"{where}: the model's components are not a list")
    found: dict[str, str | None] = {}
    for component in components:
        if not isinstance(component, dict) or component.get("type") != "file":
            continue
        paths = [p.get("value") for p in _dicts(component, "properties") if p.get("name") == _PATH]
        if len(paths) != 1 or not isinstance(paths[0], str):
            raise _refused(f"{where}: a file component has no single {_PATH} property")
        if paths[0] in found:
            raise _refused(f'{where} lists "{shown(paths[0])}" twice')
        hashes = [
            h.get("content") for h in _dicts(component, "hashes") if h.get("alg") == "SHA-256"
        ]
        if len(hashes) > 1 or not all(isinstance(h, str) and _SHA256.fullmatch(h) for h in hashes):
            raise _refused(f'{where} gives "{shown(paths[0])}" a malformed SHA-256')
        found[paths[0]] = str(hashes[0]) if hashes else None
    return found


def _dicts(component: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = component.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _refused(f"a component's {key} are not a list of objects")
    return value


def _field(document: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = document.get(key)
    if not isinstance(value, kind):
        raise _refused(f'{where} has no "{key}"')
    return value


def _refused(message: str) -> ImportRefused:
    return ImportRefused(
        f"{message}: the bundle contradicts itself (its exporter's records disagree with the "
        "files it carries); nothing was imported"
    )


def bom_path(data_dir: Path, repo: RepoRef, commit: str) -> Path:
    """Where an imported revision's BOM is kept (repo ids and commits were checked)."""
    return data_dir / BOMS_DIR / repo.repo_type.value / repo.repo_id / f"{commit}.cdx.json"


def keep_bom(data_dir: Path, bom: CarriedBom) -> Path:
    """Write the BOM in its place (a temp file renamed: never half a document). Blocking."""
    path = bom_path(data_dir, bom.repo, bom.commit)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{dt.datetime.now(dt.UTC).timestamp()}")
    try:
        with temp.open("wb") as out:
            out.write(bom.text)
            out.flush()
            os.fsync(out.fileno())
        temp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return path
