"""The admins' REST API under `/admin/api/`: JSON over the `Review` service, every call
authenticated with an admin token (`Authorization: Bearer hwa_…`), 401 without a valid one, 403
when the role does not allow it. The OpenAPI 3.1 document at `/admin/api/openapi.json` is
generated from the same route table the router is built from, so the two cannot drift.

Errors are JSON `{"error", "detail", "hint"}` (STYLE.md §3), mapped once by `_errors`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.admin.filters import held_filter, parse_since
from proxy.admin.identity import Action, Identity
from proxy.admin.rescan import RescanImpossible
from proxy.admin.review import (
    AuditQuery,
    HeldItem,
    PinnedChange,
    Review,
    ReviewError,
    ReviewNotFound,
)
from proxy.admin.updates import updates as updates_of
from proxy.errors import HubwardenError, InvalidInput, shown
from proxy.hub.context import SERVICES
from proxy.hub.requests import review_id_of
from proxy.lifecycle import NotHeld
from proxy.repos import RepoRef, RepoType, Revision
from proxy.services import Services
from proxy.store.repository import AUDIT_CONTEXT, AuditRecord
from proxy.store.review import BlockedRepo, HeldBlob, HeldFilter
from proxy.store.waivers import WAIVER_STATUSES
from scanners.report import JsonValue

logger = logging.getLogger(__name__)

PREFIX = "/admin/api"
MAX_BODY_BYTES = 64 * 1024
IDENTITY = web.RequestKey("identity", Identity)
ApiHandler = Callable[[web.Request], Awaitable[JsonValue | web.StreamResponse]]
NDJSON = "application/x-ndjson"
STREAM_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # "path" or "query"
    kind: str = "string"  # JSON schema type
    description: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    """One API route: what it needs (`action`), what it takes and says, and its handler."""

    method: str
    path: str
    action: Action
    summary: str
    handler: ApiHandler
    params: tuple[Param, ...] = ()
    takes_comment: bool = False
    body: tuple[Param, ...] = ()  # optional JSON fields besides the comment


class ApiError(HubwardenError):
    """An API call refused at the edge: `status`, a short `error` word and a `hint`."""

    def __init__(self, status: int, error: str, detail: str, hint: str) -> None:
        self.status = status
        self.error = error
        self.hint = hint
        super().__init__(detail)


# -- JSON renderings ---------------------------------------------------------------------------


def _blob(blob: HeldBlob) -> dict[str, JsonValue]:
    worst = blob.worst
    return {
        "id": blob.pk,
        "repo": blob.repo.repo_id if blob.repo else None,
        "repo_type": blob.repo.repo_type.value if blob.repo else None,
        "revision": blob.revisions[0] if blob.revisions else blob.commit or None,
        "revisions": list(blob.revisions),
        "commit": blob.commit or None,
        "path": blob.path,
        "size": blob.size,
        "sha256": blob.sha256,
        "state": blob.state.value,
        "format": blob.file_format,
        "reason": blob.reason,
        "worst_finding": None
        if worst is None
        else {"severity": worst.severity.value, "code": worst.code, "message": worst.message},
        "since": blob.updated_at.isoformat(),
        "age_s": max(0, int((dt.datetime.now(dt.UTC) - _aware(blob.updated_at)).total_seconds())),
        "requests": blob.requests,
    }


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _item(item: HeldItem) -> dict[str, JsonValue]:
    return {
        **_blob(item.blob),
        "findings": [f.to_dict() for f in item.findings],
        "history": [_event(e) for e in item.history],
    }


def _event(event: AuditRecord) -> dict[str, JsonValue]:
    return {
        "id": event.pk,
        "at": _aware(event.at).isoformat(),
        "actor": event.actor,
        "action": event.action,
        "repo_pk": event.repo_pk,
        "blob_pk": event.blob_pk,
        "details": event.details,
    }


def _blocked(blocked: BlockedRepo) -> dict[str, JsonValue]:
    return {
        "repo": blocked.repo.ref.repo_id,
        "repo_type": blocked.repo.ref.repo_type.value,
        "reason": blocked.reason,
        "detail": blocked.detail,
        "since": blocked.since.isoformat(),
        "by": blocked.by,
    }


def _change(change: PinnedChange) -> dict[str, JsonValue]:
    held = change.held
    return {
        "repo": held.repo.ref.repo_id,
        "repo_type": held.repo.ref.repo_type.value,
        "ref": held.name,
        "served": held.approved,
        "waiting": held.head,
        "changed": [{"path": p, "pinned": o, "new": n} for p, o, n in change.changed],
    }


# -- parsing -----------------------------------------------------------------------------------


def _services(request: web.Request) -> Services:
    return request.config_dict[SERVICES]


def _review(request: web.Request) -> Review:
    return _services(request).review


def _repo(request: web.Request) -> RepoRef:
    plural = request.match_info["type"]
    name = f"{request.match_info['namespace']}/{request.match_info['name']}"
    return RepoRef.parse(RepoType.from_plural(plural), name)


async def _body(request: web.Request) -> dict[str, JsonValue]:
    """The JSON object a decision sends (`{"comment": "…", …}`)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise InvalidInput("request body", f"{request.content_length} bytes", "is too large")
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("request body", "…", 'is not JSON {"comment": "why"}') from exc
    if not isinstance(body, dict):
        raise InvalidInput("request body", "…", 'is not a JSON object {"comment": "why"}')
    return body


async def _comment(request: web.Request) -> str:
    """The required `comment` of a decision, from a JSON body `{"comment": "…"}`."""
    return _comment_in(await _body(request))


def _comment_in(body: dict[str, JsonValue]) -> str:
    comment = body.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise InvalidInput("comment", comment, 'is required: send {"comment": "why"}')
    return comment


def _actor(request: web.Request) -> str:
    identity = request[IDENTITY]
    return f"token:{identity.name}"


def _limit(request: web.Request, most: int = 10_000) -> int:
    text = request.query.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise InvalidInput("limit", text, f"must be a number from 1 to {most}")
    return int(text)


def _number(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    if not text.isdigit() or len(text) > 12:
        raise InvalidInput(name, text, "must be the number a previous page gave")
    return int(text)


def _filter_of(values: Any) -> HeldFilter:
    """The quarantine filters from query parameters or a bulk call's `filter` object."""
    texts = {}
    for key in ("state", "repo", "format", "severity", "since"):
        value = values.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(key, value, "must be a string")
        texts[key] = value
    return held_filter(
        state=texts["state"], repo=texts["repo"], file_format=texts["format"],
        severity=texts["severity"], since=texts["since"],
    )  # fmt: skip


# -- handlers ----------------------------------------------------------------------------------


async def list_quarantine(request: web.Request) -> JsonValue:
    limit = _limit(request, most=1000)
    after = _number(request, "cursor") or 0
    held = await _review(request).held(_filter_of(request.query), after=after, limit=limit + 1)
    page = held[:limit]
    more = len(held) > limit
    return {"items": [_blob(b) for b in page], "next_cursor": str(page[-1].pk) if more else None}


async def bulk(request: web.Request) -> JsonValue:
    body = await _body(request)
    comment = _comment_in(body)
    filters = body.get("filter")
    if not isinstance(filters, dict) or not (filters or body.get("all") is True):
        raise InvalidInput("filter", filters, 'must name what to decide, e.g. {"repo": "org/name"}'
                           ' (or send "all": true to decide every held file)')  # fmt: skip
    decision = body.get("decision")
    if decision not in ("release", "reject"):
        raise InvalidInput("decision", decision, "must be release or reject")
    found = _filter_of(filters)
    result = await _review(request).bulk(found, str(decision), _actor(request), comment)
    return {
        "decided": list(result.decided),
        "failed": [{"id": pk, "error": error} for pk, error in result.failed],
        "more": result.more,
    }


async def show_quarantine(request: web.Request) -> JsonValue:
    return _item(await _review(request).item(review_id_of(request)))


async def release(request: web.Request) -> JsonValue:
    review_id = review_id_of(request)
    body = await _body(request)
    days = body.get("expires_in_days")
    if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days < 1):
        raise InvalidInput("expires_in_days", days, "must be a whole number of days above 0")
    waiver = await _review(request).release(
        review_id,
        _actor(request),
        await _comment(request),
        scope=str(body.get("scope", "blob")),
        expires_in=dt.timedelta(days=min(days, 3650)) if days else None,
    )
    return {"id": review_id, "state": "released", "waiver": waiver.pk if waiver else None}


async def list_waivers(request: web.Request) -> JsonValue:
    wanted = request.query.get("status")
    if wanted is not None and wanted not in WAIVER_STATUSES:
        raise InvalidInput("status", wanted, f"must be one of {', '.join(WAIVER_STATUSES)}")
    now = dt.datetime.now(dt.UTC)
    listed: list[JsonValue] = []
    for w in await _review(request).waivers():
        status = w.status(now)
        if wanted is None or status == wanted:
            listed.append(
                {"id": w.pk, "covers": w.covers, "scope": w.scope.value, "by": w.created_by,
                 "comment": w.comment, "created_at": w.created_at.isoformat(),
                 "expires_at": w.expires_at.isoformat() if w.expires_at else None,
                 "active": status in ("active", "expiring"), "status": status}
            )  # fmt: skip
    return listed


async def revoke_waiver(request: web.Request) -> JsonValue:
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 12:
        raise InvalidInput("waiver id", text, "is not a number; see GET /admin/api/waivers")
    await _review(request).revoke_waiver(int(text), _actor(request), await _comment(request))
    return {"id": int(text), "revoked": True}


async def reject(request: web.Request) -> JsonValue:
    review_id = review_id_of(request)
    await _review(request).reject(review_id, _actor(request), await _comment(request))
    return {"id": review_id, "state": "rejected"}


async def rescan(request: web.Request) -> JsonValue:
    review_id = review_id_of(request)
    state = await _review(request).rescan(review_id, _actor(request), await _comment(request))
    return {"id": review_id, "state": state.value}


async def list_repos(request: web.Request) -> JsonValue:
    return [_blocked(b) for b in await _review(request).blocked()]


async def block(request: web.Request) -> JsonValue:
    repo = _repo(request)
    await _review(request).block(repo, _actor(request), await _comment(request))
    return {"repo": repo.repo_id, "blocked": True}


async def unblock(request: web.Request) -> JsonValue:
    repo = _repo(request)
    await _review(request).unblock(repo, _actor(request), await _comment(request))
    return {"repo": repo.repo_id, "blocked": False}


async def bom(request: web.Request) -> web.StreamResponse:
    revision = request.query.get("revision", "main")
    Revision.parse(revision)  # raises InvalidInput on a hostile name
    text = await _review(request).bom(_repo(request), revision)
    return web.Response(text=text, content_type="application/vnd.cyclonedx+json")


async def risk(request: web.Request) -> JsonValue:
    cards = _services(request).risk_cards
    if cards is None:
        raise ApiError(503, "unavailable", "risk cards are not available here", "retry later")
    card = await cards.card(_repo(request), request.query.get("revision", "main"))
    return card.to_json()


async def updates(request: web.Request) -> JsonValue:
    watches = _services(request).watches
    every = request.query.get("all", "false")
    if every not in ("true", "false", "1", "0"):
        raise InvalidInput("all", every, "must be true or false")
    if watches is None:
        return []
    found = await updates_of(
        watches, _services(request).repository, changed_only=every in ("false", "0")
    )
    return [u.to_json() for u in found]


async def signature(request: web.Request) -> JsonValue:
    revision = request.query.get("revision", "main")
    Revision.parse(revision)  # raises InvalidInput on a hostile name
    report = await _review(request).signature(_repo(request), revision)
    return {"revision": revision, **report.to_json()}


async def list_changes(request: web.Request) -> JsonValue:
    return [_change(c) for c in await _review(request).changes()]


async def approve_change(request: web.Request) -> JsonValue:
    repo, ref = _repo(request), request.match_info["ref"]
    await _review(request).approve_change(repo, ref, _actor(request), await _comment(request))
    return {"repo": repo.repo_id, "ref": ref, "approved": True}


async def reject_change(request: web.Request) -> JsonValue:
    repo, ref = _repo(request), request.match_info["ref"]
    await _review(request).reject_change(repo, ref, _actor(request), await _comment(request))
    return {"repo": repo.repo_id, "ref": ref, "approved": False}


async def summary(request: web.Request) -> JsonValue:
    found = await _review(request).summary()
    return {
        "quarantined": found.quarantined,
        "rejected": found.rejected,
        "blocked": found.blocked,
        "changes": found.changes,
        "by_severity": dict(found.by_severity),
        "waivers": found.waivers,
        "requests": found.requests,
        "recent": [_event(e) for e in found.recent],
    }


async def pins(request: web.Request) -> JsonValue:
    text = request.query.get("repo", "")
    repo = RepoRef.parse(RepoType.from_plural(request.query.get("type", "models")), text)
    return [
        {"path": p.path, "etag": p.etag, "commit": p.commit}
        for p in await _review(request).pins(repo)
    ]


async def audit(request: web.Request) -> JsonValue | web.StreamResponse:
    query = request.query
    repo = None
    if query.get("repo"):
        repo = RepoRef.parse(RepoType.from_plural(query.get("type", "models")), query["repo"])
    since = parse_since(query["since"], dt.datetime.now(dt.UTC)) if query.get("since") else None
    found = AuditQuery(query.get("action"), query.get("actor"), repo, since)
    review = _review(request)
    if NDJSON not in request.headers.get("Accept", ""):
        events = await review.audit(found, limit=_limit(request), after=_number(request, "after"))
        return [_event(e) for e in events]
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    after = _number(request, "after") or 0
    while events := await review.audit(found, limit=STREAM_BATCH, after=after):
        await response.write(b"".join(json.dumps(_event(e)).encode() + b"\n" for e in events))
        after = events[-1].pk
    await response.write_eof()
    return response


_ID = (Param("id", "path", "integer", "the review id the 403 message names"),)
_REPO = (
    Param("type", "path", "string", "models, datasets or spaces"),
    Param("namespace", "path"),
    Param("name", "path"),
)
_REF = (*_REPO, Param("ref", "path", "string", "the branch or tag, e.g. main"))
_Q = "/quarantine"
ROUTES = (
    Route("GET", _Q, Action.VIEW, "Held and rejected files, a page at a time", list_quarantine,
          (Param("state", "query", "string", "quarantined or rejected"),
           Param("repo", "query", "string", "namespace/name, or namespace/ for all of it"),
           Param("format", "query", "string", "pickle, gguf, zip, …"),
           Param("severity", "query", "string", "worst finding at least info, low, medium, "
                 "high or critical"),
           Param("since", "query", "string", "changed since: 7d, 12h, 90m or an ISO time"),
           Param("cursor", "query", "string", "next_cursor of the previous page"),
           Param("limit", "query", "integer", "1 to 1000 (100)"))),
    Route("GET", _Q + "/{id}", Action.VIEW, "A held file, its findings and history",
          show_quarantine, _ID),
    Route("POST", _Q + "/{id}/release", Action.DECIDE, "Release a quarantined file", release,
          _ID, takes_comment=True,
          body=(Param("scope", "body", "string", "blob (default), path, repo or org: also "
                      "waive later held files of that scope"),
                Param("expires_in_days", "body", "integer", "when the waiver ends"))),
    Route("POST", _Q + "/{id}/reject", Action.DECIDE, "Reject a quarantined file", reject, _ID,
          takes_comment=True),
    Route("POST", _Q + "/bulk", Action.DECIDE,
          "Release or reject every quarantined file a filter matches (at most 500)", bulk,
          takes_comment=True,
          body=(Param("decision", "body", "string", "release or reject"),
                Param("filter", "body", "object", "state, repo, format, severity, since"),
                Param("all", "body", "boolean", "true to decide every held file"))),
    Route("POST", _Q + "/{id}/rescan", Action.DECIDE,
          "Scan a quarantined file again with today's scanners and policy", rescan, _ID,
          takes_comment=True),
    Route("GET", "/waivers", Action.VIEW, "Waivers, newest first", list_waivers,
          (Param("status", "query", "string", "active, expiring (within 7 days), expired or "
                 "revoked"),)),
    Route("DELETE", "/waivers/{id}", Action.DECIDE, "End a waiver", revoke_waiver,
          (Param("id", "path", "integer"),), takes_comment=True),
    Route("GET", "/repos", Action.VIEW, "Blocked repos", list_repos),
    Route("POST", "/repos/{type}/{namespace}/{name}/block", Action.BLOCK, "Block a repo", block,
          _REPO, takes_comment=True),
    Route("POST", "/repos/{type}/{namespace}/{name}/unblock", Action.BLOCK, "Unblock a repo",
          unblock, _REPO, takes_comment=True),
    Route("GET", "/repos/{type}/{namespace}/{name}/bom", Action.VIEW,
          "The CycloneDX 1.6 ML-BOM of a mirrored revision", bom,
          (*_REPO, Param("revision", "query", "string", "a branch, tag or commit (main)"))),
    Route("GET", "/repos/{type}/{namespace}/{name}/risk", Action.VIEW,
          "The risk card of a mirrored revision: access control, licence, file-format safety, "
          "publisher traceability and version timeliness, each low, medium or high", risk,
          (*_REPO, Param("revision", "query", "string", "a branch, tag or commit (main)"))),
    Route("GET", "/updates", Action.VIEW,
          "Upstream changes the watch noticed on mirrored branches and tags, newest first: "
          "last check, new head and commits, the files changed with our state and the Hub's "
          "scan of each, what prefetching them gave (the JSON of hubwarden watch status)",
          updates,
          (Param("all", "query", "boolean", "true: every watched branch and tag, changed or "
                 "not"),)),
    Route("GET", "/repos/{type}/{namespace}/{name}/signature", Action.VIEW,
          "The model signature of a mirrored revision: verified (by whom), unsigned, invalid, "
          "untrusted signer or unverifiable, with each file against its signed digest",
          signature,
          (*_REPO, Param("revision", "query", "string", "a branch, tag or commit (main)"))),
    Route("GET", "/changes", Action.VIEW, "Pinned changes waiting for review", list_changes),
    Route("POST", "/changes/{type}/{namespace}/{name}/{ref}/approve", Action.DECIDE,
          "Approve a pinned change: re-pin and serve the new head", approve_change, _REF,
          takes_comment=True),
    Route("POST", "/changes/{type}/{namespace}/{name}/{ref}/reject", Action.DECIDE,
          "Reject a pinned change: keep the approved commit", reject_change, _REF,
          takes_comment=True),
    Route("GET", "/summary", Action.VIEW, "Counts by state and the latest decisions", summary),
    Route("GET", "/pins", Action.VIEW, "The pins of a repo", pins,
          (Param("repo", "query", "string", "namespace/name"),
           Param("type", "query", "string", "models (default), datasets or spaces"))),
    Route("GET", "/audit", Action.VIEW, "The audit log, newest last (Accept: "
          "application/x-ndjson streams all of it)", audit,
          (Param("action", "query", "string", "e.g. review.released"),
           Param("actor", "query", "string", "e.g. token:alice or os:root"),
           Param("repo", "query", "string", "namespace/name"),
           Param("type", "query", "string", "models (default), datasets or spaces"),
           Param("since", "query", "string", "7d, 12h, 90m or an ISO time"),
           Param("after", "query", "integer", "only events after this id"),
           Param("limit", "query", "integer", "1 to 10000 (100)"))),
)  # fmt: skip


# -- OpenAPI -----------------------------------------------------------------------------------

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"},
                   "hint": {"type": "string"}},
    "required": ["error", "detail", "hint"],
}  # fmt: skip


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of `ROUTES`."""
    paths: dict[str, Any] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "security": [{"bearer": []}],
            "x-hubwarden-permission": route.action.value,
            "parameters": [_parameter(p) for p in route.params],
            "responses": {
                "200": {"description": "done", "content": {"application/json": {"schema": {}}}},
                **{
                    str(status): {"description": text, "content": _error_content()}
                    for status, text in (
                        (400, "bad input"),
                        (401, "no valid admin token"),
                        (403, "the token's role may not do this"),
                        (404, "no such item"),
                        (409, "not in a state that allows it"),
                    )
                },
            },
        }
        if route.takes_comment:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {
                    "type": "object", "required": ["comment"],
                    "properties": {"comment": {"type": "string", "minLength": 1},
                                   **{p.name: {"type": p.kind, "description": p.description}
                                      for p in route.body}}}}},
            }  # fmt: skip
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Hubwarden admin API", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


def _parameter(param: Param) -> dict[str, Any]:
    return {
        "name": param.name,
        "in": param.where,
        "required": param.where == "path",
        "description": param.description,
        "schema": {"type": param.kind},
    }


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": _ERROR_SCHEMA}}


# -- the sub-application -----------------------------------------------------------------------


def _error(status: int, error: str, detail: str, hint: str) -> web.Response:
    body = {"error": error, "detail": detail, "hint": hint}
    return web.json_response(body, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where errors of the admin API become JSON."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.error, exc.message, exc.hint)
    except InvalidInput as exc:
        return _error(400, "bad_input", exc.message, "fix the value named and retry")
    except NotHeld as exc:
        return _error(409, "not_held", exc.message, "see GET /admin/api/quarantine/{id}")
    except RescanImpossible as exc:
        return _error(409, "conflict", exc.message, "release or reject it instead")
    except ReviewNotFound as exc:
        return _error(404, "not_found", exc.message, "list what exists with the GET routes")
    except ReviewError as exc:
        return _error(409, "conflict", exc.message, "list what waits with the GET routes")


def _authenticated(route: Route) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or len(token) > 4096:
            hint = "send Authorization: Bearer hwa_…; see hubwarden admin token create"
            raise ApiError(401, "unauthenticated", "no admin token was sent", hint)
        identity = await _services(request).identities.authenticate(token.strip())
        if identity is None:
            raise ApiError(401, "unauthenticated", "the admin token is unknown, revoked or expired",
                           "ask an admin for a new token")  # fmt: skip
        if not identity.can(route.action):
            raise ApiError(403, "forbidden",
                           f"role {identity.role.value} may not {route.action.value}",
                           "use a token with a role that allows it")  # fmt: skip
        request[IDENTITY] = identity
        AUDIT_CONTEXT.set({"role": identity.role.value, "remote": request.remote or ""})
        logger.info("admin %s by %s: %s", route.handler.__name__, shown(identity.name),
                    shown(request.path))  # fmt: skip
        answer = await route.handler(request)
        if isinstance(answer, web.StreamResponse):
            return answer
        return web.json_response(answer)

    return handle


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def _not_found(request: web.Request) -> web.Response:
    return _error(404, "not_found", f"no admin route {shown(request.path)}",
                  f"see {PREFIX}/openapi.json")  # fmt: skip


def admin_api() -> web.Application:
    """The `/admin/api/` sub-application; it finds the services on its parent (`SERVICES`)."""
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/openapi.json", _openapi)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _authenticated(route))
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app
