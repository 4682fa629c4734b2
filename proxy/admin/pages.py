"""The admins' web pages under `/admin/`: server-rendered (aiohttp-jinja2, autoescape on), no
JavaScript and no build step, over the same `Review` service as the REST API and the CLI.

    GET  /admin/                           summary: counts, held by severity, recent     view
    GET  /admin/signin                     the sign-in form (an admin token)             -
    POST /admin/signin                     (token, next): 303 back to `next`             -
    POST /admin/signout                                                                  -
    GET  /admin/quarantine                 held and rejected files, a page at a time     view
                                           (?state= &repo= &format= &severity= &since=
                                           &limit= &after=<last review id>)
    GET  /admin/quarantine/{id}            one file: findings, history, decision forms   view
    POST /admin/quarantine/{id}/release    (comment, scope, expires)                     decide
    POST /admin/quarantine/{id}/reject     (comment)                                     decide
    POST /admin/quarantine/{id}/rescan     (comment)                                     decide
    GET  /admin/waivers                    waivers and what they let through (?status=)  view
    POST /admin/waivers/{id}/revoke        (comment)                                     decide
    GET  /admin/changes                    pinned changes, served vs waiting             view
    POST /admin/changes/approve|reject     (type, repo, ref, comment)                    decide
    GET  /admin/repos                      blocked repos                                 view
    POST /admin/repos/block|unblock        (type, repo, comment)                         block
    GET  /admin/audit                      the audit log (?action= &actor= &type=        view
                                           &repo= &since= &limit=)
    GET  /admin/repos/risk                 to a repo's risk card (?type= &repo=          view
                                           &revision=)
    GET  /admin/repos/{type}/{namespace}/{name}/risk  a revision's risk card (?revision=)  view
    GET  /admin/updates                    what the upstream watch saw: update available,  view
                                           changed files, prefetch (?all=true: every ref)

A page opened without a session answers 303 to the sign-in page, which leads back to it. Every
POST must carry the session's CSRF token (`proxy.admin.sessions`), else 403; a form that cannot
be read (an unknown charset, multipart, too large) is a 400 page. The roles are the
API's (`proxy.admin.identity.PERMISSIONS`): a page hides the forms the role may not use and the
POST is refused with 403 all the same. Errors are pages too, mapped once
(`page_render.error_pages`). Query strings and forms are parsed by `proxy.admin.page_forms`,
values shown by `proxy.admin.page_views`, pages rendered by `proxy.admin.page_render`.

Every page is sent with a Content-Security-Policy that allows no script at all and only the base
template's own style (by nonce), and is neither cached nor framed
(`page_render.security_headers`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.admin import sessions
from proxy.admin.identity import Action, Identity, utcnow
from proxy.admin.page_forms import (
    EXPIRIES,
    MAX_PAGE_ROWS,
    AuditForm,
    HeldQuery,
    comment_field,
    form_field,
    number_in_path,
    release_terms,
    repo_field,
    waiver_status,
)
from proxy.admin.page_render import (
    IDENTITY,
    PageRefused,
    error_page,
    error_pages,
    render,
    security_headers,
)
from proxy.admin.page_views import (
    AUDIT_ACTIONS,
    FILTERS,
    FORMATS,
    NOT_CHECKED,
    SignatureView,
    finding_views,
    signature_view,
    waiver_rows,
    when,
)
from proxy.admin.review import HeldItem, PinnedChange, Review
from proxy.admin.updates import updates as updates_of
from proxy.admin.updates import watch_state
from proxy.errors import shown
from proxy.hub.context import SERVICES
from proxy.hub.requests import review_id_of
from proxy.repos import RepoRef, RepoType
from proxy.services import Services
from proxy.store.models import BlobState
from proxy.store.repository import AUDIT_CONTEXT, AuditRecord, RepoRecord
from proxy.store.signatures import SignatureRecord
from proxy.store.waivers import WAIVER_STATUSES, WaiverRecord
from scanners.report import Severity

logger = logging.getLogger(__name__)

PREFIX = "/admin"
MAX_BODY_BYTES = sessions.FORM_LIMITS.max_bytes
PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Page:
    """One route: the action its role needs (None: open to anyone, e.g. sign-in) and its handler."""

    method: str
    path: str
    action: Action | None
    handler: PageHandler


# -- helpers -----------------------------------------------------------------------------------


def _services(request: web.Request) -> Services:
    return request.config_dict[SERVICES]


def _review(request: web.Request) -> Review:
    return _services(request).review


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


class _Signatures:
    """The recorded signature of the revisions a page shows (one read per revision, never a
    verification: the pages show what the mirror found when it fetched the files)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._found: dict[tuple[RepoRef, str], tuple[SignatureRecord | None, bool]] = {}

    async def view(
        self,
        repo: RepoRef | None,
        commit: str,
        *,
        path: str | None = None,
        sha256: str | None = None,
    ) -> SignatureView:
        signatures = self._services.signatures
        if signatures is None or repo is None or not commit:
            return NOT_CHECKED
        key = (repo, commit)
        if key not in self._found:
            record = None
            found = await self._services.repository.find_repo(repo)
            if found is not None:
                record = await signatures.recorded(found, commit)
            current = record is None or signatures.is_current(repo, record)
            self._found[key] = (record, current)
        record, current = self._found[key]
        name = signatures.signature_file
        return signature_view(
            record, path=path, sha256=sha256, signature_file=name, current=current
        )

    async def served(self, record: RepoRecord) -> SignatureView:
        """The signature of the commit the repo's default branch serves."""
        repository = self._services.repository
        ref = await repository.get_ref_record(record.pk, "") or await repository.get_ref_record(
            record.pk, "main"
        )
        if ref is None:
            return NOT_CHECKED
        return await self.view(record.ref, ref.approved_commit or ref.commit)


async def _subjects(request: web.Request, events: Iterable[AuditRecord]) -> dict[int, str]:
    """repo pk → `org/name` for the repos these events name."""
    repository = _services(request).repository
    names: dict[int, str] = {}
    for pk in {e.repo_pk for e in events if e.repo_pk is not None}:
        record = await repository.repo_by_pk(pk)
        names[pk] = record.ref.repo_id if record else f"repo #{pk}"
    return names


# -- handlers: signing in and out --------------------------------------------------------------


async def signin_form(request: web.Request) -> web.StreamResponse:
    next_page = _next_page(request.query.get("next"))
    if await sessions.signed_in(request, _services(request).identities) is not None:
        raise _see(next_page)
    return await render(request, "signin.html", {"next": next_page, "error": None})


async def signin(request: web.Request) -> web.StreamResponse:
    next_page = _next_page(await form_field(request, "next"))
    token = await form_field(request, "token")
    identity = await _services(request).identities.authenticate(token) if token else None
    error = None
    if identity is None:
        error = "That token is unknown, revoked or expired. Paste a whole hwa_… admin token."
    elif not identity.can(Action.VIEW):
        error = "A client token cannot sign in here: use a viewer, reviewer or admin token."
    if identity is None or error:
        logger.warning("admin pages: a sign-in from %s was refused", shown(request.remote))
        return await render(request, "signin.html", {"next": next_page, "error": error}, status=403)
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
    found = await _review(request).summary()
    recent = list(reversed(found.recent))  # newest first
    context = {"counts": found, "recent": recent, "subjects": await _subjects(request, recent)}
    return await render(request, "summary.html", context)


async def quarantine(request: web.Request) -> web.StreamResponse:
    wanted = HeldQuery.parse(request.query)
    held = await _review(request).held(
        wanted.held_filter(), after=wanted.after, limit=wanted.limit + 1
    )
    rows = held[: wanted.limit]
    more = len(held) > wanted.limit
    lookup = _Signatures(_services(request))
    signatures = [await lookup.view(b.repo, b.commit, path=b.path, sha256=b.sha256) for b in rows]
    context = {
        "rows": rows,
        "signatures": dict(zip((b.pk for b in rows), signatures, strict=True)),
        "query": wanted,
        "next_page": wanted.link(rows[-1].pk) if more else None,
        "formats": FORMATS,
        "severities": [s.value for s in Severity],
        "page_sizes": sorted({25, 50, 100, MAX_PAGE_ROWS, wanted.limit}),
    }
    return await render(request, "quarantine.html", context)


async def item(request: web.Request) -> web.StreamResponse:
    held: HeldItem = await _review(request).item(review_id_of(request))
    blob = held.blob
    signature = await _Signatures(_services(request)).view(
        blob.repo, blob.commit, path=blob.path, sha256=blob.sha256
    )
    context = {
        "item": held,
        "findings": finding_views(held.findings),
        "expiries": list(EXPIRIES),
        "signature": signature,
    }
    return await render(request, "item.html", context)


def _waiver_note(waiver: WaiverRecord | None) -> str:
    if waiver is None:
        return ""
    until = f"until {when(waiver.expires_at)}" if waiver.expires_at else "until it is revoked"
    return f" Waiver {waiver.pk} lets later held files of {waiver.covers} through, {until}."


async def release(request: web.Request) -> web.StreamResponse:
    review_id, terms = review_id_of(request), await release_terms(request)
    waiver = await _review(request).release(
        review_id, _actor(request), terms.comment, scope=terms.scope, expires_in=terms.expires_in
    )
    note = _waiver_note(waiver)
    sessions.flash(request, f"Review {review_id} released: the next download is served.{note}")
    raise _see(f"{PREFIX}/quarantine/{review_id}")


async def reject(request: web.Request) -> web.StreamResponse:
    review_id, comment = review_id_of(request), await comment_field(request)
    await _review(request).reject(review_id, _actor(request), comment)
    sessions.flash(request, f"Review {review_id} rejected: it stays refused.")
    raise _see(f"{PREFIX}/quarantine/{review_id}")


_RESCANNED = {
    BlobState.RELEASED: "released, the next download is served",
    BlobState.QUARANTINED: "still held for review",
    BlobState.REJECTED: "rejected, it stays refused",
}


async def rescan(request: web.Request) -> web.StreamResponse:
    review_id, comment = review_id_of(request), await comment_field(request)
    state = await _review(request).rescan(review_id, _actor(request), comment)
    outcome = _RESCANNED.get(state, state.value)
    sessions.flash(request, f"Review {review_id} scanned again with today's scanners: {outcome}.")
    raise _see(f"{PREFIX}/quarantine/{review_id}")


async def waivers(request: web.Request) -> web.StreamResponse:
    status = waiver_status(request.query)
    review = _review(request)
    rows = waiver_rows(await review.waivers(), await review.waived_counts(), status, utcnow())
    context = {"rows": rows, "status": status, "statuses": WAIVER_STATUSES}
    return await render(request, "waivers.html", context)


async def revoke_waiver(request: web.Request) -> web.StreamResponse:
    pk = number_in_path(request, "waiver id", "open the waivers page and use its form")
    await _review(request).revoke_waiver(pk, _actor(request), await comment_field(request))
    sessions.flash(
        request,
        f"Waiver {pk} revoked: the files it let through that no person looked at are held "
        "again, and it covers nothing new.",
    )
    raise _see(f"{PREFIX}/waivers")


async def changes(request: web.Request) -> web.StreamResponse:
    found: list[PinnedChange] = await _review(request).changes()
    return await render(request, "changes.html", {"changes": found})


async def approve_change(request: web.Request) -> web.StreamResponse:
    repo, ref = await repo_field(request), await form_field(request, "ref", required="the branch")
    await _review(request).approve_change(repo, ref, _actor(request), await comment_field(request))
    sessions.flash(request, f"{repo.repo_id} {ref}: change approved, the new head is served.")
    raise _see(f"{PREFIX}/changes")


async def reject_change(request: web.Request) -> web.StreamResponse:
    repo, ref = await repo_field(request), await form_field(request, "ref", required="the branch")
    await _review(request).reject_change(repo, ref, _actor(request), await comment_field(request))
    sessions.flash(request, f"{repo.repo_id} {ref}: change refused, the approved commit stays.")
    raise _see(f"{PREFIX}/changes")


async def repos(request: web.Request) -> web.StreamResponse:
    blocked = await _review(request).blocked()
    lookup = _Signatures(_services(request))
    signatures = {b.block_pk: await lookup.served(b.repo) for b in blocked}
    context = {"blocked": blocked, "types": list(RepoType), "signatures": signatures}
    return await render(request, "repos.html", context)


async def block(request: web.Request) -> web.StreamResponse:
    repo = await repo_field(request)
    await _review(request).block(repo, _actor(request), await comment_field(request))
    sessions.flash(request, f"{repo.repo_id} blocked: every route of it is refused.")
    raise _see(f"{PREFIX}/repos")


async def unblock(request: web.Request) -> web.StreamResponse:
    repo = await repo_field(request)
    await _review(request).unblock(repo, _actor(request), await comment_field(request))
    sessions.flash(request, f"{repo.repo_id} unblocked: it is served again.")
    raise _see(f"{PREFIX}/repos")


async def risk_lookup(request: web.Request) -> web.StreamResponse:
    """The repos page's form (?type=model&repo=org/name&revision=): to the card's own page."""
    types = {t.value: t for t in RepoType}
    repo_type = types.get(request.query.get("type", "model"))
    if repo_type is None:
        raise PageRefused(400, "That cannot be used", "The type must be model, dataset or space.")
    repo = RepoRef.parse(repo_type, request.query.get("repo", "").strip())
    if "/" not in repo.repo_id:
        raise PageRefused(400, "That cannot be used", "Give the repo as namespace/name.")
    revision = request.query.get("revision", "").strip() or "main"
    query = urlencode({"revision": revision})
    raise _see(f"{PREFIX}/repos/{repo_type.plural}/{repo.repo_id}/risk?{query}")


async def risk(request: web.Request) -> web.StreamResponse:
    cards = _services(request).risk_cards
    if cards is None:
        raise PageRefused(503, "Not available", "Risk cards are not available on this server.")
    info = request.match_info
    name = f"{info['namespace']}/{info['name']}"
    repo = RepoRef.parse(RepoType.from_plural(info["type"]), name)
    card = await cards.card(repo, request.query.get("revision", "main"))
    signature = await _Signatures(_services(request)).view(repo, card.commit)
    return await render(request, "risk.html", {"card": card, "signature": signature})


async def updates(request: web.Request) -> web.StreamResponse:
    """The upstream watch: the refs with a change noticed (?all=true: every watched ref), each
    with its changed files (our state, the Hub's scan), prefetch and the new head's signature."""
    every = request.query.get("all", "")
    if every not in ("", "true", "false"):
        raise PageRefused(400, "That cannot be used", "all must be true or false.")
    services = _services(request)
    found = []
    if services.watches is not None:
        found = await updates_of(
            services.watches, services.repository, changed_only=every != "true"
        )
    lookup = _Signatures(services)
    signatures = [await lookup.view(u.record.repo.ref, u.record.upstream_head or "") for u in found]
    context = {
        "updates": list(zip(found, signatures, strict=True)),
        "every": every == "true",
        "state": watch_state(services.settings),
    }
    return await render(request, "updates.html", context)


async def audit(request: web.Request) -> web.StreamResponse:
    wanted = AuditForm.parse(request.query)
    found = await _review(request).audit(wanted.audit_query(), limit=wanted.limit)
    events = list(reversed(found))  # newest first
    context = {
        "events": events,
        "subjects": await _subjects(request, events),
        "query": wanted,
        "actions": AUDIT_ACTIONS,
        "types": [t.value for t in RepoType],
        "limits": sorted({50, 200, 1000, 10_000, wanted.limit}),
    }
    return await render(request, "audit.html", context)


async def to_front_page(request: web.Request) -> web.StreamResponse:
    raise _see(PREFIX + "/")


async def not_found(request: web.Request) -> web.StreamResponse:
    identity = await sessions.signed_in(request, _services(request).identities)
    if identity is not None:  # the page keeps its navigation
        request[IDENTITY] = identity
    detail = f"There is no admin page at {shown(request.path)}."
    return await error_page(request, 404, "No such page", detail)


PAGES = (
    Page("GET", "/", Action.VIEW, summary),
    Page("GET", "/signin", None, signin_form),
    Page("POST", "/signin", None, signin),
    Page("POST", "/signout", None, signout),
    Page("GET", "/quarantine", Action.VIEW, quarantine),
    Page("GET", "/quarantine/{id}", Action.VIEW, item),
    Page("POST", "/quarantine/{id}/release", Action.DECIDE, release),
    Page("POST", "/quarantine/{id}/reject", Action.DECIDE, reject),
    Page("POST", "/quarantine/{id}/rescan", Action.DECIDE, rescan),
    Page("GET", "/waivers", Action.VIEW, waivers),
    Page("POST", "/waivers/{id}/revoke", Action.DECIDE, revoke_waiver),
    Page("GET", "/changes", Action.VIEW, changes),
    Page("POST", "/changes/approve", Action.DECIDE, approve_change),
    Page("POST", "/changes/reject", Action.DECIDE, reject_change),
    Page("GET", "/repos", Action.VIEW, repos),
    Page("POST", "/repos/block", Action.BLOCK, block),
    Page("POST", "/repos/unblock", Action.BLOCK, unblock),
    Page("GET", "/audit", Action.VIEW, audit),
    Page("GET", "/updates", Action.VIEW, updates),
    Page("GET", "/repos/risk", Action.VIEW, risk_lookup),
    Page("GET", "/repos/{type}/{namespace}/{name}/risk", Action.VIEW, risk),
)

_ROLE_CAN = {
    Action.VIEW: "view these pages",
    Action.DECIDE: "release, reject or rescan files, revoke waivers or decide on pinned changes",
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
            AUDIT_CONTEXT.set({"role": identity.role.value, "remote": request.remote or ""})
        return await page.handler(request)

    return handle


def admin_pages() -> web.Application:
    """The `/admin/` sub-application; it finds the services on its parent (`SERVICES`)."""
    app = web.Application(
        middlewares=[security_headers, sessions.sessions, error_pages],
        client_max_size=MAX_BODY_BYTES,
    )
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("proxy.admin", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        filters=FILTERS,
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
