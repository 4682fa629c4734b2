"""The JSON and error shapes of the real Hub (hub-protocol.md §3, §6.2), built from the model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from datetime import datetime

from aiohttp import web

from tests.fakehub.errors import FakeHubError
from tests.fakehub.model import Commit, DirectoryEntry, FileEntry, Repo, RepoType, TreeEntry
from tests.fakehub.state import Organization, User

JsonObject = dict[str, object]
WWW_AUTHENTICATE = 'Bearer realm="Authentication required", charset="UTF-8"'


def repo_id_hash(name: str) -> str:
    """A stable 24-hex id like the Hub's Mongo ``_id``."""
    return hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:24]


def iso(date: datetime) -> str:
    """A Hub date: UTC with milliseconds and a trailing ``Z`` (the client refuses others)."""
    return date.strftime("%Y-%m-%dT%H:%M:%S.") + f"{date.microsecond // 1000:03d}Z"


def last_commit(commit: Commit) -> JsonObject:
    return {"id": commit.sha, "title": commit.title, "date": iso(commit.date)}


def tree_entry(repo: Repo, commit: Commit, entry: TreeEntry, *, expand: bool) -> JsonObject:
    """One tree / paths-info entry; LFS files carry ``xetHash`` so that a leak is caught."""
    item: JsonObject
    if isinstance(entry, DirectoryEntry):
        item = {"type": "directory", "oid": entry.oid, "size": 0, "path": entry.path}
    else:
        item = _file_entry(entry)
    if expand:
        item["lastCommit"] = last_commit(repo.last_commit_of(commit, entry.path))
        if entry.path in repo.file_security and isinstance(entry, FileEntry):
            item["securityFileStatus"] = dict(repo.file_security[entry.path])
    return item


def _file_entry(entry: FileEntry) -> JsonObject:
    blob = entry.blob
    item: JsonObject = {"type": "file", "oid": blob.oid, "size": blob.size, "path": entry.path}
    if blob.is_lfs:
        item["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
        item["xetHash"] = blob.xet_hash
    return item


def repo_info(repo: Repo, commit: Commit, *, blobs: bool, expand: Collection[str]) -> JsonObject:
    """Repo info as ``GET /api/{type}/{repo}[/revision/{rev}]`` answers it.

    With ``expand`` only the asked properties come back (plus ``id``/``_id``), as on the Hub.
    """
    info: JsonObject = {
        "_id": repo_id_hash(repo.repo_id),
        "id": repo.repo_id,
        "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
        "sha": commit.sha,
        "lastModified": iso(commit.date),
        "createdAt": iso(repo.created_at),
        "private": repo.private,
        "gated": repo.gated,
        "disabled": repo.disabled,
        "tags": list(repo.topics),
        "downloads": 0,
        "likes": 0,
        "cardData": dict(repo.card_data),
        "siblings": [_sibling(FileEntry(p, b), blobs=blobs) for p, b in commit.files.items()],
        "xetEnabled": True,
        "usedStorage": sum(b.size for b in commit.files.values()),
    }
    if repo.repo_type is RepoType.MODEL:
        info["modelId"] = repo.repo_id
    info.update(repo.extra_info)
    if expand:
        return {k: v for k, v in info.items() if k in {"_id", "id", *expand}}
    return info


def _sibling(entry: FileEntry, *, blobs: bool) -> JsonObject:
    blob = entry.blob
    sibling: JsonObject = {"rfilename": entry.path}
    if blobs:
        sibling.update(size=blob.size, blobId=blob.oid)
        if blob.is_lfs:
            sibling["lfs"] = {
                "sha256": blob.sha256,
                "size": blob.size,
                "pointerSize": len(blob.pointer),
            }
    if blob.is_lfs:
        sibling["xetHash"] = blob.xet_hash
    return sibling


def commit_item(commit: Commit, *, formatted: bool) -> JsonObject:
    """One item of the commits listing (§3.7)."""
    item: JsonObject = {
        "id": commit.sha,
        "title": commit.title,
        "message": commit.message,
        "date": iso(commit.date),
        "authors": [
            {"user": commit.author, "avatar": f"https://example.invalid/{commit.author}.png"}
        ],
    }
    if formatted:
        item["formatted"] = {
            "title": f"<p>{commit.title}</p>",
            "message": f"<p>{commit.message}</p>",
        }
    return item


def refs(repo: Repo, *, include_prs: bool) -> JsonObject:
    """The refs listing (§3.6): ``branches``, ``converts`` and ``tags`` always present."""

    def ref(name: str, full: str, sha: str) -> JsonObject:
        return {"name": name, "ref": full, "targetCommit": sha}

    answer: JsonObject = {
        "branches": [ref(n, f"refs/heads/{n}", s) for n, s in sorted(repo.branches.items())],
        "converts": [ref(n, f"refs/convert/{n}", s) for n, s in sorted(repo.converts.items())],
        "tags": [ref(n, f"refs/tags/{n}", s) for n, s in sorted(repo.git_tags.items())],
    }
    if include_prs:
        answer["pullRequests"] = [
            ref(f"refs/pr/{n}", f"refs/pr/{n}", s) for n, s in sorted(repo.pull_requests.items())
        ]
    return answer


def error_response(error: FakeHubError, *, method: str) -> web.Response:
    """The Hub's error: status, ``X-Error-Code`` / ``X-Error-Message``, JSON body (not on HEAD)."""
    headers = {"X-Error-Message": error.message}
    if error.code:
        headers["X-Error-Code"] = error.code
    if error.status == 401 and error.code:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    commit = getattr(error, "commit", None)
    if commit:
        headers["X-Repo-Commit"] = commit
    body = b"" if method == "HEAD" else json.dumps({"error": error.message}).encode()
    return web.Response(
        status=error.status, headers=headers, body=body, content_type="application/json"
    )


def organization_overview(organization: Organization) -> JsonObject:
    """``GET /api/organizations/{name}/overview``, as huggingface_hub's `Organization` reads it."""
    overview: JsonObject = {
        "_id": repo_id_hash(organization.name),
        "name": organization.name,
        "fullname": organization.fullname,
        "avatarUrl": f"https://example.invalid/{organization.name}.png",
        "type": "org",
        "isVerified": organization.verified,
        "numUsers": 1,
        "numModels": 0,
        "numFollowers": 0,
    }
    if organization.created_at is not None:
        overview["createdAt"] = iso(organization.created_at)
    return overview


def user_overview(user: User) -> JsonObject:
    """``GET /api/users/{name}/overview``, as huggingface_hub's `User` reads it."""
    overview: JsonObject = {
        "_id": repo_id_hash(user.name),
        "user": user.name,
        "fullname": user.name.title(),
        "avatarUrl": f"https://example.invalid/{user.name}.png",
        "type": "user",
        "isPro": False,
        "numModels": 0,
        "numFollowers": 0,
        "orgs": [{"name": org, "fullname": org.title()} for org in user.orgs],
    }
    if user.created_at is not None:
        overview["createdAt"] = iso(user.created_at)
    return overview
