"""The fake Hub origin: aiohttp handlers for the read routes of hub-protocol.md §3."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler as AiohttpHandler
from aiohttp.typedefs import Middleware
from multidict import MultiMapping

from tests.fakehub import wire
from tests.fakehub.bodies import content_disposition, content_type, send_content
from tests.fakehub.errors import (
    AccountNotFound,
    BadRequest,
    EntryNotFound,
    FakeHubError,
    InvalidToken,
)
from tests.fakehub.gitobjects import FileBlob
from tests.fakehub.model import Repo, entry_at, list_tree
from tests.fakehub.routing import Action, Route, parse_route
from tests.fakehub.state import HubState
from tests.fakehub.traffic import RECORD_KEY, Origin

STATE_KEY = web.AppKey("fakehub_state", HubState)
MAX_PATHS_INFO = 10_000
MAX_COMMITS_PAGE = 1_000
XET_TOKEN_TTL_S = 3600
CDN_URL_TTL_S = 3600
CAS_LINK = "https://cas.example/v1/reconstructions/{}"

Handler = Callable[[web.Request, HubState, Route, str | None], Awaitable[web.StreamResponse]]


def make_recording_middleware(state: HubState, origin: Origin) -> Middleware:
    """Record every request, play scheduled faults, render FakeHubError as the Hub does."""

    @web.middleware
    async def middleware(request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
        recorded = state.traffic.record(request, origin)
        request[RECORD_KEY] = recorded
        fault = state.traffic.take_fault(recorded)
        try:
            if fault is not None:
                response = await state.traffic.answer_fault(request, fault)
            else:
                response = await handler(request)
        except FakeHubError as error:
            response = wire.error_response(error, method=request.method)
        recorded.status = response.status
        return response

    return middleware


def create_hub_app(state: HubState) -> web.Application:
    app = web.Application(middlewares=[make_recording_middleware(state, Origin.HUB)])
    app[STATE_KEY] = state
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


async def dispatch(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    route = parse_route(request.rel_url.raw_path)
    if route is None:
        return web.Response(status=404, text="Not Found")
    methods = {Action.PATHS_INFO: {"POST"}}.get(route.action, {"GET", "HEAD"})
    if request.method not in methods:
        return web.Response(status=405, text="Method Not Allowed")
    user = state.user_for(request.headers)
    if route.repo is not None and route.repo not in state.repos and route.repo in state.renames:
        # The Hub answers a renamed repo's old id with a relative 307 to the new one.
        location = route.with_repo_id(state.renames[route.repo])
        if request.rel_url.raw_query_string:
            location += f"?{request.rel_url.raw_query_string}"
        return web.Response(status=307, headers={"Location": location})
    return await _HANDLERS[route.action](request, state, route, user)


def _repo(state: HubState, route: Route, user: str | None) -> Repo:
    assert route.repo is not None
    return state.visible_repo(route.repo, user)


async def resolve(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    repo = _repo(state, route, user)
    repo.check_files(user)
    commit = repo.resolve(route.revision or "main")
    blob = commit.files.get(route.path)
    if blob is None:
        raise EntryNotFound("Entry not found", commit.sha)
    if blob.is_lfs:
        return _lfs_redirect(state, repo, commit.sha, route.path, blob)
    location = f"/api/resolve-cache/{repo.repo_type.plural}/{repo.repo_id}/{commit.sha}/"
    location += f"{quote(route.path)}?etag=%22{blob.sha1}%22"
    headers = {"Location": location, "X-Linked-Etag": f'"{blob.sha1}"', "X-Repo-Commit": commit.sha}
    return web.Response(status=307, headers=headers, text=f"Temporary Redirect to {location}")


def _lfs_redirect(
    state: HubState, repo: Repo, commit_sha: str, path: str, blob: FileBlob
) -> web.Response:
    """The Hub's 302 to a signed CDN URL on another origin, with the Xet signals it also sends."""
    plural = repo.repo_type.plural
    cdn_path = f"/{plural}/{repo.repo_id}/{blob.sha256}/{path}"
    expires = int(time.time()) + CDN_URL_TTL_S
    query = f"Expires={expires}&Signature={state.sign(cdn_path, expires)}&Key-Pair-Id=FAKE"
    query += f"&response-content-disposition={quote(content_disposition(path), safe='')}"
    location = f"{state.cdn_url}{quote(cdn_path)}?{query}"
    token_url = f"{state.hub_url}/api/{plural}/{repo.repo_id}/xet-read-token/{commit_sha}"
    xet_links = f'<{token_url}>; rel="xet-auth", '
    xet_links += f'<{CAS_LINK.format(blob.xet_hash)}>; rel="xet-reconstruction-info"'
    headers = {
        "Location": location,
        "X-Repo-Commit": commit_sha,
        "X-Linked-Etag": f'"{blob.sha256}"',
        "X-Linked-Size": str(blob.size),
        "Cache-Control": "no-store",
        "X-Xet-Hash": blob.xet_hash,
        "Link": xet_links,
    }
    return web.Response(status=302, headers=headers, text=f"Found. Redirecting to {location}")


async def resolve_cache(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    repo = _repo(state, route, user)
    repo.check_files(user)
    commit = repo.resolve(route.revision or "")
    blob = commit.files.get(route.path)
    if blob is None or blob.is_lfs:
        raise EntryNotFound("Entry not found", commit.sha)
    headers = {
        "ETag": f'"{blob.sha1}"',
        "X-Repo-Commit": commit.sha,
        "Content-Type": content_type(route.path),
        "Content-Disposition": content_disposition(route.path),
        "Cache-Control": "private, max-age=10",
    }
    return await send_content(request, state.traffic, repo.served_content(blob), headers)


async def repo_info(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    repo = _repo(state, route, user)
    commit = repo.resolve(route.revision or "main")
    expand = _query_list(request.query, "expand")
    blobs = _is_true(request.query.get("blobs"))
    info = wire.repo_info(repo, commit, blobs=blobs, expand=expand)
    if _is_true(request.query.get("securityStatus")) and repo.security_repo_status is not None:
        info["securityRepoStatus"] = dict(repo.security_repo_status)
    return web.json_response(info)


async def tree(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    repo = _repo(state, route, user)
    revision = route.revision or "main"
    commit = repo.resolve(revision)
    recursive = _is_true(request.query.get("recursive"))
    expand = _is_true(request.query.get("expand"))
    try:
        entries = list_tree(commit, route.path, recursive=recursive)
    except EntryNotFound as error:
        raise EntryNotFound(f'{route.path} does not exist on "{revision}"') from error
    offset = _decode_cursor(request.query.get("cursor"))
    page = entries[offset : offset + state.tree_page_size]
    headers = {}
    if offset + state.tree_page_size < len(entries):
        cursor = _encode_cursor(offset + state.tree_page_size)
        headers["Link"] = _next_link(state, request, cursor=cursor)
    items = [wire.tree_entry(repo, commit, entry, expand=expand) for entry in page]
    return web.json_response(items, headers=headers)


async def paths_info(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    repo = _repo(state, route, user)
    commit = repo.resolve(route.revision or "main")
    paths, expand = await _read_paths_query(request)
    entries = {p: entry_at(commit, p.strip("/")) for p in paths}
    items = [wire.tree_entry(repo, commit, e, expand=expand) for e in entries.values() if e]
    return web.json_response(items)


async def refs(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    repo = _repo(state, route, user)
    include_prs = _is_true(request.query.get("include_prs"))
    return web.json_response(wire.refs(repo, include_prs=include_prs))


async def commits(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    repo = _repo(state, route, user)
    history = repo.history(route.revision or "main")
    try:
        page_number = int(request.query.get("p", "0"))
        limit = min(MAX_COMMITS_PAGE, int(request.query.get("limit", state.commits_page_size)))
    except ValueError as error:
        raise BadRequest("p and limit must be integers") from error
    if page_number < 0 or limit < 1:
        raise BadRequest("p must be >= 0 and limit >= 1")
    formatted = "formatted" in _query_list(request.query, "expand")
    start = page_number * limit
    items = [wire.commit_item(c, formatted=formatted) for c in history[start : start + limit]]
    headers = {"X-Total-Count": str(len(history))}
    if start + limit < len(history):
        headers["Link"] = _next_link(state, request, p=str(page_number + 1))
    return web.json_response(items, headers=headers)


async def xet_read_token(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    """Answers like the Hub; a proxy must never let a client get here (counted in the log)."""
    repo = _repo(state, route, user)
    repo.check_files(user)
    repo.resolve(route.revision or "main")
    expires = int(time.time()) + XET_TOKEN_TTL_S
    cas_url = f"{state.cdn_url}/cas"
    headers = {
        "X-Xet-Cas-Url": cas_url,
        "X-Xet-Access-Token": "fake-xet-read-token",
        "X-Xet-Token-Expiration": str(expires),
    }
    body = {"casUrl": cas_url, "accessToken": "fake-xet-read-token", "exp": expires}
    return web.json_response(body, headers=headers)


async def whoami(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    if user is None:
        raise InvalidToken
    found = next(u for u in state.users.values() if u.name == user)
    access_token = {"displayName": f"{user}-token", "role": "read"}
    return web.json_response(
        {
            "type": "user",
            "id": wire.repo_id_hash(user),
            "name": user,
            "fullname": user.title(),
            "orgs": [{"type": "org", "name": org} for org in found.orgs],
            "auth": {"type": "access_token", "accessToken": access_token},
        }
    )


async def agent_harnesses(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    return web.json_response({"standardEnvVars": [], "harnesses": {}})


async def list_repos(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    assert route.repo is not None
    search = request.query.get("search", "")
    items = [
        {"id": repo.repo_id, "private": repo.private, "sha": repo.head(), "tags": repo.topics}
        for key, repo in sorted(state.repos.items(), key=lambda kv: kv[0].repo_id)
        if key.repo_type is route.repo.repo_type
        and search in repo.repo_id
        and (not repo.private or user in repo.readers)
    ]
    return web.json_response(items)


async def organization_overview(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    organization = state.organizations.get(route.path)
    if organization is None:
        raise AccountNotFound(route.path)
    return web.json_response(wire.organization_overview(organization))


async def user_overview(
    request: web.Request, state: HubState, route: Route, user: str | None
) -> web.StreamResponse:
    found = next((u for u in state.users.values() if u.name == route.path), None)
    if found is None:
        raise AccountNotFound(route.path)
    return web.json_response(wire.user_overview(found))


_HANDLERS: dict[Action, Handler] = {
    Action.RESOLVE: resolve,
    Action.RESOLVE_CACHE: resolve_cache,
    Action.INFO: repo_info,
    Action.TREE: tree,
    Action.PATHS_INFO: paths_info,
    Action.REFS: refs,
    Action.COMMITS: commits,
    Action.XET_READ_TOKEN: xet_read_token,
    Action.WHOAMI: whoami,
    Action.AGENT_HARNESSES: agent_harnesses,
    Action.LIST_REPOS: list_repos,
    Action.ORG_OVERVIEW: organization_overview,
    Action.USER_OVERVIEW: user_overview,
}


def _is_true(value: str | None) -> bool:
    return value in {"true", "True", "1"}


def _query_list(query: MultiMapping[str], name: str) -> list[str]:
    """Repeated keys in both spellings the clients use: ``name=a&name=b`` and ``name[]=a``."""
    return [*query.getall(name, []), *query.getall(f"{name}[]", [])]


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise BadRequest(f"invalid cursor {cursor[:50]!r}") from error
    if not isinstance(offset, int) or offset < 0:
        raise BadRequest(f"invalid cursor {cursor[:50]!r}")
    return offset


def _next_link(state: HubState, request: web.Request, **query: str) -> str:
    """An absolute ``Link`` to the next page, as the Hub sends (the client refuses relative)."""
    next_url = request.rel_url.update_query(query)
    return f'<{state.hub_url}{next_url}>; rel="next"'


async def _read_paths_query(request: web.Request) -> tuple[list[str], bool]:
    """``paths`` and ``expand`` from a form (huggingface_hub) or a JSON body (the Hub's API)."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
            paths, expand = body["paths"], bool(body.get("expand", False))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise BadRequest('expected JSON {"paths": [...], "expand": bool}') from error
    else:
        form = await request.post()
        paths = [str(p) for p in form.getall("paths", [])]
        expand = _is_true(str(form.get("expand", "false")))
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise BadRequest("paths must be a list of strings")
    if len(paths) > MAX_PATHS_INFO:
        raise BadRequest(f"at most {MAX_PATHS_INFO} paths per request")
    return paths, expand
