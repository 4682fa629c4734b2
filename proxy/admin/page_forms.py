"""What the admin pages read from people: the filters of a query string and the fields of a
POSTed form, parsed into the values the `Review` service takes. A bad value raises InvalidInput
naming the field, which the pages show as a 400 page.

Forms are read with `proxy.hub.bodies.request_body` (once per request, shared with the CSRF
check), never aiohttp's `post()`: that answers 500 to an unknown `charset=` and parses
multipart bodies.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from proxy.admin.filters import held_filter, parse_since
from proxy.admin.review import AuditQuery
from proxy.admin.sessions import FORM_LIMITS
from proxy.errors import InvalidInput
from proxy.hub.bodies import request_body
from proxy.repos import RepoRef, RepoType
from proxy.store.review import HeldFilter
from proxy.store.waivers import WAIVER_STATUSES

MAX_FILTER_CHARS = 200
MAX_ID_DIGITS = 12
PAGE_ROWS = 50  # rows of the quarantine list on one page, unless ?limit= says otherwise
MAX_PAGE_ROWS = 200
AUDIT_ROWS = 200
MAX_AUDIT_ROWS = 10_000
SCOPES = ("blob", "path", "repo", "org")
EXPIRIES: dict[str, dt.timedelta | None] = {
    "": None,
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
    "90d": dt.timedelta(days=90),
}
_ACTION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz_.")


# -- query strings -----------------------------------------------------------------------------


def query_text(query: Mapping[str, str], name: str) -> str:
    """A filter typed into a page's form: trimmed, one line, at most MAX_FILTER_CHARS."""
    text = query.get(name, "").strip()
    if len(text) > MAX_FILTER_CHARS:
        raise InvalidInput(name, text, f"is longer than {MAX_FILTER_CHARS} characters")
    if not text.isprintable():
        raise InvalidInput(name, text, "holds control characters; type plain text")
    return text


def query_number(query: Mapping[str, str], name: str, default: int, most: int) -> int:
    text = query.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or len(text) > MAX_ID_DIGITS or not 1 <= int(text) <= most:
        raise InvalidInput(name, text, f"must be a number from 1 to {most}")
    return int(text)


def _since_out_of_range(text: str) -> InvalidInput:
    # parse_since lets OverflowError out for an ISO time whose offset leaves the calendar
    # (0001-01-01T00:00+01:00): without this, a 500.
    return InvalidInput("since", text, "is out of range; type a time like 2026-12-01 or 7d")


def _since(text: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        return parse_since(text, dt.datetime.now(dt.UTC))
    except OverflowError as exc:
        raise _since_out_of_range(text) from exc


@dataclass(frozen=True, slots=True)
class HeldQuery:
    """The quarantine list's query string, as typed: shown again in the form, kept in links."""

    state: str = ""
    repo: str = ""
    file_format: str = ""
    severity: str = ""
    since: str = ""
    limit: int = PAGE_ROWS
    after: int = 0  # the last review id of the previous page

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> HeldQuery:
        found = cls(
            state=query_text(query, "state"),
            repo=query_text(query, "repo"),
            file_format=query_text(query, "format"),
            severity=query_text(query, "severity"),
            since=query_text(query, "since"),
            limit=query_number(query, "limit", PAGE_ROWS, MAX_PAGE_ROWS),
            after=query_number(query, "after", 0, 10**MAX_ID_DIGITS),
        )
        found.held_filter()  # every bad value refused now, each naming its field
        return found

    def held_filter(self) -> HeldFilter:
        """The filter for `Review.held`. Raises InvalidInput naming the field."""
        try:
            return held_filter(
                state=self.state, repo=self.repo, file_format=self.file_format,
                severity=self.severity, since=self.since,
            )  # fmt: skip
        except OverflowError as exc:
            raise _since_out_of_range(self.since) from exc

    @property
    def is_filtered(self) -> bool:
        return any((self.state, self.repo, self.file_format, self.severity, self.since))

    def link(self, after: int = 0) -> str:
        """This list (same filters and page size) from review id `after` on."""
        pairs = [
            ("state", self.state), ("repo", self.repo), ("format", self.file_format),
            ("severity", self.severity), ("since", self.since),
            ("limit", "" if self.limit == PAGE_ROWS else str(self.limit)),
            ("after", str(after) if after else ""),
        ]  # fmt: skip
        query = urlencode([(k, v) for k, v in pairs if v])
        return "/admin/quarantine" + (f"?{query}" if query else "")


@dataclass(frozen=True, slots=True)
class AuditForm:
    """The audit page's filters, as typed."""

    action: str = ""
    actor: str = ""
    repo_type: str = RepoType.MODEL.value
    repo: str = ""
    since: str = ""
    limit: int = AUDIT_ROWS

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> AuditForm:
        action = query_text(query, "action")
        if action and not set(action) <= _ACTION_CHARS:
            raise InvalidInput("action", action, "is not an audit action, e.g. review.released")
        repo_type = query_text(query, "type") or RepoType.MODEL.value
        if repo_type not in {t.value for t in RepoType}:
            raise InvalidInput("type", repo_type, "is not one of model, dataset, space")
        found = cls(
            action=action,
            actor=query_text(query, "actor"),
            repo_type=repo_type,
            repo=query_text(query, "repo"),
            since=query_text(query, "since"),
            limit=query_number(query, "limit", AUDIT_ROWS, MAX_AUDIT_ROWS),
        )
        found.audit_query()
        return found

    def audit_query(self) -> AuditQuery:
        """The query for `Review.audit`. Raises InvalidInput naming the field."""
        repo = RepoRef.parse(RepoType(self.repo_type), self.repo) if self.repo else None
        return AuditQuery(self.action or None, self.actor or None, repo, _since(self.since))

    @property
    def is_filtered(self) -> bool:
        return any((self.action, self.actor, self.repo, self.since))


def waiver_status(query: Mapping[str, str]) -> str:
    """The waivers page's `?status=` ("" for every waiver)."""
    status = query_text(query, "status")
    if status and status not in WAIVER_STATUSES:
        raise InvalidInput("status", status, f"must be one of {', '.join(WAIVER_STATUSES)}")
    return status


def number_in_path(request: web.Request, what: str, hint: str) -> int:
    """`{id}` of a route, e.g. a waiver's id."""
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > MAX_ID_DIGITS:
        raise InvalidInput(what, text, f"is not a number; {hint}")
    return int(text)


# -- forms -------------------------------------------------------------------------------------


async def form_field(request: web.Request, name: str, *, required: str = "") -> str:
    """A text field of the POSTed form (its first value); `required` says what to write when
    it is empty."""
    values = (await request_body(request, FORM_LIMITS)).strings(name)
    text = values[0].strip() if values else ""
    if required and not text:
        raise InvalidInput(name, text, f"is required: {required}")
    return text


async def comment_field(request: web.Request) -> str:
    return await form_field(request, "comment", required="say why, for the audit log")


async def repo_field(request: web.Request) -> RepoRef:
    type_text = await form_field(request, "type", required="model, dataset or space")
    types = {t.value: t for t in RepoType}
    if type_text not in types:
        raise InvalidInput("repo type", type_text, "is not one of model, dataset, space")
    return RepoRef.parse(types[type_text], await form_field(request, "repo", required="org/name"))


@dataclass(frozen=True, slots=True)
class ReleaseTerms:
    """What a release form asks for: why, how far the release reaches, and until when."""

    comment: str
    scope: str  # one of SCOPES
    expires_in: dt.timedelta | None


async def release_terms(request: web.Request) -> ReleaseTerms:
    comment = await comment_field(request)
    scope = await form_field(request, "scope") or "blob"
    if scope not in SCOPES:
        raise InvalidInput("scope", scope, "must be blob, path, repo or org")
    expires = await form_field(request, "expires")
    if expires not in EXPIRIES:
        raise InvalidInput("expires", expires, "must be never (empty), 7d, 30d or 90d")
    return ReleaseTerms(comment, scope, EXPIRIES[expires] if scope != "blob" else None)
