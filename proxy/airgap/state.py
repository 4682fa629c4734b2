"""Hubwarden's state of one exported revision: the JSON object a bundle carries beside each
ModelPack manifest (`application/vnd.hubwarden.state.v1+json`, signed with it), written by
`hubwarden export` and checked, as hostile input, by `hubwarden import`.

Format 1 (every key is present; `null` only where said):

    {
      "format": 1,
      "repo": {"type": "model" | "dataset" | "space", "id": "org/name",
               "private": bool, "gated": "false" | "auto" | "manual"},
      "commit": "<40 hex>",               the revision's commit (the manifest's)
      "ref": {"name": "main", "kind": "branch" | "tag" | "convert" | "pr" | null,
              "head": "<40 hex>"} | null,
                                          the branch or tag the revision was exported by, and
                                          where it pointed upstream on the exporter (`head`,
                                          for the record: the importer serves `commit`, the
                                          commit the exporter approved); null when exported by
                                          commit
      "info": {...},                      the repo info at the commit as the Hub gave it (Xet
                                          keys removed): what repo_info answers offline
      "tree": [ENTRY, ...],               every file and folder of the commit
      "history": ["<40 hex>", ...] | null,
                                          the commit listing of `commit`, newest first, itself
                                          first; null when the exporter never recorded it whole
      "commits": {"<40 hex>": ITEM, ...}, the listing item of each commit of `history` as the
                                          Hub gives it (`id`, `title`, `message`, `date`,
                                          `authors`, `formatted`)
      "files": [FILE, ...],               the files the manifest carries (released there)
      "withheld": [WITHHELD, ...],        files of the tree the exporter holds, not carried
      "pins": [{"path": str, "etag": str, "commit": "<40 hex>"}, ...],
                                          the exporter's pins of the tree's paths
      "decisions": [DECISION, ...]        the exporter's decisions about the repo (changes
                                          approved, blocks lifted, pins moved)
    }
    ENTRY    = {"type": "file" | "directory", "path": str, "oid": "<40 hex>", "size": int,
                "lfs": {"oid": "<64 hex>", "size": int, "pointerSize": int}}
                                          (the Hub's tree JSON; `lfs` for LFS files only)
    FILE     = {"path": str, "sha256": "<64 hex>", "etag": str, "size": int,
                "format": str, "outcome": "clean" | "review" | "malicious" | "error",
                "findings": [FINDING, ...], "decisions": [DECISION, ...]}
                                          the exporter's scan report (FINDING as
                                          `scanners.report.Finding.to_dict`) and who released it
    WITHHELD = {"path": str, "etag": str, "size": int,
                "state": "quarantined" | "rejected", "reason": str}
    DECISION = {"at": RFC 3339 time, "actor": str, "action": str, "details": {...}}

`etag` is what the Hub's ETag says: the sha256 of an LFS file, the git blob sha1 of a regular
one. `parse` checks the state against its (signed) manifest: the same repo and commit; each
carried file once, at a file path of the tree, with the size and hash the tree gives (an LFS
file's sha256 is its layer digest; a regular file's git sha1 is checked on the bytes as they
stream); withheld files in the tree and not carried; the history starting at the commit, each
commit once, with its item. Any other shape is a BundleError naming the revision and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.airgap.errors import BundleError
from proxy.airgap.oci import RevisionEntry
from proxy.errors import InvalidInput, shown
from proxy.metadata import EntryType, LfsInfo, RefKind, TreeEntry, strip_xet
from proxy.repos import RepoPath, RepoRef, RepoType
from proxy.store.models import BlobState
from proxy.store.repository import PinRecord
from scanners.report import Finding, JsonValue, Outcome, Severity, worst_outcome

STATE_FORMAT = 1
MAX_TEXT_CHARS = 4096
MAX_SIZE = 1 << 50
GATED_VALUES = ("false", "auto", "manual")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")
_EXPORTED_KINDS = (RefKind.BRANCH, RefKind.TAG, RefKind.CONVERT, RefKind.PULL_REQUEST)


@dataclass(frozen=True, slots=True)
class StateRef:
    name: str
    kind: RefKind | None
    head: str


@dataclass(frozen=True, slots=True)
class Decision:
    at: str
    actor: str
    action: str
    details: Mapping[str, JsonValue]

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class StateFile:
    """A carried file: its path and bytes, and the exporter's scan report of them."""

    path: str
    sha256: str
    etag: str
    size: int
    file_format: str
    findings: tuple[Finding, ...]
    decisions: tuple[Decision, ...] = ()

    @property
    def outcome(self) -> Outcome:
        return worst_outcome(self.findings)

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "etag": self.etag,
            "size": self.size,
            "format": self.file_format,
            "outcome": self.outcome.value,
            "findings": [f.to_dict() for f in self.findings],
            "decisions": [d.to_json() for d in self.decisions],
        }


@dataclass(frozen=True, slots=True)
class Withheld:
    """A file of the tree the exporter holds (quarantined or rejected): not carried."""

    path: str
    etag: str
    size: int
    state: BlobState
    reason: str

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "path": self.path,
            "etag": self.etag,
            "size": self.size,
            "state": self.state.value,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class RevisionState:
    repo: RepoRef
    private: bool
    gated: str
    commit: str
    ref: StateRef | None
    info: Mapping[str, JsonValue]
    tree: tuple[TreeEntry, ...]
    history: tuple[str, ...] | None
    items: Mapping[str, Mapping[str, JsonValue]]
    files: tuple[StateFile, ...]
    withheld: tuple[Withheld, ...]
    pins: tuple[PinRecord, ...]
    decisions: tuple[Decision, ...]

    @property
    def label(self) -> str:
        return f"{self.repo.repo_type.value}/{self.repo.repo_id}@{self.ref_name or self.commit}"

    @property
    def ref_name(self) -> str:
        return self.ref.name if self.ref is not None else ""

    def entries(self) -> dict[str, TreeEntry]:
        """The tree's files by path."""
        return {e.path: e for e in self.tree if e.entry_type is EntryType.FILE}

    def to_json(self) -> dict[str, JsonValue]:
        ref: JsonValue = None
        if self.ref is not None:
            kind = self.ref.kind.value if self.ref.kind is not None else None
            ref = {"name": self.ref.name, "kind": kind, "head": self.ref.head}
        return {
            "format": STATE_FORMAT,
            "repo": {
                "type": self.repo.repo_type.value,
                "id": self.repo.repo_id,
                "private": self.private,
                "gated": self.gated,
            },
            "commit": self.commit,
            "ref": ref,
            "info": dict(self.info),
            "tree": [e.to_json() for e in self.tree],
            "history": list(self.history) if self.history is not None else None,
            "commits": {sha: dict(item) for sha, item in self.items.items()},
            "files": [f.to_json() for f in self.files],
            "withheld": [w.to_json() for w in self.withheld],
            "pins": [{"path": p.path, "etag": p.etag, "commit": p.commit} for p in self.pins],
            "decisions": [d.to_json() for d in self.decisions],
        }


def exported_kind(kind: RefKind | None, name: str) -> RefKind | None:
    """The kind a ref is exported as: the default branch (asked without a revision) is the
    branch `main`; an unlisted name (an abbreviated commit) has no kind."""
    if kind is RefKind.DEFAULT or (kind is None and name == "main"):
        return RefKind.BRANCH
    return kind if kind in _EXPORTED_KINDS else None


# -- parsing (hostile input) --------------------------------------------------------------------


class _Fields:
    """Reads one JSON object's fields, each refusal naming the revision and the field."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise BundleError(f"{where} is not a JSON object")
        self.value: dict[str, Any] = value
        self.where = where

    def fail(self, key: str, why: str) -> BundleError:
        return BundleError(f"{self.where}: {key} {why}")

    def get(self, key: str) -> Any:
        if key not in self.value:
            raise self.fail(f'"{key}"', "is missing")
        return self.value[key]

    def text(self, key: str, *, pattern: re.Pattern[str] | None = None, limit: int = 1024) -> str:
        value = self.get(key)
        if not isinstance(value, str) or len(value) > limit:
            raise self.fail(f'"{key}"', f"is not a text of at most {limit} characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(f'"{key}"', f'"{shown(value)}" is malformed')
        return value

    def size(self, key: str) -> int:
        value = self.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SIZE:
            raise self.fail(f'"{key}"', "is not a size in bytes")
        return value

    def flag(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise self.fail(f'"{key}"', "is not true or false")
        return value

    def items(self, key: str) -> list[Any]:
        value = self.get(key)
        if not isinstance(value, list):
            raise self.fail(f'"{key}"', "is not a list")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.get(key)
        if not isinstance(value, dict):
            raise self.fail(f'"{key}"', "is not a JSON object")
        return value


def parse(value: Any, revision: RevisionEntry) -> RevisionState:
    """The state of `revision`, checked against its manifest. Raises BundleError."""
    where = f"the state of {shown(revision.label)}"
    fields = _Fields(value, where)
    if fields.get("format") != STATE_FORMAT:
        raise BundleError(
            f"{where} is format {shown(fields.get('format'))}; this Hubwarden reads format "
            f"{STATE_FORMAT}: upgrade it"
        )
    repo, private, gated = _repo(_Fields(fields.get("repo"), f"{where}, repo"))
    if (repo.repo_type.value, repo.repo_id) != (revision.repo_type, revision.repo_id):
        raise BundleError(f"{where} names another repo ({shown(repo)}) than its manifest")
    commit = fields.text("commit", pattern=_SHA1)
    if commit != revision.commit:
        raise BundleError(f"{where} names commit {commit}, its manifest {revision.commit}")
    ref = _ref(fields.get("ref"), where)
    expected_ref = "" if revision.ref == commit else revision.ref
    if (ref.name if ref is not None else "") != expected_ref:
        raise BundleError(f"{where} names another ref than its manifest")
    info = strip_xet(fields.mapping("info"))
    assert isinstance(info, dict)
    if "sha" in info and info["sha"] != commit:
        raise BundleError(f"{where}: the repo info is of commit {shown(info['sha'])}")
    tree = _tree(fields.items("tree"), where)
    history, items = _history(fields, commit, where)
    files = tuple(_file(item, f"{where}, a carried file") for item in fields.items("files"))
    withheld = tuple(
        _withheld(item, f"{where}, a withheld file") for item in fields.items("withheld")
    )
    pins = tuple(_pin(item, f"{where}, a pin") for item in fields.items("pins"))
    decisions = tuple(_decision(item, f"{where}, a decision") for item in fields.items("decisions"))
    state = RevisionState(
        repo,
        private,
        gated,
        commit,
        ref,
        info,
        tree,
        history,
        items,
        files,
        withheld,
        pins,
        decisions,
    )
    _check_files(state, revision, where)
    return state


def _repo(fields: _Fields) -> tuple[RepoRef, bool, str]:
    try:
        repo_type = RepoType(fields.text("type", limit=16))
        repo = RepoRef.parse(repo_type, fields.text("id", limit=200))
    except (ValueError, InvalidInput) as exc:
        raise BundleError(f"{fields.where}: {exc}") from None
    gated = fields.text("gated", limit=16)
    if gated not in GATED_VALUES:
        raise fields.fail('"gated"', f"is not one of {', '.join(GATED_VALUES)}")
    return repo, fields.flag("private"), gated


def _ref(value: Any, where: str) -> StateRef | None:
    if value is None:
        return None
    fields = _Fields(value, f"{where}, ref")
    name = fields.text("name", limit=256)
    kind_value = fields.get("kind")
    try:
        kind = None if kind_value is None else RefKind(kind_value)
    except ValueError:
        raise fields.fail('"kind"', f'"{shown(kind_value)}" is not a ref kind') from None
    if kind not in (None, *_EXPORTED_KINDS):
        raise fields.fail('"kind"', f'"{kind}" is not exported')
    return StateRef(name, kind, fields.text("head", pattern=_SHA1))


def _tree(items: Sequence[Any], where: str) -> tuple[TreeEntry, ...]:
    entries: list[TreeEntry] = []
    paths: set[str] = set()
    for item in items:
        fields = _Fields(item, f"{where}, a tree entry")
        try:
            entry_type = EntryType(fields.text("type", limit=16))
            path = RepoPath.parse(fields.text("path", limit=1024)).value
        except (ValueError, InvalidInput) as exc:
            raise BundleError(f"{fields.where}: {exc}") from None
        if path in paths:
            raise BundleError(f"{where}: the tree lists {shown(path)} twice")
        paths.add(path)
        oid = fields.text("oid", pattern=_SHA1)
        size = fields.size("size")
        lfs = None
        if "lfs" in fields.value:
            lfs_fields = _Fields(fields.get("lfs"), f"{where}, the LFS pointer of {shown(path)}")
            lfs = LfsInfo(
                lfs_fields.text("oid", pattern=_SHA256),
                lfs_fields.size("size"),
                lfs_fields.size("pointerSize"),
            )
            if lfs.size != size or entry_type is not EntryType.FILE:
                raise BundleError(f"{where}: the LFS pointer of {shown(path)} is inconsistent")
        entries.append(TreeEntry(entry_type, path, oid, size, lfs))
    return tuple(sorted(entries, key=lambda e: e.path))


def _history(
    fields: _Fields, commit: str, where: str
) -> tuple[tuple[str, ...] | None, dict[str, dict[str, JsonValue]]]:
    raw = fields.get("history")
    items = fields.mapping("commits")
    if raw is None:
        if items:
            raise BundleError(f"{where}: commit items are given without a history")
        return None, {}
    if not isinstance(raw, list) or not all(isinstance(s, str) and _SHA1.fullmatch(s) for s in raw):
        raise BundleError(f"{where}: the history is not a list of 40-hex commits")
    if not raw or raw[0] != commit or len(set(raw)) != len(raw):
        raise BundleError(
            f"{where}: the history must start at the commit and name each commit once"
        )
    if set(items) != set(raw):
        raise BundleError(f"{where}: the commit items are not exactly those of the history")
    checked: dict[str, dict[str, JsonValue]] = {}
    for sha in raw:
        item = items[sha]
        if not isinstance(item, dict) or item.get("id") != sha:
            raise BundleError(f"{where}: the item of commit {sha} does not name it")
        checked[sha] = item
    return tuple(raw), checked


def _finding(value: Any, where: str) -> Finding:
    fields = _Fields(value, where)
    details = fields.mapping("details")
    try:
        return Finding(
            scanner=fields.text("scanner", limit=64),
            code=fields.text("code", limit=64),
            severity=Severity(fields.text("severity", limit=16)),
            outcome=Outcome(fields.text("outcome", limit=16)),
            message=fields.text("message", limit=MAX_TEXT_CHARS),
            details=details,
        )
    except ValueError as exc:
        raise BundleError(f"{where}: {exc}") from None


def _decision(value: Any, where: str) -> Decision:
    fields = _Fields(value, where)
    return Decision(
        fields.text("at", limit=64),
        fields.text("actor", limit=128),
        fields.text("action", limit=64),
        fields.mapping("details"),
    )


def _file(value: Any, where: str) -> StateFile:
    fields = _Fields(value, where)
    try:
        path = RepoPath.parse(fields.text("path", limit=1024)).value
    except InvalidInput as exc:
        raise BundleError(f"{where}: {exc}") from None
    where = f"{where.rsplit(',', 1)[0]}, file {shown(path)}"
    fields.where = where
    etag = fields.text("etag", limit=64)
    if not (_SHA1.fullmatch(etag) or _SHA256.fullmatch(etag)):
        raise fields.fail('"etag"', "is neither a git sha1 nor a sha256")
    try:
        Outcome(fields.text("outcome", limit=16))
    except ValueError:
        raise fields.fail('"outcome"', "is not a scan outcome") from None
    return StateFile(
        path,
        fields.text("sha256", pattern=_SHA256),
        etag,
        fields.size("size"),
        fields.text("format", limit=32),
        tuple(_finding(f, f"{where}, a finding") for f in fields.items("findings")),
        tuple(_decision(d, f"{where}, a decision") for d in fields.items("decisions")),
    )


def _withheld(value: Any, where: str) -> Withheld:
    fields = _Fields(value, where)
    try:
        path = RepoPath.parse(fields.text("path", limit=1024)).value
        state = BlobState(fields.text("state", limit=16))
    except (ValueError, InvalidInput) as exc:
        raise BundleError(f"{where}: {exc}") from None
    if state not in (BlobState.QUARANTINED, BlobState.REJECTED):
        raise BundleError(f"{where}: a withheld file is quarantined or rejected, not {state}")
    etag = fields.text("etag", limit=64)
    if not (_SHA1.fullmatch(etag) or _SHA256.fullmatch(etag)):
        raise fields.fail('"etag"', "is neither a git sha1 nor a sha256")
    return Withheld(
        path, etag, fields.size("size"), state, fields.text("reason", limit=MAX_TEXT_CHARS)
    )


def _pin(value: Any, where: str) -> PinRecord:
    fields = _Fields(value, where)
    try:
        path = RepoPath.parse(fields.text("path", limit=1024)).value
    except InvalidInput as exc:
        raise BundleError(f"{where}: {exc}") from None
    etag = fields.text("etag", limit=64)
    if not (_SHA1.fullmatch(etag) or _SHA256.fullmatch(etag)):
        raise fields.fail('"etag"', "is neither a git sha1 nor a sha256")
    return PinRecord(path, etag, fields.text("commit", pattern=_SHA1))


def _check_files(state: RevisionState, revision: RevisionEntry, where: str) -> None:
    """The carried files are exactly the manifest's layers, each a file of the tree with the
    size and hash the tree gives; withheld files are files of the tree not carried."""
    entries = state.entries()
    layers = {layer.path: layer for layer in revision.layers}
    carried = {f.path: f for f in state.files}
    if len(carried) != len(state.files) or set(carried) != set(layers):
        raise BundleError(f"{where}: its carried files are not exactly its manifest's layers")
    for path, file in carried.items():
        layer, entry = layers[path], entries.get(path)
        if (file.sha256, file.size) != (layer.digest, layer.size):
            raise BundleError(f"{where}: file {shown(path)} is not the layer of that path")
        if entry is None or entry.size != file.size or entry.etag != file.etag:
            raise BundleError(
                f"{where}: file {shown(path)} is not a file of the commit's tree with that "
                "size and hash"
            )
        if entry.lfs is not None and entry.lfs.sha256 != file.sha256:
            raise BundleError(
                f"{where}: LFS file {shown(path)} has sha256 {entry.lfs.sha256} in the tree "
                f"and {file.sha256} in the layer"
            )
    for withheld in state.withheld:
        entry = entries.get(withheld.path)
        if withheld.path in carried or entry is None or entry.etag != withheld.etag:
            raise BundleError(
                f"{where}: withheld file {shown(withheld.path)} is carried, or not a file of "
                "the tree with that hash"
            )
