"""The admins' web pages under `/admin/`: server-rendered (aiohttp-jinja2, autoescape on), no
JavaScript and no build step, over the same `Review` service as the REST API and the CLI.

    GET  /admin/                           summary: counts, recent decisions          view
    GET  /admin/signin                     the sign-in form (an admin token)          -
    POST /admin/signin                     (token, next): 303 back to `next`          -
    POST /admin/signout                                                               -
    GET  /admin/quarantine                 held and rejected files (?state=, ?repo=)  view
    GET  /admin/quarantine/{id}            one file: findings, history, decision      view
    POST /admin/quarantine/{id}/release    (comment)                                  decide
    POST /admin/quarantine/{id}/reject     (comment)                                  decide
    GET  /admin/changes                    pinned changes, served vs waiting          view
    POST /admin/changes/approve|reject     (type, repo, ref, comment)                 decide
    GET  /admin/repos                      blocked repos                              view
    POST /admin/repos/block|unblock        (type, repo, comment)                      block
    GET  /admin/audit                      the audit log (?action=, ?limit=)          view

A page opened without a session answers 303 to the sign-in page, which leads back to it. Every
POST must carry the session's CSRF token (`proxy.admin.sessions`), else 403. The roles are the
API's (`proxy.admin.identity.PERMISSIONS`): a page hides the forms the role may not use and the
POST is refused with 403 all the same. Errors are pages too, mapped once by `_errors`.

Every page is sent with a Content-Security-Policy that allows no script at all and only the base
template's own style (by nonce), and is neither cached nor framed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.admin import sessions
from proxy.admin.identity import Action, Identity, utcnow
from proxy.admin.review import (
    AuditQuery,
    HeldItem,
    PinnedChange,
    Review,
    ReviewError,
    ReviewNotFound,
)
from proxy.errors import HubwardenError, InvalidInput, shown
from proxy.hub.context import SERVICES
from proxy.hub.requests import review_id_of
from proxy.lifecycle import NotHeld
from proxy.repos import RepoRef, RepoType
from proxy.services import Services
from proxy.store.models import BlobState
from proxy.store.repository import AuditRecord
from proxy.store.review import HeldBlob
from scanners.report import Finding, JsonValue

logger = logging.getLogger(__name__)

PREFIX = "/admin"
MAX_BODY_BYTES = 64 * 1024
MAX_ROWS = 200  # rows of the quarantine list on one page; the filters narrow it
MAX_FILTER_CHARS = 200
MAX_DETAIL_CHARS = 400
MAX_SNIPPET_CHARS = 4000  # a decompiled pickle, shown whole up to this
RECENT_DECISIONS = 10
DECISIONS = frozenset(
    {"review.released", "review.rejected", "repo.blocked", "repo.unblocked", "change.approved",
     "change.rejected"}
)  # fmt: skip
IDENTITY = web.RequestKey("admin_page_identity", Identity)
NONCE = web.RequestKey("admin_page_nonce", str)
PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PageRefused(HubwardenError):
    """A request the pages refuse: shown as a page with `status`, a title and what to do."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        self.status = status
        self.title = title
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class Page:
    """One route: the action its role needs (None: open to anyone, e.g. sign-in) and its handler."""

    method: str
    path: str
    action: Action | None
    handler: PageHandler


# -- what the templates show -------------------------------------------------------------------


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


def age(since: dt.datetime, now: dt.datetime | None = None) -> str:
    seconds = max(0, int(((now or utcnow()) - since).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_SHOWN_APART = frozenset({"comment", "reason", "detail", "before", "after", "path"})
MAX_BRIEF_CHARS = 120


def brief(details: Mapping[str, JsonValue]) -> list[str]:
    """An audit event's other details as short `key: value` lines (ids, hashes, names)."""
    lines = []
    for key, value in details.items():
        if key in _SHOWN_APART or value is None or isinstance(value, dict):
            continue
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        lines.append(
            f"{key}: {text if len(text) <= MAX_BRIEF_CHARS else text[:MAX_BRIEF_CHARS] + '…'}"
        )
    return lines


@dataclass(frozen=True, slots=True)
class Detail:
    key: str
    text: str
    block: bool  # several lines (a decompiled snippet): shown as preformatted text


@dataclass(frozen=True, slots=True)
class FindingView:
    finding: Finding
    details: tuple[Detail, ...]


@dataclass(frozen=True, slots=True)
class HeldRow:
    blob: HeldBlob
    worst: Finding | None


def _details(details: Mapping[str, JsonValue], prefix: str = "") -> Iterable[Detail]:
    """A finding's details as lines (nested objects flattened one level per key), cut short."""
    for key, value in details.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _details(value, f"{name}.")
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        block = "\n" in text
        limit = MAX_SNIPPET_CHARS if block else MAX_DETAIL_CHARS
        yield Detail(name, text if len(text) <= limit else text[:limit] + "…", block)


def _worst(findings: Iterable[Finding]) -> Finding | None:
    return max(findings, key=lambda f: f.severity.rank, default=None)


@dataclass(frozen=True, slots=True)
class HeldFilter:
    """The quarantine list's filters, from the query string."""

    state: BlobState | None
    repo: str

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> HeldFilter:
        state_text = query.get("state", "")
        states = {BlobState.QUARANTINED.value, BlobState.REJECTED.value}
        if state_text and state_text not in states:
            raise InvalidInput("state", state_text, "must be quarantined or rejected (or empty)")
        repo = query.get("repo", "").strip()
        if len(repo) > MAX_FILTER_CHARS:
            raise InvalidInput("repo filter", repo, f"is longer than {MAX_FILTER_CHARS} characters")
        return cls(BlobState(state_text) if state_text else None, repo)

    def keeps(self, blob: HeldBlob) -> bool:
        if self.state is not None and blob.state is not self.state:
            return False
        name = blob.repo.repo_id if blob.repo else ""
        return self.repo.lower() in name.lower()


# -- parsing -----------------------------------------------------------------------------------


def _services(request: web.Request) -> Services:
    return request.config_dict[SERVICES]


def _review(request: web.Request) -> Review:
    return _services(request).review


async def _field(request: web.Request, name: str, *, required: str = "") -> str:
    """A text field of the POSTed form; `required` says what to write when it is empty."""
    value = (await request.post()).get(name)
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        raise InvalidInput(name, text, f"is required: {required}")
    return text


async def _comment(request: web.Request) -> str:
    return await _field(request, "comment", required="say why, for the audit log")


async def _repo(request: web.Request) -> RepoRef:
    type_text = await _field(request, "type", required="model, dataset or space")
    types = {t.value: t for t in RepoType}
    if type_text not in types:
        raise InvalidInput("repo type", type_text, "is not one of model, dataset, space")
    return RepoRef.parse(types[type_text], await _field(request, "repo", required="org/name"))


def _actor(request: web.Request) -> str:
    return f"token:{request[IDENTITY].name}"


def _next_page(value: str | None) -> str:
    """Where sign-in leads: a page of ours (never another site), else the summary."""
    if (
        value
        and len(value) <= 2000
        and value.startswith(PREFIX + "/")
        and not value.startswith(PREFIX + "/signin")
        and all("!" <= ch <= "~" and ch != "\\" for ch in value)
    ):
        return value
    return PREFIX + "/"


def _see(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location=location)


# -- rendering ---------------------------------------------------------------------------------


async def _render(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
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


async def _error_page(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    context = {"status": status, "title": title, "detail": detail}
    return await _render(request, "error.html", context, status=status)


# -- handlers: signing in and out --------------------------------------------------------------


async def signin_form(request: web.Request) -> web.StreamResponse:
    next_page = _next_page(request.query.get("next"))
    if await sessions.signed_in(request, _services(request).identities) is not None:
        raise _see(next_page)
    return await _render(request, "signin.html", {"next": next_page, "error": None})


async def signin(request: web.Request) -> web.StreamResponse:
    next_page = _next_page(await _field(request, "next"))
    token = await _field(request, "token")
    identity = await _services(request).identities.authenticate(token) if token else None
    error = None
    if identity is None:
        error = "That token is unknown, revoked or expired. Paste a whole hwa_… admin token."
    elif not identity.can(Action.VIEW):
        error = "A client token cannot sign in here: use a viewer, reviewer or admin token."
    if identity is None or error:
        logger.warning("admin pages: a sign-in from %s was refused", shown(request.remote))
        return await _render(
            request, "signin.html", {"next": next_page, "error": error}, status=403
        )
    await sessions.sign_in(request, identity)
    sessions.flash(request, f"Signed in as {identity.name} ({identity.role.value}).")
    logger.info("admin pages: %s signed in", shown(identity.name))
    raise _see(next_page)


async def signout(request: web.Request) -> web.StreamResponse:
    sessions.sign_out(request)
    sessions.flash(request, "Signed out.")
    raise _see(f"{PREFIX}/signin")


# -- handlers: pages ---------------------------------------------------------------------------


async def summary(request: web.Request) -> web.StreamResponse:
    review = _review(request)
    held = await review.held()
    events = [
        e
        for a in sorted(DECISIONS)
        for e in await review.audit(AuditQuery(action=a), limit=RECENT_DECISIONS)
    ]
    recent = sorted(events, key=lambda e: e.at, reverse=True)[:RECENT_DECISIONS]
    counts = {
        "quarantined": sum(b.state is BlobState.QUARANTINED for b in held),
        "rejected": sum(b.state is BlobState.REJECTED for b in held),
        "blocked": len(await review.blocked()),
        "changes": len(await review.changes()),
    }
    context = {"counts": counts, "recent": recent, "subjects": await _subjects(request, recent)}
    return await _render(request, "summary.html", context)


async def quarantine(request: web.Request) -> web.StreamResponse:
    wanted = HeldFilter.parse(request.query)
    held = [b for b in await _review(request).held() if wanted.keeps(b)]
    held.sort(key=lambda b: b.updated_at, reverse=True)
    repository = _services(request).repository
    rows = [HeldRow(b, _worst(await repository.list_findings(b.pk))) for b in held[:MAX_ROWS]]
    context = {"rows": rows, "total": len(held), "filter": wanted, "max_rows": MAX_ROWS}
    return await _render(request, "quarantine.html", context)


async def item(request: web.Request) -> web.StreamResponse:
    held: HeldItem = await _review(request).item(review_id_of(request))
    findings = sorted(held.findings, key=lambda f: -f.severity.rank)
    views = [FindingView(f, tuple(_details(f.details))) for f in findings]
    return await _render(request, "item.html", {"item": held, "findings": views})


async def release(request: web.Request) -> web.StreamResponse:
    review_id, comment = review_id_of(request), await _comment(request)
    await _review(request).release(review_id, _actor(request), comment)
    sessions.flash(request, f"Review {review_id} released: the next download is served.")
    raise _see(f"{PREFIX}/quarantine/{review_id}")


async def reject(request: web.Request) -> web.StreamResponse:
    review_id, comment = review_id_of(request), await _comment(request)
    await _review(request).reject(review_id, _actor(request), comment)
    sessions.flash(request, f"Review {review_id} rejected: it stays refused.")
    raise _see(f"{PREFIX}/quarantine/{review_id}")


async def changes(request: web.Request) -> web.StreamResponse:
    found: list[PinnedChange] = await _review(request).changes()
    return await _render(request, "changes.html", {"changes": found})


async def approve_change(request: web.Request) -> web.StreamResponse:
    repo, ref = await _repo(request), await _field(request, "ref", required="the branch")
    await _review(request).approve_change(repo, ref, _actor(request), await _comment(request))
    sessions.flash(request, f"{repo.repo_id} {ref}: change approved, the new head is served.")
    raise _see(f"{PREFIX}/changes")


async def reject_change(request: web.Request) -> web.StreamResponse:
    repo, ref = await _repo(request), await _field(request, "ref", required="the branch")
    await _review(request).reject_change(repo, ref, _actor(request), await _comment(request))
    sessions.flash(request, f"{repo.repo_id} {ref}: change refused, the approved commit stays.")
    raise _see(f"{PREFIX}/changes")


async def repos(request: web.Request) -> web.StreamResponse:
    blocked = await _review(request).blocked()
    return await _render(request, "repos.html", {"blocked": blocked, "types": list(RepoType)})


async def block(request: web.Request) -> web.StreamResponse:
    repo = await _repo(request)
    await _review(request).block(repo, _actor(request), await _comment(request))
    sessions.flash(request, f"{repo.repo_id} blocked: every route of it is refused.")
    raise _see(f"{PREFIX}/repos")


async def unblock(request: web.Request) -> web.StreamResponse:
    repo = await _repo(request)
    await _review(request).unblock(repo, _actor(request), await _comment(request))
    sessions.flash(request, f"{repo.repo_id} unblocked: it is served again.")
    raise _see(f"{PREFIX}/repos")


async def audit(request: web.Request) -> web.StreamResponse:
    action = request.query.get("action", "").strip()[:MAX_FILTER_CHARS] or None
    limit_text = request.query.get("limit", "200")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 10_000:
        raise InvalidInput("limit", limit_text, "must be a number from 1 to 10000")
    found = AuditQuery(action=action)
    events = list(reversed(await _review(request).audit(found, limit=int(limit_text))))
    context = {
        "events": events,
        "subjects": await _subjects(request, events),
        "action": action or "",
        "limit": int(limit_text),
        "actions": sorted(DECISIONS | {"blob.quarantined", "blob.rejected", "pin.moved",
                                       "pin.change_held", "review.requested", "token.created",
                                       "token.revoked", "access.granted", "access.revoked"}),
    }  # fmt: skip
    return await _render(request, "audit.html", context)


async def _subjects(request: web.Request, events: Iterable[AuditRecord]) -> dict[int, str]:
    """repo pk → `org/name` for the repos these events name."""
    repository = _services(request).repository
    names: dict[int, str] = {}
    for pk in {e.repo_pk for e in events if e.repo_pk is not None}:
        record = await repository.repo_by_pk(pk)
        names[pk] = record.ref.repo_id if record else f"repo #{pk}"
    return names


async def to_front_page(request: web.Request) -> web.StreamResponse:
    raise _see(PREFIX + "/")


async def not_found(request: web.Request) -> web.StreamResponse:
    identity = await sessions.signed_in(request, _services(request).identities)
    if identity is not None:  # the page keeps its navigation
        request[IDENTITY] = identity
    detail = f"There is no admin page at {shown(request.path)}."
    return await _error_page(request, 404, "No such page", detail)


PAGES = (
    Page("GET", "/", Action.VIEW, summary),
    Page("GET", "/signin", None, signin_form),
    Page("POST", "/signin", None, signin),
    Page("POST", "/signout", None, signout),
    Page("GET", "/quarantine", Action.VIEW, quarantine),
    Page("GET", "/quarantine/{id}", Action.VIEW, item),
    Page("POST", "/quarantine/{id}/release", Action.DECIDE, release),
    Page("POST", "/quarantine/{id}/reject", Action.DECIDE, reject),
    Page("GET", "/changes", Action.VIEW, changes),
    Page("POST", "/changes/approve", Action.DECIDE, approve_change),
    Page("POST", "/changes/reject", Action.DECIDE, reject_change),
    Page("GET", "/repos", Action.VIEW, repos),
    Page("POST", "/repos/block", Action.BLOCK, block),
    Page("POST", "/repos/unblock", Action.BLOCK, unblock),
    Page("GET", "/audit", Action.VIEW, audit),
)

_ROLE_CAN = {
    Action.VIEW: "view these pages",
    Action.DECIDE: "release or reject files, nor decide on pinned changes",
    Action.BLOCK: "block or unblock repos",
}


# -- the sub-application -----------------------------------------------------------------------


_NO_CSRF = (
    "It did not carry this session's CSRF token: it came from another site, or your session "
    "ended. Open the page again and send the form from there."
)


def _signin_redirect(request: web.Request) -> web.HTTPSeeOther:
    """To the sign-in page, which leads back here (a GET; a POST cannot be replayed)."""
    if request.method != "GET":
        return _see(f"{PREFIX}/signin")
    return _see(f"{PREFIX}/signin?{urlencode({'next': request.rel_url.raw_path_qs})}")


def _role_refused(identity: Identity, action: Action) -> PageRefused:
    what = _ROLE_CAN.get(action, action.value)
    detail = (
        f"Your role, {identity.role.value}, may not {what}. "
        "Ask an admin for a token with a role that may."
    )
    return PageRefused(403, "Not allowed for your role", detail)


def _guarded(page: Page) -> Handler:
    """CSRF on every POST, then the session and the role the page needs."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "POST" and not await sessions.csrf_ok(request):
            raise PageRefused(403, "This form was refused", _NO_CSRF)
        if page.action is not None:
            identity = await sessions.signed_in(request, _services(request).identities)
            if identity is None:
                raise _signin_redirect(request)
            if not identity.can(page.action):
                raise _role_refused(identity, page.action)
            request[IDENTITY] = identity
        return await page.handler(request)

    return handle


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where errors of the admin pages become pages."""
    try:
        return await handler(request)
    except PageRefused as exc:
        return await _error_page(request, exc.status, exc.title, exc.message)
    except InvalidInput as exc:
        return await _error_page(request, 400, "That cannot be used", exc.message)
    except NotHeld as exc:
        return await _error_page(request, 409, "Already decided", exc.message)
    except ReviewNotFound as exc:
        return await _error_page(request, 404, "Not found", exc.message)
    except ReviewError as exc:
        return await _error_page(request, 409, "That cannot be done now", exc.message)


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
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pages are neither cached, framed nor allowed to run any script (the style has a nonce)."""
    request[NONCE] = secrets.token_urlsafe(16)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _protect(exc.headers, request[NONCE])
        raise
    _protect(response.headers, request[NONCE])
    return response


_FILTERS: dict[str, Callable[..., Any]] = {
    "size": human_size,
    "age": age,
    "when": when,
    "brief": brief,
}


def admin_pages() -> web.Application:
    """The `/admin/` sub-application; it finds the services on its parent (`SERVICES`)."""
    app = web.Application(
        middlewares=[_headers, sessions.sessions, _errors], client_max_size=MAX_BODY_BYTES
    )
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("proxy.admin", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        filters=_FILTERS,
    )
    for page in PAGES:
        app.router.add_route(page.method, page.path, _guarded(page))
    app.router.add_get("", to_front_page)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


def add_admin_pages(app: web.Application) -> None:
    """Mount the pages at `/admin/` (before the hub's catch-all routes) and start their session
    key with the app, after the services (`create_app` adds its own cleanup contexts first)."""
    app.cleanup_ctx.append(sessions.keeper_ctx)
    app.add_subapp(PREFIX + "/", admin_pages())
