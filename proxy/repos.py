"""Value objects for what a client names: repo, revision, path. Parsing is the only way in.

Every value here came from a hostile client or upstream, so each parser checks a strict pattern and
a length cap and raises `InvalidInput` naming the part that failed. Nothing built from these values
can reach the filesystem: blob paths derive only from hashes Hubwarden computed itself.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from proxy.errors import InvalidInput

MAX_REPO_ID_CHARS = 96 * 2 + 1
MAX_REVISION_CHARS = 256
MAX_PATH_CHARS = 1024
MAX_PATH_SEGMENTS = 64

_NAME_SEGMENT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
# Git ref names (git-check-ref-format), narrowed to printable ASCII.
_REF_CHARS = re.compile(r"[A-Za-z0-9._/+@=,-]+")
_SPECIAL_REF = re.compile(r"refs/(?:pr/[0-9]{1,9}|convert/[A-Za-z0-9._-]{1,64})")
_FORBIDDEN_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


class RepoType(enum.StrEnum):
    MODEL = "model"
    DATASET = "dataset"
    SPACE = "space"

    @property
    def plural(self) -> str:
        """The segment of API routes: models, datasets, spaces."""
        return f"{self.value}s"

    @property
    def url_prefix(self) -> str:
        """The prefix of file routes: empty for models, `datasets/` or `spaces/` otherwise."""
        return "" if self is RepoType.MODEL else f"{self.value}s/"

    @classmethod
    def from_plural(cls, plural: str) -> RepoType:
        for repo_type in cls:
            if repo_type.plural == plural:
                return repo_type
        raise InvalidInput("repo type", plural, "is not one of models, datasets, spaces")


@dataclass(frozen=True, slots=True)
class RepoRef:
    """A repo: its type and its id (`namespace/name`, or a legacy one-segment model id)."""

    repo_type: RepoType
    repo_id: str

    @classmethod
    def parse(cls, repo_type: RepoType, repo_id: str) -> RepoRef:
        """Validate a repo id. Raises InvalidInput."""
        if len(repo_id) > MAX_REPO_ID_CHARS:
            raise InvalidInput("repo id", repo_id, f"is longer than {MAX_REPO_ID_CHARS} characters")
        segments = repo_id.split("/")
        if len(segments) > 2 or (len(segments) == 1 and repo_type is not RepoType.MODEL):
            raise InvalidInput("repo id", repo_id, 'must be "namespace/name"')
        for segment in segments:
            if not _NAME_SEGMENT.fullmatch(segment) or ".." in segment or "--" in segment:
                raise InvalidInput(
                    "repo id",
                    repo_id,
                    "may hold only letters, digits, '.', '_' and '-' (no '..' or '--'), "
                    "up to 96 per part",
                )
        if repo_id.endswith(".git"):
            raise InvalidInput("repo id", repo_id, 'must not end in ".git"')
        return cls(repo_type, repo_id)

    @property
    def api_path(self) -> str:
        """`models/org/name`: the part after /api/."""
        return f"{self.repo_type.plural}/{self.repo_id}"

    @property
    def file_path(self) -> str:
        """`org/name` or `datasets/org/name`: the part before /resolve/."""
        return f"{self.repo_type.url_prefix}{self.repo_id}"

    def __str__(self) -> str:
        return self.file_path


@dataclass(frozen=True, slots=True)
class Revision:
    """What a client asks for: a branch, tag, special ref, or a 40-hex commit."""

    name: str

    @classmethod
    def parse(cls, name: str) -> Revision:
        """Validate a revision (already percent-decoded). Raises InvalidInput."""
        hint = "use a branch, tag, refs/pr/N, refs/convert/NAME or a 40-hex commit"
        if not name:
            raise InvalidInput("revision", name, f"is empty; {hint}")
        if len(name) > MAX_REVISION_CHARS:
            raise InvalidInput("revision", name, f"is longer than {MAX_REVISION_CHARS} characters")
        if not _REF_CHARS.fullmatch(name):
            raise InvalidInput("revision", name, f"holds characters a git ref cannot; {hint}")
        parts = name.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") or p.endswith(".lock") for p in parts):
            raise InvalidInput("revision", name, f"is not a valid git ref name; {hint}")
        if ".." in name or "@{" in name:
            raise InvalidInput("revision", name, f"is not a valid git ref name; {hint}")
        if name.startswith("refs/") and not _SPECIAL_REF.fullmatch(name):
            raise InvalidInput("revision", name, f"is not a ref the Hub serves; {hint}")
        return cls(name)

    @property
    def is_commit(self) -> bool:
        return _COMMIT.fullmatch(self.name) is not None

    def __str__(self) -> str:
        return self.name


def is_commit_sha(value: str) -> bool:
    """True for a 40-hex lowercase git commit id."""
    return _COMMIT.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class RepoPath:
    """A file or folder path inside a repo: relative, `/`-separated, no `.`/`..` segments."""

    value: str

    @classmethod
    def parse(cls, value: str, *, allow_empty: bool = False) -> RepoPath:
        """Validate a path (already percent-decoded). Raises InvalidInput."""
        if value == "" and allow_empty:
            return cls("")
        if not value:
            raise InvalidInput("path", value, "is empty; name a file in the repo")
        if len(value) > MAX_PATH_CHARS:
            raise InvalidInput("path", value, f"is longer than {MAX_PATH_CHARS} characters")
        if _FORBIDDEN_PATH_CHARS.search(value):
            raise InvalidInput("path", value, "holds a control character or a backslash")
        if value.startswith("/") or re.match(r"[A-Za-z]:", value):
            raise InvalidInput("path", value, "must be relative to the repo root")
        segments = value.split("/")
        if len(segments) > MAX_PATH_SEGMENTS:
            raise InvalidInput("path", value, f"has more than {MAX_PATH_SEGMENTS} segments")
        if any(s in ("", ".", "..") for s in segments):
            raise InvalidInput("path", value, "has an empty, '.' or '..' segment")
        return cls(value)

    @property
    def name(self) -> str:
        return self.value.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.value
