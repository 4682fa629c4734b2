"""How the admin pages show things: sizes, ages and times for people, findings' details cut to
a readable length, audit details in brief. Pure functions and small view records, used by the
handlers of `proxy.admin.pages` and, as Jinja filters (`FILTERS`), by its templates."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.admin.identity import utcnow
from proxy.store.waivers import WaiverRecord
from scanners.detect import FileFormat
from scanners.report import Finding, JsonValue

MAX_DETAIL_CHARS = 400
MAX_SNIPPET_CHARS = 4000  # a decompiled pickle, shown whole up to this
MAX_BRIEF_CHARS = 120
_SHOWN_APART = frozenset({"comment", "reason", "detail", "before", "after", "path"})


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _span(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def age(since: dt.datetime, now: dt.datetime | None = None) -> str:
    """How long ago `since` was: `40 s`, `12 min`, `3 h`, `9 d`."""
    return _span(max(0, int(((now or utcnow()) - _aware(since)).total_seconds())))


def remaining(until: dt.datetime, now: dt.datetime | None = None) -> str:
    """How long until `until`, in the words of `age` (`0 s` once it has passed)."""
    return _span(max(0, int((_aware(until) - (now or utcnow())).total_seconds())))


def when(moment: dt.datetime) -> str:
    return _aware(moment).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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


def finding_views(findings: Iterable[Finding]) -> list[FindingView]:
    """Findings worst first, each with its details as lines."""
    ordered = sorted(findings, key=lambda f: -f.severity.rank)
    return [FindingView(f, tuple(_details(f.details))) for f in ordered]


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


@dataclass(frozen=True, slots=True)
class WaiverRow:
    """One line of the waivers page: the waiver, its status now, the files it let through."""

    waiver: WaiverRecord
    status: str  # one of proxy.store.waivers.WAIVER_STATUSES
    waived: int

    @property
    def can_revoke(self) -> bool:
        return self.status in ("active", "expiring")


def waiver_rows(
    waivers: Iterable[WaiverRecord], counts: Mapping[int, int], status: str, now: dt.datetime
) -> list[WaiverRow]:
    """The waivers (newest first, as listed) whose status is `status` ("" for every one)."""
    rows = [WaiverRow(w, w.status(now), counts.get(w.pk, 0)) for w in waivers]
    return [r for r in rows if not status or r.status == status]


FORMATS = tuple(sorted(f.value for f in FileFormat))  # what the quarantine list filters on

# The actions the audit page offers to filter on (any other a-z_. name may be typed in the URL).
AUDIT_ACTIONS = (
    "access.granted", "access.revoked", "blob.quarantined", "blob.rejected", "change.approved",
    "change.rejected", "pin.change_held", "pin.moved", "policy.audited", "repo.blocked",
    "repo.unblocked", "review.rejected", "review.released", "review.requested",
    "review.rescanned", "token.created", "token.revoked", "waiver.applied", "waiver.created",
    "waiver.revoked",
)  # fmt: skip

FILTERS: dict[str, Callable[..., Any]] = {
    "size": human_size,
    "age": age,
    "remaining": remaining,
    "when": when,
    "brief": brief,
}
