"""The JSON routes under /api (hub-protocol.md §3.3 to §3.10): thin handlers over the catalog."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from aiohttp import web

from proxy.catalog import Resolved
from proxy.errors import (
    EntryNotFound,
    InvalidInput,
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
from proxy.metadata import CommitInfo, EntryType, TreeEntry, strip_xet
from proxy.repos import Revision
from proxy.trust.access import local_whoami
from scanners.report import JsonValue

TREE_PAGE_SIZE_EXPANDED = 50
COMMITS_PAGE_SIZE = 50
MAX_OFFSET_DIGITS = 9
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
    """The commit listing (hub-protocol.md §3.7) of the commit the revision serves, paged from
    its recorded listing, online and offline alike; a listing too long to record is passed
    through from upstream, page by page."""
    services = services_of(request)
    repo = repo_of(request)
    rev = request.match_info["rev"]
    caller = caller_of(request)
    cursor = request.query.get("cursor")
    value = None if cursor is None else cursors_of(request).verify("commits", repo, rev, cursor)
    resolved = await services.catalog.resolve(repo, Revision.parse(rev), caller)
    offset = _offset_of(value)
    history = None
    if value is None or offset is not None:
        history = await services.catalog.history(resolved, caller)
    if history is None:
        return await _upstream_commits(request, resolved, value)
    return _commits_page(request, resolved, history, offset or 0)


def _offset_of(value: str | None) -> int | None:
    """A recorded listing's cursor is an offset; anything else is an upstream cursor (base64url
    of a query string, whose first character is always a letter: never all digits)."""
    if value is None or not value.isdigit() or len(value) > MAX_OFFSET_DIGITS:
        return None
    return int(value)


def _formatted(request: web.Request) -> bool:
    """`expand[]=formatted` (list_repo_commits(formatted=True)) or `expand=formatted`."""
    return "formatted" in (
        *request.query.getall("expand", []),
        *request.query.getall("expand[]", []),
    )


def _commits_page(
    request: web.Request, resolved: Resolved, history: list[CommitInfo], offset: int
) -> web.Response:
    settings = services_of(request).settings
    # The Hub pages commits by 50; a smaller tree page size (tests) makes these pages small too.
    page_size = min(COMMITS_PAGE_SIZE, settings.tree_page_size)
    formatted = _formatted(request)
    headers = {"X-Total-Count": str(len(history))}
    if offset + page_size < len(history):
        headers["Link"] = _commits_link(request, resolved, str(offset + page_size), formatted)
    page = history[offset : offset + page_size]
    return _json([_commit_json(c, formatted=formatted) for c in page], headers=headers)


def _commit_json(commit: CommitInfo, *, formatted: bool) -> JsonValue:
    item = {k: v for k, v in commit.raw.items() if formatted or k != "formatted"}
    return strip_xet(item)


def _commits_link(request: web.Request, resolved: Resolved, value: str, formatted: bool) -> str:
    """The next page's absolute URL: the revision as asked, the cursor bound to it (as tree's)."""
    repo, rev = resolved.repo.ref, request.match_info["rev"]
    query = [("cursor", cursors_of(request).issue("commits", repo, rev, value))]
    if formatted:
        query.append(("expand[]", "formatted"))
    base = public_base(request, services_of(request).settings)
    path = f"/api/{repo.api_path}/commits/{quote(rev, safe='')}"
    return f'<{base}{path}?{urlencode(query)}>; rel="next"'


async def _upstream_commits(
    request: web.Request, resolved: Resolved, upstream_cursor: str | None
) -> web.Response:
    """One upstream page of a listing too long to record, its cursor wrapped in ours."""
    upstream = services_of(request).upstream
    repo = resolved.repo.ref
    if upstream is None:
        raise InvalidInput("cursor", upstream_cursor, "was issued online; list from the start")
    page = await upstream.commits_page(
        repo, resolved.commit, upstream_cursor, caller_of(request).token,
        formatted=_formatted(request),
    )  # fmt: skip
    headers = {}
    if page.total is not None:
        headers["X-Total-Count"] = str(page.total)
    if page.cursor is not None:
        if len(page.cursor) > MAX_UPSTREAM_CURSOR_CHARS:
            raise UpstreamRejected(f"the upstream's next-page cursor of {repo} is too long")
        headers["Link"] = _commits_link(request, resolved, page.cursor, _formatted(request))
    return _json([strip_xet(dict(c.raw)) for c in page.items], headers=headers)


async def whoami(request: web.Request) -> web.Response:
    """Online: the upstream's answer for the client's token; offline: the local identity of a
    token this mirror issued (`hubwarden admin tokens`)."""
    services = services_of(request)
    caller = caller_of(request)
    if caller.token is None:
        raise RepoNotFound("whoami-v2", authenticated=False)
    if services.upstream is None:
        return _json(await local_whoami(services.identities, caller.token))
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
