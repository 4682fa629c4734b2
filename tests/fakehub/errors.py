"""Why the fake Hub refuses a request; `app.py` renders each as the real Hub's wire error (§6.2)."""

from __future__ import annotations

from dataclasses import dataclass


class FakeHubError(Exception):
    """Root of the refusals the fake Hub answers with a Hub-shaped error."""

    status: int = 400
    code: str | None = None

    @property
    def message(self) -> str:
        return str(self)


@dataclass(eq=False)
class RepoNotFound(FakeHubError):
    """Unknown or private repo; 401 to anonymous callers, 404 to callers with a token."""

    anonymous: bool

    def __post_init__(self) -> None:
        self.status = 401 if self.anonymous else 404
        self.code = "RepoNotFound"

    def __str__(self) -> str:
        return "Invalid username or password." if self.anonymous else "Repository not found"


@dataclass(eq=False)
class GatedRepo(FakeHubError):
    """A gated repo's file asked for by someone not on its access list."""

    repo_type: str
    repo_id: str
    anonymous: bool

    def __post_init__(self) -> None:
        self.status = 401 if self.anonymous else 403
        self.code = "GatedRepo"

    def __str__(self) -> str:
        if self.anonymous:
            return (
                f"Access to {self.repo_type} {self.repo_id} is restricted. You must have access to "
                "it and be authenticated to access it. Please log in."
            )
        return (
            f"Access to {self.repo_type} {self.repo_id} is restricted and you are not in the "
            f"authorized list. Visit https://huggingface.co/{self.repo_id} to ask for access."
        )


@dataclass(eq=False)
class RevisionNotFound(FakeHubError):
    """A revision that is no branch, tag, PR, convert ref or known commit of the repo."""

    revision: str
    status = 404
    code = "RevisionNotFound"

    def __str__(self) -> str:
        return f"Invalid rev id: {self.revision}"


@dataclass(eq=False)
class EntryNotFound(FakeHubError):
    """A file (resolve) or folder (tree) absent at a commit."""

    text: str
    commit: str | None = None
    status = 404
    code = "EntryNotFound"

    def __str__(self) -> str:
        return self.text


class RepoDisabled(FakeHubError):
    """A disabled repo's files; the client needs this exact text to raise DisabledRepoError."""

    status = 403

    def __str__(self) -> str:
        return "Access to this resource is disabled."


class InvalidToken(FakeHubError):
    """An Authorization header whose token is not in the fake's table."""

    status = 401

    def __str__(self) -> str:
        return "Invalid credentials in Authorization header"


@dataclass(eq=False)
class BadRequest(FakeHubError):
    """A malformed query (bad cursor, bad Range, bad JSON)."""

    text: str
    status = 400

    def __str__(self) -> str:
        return self.text


@dataclass(eq=False)
class AccountNotFound(FakeHubError):
    """No organisation (or user) of that name: the overview routes' 404, without an error code."""

    name: str
    status = 404

    def __str__(self) -> str:
        return "Not Found"
