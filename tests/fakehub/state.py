"""Everything the fake Hub's two servers share: repos, users, renames, URLs, traffic, limits."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from tests.fakehub.errors import InvalidToken, RepoNotFound
from tests.fakehub.gitobjects import FileBlob, LfsRule
from tests.fakehub.model import Clock, Repo, RepoKey
from tests.fakehub.traffic import Traffic


@dataclass(frozen=True, slots=True)
class User:
    name: str
    token: str = field(repr=False)
    orgs: tuple[str, ...] = ()
    created_at: datetime | None = None
    """The account's creation (``createdAt`` of its overview), when a test gives one."""


@dataclass(frozen=True, slots=True)
class Organization:
    """An organisation as its overview tells it (``/api/organizations/{name}/overview``)."""

    name: str
    verified: bool = False
    created_at: datetime | None = None
    fullname: str = ""


@dataclass(eq=False)
class HubState:
    lfs_rule: LfsRule = field(default_factory=LfsRule)
    clock: Clock = field(default_factory=Clock)
    tree_page_size: int = 3
    commits_page_size: int = 3
    repos: dict[RepoKey, Repo] = field(default_factory=dict)
    renames: dict[RepoKey, str] = field(default_factory=dict)
    """Old repo key → new repo id (same type)."""
    users: dict[str, User] = field(default_factory=dict)
    """Token → user."""
    organizations: dict[str, Organization] = field(default_factory=dict)
    """Name → organisation (those with an overview)."""
    traffic: Traffic = field(default_factory=Traffic)
    hub_url: str = ""
    cdn_url: str = ""
    signing_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def user_for(self, headers: Mapping[str, str]) -> str | None:
        """The user named by ``Authorization: Bearer <token>``; None when anonymous."""
        header = headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        for known, user in self.users.items():
            if scheme.lower() == "bearer" and hmac.compare_digest(known, token.strip()):
                return user.name
        raise InvalidToken

    def visible_repo(self, key: RepoKey, user: str | None) -> Repo:
        """The repo if ``user`` may see it; else RepoNotFound exactly as for a missing repo."""
        repo = self.repos.get(key)
        if repo is None:
            raise RepoNotFound(anonymous=user is None)
        repo.check_visible(user)
        return repo

    def sign(self, path: str, expires: int) -> str:
        message = f"{path}\n{expires}".encode()
        return hmac.new(self.signing_key, message, hashlib.sha256).hexdigest()

    lfs_blobs: dict[str, FileBlob] = field(default_factory=dict, repr=False)
    """LFS blobs already served, by sha256 (content-addressed, so never stale)."""

    def find_lfs_blob(self, repo: Repo, sha256: str) -> FileBlob | None:
        """The LFS blob ``sha256`` of ``repo`` (signed CDN URLs only name blobs of their repo)."""
        if sha256 in self.lfs_blobs:
            return self.lfs_blobs[sha256]
        for commit in repo.commits.values():
            for blob in commit.files.values():
                if blob.is_lfs and blob.sha256 == sha256:
                    self.lfs_blobs[sha256] = blob
                    return blob
        return None
