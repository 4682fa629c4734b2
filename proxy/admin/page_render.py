"""How every admin page is rendered and protected: the common template context (who is signed
in, what the role may do, the CSRF token, the flash message), errors as pages (`error_pages`, the
one place they are mapped), and the headers that forbid script, framing and caching
(`security_headers`)."""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.admin import sessions
from proxy.admin.identity import Action, Identity
from proxy.admin.rescan import RescanImpossible
from proxy.admin.review import ReviewError, ReviewNotFound
from proxy.errors import HubwardenError, InvalidInput
from proxy.lifecycle import NotHeld

IDENTITY = web.RequestKey("admin_page_identity", Identity)
NONCE = web.RequestKey("admin_page_nonce", str)


class PageRefused(HubwardenError):
    """A request the pages refuse: shown as a page with `status`, a title and what to do."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        self.status = status
        self.title = title
        super().__init__(detail)


async def render(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """`template` with `context` and what every page shows (navigation, role, CSRF, flash)."""
    identity = request.get(IDENTITY)
    common: dict[str, Any] = {
        "me": identity,
        "can_decide": identity is not None and identity.can(Action.DECIDE),
        "can_block": identity is not None and identity.can(Action.BLOCK),
        "csrf": sessions.csrf_token(request),
        "flash": sessions.take_flash(request),
        "nonce": request[NONCE],
    }
    return aiohttp_jinja2.render_template(template, request, {**common, **context}, status=status)


async def error_page(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    context = {"status": status, "title": title, "detail": detail}
    return await render(request, "error.html", context, status=status)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where errors of the admin pages become pages."""
    try:
        return await handler(request)
    except PageRefused as exc:
        return await error_page(request, exc.status, exc.title, exc.message)
    except InvalidInput as exc:
        return await error_page(request, 400, "That cannot be used", exc.message)
    except NotHeld as exc:
        return await error_page(request, 409, "Already decided", exc.message)
    except RescanImpossible as exc:
        return await error_page(request, 409, "It cannot be scanned again", exc.message)
    except ReviewNotFound as exc:
        return await error_page(request, 404, "Not found", exc.message)
    except ReviewError as exc:
        return await error_page(request, 409, "That cannot be done now", exc.message)


_CSP = (
    "default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def _protect(headers: Any, nonce: str) -> None:
    headers["Content-Security-Policy"] = _CSP.format(nonce=nonce)
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "same-origin"


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pages are neither cached, framed nor allowed to run any script (the style has a nonce)."""
    request[NONCE] = secrets.token_urlsafe(16)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _protect(exc.headers, request[NONCE])
        raise
    _protect(response.headers, request[NONCE])
    return response
