"""The fake CDN: another origin serving LFS bytes behind signed URLs, like cdn-lfs / xet-bridge.

Its ETag is the (fake) Xet hash, never the sha256: a proxy must take the sha256 from the Hub's
``X-Linked-Etag``, not from here. It records whether any request carried ``Authorization``.
"""

from __future__ import annotations

import hmac
import re
import time

from aiohttp import web

from tests.fakehub.app import make_recording_middleware
from tests.fakehub.bodies import send_content
from tests.fakehub.model import RepoKey, RepoType
from tests.fakehub.state import HubState
from tests.fakehub.traffic import Origin

CDN_STATE_KEY = web.AppKey("fakehub_cdn_state", HubState)
_CDN_PATH_RE = re.compile(r"/(models|datasets|spaces)/(.+?)/([0-9a-f]{64})/(.+)")
_TYPES = {t.plural: t for t in RepoType}


def create_cdn_app(state: HubState) -> web.Application:
    app = web.Application(middlewares=[make_recording_middleware(state, Origin.CDN)])
    app[CDN_STATE_KEY] = state
    app.router.add_route("*", "/{tail:.*}", serve_blob)
    return app


async def serve_blob(request: web.Request) -> web.StreamResponse:
    """GET/HEAD of a signed LFS URL: the bytes (tampered ones if set), Range honoured."""
    state = request.app[CDN_STATE_KEY]
    if request.method not in {"GET", "HEAD"}:
        return web.Response(status=405)
    match = _CDN_PATH_RE.fullmatch(request.path)
    if match is None:
        return web.Response(status=404, text="NoSuchKey")
    if not _is_signed(state, request):
        return web.Response(status=403, text="AccessDenied: signature invalid or expired")
    key = RepoKey(_TYPES[match[1]], match[2])
    repo = state.repos.get(key)
    if repo is None and key in state.renames:
        repo = state.repos.get(RepoKey(key.repo_type, state.renames[key]))
    blob = state.find_lfs_blob(repo, match[3]) if repo else None
    if repo is None or blob is None:
        return web.Response(status=404, text="NoSuchKey")
    headers = {
        "ETag": f'"{blob.xet_hash}"',
        "Content-Type": "application/octet-stream",
        "Content-Disposition": request.query.get("response-content-disposition", "inline"),
        "Cache-Control": "public, max-age=604800, immutable",
        "X-Cache": "Miss from cloudfront",
    }
    return await send_content(request, state.traffic, repo.served_content(blob), headers)


def _is_signed(state: HubState, request: web.Request) -> bool:
    try:
        expires = int(request.query.get("Expires", ""))
    except ValueError:
        return False
    signature = request.query.get("Signature", "")
    valid = hmac.compare_digest(state.sign(request.path, expires), signature)
    return valid and expires > time.time()
