"""Domain exceptions, rooted at `HubwardenError`.

    HubwardenError
    ├── InvalidInput            a repo id, revision, path, header or query a client sent is unusable
    ├── RepoNotFound            the repo does not exist upstream (or the caller may not see it)
    ├── GatedRepo               the repo is gated and the caller has no access
    ├── RevisionNotFound        the revision names no branch, tag or commit of the repo
    ├── EntryNotFound           the path is not in the repo at that commit (file or folder)
    ├── AccessDenied            the repo is disabled or the caller is refused
    ├── ReadOnly                a write route was called
    ├── XetRefused              an xet token route was called
    ├── Held                    the blob is not released (quarantined, rejected, blocked, pinned)
    ├── NotReady                the blob is being fetched or scanned and cannot be sent yet
    ├── IntegrityError          upstream bytes did not match what upstream advertised
    ├── UpstreamUnavailable     the upstream timed out, refused the connection or answered 5xx
    ├── UpstreamRateLimited     the upstream answered 429
    ├── UpstreamRejected        the upstream answered something we cannot use
    └── OfflineMiss             offline mode, and the store does not hold what was asked

The hub edge (`proxy/hub/errors.py`) maps each class to the Hub's wire shape; nothing in the
core builds HTTP responses.
"""

from __future__ import annotations

MAX_REFLECTED_CHARS = 200


def shown(value: object) -> str:
    """A client- or upstream-provided value made safe for a header, a log line or a message:
    control characters escaped, cut to MAX_REFLECTED_CHARS."""
    text = str(value)
    escaped = "".join(
        ch if (ch.isprintable() and ch.isascii()) else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )
    if len(escaped) > MAX_REFLECTED_CHARS:
        return escaped[: MAX_REFLECTED_CHARS - 1] + "…"
    return escaped


class HubwardenError(Exception):
    """Base of every error Hubwarden raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(HubwardenError):
    """A client sent a repo id, revision, path, header or query value that is refused."""

    def __init__(self, part: str, value: object, reason: str) -> None:
        self.part = part
        self.value = value
        self.reason = reason
        super().__init__(f'{part} "{shown(value)}" {reason}')


class RepoNotFound(HubwardenError):
    """The repo is unknown upstream, private, or not visible to the caller."""

    def __init__(self, repo: str, *, authenticated: bool) -> None:
        self.repo = repo
        self.authenticated = authenticated
        super().__init__(
            "Repository not found" if authenticated else "Invalid username or password."
        )


class GatedRepo(HubwardenError):
    """The repo is gated and the caller has no accepted access."""

    def __init__(self, repo: str, kind: str, *, authenticated: bool) -> None:
        self.repo = repo
        self.kind = kind
        self.authenticated = authenticated
        if authenticated:
            message = (
                f"Access to {kind} {repo} is restricted and you are not in the authorized list. "
                f"Visit the repo page upstream to ask for access."
            )
        else:
            message = (
                f"Access to {kind} {repo} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
        super().__init__(message)


class RevisionNotFound(HubwardenError):
    """The revision names no branch, tag or commit of the repo."""

    def __init__(self, revision: str) -> None:
        self.revision = revision
        super().__init__(f"Invalid rev id: {shown(revision)}")


class EntryNotFound(HubwardenError):
    """The path is not in the repo at that commit. `commit` is sent as X-Repo-Commit when known."""

    def __init__(
        self, path: str, *, commit: str | None, folder: bool = False, rev: str = ""
    ) -> None:
        self.path = path
        self.commit = commit
        self.folder = folder
        if folder:
            super().__init__(f'{shown(path)} does not exist on "{shown(rev)}"')
        else:
            super().__init__("Entry not found")


class AccessDenied(HubwardenError):
    """The repo is disabled upstream, or access is refused for another stated reason."""


class ReadOnly(HubwardenError):
    """A write route (upload, commit, branch creation...) was called on the mirror."""

    def __init__(self) -> None:
        super().__init__("Hubwarden is a read-only mirror: uploads and other writes are refused")


class XetRefused(HubwardenError):
    """An xet-read-token or xet-write-token route was called: Xet must never engage."""

    def __init__(self) -> None:
        super().__init__(
            "Xet transfers are disabled on this mirror; set HF_HUB_DISABLE_XET=1 and delete "
            "the trees/ folders of your Hugging Face cache, then retry"
        )


class Held(HubwardenError):
    """The blob may not be served: quarantined, rejected, or its repo is blocked."""

    def __init__(self, message: str, *, path: str = "", review_id: int | None = None) -> None:
        self.path = path
        self.review_id = review_id
        super().__init__(message)


class NotReady(HubwardenError):
    """The blob is still being fetched or scanned; the client should retry after `retry_after_s`."""

    def __init__(self, path: str, retry_after_s: int) -> None:
        self.path = path
        self.retry_after_s = retry_after_s
        super().__init__(
            f"{shown(path)} is being fetched and scanned by the mirror; retry in {retry_after_s} s"
        )


class IntegrityError(HubwardenError):
    """Upstream bytes hashed or sized differently from what upstream advertised."""

    def __init__(self, path: str, what: str, expected: str, got: str) -> None:
        self.path = path
        self.what = what
        self.expected = expected
        self.got = got
        super().__init__(
            f"{shown(path)}: upstream {what} mismatch (advertised {expected}, received {got})"
        )


class UpstreamUnavailable(HubwardenError):
    """The upstream timed out, refused the connection or answered with a server error."""

    def __init__(self, message: str, *, status: int = 502) -> None:
        self.status = status
        super().__init__(message)


class UpstreamRateLimited(HubwardenError):
    """The upstream answered 429; `retry_after_s` is what it asked for (or a default)."""

    def __init__(self, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            f"the upstream Hub is rate limiting this mirror; retry in {retry_after_s} s"
        )


class UpstreamRejected(HubwardenError):
    """The upstream answered something unusable (bad JSON, missing headers, oversized body)."""


class OfflineMiss(HubwardenError):
    """Offline mode: the store holds nothing for what was asked."""
