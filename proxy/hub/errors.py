"""The one place where domain exceptions become the Hub's wire shape (hub-protocol.md §6.2).

`huggingface_hub` reads `X-Error-Code` to pick the exception class and shows `X-Error-Message` to
the user: it is our UI. A HEAD carries the message in the header only.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.admin.review import ReviewError, ReviewNotFound
from proxy.errors import (
    AccessDenied,
    EntryNotFound,
    GatedRepo,
    Held,
    HubwardenError,
    IntegrityError,
    InvalidInput,
    NotReady,
    OfflineMiss,
    ReadOnly,
    RepoNotFound,
    RevisionNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    XetRefused,
)
from proxy.logs import current_request_id

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _header_safe(message: str) -> str:
    """One ASCII line, as HTTP headers and the client's message parser need."""
    return "".join(
        ch if (" " <= ch <= "~" or ch == "\t") else ch.encode("unicode_escape").decode("ascii")
        for ch in message[:1000]
    )[:1000]


def error_response(
    request: web.Request,
    status: int,
    message: str,
    *,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    all_headers = {"X-Error-Message": _header_safe(message)}
    if code:
        all_headers["X-Error-Code"] = code
    all_headers.update(headers or {})
    if request.method == "HEAD":
        return web.Response(status=status, headers=all_headers)
    return web.Response(
        status=status,
        headers=all_headers,
        text=json.dumps({"error": message}),
        content_type="application/json",
    )


def _status_of(exc: HubwardenError) -> tuple[int, str | None, dict[str, str]]:
    """Status, X-Error-Code and extra headers for each domain exception."""
    if isinstance(exc, InvalidInput):
        return 400, None, {}
    if isinstance(exc, ReviewNotFound):
        return 404, None, {}
    if isinstance(exc, ReviewError):
        return 409, None, {}
    if isinstance(exc, RepoNotFound):
        if exc.authenticated:
            return 404, "RepoNotFound", {}
        return (
            401,
            "RepoNotFound",
            {"WWW-Authenticate": 'Bearer realm="Authentication required", charset="UTF-8"'},
        )
    if isinstance(exc, GatedRepo):
        return (403 if exc.authenticated else 401), "GatedRepo", {}
    if isinstance(exc, RevisionNotFound):
        return 404, "RevisionNotFound", {}
    if isinstance(exc, EntryNotFound):
        return 404, "EntryNotFound", ({"X-Repo-Commit": exc.commit} if exc.commit else {})
    if isinstance(exc, AccessDenied | ReadOnly | XetRefused | Held):
        return 403, None, {}
    if isinstance(exc, NotReady):
        # GET 429 + Retry-After is retried by the client; a HEAD 503 likewise (§6.4).
        return 429, None, {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, UpstreamRateLimited):
        return 429, None, {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, UpstreamUnavailable):
        return exc.status, None, {}
    if isinstance(exc, UpstreamRejected | IntegrityError):
        return 502, None, {}
    if isinstance(exc, OfflineMiss):
        return 404, None, {}
    return 500, None, {}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HubwardenError as exc:
        status, code, headers = _status_of(exc)
        if isinstance(exc, NotReady) and request.method == "HEAD":
            status = 503
        if status >= 500:
            logger.warning("%s %s -> %d: %s", request.method, request.path, status, exc.message)
        return error_response(request, status, exc.message, code=code, headers=headers)
    except web.HTTPException:
        raise
    except Exception:  # the error boundary: log with traceback, answer 500 with a request id
        request_id = current_request_id() or uuid.uuid4().hex[:16]  # the middleware's, if any
        logger.exception("request %s failed: %s %s", request_id, request.method, request.path)
        return error_response(
            request,
            500,
            f"internal error in the mirror (request id {request_id}); tell your administrator",
            headers={"X-Request-Id": request_id},
        )
