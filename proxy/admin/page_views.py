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
from proxy.store.models import SignatureStatus
from proxy.store.signatures import SignatureRecord
from proxy.store.waivers import WaiverRecord
from proxy.trust.signature_report import FileStanding, standing_of
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


@dataclass(frozen=True, slots=True)
class SignatureView:
    """A revision's model signature as a page shows it: `status` (verified, unsigned, invalid,
    untrusted_signer, unverifiable, not_checked) gives the badge, `text` says it with the
    signer and why, `file` how one file stands against it ("" when no file is concerned)."""

    status: str
    text: str
    file: str = ""
    stale: bool = False  # judged under what was trusted before; judged again at the next fetch

    @property
    def badge(self) -> str:
        """The badge's class: sig-ok, sig-bad, sig-warn or sig-none."""
        if self.status == SignatureStatus.VERIFIED.value and self.file not in _FILE_BAD:
            return "sig-ok"
        if self.status in _BAD or self.file in _FILE_BAD:
            return "sig-bad"
        return "sig-warn" if self.status == SignatureStatus.UNVERIFIABLE.value else "sig-none"

    @property
    def label(self) -> str:
        return self.status.replace("_", " ")


_BAD = frozenset({SignatureStatus.INVALID.value, SignatureStatus.UNTRUSTED_SIGNER.value})
_FILE_WORDS = {
    FileStanding.COVERED: "this file is covered by the signature",
    FileStanding.MISMATCH: "this file differs from what was signed",
    FileStanding.UNCOVERED: "this file is not covered by the signature",
    FileStanding.IGNORED: "this file was left out by the signer",
    FileStanding.SIGNATURE: "this is the signature file",
    FileStanding.PENDING: "this file is signed, not fetched yet",
}
_FILE_BAD = frozenset({_FILE_WORDS[FileStanding.MISMATCH], _FILE_WORDS[FileStanding.UNCOVERED]})
NOT_CHECKED = SignatureView("not_checked", "not checked yet (checked when a file is fetched)")


def signature_view(
    record: SignatureRecord | None,
    *,
    path: str | None = None,
    sha256: str | None = None,
    signature_file: str = "",
    current: bool = True,
) -> SignatureView:
    """What a page says of a revision's recorded signature and, with `path` (and the sha256
    this mirror computed of its bytes), of one file against it."""
    if record is None:
        return NOT_CHECKED
    status = record.status
    if status is SignatureStatus.VERIFIED:
        text = f"verified by {record.signer}"
    elif status is SignatureStatus.UNSIGNED:
        text = "unsigned"
    else:
        label = status.value.replace("_", " ")
        who = (
            f" ({record.signer})" if record.signer and status is not SignatureStatus.INVALID else ""
        )
        text = f"{label}{who}" + (f": {record.detail}" if record.detail else "")
    file = ""
    if path is not None:
        if path == signature_file:
            file = _FILE_WORDS[FileStanding.SIGNATURE]
        else:
            file = _FILE_WORDS.get(standing_of(record, path, sha256), "")
    return SignatureView(status.value, text[:MAX_DETAIL_CHARS], file, not current)


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
