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
    XetRefused,
)
from proxy.hub.context import services_of
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
MAX_BODY_BYTES = 1024 * 1024


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
    offset = _cursor_offset(request.query.get("cursor"))
    page = listed[offset : offset + page_size]
    headers = {}
    if offset + page_size < len(listed):
        query = {
            "recursive": str(recursive).lower(),
            "expand": str(expand).lower(),
            "cursor": str(offset + page_size),
        }
        base = public_base(request, services.settings.public_url)
        headers["Link"] = f'<{base}{request.path}?{urlencode(query)}>; rel="next"'
    return _json([e.to_json() for e in page], headers=headers)


def _cursor_offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 9:
        raise InvalidInput("cursor", cursor, "is not valid; follow the Link URL as given")
    return int(cursor)


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
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise InvalidInput("request body", f"{request.content_length} bytes", "is too large")
    if request.content_type == "application/json":
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError) as exc:
            raise InvalidInput("request body", "…", 'is not JSON {"paths": [...]}') from exc
        raw = body.get("paths", []) if isinstance(body, dict) else []
        paths = [p for p in raw if isinstance(p, str)] if isinstance(raw, list) else []
    else:
        form = await request.post()
        paths = [p for p in form.getall("paths", []) if isinstance(p, str)]
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
    revision = Revision.parse(request.match_info["rev"])
    caller = caller_of(request)
    if services.upstream is None:
        raise OfflineMiss(f"offline: the history of {repo} is not mirrored")
    await services.catalog.repo_info(repo, revision, caller)
    page = await services.upstream.commits_page(
        repo, revision.name, request.query.get("cursor"), caller.token
    )
    headers = {}
    if page.total is not None:
        headers["X-Total-Count"] = str(page.total)
    if page.cursor is not None:
        base = public_base(request, services.settings.public_url)
        path = f"/api/{repo.api_path}/commits/{quote(revision.name, safe='')}"
        headers["Link"] = f'<{base}{path}?{urlencode({"cursor": page.cursor})}>; rel="next"'
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
