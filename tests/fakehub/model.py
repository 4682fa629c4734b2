"""In-memory repos of the fake Hub: commits with parents, refs, file trees and access lists."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

from tests.fakehub.errors import (
    EntryNotFound,
    GatedRepo,
    RepoDisabled,
    RepoNotFound,
    RevisionNotFound,
)
from tests.fakehub.gitobjects import Content, FileBlob, LfsRule, commit_oid, make_blob, tree_oids

COMMIT_SHA_RE = re.compile(r"[0-9a-f]{40}")
MAX_HISTORY = 100_000
AUTHOR = "fake-user"
Gated = Literal[False, "auto", "manual"]


class RepoType(StrEnum):
    MODEL = "model"
    DATASET = "dataset"
    SPACE = "space"

    @property
    def plural(self) -> str:
        """The segment of API routes: ``models``, ``datasets``, ``spaces``."""
        return f"{self.value}s"

    @property
    def url_prefix(self) -> str:
        """The prefix of file routes: empty for models, ``datasets/`` or ``spaces/``."""
        return "" if self is RepoType.MODEL else f"{self.plural}/"


@dataclass(frozen=True, slots=True)
class RepoKey:
    repo_type: RepoType
    repo_id: str


class Clock:
    """Deterministic, strictly increasing commit dates (one minute apart by default)."""

    def __init__(self, start: datetime | None = None, step: timedelta = timedelta(minutes=1)):
        self._next = start or datetime(2024, 1, 1, tzinfo=UTC)
        self._step = step

    def now(self) -> datetime:
        current = self._next
        self._next += self._step
        return current


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    files: Mapping[str, FileBlob] = field(repr=False)
    directories: Mapping[str, str] = field(repr=False)
    """Tree oid of every directory, "" being the root."""
    title: str
    message: str
    author: str
    date: datetime


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    blob: FileBlob


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    path: str
    oid: str


TreeEntry = FileEntry | DirectoryEntry


@dataclass(eq=False)
class Repo:
    """One repo and its test controls. Create it with ``FakeHub.create_repo``.

    Every control that writes returns the new commit sha. Commits are real git objects: the
    sha changes with content, parents, author, date and message.
    """

    key: RepoKey
    lfs_rule: LfsRule
    clock: Clock = field(repr=False)
    private: bool = False
    gated: Gated = False
    disabled: bool = False
    readers: set[str] = field(default_factory=set)
    """Users who may see a private repo."""
    granted: set[str] = field(default_factory=set)
    """Users who may download a gated repo's files."""
    card_data: dict[str, object] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)
    """The repo-info ``tags`` (metadata tags, not git tags)."""
    extra_info: dict[str, object] = field(default_factory=dict)
    """More keys merged into repo info (``pipeline_tag``, ``library_name``, ``safetensors``…)."""
    created_at: datetime = field(default_factory=lambda: datetime(2024, 1, 1, tzinfo=UTC))
    commits: dict[str, Commit] = field(default_factory=dict, repr=False)
    branches: dict[str, str] = field(default_factory=dict)
    git_tags: dict[str, str] = field(default_factory=dict)
    pull_requests: dict[int, str] = field(default_factory=dict)
    converts: dict[str, str] = field(default_factory=dict)
    tampered: dict[str, bytes] = field(default_factory=dict, repr=False)
    """Bytes served instead of a blob's content, keyed by the blob's sha256."""
    security_repo_status: dict[str, object] | None = None
    """The repo info's ``securityRepoStatus`` (sent when asked with ``securityStatus=true``)."""
    file_security: dict[str, dict[str, object]] = field(default_factory=dict)
    """Path → the ``securityFileStatus`` of tree and paths-info entries asked with ``expand``."""

    @property
    def repo_id(self) -> str:
        return self.key.repo_id

    @property
    def repo_type(self) -> RepoType:
        return self.key.repo_type

    def commit(
        self,
        files: Mapping[str, Content],
        *,
        branch: str = "main",
        message: str = "Upload files",
        delete: Collection[str] = (),
        lfs: Collection[str] | None = None,
    ) -> str:
        """Add a commit on ``branch`` (created as a root commit if absent); return its sha.

        ``lfs`` lists the paths of this commit stored as LFS files (all others regular); left
        out, the hub's rule decides (size threshold and binary suffixes). Content given as a
        ``Path`` is hashed here, blocking: for large files call this through ``asyncio.to_thread``.
        """
        parent = self.branches.get(branch)
        base = dict(self.commits[parent].files) if parent else {}
        change = _Change(files, message, delete, lfs)
        sha = self._add_commit(base, change, (parent,) if parent else ())
        self.branches[branch] = sha
        return sha

    def force_push(
        self, files: Mapping[str, Content], *, branch: str = "main", message: str = "Rewrite"
    ) -> str:
        """Replace ``branch`` with a new root commit of ``files``: a history rewrite."""
        sha = self._add_commit({}, _Change(files, message), ())
        self.branches[branch] = sha
        return sha

    def reset_branch(self, branch: str, revision: str) -> str:
        """Point ``branch`` at ``revision`` (e.g. an older commit: history rewritten backwards)."""
        sha = self.resolve(revision).sha
        self.branches[branch] = sha
        return sha

    def create_branch(self, branch: str, revision: str = "main") -> str:
        return self.reset_branch(branch, revision)

    def delete_branch(self, branch: str) -> None:
        del self.branches[branch]

    def tag(self, name: str, revision: str = "main") -> str:
        """Create or move the git tag ``name``; return the commit it names."""
        sha = self.resolve(revision).sha
        self.git_tags[name] = sha
        return sha

    def open_pr(
        self, files: Mapping[str, Content], *, base: str = "main", message: str = "Open PR"
    ) -> str:
        """Open a pull request with one commit on top of ``base``; return its ref ``refs/pr/N``."""
        number = max(self.pull_requests, default=0) + 1
        parent = self.resolve(base)
        change = _Change(files, message)
        self.pull_requests[number] = self._add_commit(dict(parent.files), change, (parent.sha,))
        return f"refs/pr/{number}"

    def set_convert(
        self, files: Mapping[str, Content], *, name: str = "parquet", message: str = "Convert"
    ) -> str:
        """Add a commit to ``refs/convert/<name>`` (its own history, like the Hub's parquet bot)."""
        parent = self.converts.get(name)
        base = dict(self.commits[parent].files) if parent else {}
        sha = self._add_commit(base, _Change(files, message), (parent,) if parent else ())
        self.converts[name] = sha
        return sha

    def tamper(
        self,
        path: str,
        data: bytes | None = None,
        *,
        keep_size: bool = False,
        revision: str = "main",
    ) -> bytes:
        """Serve other bytes for ``path`` while every advertised hash and size stays the same.

        Without ``data``: the last byte flipped (``keep_size=True``) or a suffix appended.
        Returns the bytes now served (by the CDN for LFS files, by resolve-cache otherwise).
        """
        blob = self.file(path, revision)
        original = blob.read()
        if data is None:
            last = original[-1:] or b"\0"
            data = original[:-1] + bytes([last[0] ^ 0xFF]) if keep_size else original + b"!"
        if keep_size and len(data) != blob.size:
            raise ValueError(f"keep_size: {len(data)} bytes given for a {blob.size}-byte file")
        self.tampered[blob.sha256] = data
        return data

    def untamper(self) -> None:
        self.tampered.clear()

    def served_content(self, blob: FileBlob) -> Content:
        """What the CDN and resolve-cache send for ``blob`` (tampered bytes if set)."""
        return self.tampered.get(blob.sha256, blob.content)

    def head(self, branch: str = "main") -> str:
        return self.branches[branch]

    def resolve(self, revision: str) -> Commit:
        """The commit a branch, tag, ``refs/pr/N``, ``refs/convert/X`` or 40-hex sha names."""
        sha = self._lookup_ref(revision)
        if sha is None:
            raise RevisionNotFound(revision)
        return self.commits[sha]

    def file(self, path: str, revision: str = "main") -> FileBlob:
        """The blob at ``path`` (for assertions: ``.sha256``, ``.sha1``, ``.read()``)."""
        commit = self.resolve(revision)
        if path not in commit.files:
            raise EntryNotFound("Entry not found", commit.sha)
        return commit.files[path]

    def history(self, revision: str) -> list[Commit]:
        """Commits reachable from ``revision``, newest first (first parents, then the others)."""
        return list(_walk(self.commits, self.resolve(revision).sha))

    def last_commit_of(self, commit: Commit, path: str) -> Commit:
        """The newest commit in ``commit``'s history that changed ``path`` (file or folder)."""
        current = _oid_at(commit, path)
        last = commit
        for older in _walk(self.commits, commit.sha):
            if _oid_at(older, path) != current:
                return last
            last = older
        return last

    def check_visible(self, user: str | None) -> None:
        """Private repos exist only for their readers, as on the Hub (§7)."""
        if self.private and user not in self.readers:
            raise RepoNotFound(anonymous=user is None)

    def check_files(self, user: str | None) -> None:
        """Files need visibility, an enabled repo and, when gated, a grant."""
        self.check_visible(user)
        if self.disabled:
            raise RepoDisabled
        if self.gated and user not in self.granted:
            raise GatedRepo(self.repo_type.value, self.repo_id, anonymous=user is None)

    def _lookup_ref(self, revision: str) -> str | None:
        if COMMIT_SHA_RE.fullmatch(revision) and revision in self.commits:
            return revision
        if match := re.fullmatch(r"refs/pr/(\d{1,9})", revision):
            return self.pull_requests.get(int(match[1]))
        for prefix, refs in (
            ("refs/convert/", self.converts),
            ("refs/heads/", self.branches),
            ("refs/tags/", self.git_tags),
        ):
            if revision.startswith(prefix):
                return refs.get(revision.removeprefix(prefix))
        return self.branches.get(revision) or self.git_tags.get(revision)

    def _add_commit(
        self, base: dict[str, FileBlob], change: _Change, parents: tuple[str, ...]
    ) -> str:
        for path in change.delete:
            base.pop(path, None)
        for path, content in change.files.items():
            flag = None if change.lfs is None else path in change.lfs
            base[path] = make_blob(path, content, lfs=flag, rule=self.lfs_rule)
        date = self.clock.now()
        directories = MappingProxyType(tree_oids(base))
        title, _, body = change.message.partition("\n")
        sha = commit_oid(directories[""], parents, AUTHOR, date, change.message)
        snapshot = MappingProxyType(dict(sorted(base.items())))
        commit = Commit(sha, parents, snapshot, directories, title, body.strip(), AUTHOR, date)
        self.commits[sha] = commit
        return sha


@dataclass(frozen=True, slots=True)
class _Change:
    files: Mapping[str, Content]
    message: str
    delete: Collection[str] = ()
    lfs: Collection[str] | None = None


def _walk(commits: Mapping[str, Commit], start: str) -> Iterator[Commit]:
    """Commits reachable from ``start``, newest first by date (bounded by MAX_HISTORY)."""
    seen: set[str] = set()
    pending = [start]
    ordered: list[Commit] = []
    while pending and len(seen) < MAX_HISTORY:
        sha = pending.pop()
        if sha in seen:
            continue
        seen.add(sha)
        ordered.append(commits[sha])
        pending.extend(commits[sha].parents)
    yield from sorted(ordered, key=lambda c: c.date, reverse=True)


def _oid_at(commit: Commit, path: str) -> str | None:
    if path in commit.files:
        return commit.files[path].oid
    return commit.directories.get(path)


def entry_at(commit: Commit, path: str) -> TreeEntry | None:
    """The file or folder at ``path`` ("" is the root folder), or None."""
    if path in commit.files:
        return FileEntry(path, commit.files[path])
    if path in commit.directories:
        return DirectoryEntry(path, commit.directories[path])
    return None


def list_tree(commit: Commit, path: str, *, recursive: bool) -> list[TreeEntry]:
    """Entries below folder ``path``: folders first, then files, each sorted by path.

    Raises EntryNotFound (the Hub's ``… does not exist on "<rev>"`` is built by the caller).
    """
    path = path.strip("/")
    if path not in commit.directories:
        raise EntryNotFound(path, commit.sha)
    prefix = f"{path}/" if path else ""

    def wanted(candidate: str) -> bool:
        if not candidate or not candidate.startswith(prefix):
            return False
        return recursive or "/" not in candidate[len(prefix) :]

    folders: list[TreeEntry] = [
        DirectoryEntry(d, oid) for d, oid in sorted(commit.directories.items()) if wanted(d)
    ]
    files: list[TreeEntry] = [FileEntry(p, b) for p, b in commit.files.items() if wanted(p)]
    return folders + files
