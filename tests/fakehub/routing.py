"""The Hub's URL grammar, parsed from the still-encoded path into a typed `Route`.

aiohttp's router cannot express it: a repo id has one or two segments, a revision is one encoded
segment (``refs%2Fpr%2F1``) or the unencoded special refs (``refs/pr/1``, ``refs/convert/parquet``),
and file paths keep their slashes (hub-protocol.md §2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

from tests.fakehub.model import RepoKey, RepoType

_TYPES_BY_PLURAL = {t.plural: t for t in RepoType}
_SPECIAL_REF_KINDS = ("pr", "convert", "heads", "tags")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


class Action(StrEnum):
    RESOLVE = "resolve"
    RESOLVE_CACHE = "resolve-cache"
    INFO = "info"
    TREE = "tree"
    PATHS_INFO = "paths-info"
    REFS = "refs"
    COMMITS = "commits"
    XET_READ_TOKEN = "xet-read-token"
    WHOAMI = "whoami-v2"
    AGENT_HARNESSES = "agent-harnesses"
    LIST_REPOS = "list"
    ORG_OVERVIEW = "organization-overview"
    USER_OVERVIEW = "user-overview"


_REPO_ACTIONS = {
    "revision": Action.INFO,
    "tree": Action.TREE,
    "paths-info": Action.PATHS_INFO,
    "refs": Action.REFS,
    "commits": Action.COMMITS,
    "xet-read-token": Action.XET_READ_TOKEN,
}


@dataclass(frozen=True, slots=True)
class Route:
    action: Action
    repo: RepoKey | None = None
    revision: str | None = None
    path: str = ""
    before_repo: str = ""
    """The raw URL path before the repo id (to redirect a renamed repo)."""
    after_repo: str = ""
    """The raw URL path after the repo id."""

    def with_repo_id(self, repo_id: str) -> str:
        """This route's raw path with another repo id (the renamed-repo redirect target)."""
        return f"{self.before_repo}{repo_id}{self.after_repo}"


def parse_route(raw_path: str) -> Route | None:
    """The route of an encoded URL path, or None when the Hub has no such route."""
    segments = raw_path.lstrip("/").split("/")
    if segments[0] == "api":
        return _parse_api(segments[1:])
    repo_type = _TYPES_BY_PLURAL.get(segments[0])
    if repo_type is RepoType.MODEL:
        return None
    prefix = [segments[0]] if repo_type else []
    rest = segments[len(prefix) :]
    width = _repo_width(rest, {"resolve"})
    if width is None or len(rest) < width + 3:
        return None
    revision, path_segments = _take_revision(rest[width + 1 :])
    if not path_segments:
        return None
    return Route(
        Action.RESOLVE,
        RepoKey(repo_type or RepoType.MODEL, "/".join(rest[:width])),
        revision,
        _join(path_segments),
        "/" + "".join(f"{s}/" for s in prefix),
        "/" + "/".join(rest[width:]),
    )


def _parse_api(segments: list[str]) -> Route | None:
    if segments in (["whoami-v2"], ["agent-harnesses"]):
        return Route(Action(segments[0]))
    if len(segments) == 3 and segments[2] == "overview" and segments[1]:
        kind = {"organizations": Action.ORG_OVERVIEW, "users": Action.USER_OVERVIEW}
        if segments[0] in kind:
            return Route(kind[segments[0]], path=unquote(segments[1]))
    if segments[0] == "resolve-cache":
        return _parse_resolve_cache(segments[1:])
    repo_type = _TYPES_BY_PLURAL.get(segments[0])
    if repo_type is None:
        return None
    rest = segments[1:]
    if rest in ([], [""]):
        return Route(Action.LIST_REPOS, RepoKey(repo_type, ""))
    width = _repo_width(rest, set(_REPO_ACTIONS)) or min(len(rest), 2)
    repo = RepoKey(repo_type, "/".join(rest[:width]))
    before, after = f"/api/{segments[0]}/", "".join(f"/{s}" for s in rest[width:])
    tail = rest[width:]
    if not tail:
        return Route(Action.INFO, repo, None, "", before, after)
    action = _REPO_ACTIONS.get(tail[0])
    if action is None or (action is not Action.REFS and len(tail) < 2):
        return None
    if action is Action.REFS:
        return Route(action, repo, None, "", before, after) if len(tail) == 1 else None
    revision, path_segments = _take_revision(tail[1:])
    if path_segments and action is not Action.TREE:
        return None
    return Route(action, repo, revision, _join(path_segments), before, after)


def _parse_resolve_cache(segments: list[str]) -> Route | None:
    repo_type = _TYPES_BY_PLURAL.get(segments[0]) if segments else None
    rest = segments[1:]
    for width in (2, 1):
        if len(rest) > width + 1 and _COMMIT_RE.fullmatch(rest[width]):
            repo = RepoKey(repo_type or RepoType.MODEL, "/".join(rest[:width]))
            path = _join(rest[width + 1 :])
            return Route(Action.RESOLVE_CACHE, repo, rest[width], path) if repo_type else None
    return None


def _repo_width(segments: list[str], keywords: set[str]) -> int | None:
    """How many segments the repo id spans (2, or 1 for legacy ids), judged by the keyword after."""
    if len(segments) > 2 and segments[2] in keywords:
        return 2
    if len(segments) > 1 and segments[1] in keywords:
        return 1
    return None


def _take_revision(segments: list[str]) -> tuple[str, list[str]]:
    """Split ``segments`` into the revision and what follows; accepts unencoded special refs."""
    if len(segments) >= 3 and segments[0] == "refs" and segments[1] in _SPECIAL_REF_KINDS:
        return f"refs/{segments[1]}/{unquote(segments[2])}", segments[3:]
    return unquote(segments[0]), segments[1:]


def _join(segments: list[str]) -> str:
    return "/".join(unquote(s) for s in segments)
