"""The filters of the review lists, parsed once for the API, the web pages and the CLI: which
held files (state, repo, format, severity, since) and which audit events (since)."""

from __future__ import annotations

import datetime as dt
import re

from proxy.admin.commands import parse_duration
from proxy.errors import InvalidInput
from proxy.store.models import BlobState
from proxy.store.review import HeldFilter
from scanners.report import Severity

_REPO_FILTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/([A-Za-z0-9][A-Za-z0-9._-]{0,95})?)?")
_FORMAT = re.compile(r"[a-z0-9_.-]{1,32}")
_HELD_STATES = {s.value: s for s in (BlobState.QUARANTINED, BlobState.REJECTED)}


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """`7d`, `12h`, `90m` ago, or an ISO 8601 date or time (UTC unless it says otherwise)."""
    text = text.strip()
    if text[-1:] in ("d", "h", "m") and text[:-1].isdigit():
        try:
            return now - parse_duration(text)
        except InvalidInput as exc:
            raise InvalidInput("since", text, "must be at most 3650d ago, or a date") from exc
    try:
        moment = dt.datetime.fromisoformat(text)
        return moment.astimezone(dt.UTC) if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved across midnight
        raise InvalidInput(
            "since", text, "must be a time like 2026-12-01 or 2026-12-01T09:00Z, or 7d, 12h, 90m"
        ) from None


def held_filter(
    *,
    state: str | None = None,
    repo: str | None = None,
    file_format: str | None = None,
    severity: str | None = None,
    since: str | None = None,
) -> HeldFilter:
    """A `HeldFilter` from the texts a person typed (empty means no filter). Raises
    InvalidInput naming the bad value."""
    states: tuple[BlobState, ...] = HeldFilter().states
    if state:
        if state not in _HELD_STATES:
            raise InvalidInput("state", state, "must be quarantined or rejected")
        states = (_HELD_STATES[state],)
    if repo and not _REPO_FILTER.fullmatch(repo):
        raise InvalidInput("repo", repo, "must be namespace/name, or namespace/ for all of it")
    if file_format and not _FORMAT.fullmatch(file_format):
        raise InvalidInput("format", file_format, "is not a format name (e.g. pickle, gguf)")
    if severity and severity not in Severity.__members__.values():
        raise InvalidInput("severity", severity, "must be one of info, low, medium, high, critical")
    return HeldFilter(
        states=states,
        repo=repo or None,
        file_format=file_format or None,
        severity=Severity(severity) if severity else None,
        since=parse_since(since, dt.datetime.now(dt.UTC)) if since else None,
    )
