"""The JSON routes under /api (hub-protocol.md §3.3 to §3.10): thin handlers over the catalog."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from aiohttp import web

from proxy.catalog import Resolved
from proxy.errors import (
    EntryNotFound,
    InvalidInput,
    OfflineMiss,
    ReadOnly,
    RepoNotFound,
    UpstreamRejected,
    XetRefused,
)
from proxy.hub.bodies import read_form_or_json
from proxy.hub.context import services_of
from proxy.hub.cursors import cursors_of
from proxy.hub.requests import (
    caller_of,
    folder_path,
    public_base,
    query_bool,
    repo_of,
    revision_and_path,
)
from proxy.metadata import EntryType, TreeEntry, strip_xet
from proxy.repos import Revision
from scanners.report import JsonValue

TREE_PAGE_SIZE_EXPANDED = 50
MAX_PATHS_INFO = 1000
MAX_UPSTREAM_CURSOR_CHARS = 4000


def _json(data: JsonValue, *, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(data), content_type="application/json", headers=headers or {}
    )


async def repo_info(request: web.Request) -> web.Response:
    services = services_of(request)
    repo = repo_of(request)
    rev = request.match_info.get("rev")
    revision = Revision.parse(rev) if rev is not None else None
    caller = caller_of(request)
    record, info = await services.catalog.repo_info(repo, revision, caller)
    body = dict(info.raw)
    body["id"], body["sha"] = info.repo_id, info.sha
    wants_blobs = query_bool(request, "blobs") or "siblings" not in body
    if wants_blobs:
        entries = await services.catalog.tree(Resolved(record, info.sha), caller)
        body["siblings"] = [
            _sibling(e, blobs=query_bool(request, "blobs"))
            for e in entries
            if e.entry_type is EntryType.FILE
        ]
    return _json(strip_xet(body), headers=_warning(info.notice))


def _warning(notice: str) -> dict[str, str]:
    """`X-HF-Warning`, which the client logs once per topic (hub-protocol.md §2)."""
    return {"X-HF-Warning": f"hubwarden; {notice}"} if notice else {}


def _sibling(entry: TreeEntry, *, blobs: bool) -> JsonValue:
    data: dict[str, JsonValue] = {"rfilename": entry.path}
    if blobs:
        data["size"] = entry.size
        data["blobId"] = entry.oid
        if entry.lfs is not None:
            data["lfs"] = {
                "sha256": entry.lfs.sha256,
                "size": entry.lfs.size,
                "pointerSize": entry.lfs.pointer_size,
            }
    return data


def _children(entries: list[TreeEntry], folder: str, recursive: bool) -> list[TreeEntry]:
    prefix = f"{folder}/" if folder else ""
    below = [e for e in entries if e.path.startswith(prefix)]
    if recursive:
        return below
    return [e for e in below if "/" not in e.path[len(prefix) :]]


async def tree(request: web.Request) -> web.Response:
    services = services_of(request)
    repo = repo_of(request)
    wanted = revision_and_path(request)
    folder = folder_path(wanted.path).value
    recursive, expand = query_bool(request, "recursive"), query_bool(request, "expand")
    caller = caller_of(request)
    cursors, listing, rev = cursors_of(request), f"tree {folder}", wanted.revision.name
    cursor = request.query.get("cursor")
    offset = 0 if cursor is None else int(cursors.verify(listing, repo, rev, cursor) or "0")
    resolved = await services.catalog.resolve(repo, wanted.revision, caller)
    entries = await services.catalog.tree(resolved, caller)
    if folder:
        match = next((e for e in entries if e.path == folder), None)
        if match is None:
            raise EntryNotFound(
                folder, commit=resolved.commit, folder=True, rev=wanted.revision.name
            )
        if match.entry_type is EntryType.FILE:
            return _json([match.to_json()])
    listed = _children(entries, folder, recursive)
    page_size = services.settings.tree_page_size
    if expand:
        page_size = min(page_size, TREE_PAGE_SIZE_EXPANDED)
    page = listed[offset : offset + page_size]
    headers = {}
    if offset + page_size < len(listed):
        next_cursor = cursors.issue(listing, repo, rev, str(offset + page_size))
        query = {
            "recursive": str(recursive).lower(),
            "expand": str(expand).lower(),
            "cursor": next_cursor,
        }
        base = public_base(request, services.settings)
        headers["Link"] = f'<{base}{request.path}?{urlencode(query)}>; rel="next"'
    return _json([e.to_json() for e in page], headers=headers)


async def paths_info(request: web.Request) -> web.Response:
    services = services_of(request)
    repo = repo_of(request)
    wanted = revision_and_path(request)
    caller = caller_of(request)
    paths = await _requested_paths(request)
    resolved = await services.catalog.resolve(repo, wanted.revision, caller)
    entries = await services.catalog.entries(resolved, paths, caller)
    return _json([e.to_json() for e in entries])


async def _requested_paths(request: web.Request) -> list[str]:
    """`paths` from a form (repeated keys) or a JSON body {"paths": [...]}."""
    paths = (await read_form_or_json(request)).strings("paths")
    if len(paths) > MAX_PATHS_INFO:
        raise InvalidInput("paths", f"{len(paths)} paths", f"exceeds {MAX_PATHS_INFO}; split it")
    return [folder_path(p).value for p in paths]


async def refs(request: web.Request) -> web.Response:
    services = services_of(request)
    repo = repo_of(request)
    caller = caller_of(request)
    body = await services.catalog.refs(repo, caller, include_prs=query_bool(request, "include_prs"))
    return _json(body)


async def commits(request: web.Request) -> web.Response:
    services = services_of(request)
    repo = repo_of(request)
    rev = request.match_info["rev"]
    revision = Revision.parse(rev)
    caller = caller_of(request)
    if services.upstream is None:
        raise OfflineMiss(f"offline: the history of {repo} is not mirrored")
    cursors, cursor = cursors_of(request), request.query.get("cursor")
    upstream_cursor = None if cursor is None else cursors.verify("commits", repo, rev, cursor)
    await services.catalog.repo_info(repo, revision, caller)
    page = await services.upstream.commits_page(repo, revision.name, upstream_cursor, caller.token)
    headers = {}
    if page.total is not None:
        headers["X-Total-Count"] = str(page.total)
    if page.cursor is not None:
        if len(page.cursor) > MAX_UPSTREAM_CURSOR_CHARS:
            raise UpstreamRejected(f"the upstream's next-page cursor of {repo} is too long")
        query = urlencode({"cursor": cursors.issue("commits", repo, rev, page.cursor)})
        base = public_base(request, services.settings)
        path = f"/api/{repo.api_path}/commits/{quote(revision.name, safe='')}"
        headers["Link"] = f'<{base}{path}?{query}>; rel="next"'
    return _json([strip_xet(dict(c.raw)) for c in page.items], headers=headers)


async def whoami(request: web.Request) -> web.Response:
    services = services_of(request)
    caller = caller_of(request)
    if caller.token is None or services.upstream is None:
        raise RepoNotFound("whoami-v2", authenticated=False)
    return _json(await services.upstream.whoami(caller.token))


async def list_repos(request: web.Request) -> web.Response:
    """`/api/models?search=…`: the repos this mirror has recorded (no upstream call)."""
    services = services_of(request)
    search = request.query.get("search", "")[:200]
    plural = request.match_info["type"]
    recorded = await services.repository.list_repos(plural.removesuffix("s"), search)
    return _json([{"id": r.ref.repo_id, "private": r.private} for r in recorded[:1000]])


async def agent_harnesses(request: web.Request) -> web.Response:
    return _json({"standardEnvVars": [], "harnesses": {}})


async def discussions(request: web.Request) -> web.Response:
    return _json({"discussions": [], "count": 0, "start": 0, "numClosedDiscussions": 0})


async def xet_token(request: web.Request) -> web.Response:
    raise XetRefused


async def read_only(request: web.Request) -> web.Response:
    raise ReadOnly


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})
