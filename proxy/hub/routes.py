"""The Hub's URL map. Order matters where one-segment legacy model ids overlap two-segment ids,
and the two catch-alls come last: writes anywhere are refused as read-only, and any other path or
method is a 404 that tells whoever reached it (often a browser, or a client without HF_ENDPOINT's
base path) that this is a Hub mirror and how to use it.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.errors import shown
from proxy.hub import api, files, held
from proxy.hub.context import services_of
from proxy.hub.errors import error_response
from proxy.hub.requests import public_base

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

_READ_ACTIONS: list[tuple[str, str, Handler]] = [
    ("GET", "", api.repo_info),
    ("GET", "/revision/{rev:.+}", api.repo_info),
    ("GET", "/tree/{rev}", api.tree),
    ("GET", "/tree/{rev}/{path:.+}", api.tree),
    ("POST", "/paths-info/{rev}", api.paths_info),
    ("POST", "/paths-info/{rev}/{path:.+}", api.paths_info),
    ("GET", "/refs", api.refs),
    ("GET", "/commits/{rev:.+}", api.commits),
    ("GET", "/xet-read-token/{rev:.+}", api.xet_token),
    ("GET", "/xet-write-token/{rev:.+}", api.xet_token),
    ("GET", "/discussions", api.discussions),
]


def add_hub_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/healthz", api.healthz)
    router.add_get("/held/{id}", held.held_page)
    router.add_post("/held/{id}/requests", held.request_exception)
    router.add_get("/info", _not_served)  # datasets-server (hub-protocol.md §3.11)
    router.add_get("/api/agent-harnesses", api.agent_harnesses)
    router.add_get("/api/whoami-v2", api.whoami)
    router.add_get(r"/api/{type:models|datasets|spaces}", api.list_repos)
    # Legacy one-segment model ids whose routes would otherwise read as a two-segment repo.
    router.add_get("/api/models/{name}/refs", api.refs)
    router.add_get("/api/models/{name}/discussions", api.discussions)
    for prefix in (r"/api/{type:models|datasets|spaces}/{namespace}/{name}", "/api/models/{name}"):
        for method, suffix, handler in _READ_ACTIONS:
            router.add_route(method, prefix + suffix, handler)
    for pattern in (
        "/{type:datasets|spaces}/{namespace}/{name}/resolve/{rev}/{path:.+}",
        "/{namespace}/{name}/resolve/{rev}/{path:.+}",
        "/{name}/resolve/{rev}/{path:.+}",
    ):
        router.add_route("GET", pattern, files.resolve_file)
        router.add_route("HEAD", pattern, files.resolve_file)
    for method in WRITE_METHODS:
        router.add_route(method, "/{tail:.*}", api.read_only)
    # Last: without it a GET on `/` or on a repo's page would be a bare 405 (the path matches
    # the write catch-all above), which tells nobody what this server is.
    router.add_route("*", "/{tail:.*}", _unknown_route)


async def _not_served(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text="not served by this mirror")


async def _unknown_route(request: web.Request) -> web.Response:
    """Any path or method the Hub's API does not have: 404 in the Hub's error shape."""
    endpoint = public_base(request, services_of(request).settings)
    message = (
        f"{request.method} {shown(request.path)} is not a route of this server: it is a "
        "Hugging Face Hub mirror (Hubwarden) with no web pages; use it from huggingface_hub, "
        f"transformers, datasets or the hf CLI with HF_ENDPOINT={endpoint}"
    )
    return error_response(request, 404, message)
