"""Typed values for what the Hub says about repos, commits and files.

Upstream JSON becomes these at the edge (`proxy/upstream.py`); the database stores them and the hub
routes render them back to JSON (`to_json`). Xet fields are dropped on the way in, never
rendered.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from scanners.report import JsonValue

# Keys that must never reach a client: they make hf_xet bypass the mirror (hub-protocol.md §5).
T = TypeVar("T")

XET_KEYS = frozenset({"xetHash", "xet_hash", "xetEnabled"})


def strip_xet(value: JsonValue) -> JsonValue:
    """A copy of a JSON value with every Xet key removed, at any depth (bounded by the input)."""
    if isinstance(value, dict):
        return {k: strip_xet(v) for k, v in value.items() if k not in XET_KEYS}
    if isinstance(value, list):
        return [strip_xet(v) for v in value]
    return value


class EntryType(enum.StrEnum):
    FILE = "file"
    DIRECTORY = "directory"


class RefKind(enum.StrEnum):
    """What a ref is: the refs listing's groups (hub-protocol.md §3.6), `default` for the ref a
    client names by no revision at all (the default branch), `unlisted` for a name the Hub
    resolves but does not list (an abbreviated commit, say)."""

    BRANCH = "branch"
    TAG = "tag"
    CONVERT = "convert"
    PULL_REQUEST = "pr"
    DEFAULT = "default"
    UNLISTED = "unlisted"

    @classmethod
    def of_name(cls, name: str) -> RefKind | None:
        """The kind a ref name tells by itself (special refs, hub-protocol.md §2), else None."""
        if not name:
            return cls.DEFAULT
        if name.startswith("refs/pr/"):
            return cls.PULL_REQUEST
        if name.startswith("refs/convert/"):
            return cls.CONVERT
        return None


_REF_GROUPS = (  # tags first: a name that is both a tag and a branch resolves as the branch
    ("tags", RefKind.TAG, ""),
    ("converts", RefKind.CONVERT, "refs/convert/"),
    ("pullRequests", RefKind.PULL_REQUEST, ""),
    ("branches", RefKind.BRANCH, ""),
)
MAX_REF_NAME_CHARS = 256


def ref_kinds(listing: JsonValue) -> dict[str, RefKind]:
    """Ref name (as a client names it as a revision) → kind, from a refs listing; hostile JSON,
    so odd items are skipped."""
    kinds: dict[str, RefKind] = {}
    for key, kind, prefix in _REF_GROUPS:
        items = listing.get(key) if isinstance(listing, dict) else None
        for item in items if isinstance(items, list) else []:
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and 0 < len(name) <= MAX_REF_NAME_CHARS:
                kinds[prefix + name] = kind
    return kinds


def ref_item(kind: RefKind, name: str, commit: str) -> tuple[str, dict[str, JsonValue]]:
    """A refs listing item as the Hub writes it, with the group it belongs in."""
    if kind is RefKind.TAG:
        return "tags", {"name": name, "ref": f"refs/tags/{name}", "targetCommit": commit}
    if kind is RefKind.CONVERT:
        short = name.removeprefix("refs/convert/")
        return "converts", {"name": short, "ref": name, "targetCommit": commit}
    if kind is RefKind.PULL_REQUEST:
        return "pullRequests", {"name": name, "ref": name, "targetCommit": commit}
    return "branches", {"name": name, "ref": f"refs/heads/{name}", "targetCommit": commit}


@dataclass(frozen=True, slots=True)
class LfsInfo:
    sha256: str
    size: int
    pointer_size: int


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One file or folder of a commit's tree. `oid` is the git blob (or tree) sha1."""

    entry_type: EntryType
    path: str
    oid: str
    size: int
    lfs: LfsInfo | None = None

    @property
    def etag(self) -> str:
        """The ETag the Hub sends for this file: sha256 for LFS files, git blob sha1 otherwise."""
        return self.lfs.sha256 if self.lfs else self.oid

    def to_json(self) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = {
            "type": self.entry_type.value,
            "oid": self.oid,
            "size": self.size,
            "path": self.path,
        }
        if self.lfs is not None:
            data["lfs"] = {
                "oid": self.lfs.sha256,
                "size": self.lfs.size,
                "pointerSize": self.lfs.pointer_size,
            }
        return data


@dataclass(frozen=True, slots=True)
class RepoInfo:
    """Repo info at one commit. `raw` is the upstream JSON with Xet keys removed."""

    repo_id: str
    sha: str
    private: bool
    gated: str | bool
    disabled: bool
    raw: Mapping[str, JsonValue] = field(default_factory=dict)
    # Set when a branch is served at its last approved commit rather than its upstream head.
    notice: str = ""


@dataclass(frozen=True, slots=True)
class FileMetadata:
    """What the metadata HEAD of a file says (hub-protocol.md §4.1), read from the Hub's first
    answer, never from the CDN's. `is_lfs` is true when the etag is a 64-hex sha256."""

    commit: str
    etag: str
    size: int
    is_lfs: bool


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """One item of a commit listing. `raw` is the upstream JSON (for re-rendering)."""

    commit_id: str
    raw: Mapping[str, JsonValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a paginated listing; `cursor` fetches the next page (None: last page)."""

    items: tuple[T, ...]
    cursor: str | None
    total: int | None = None
