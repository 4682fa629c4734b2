"""The Hub's own scan results, recorded beside ours and never deciding anything (issue 11, item 5).

The Hub publishes two things (hub-protocol.md §3.3, §3.4):

- `securityRepoStatus` in repo info asked with `securityStatus=true`:
  `{"scansDone": bool, "filesWithIssues": [...]}`; the items are taken as file paths or as
  objects with a `path` (and a `level` when given) [?: the item shape is not documented];
- `securityFileStatus` on tree and paths-info entries asked with `expand=true`:
  `{"status": "safe"|"unsafe"|"caution"|…, "avScan": {…}, "pickleImportScan": {…}}`.

Both are read when present and ignored when absent (the Hub has changed these fields before).
Each file status becomes an INFO finding of scanner "hub" whose outcome is `clean` whatever the
Hub says: the verdict stays ours (DESIGN.md rule 6: we scan ourselves, fail closed). Where the two
disagree (the Hub flags a file we released; the Hub calls safe a file we hold), the risk card says
so. Pure: no I/O; upstream JSON is hostile, so every value is checked and cut.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.errors import shown
from scanners.report import Finding, JsonValue, Outcome, Severity

HUB_SCANNER = "hub"
MAX_FLAGGED_FILES = 1000
MAX_DETAIL_CHARS = 200


class HubVerdict(enum.StrEnum):
    SAFE = "safe"
    CAUTION = "caution"
    UNSAFE = "unsafe"
    UNKNOWN = "unknown"  # queued, unscanned, an error, or a value we do not know

    @property
    def flags(self) -> bool:
        """True when the Hub warns about the file."""
        return self in (HubVerdict.CAUTION, HubVerdict.UNSAFE)


@dataclass(frozen=True, slots=True)
class HubFileStatus:
    """What the Hub says about one file: its verdict and the scans behind it, in words."""

    path: str
    verdict: HubVerdict
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HubRepoStatus:
    """The Hub's repo-wide status: whether its scans are done, and the files it flags."""

    scans_done: bool | None
    flagged: tuple[HubFileStatus, ...] = ()


def _verdict(value: object) -> HubVerdict:
    text = str(value).lower() if isinstance(value, str) else ""
    if text in ("unsafe", "dangerous", "malicious", "infected"):
        return HubVerdict.UNSAFE
    if text in ("caution", "suspicious", "warning"):
        return HubVerdict.CAUTION
    if text in ("safe", "innocuous", "clean"):
        return HubVerdict.SAFE
    return HubVerdict.UNKNOWN


def repo_status(raw: JsonValue) -> HubRepoStatus | None:
    """`securityRepoStatus` read, or None when the Hub did not give one."""
    if not isinstance(raw, dict):
        return None
    done = raw.get("scansDone")
    items = raw.get("filesWithIssues")
    flagged: list[HubFileStatus] = []
    for item in items[:MAX_FLAGGED_FILES] if isinstance(items, list) else []:
        if isinstance(item, str) and item:
            flagged.append(HubFileStatus(item[:1024], HubVerdict.UNSAFE, "listed with issues"))
        elif isinstance(item, dict) and isinstance(item.get("path"), str) and item["path"]:
            level = _verdict(item.get("level"))
            verdict = level if level.flags else HubVerdict.UNSAFE
            flagged.append(HubFileStatus(str(item["path"])[:1024], verdict, "listed with issues"))
    return HubRepoStatus(done if isinstance(done, bool) else None, tuple(flagged))


def file_status(path: str, raw: JsonValue) -> HubFileStatus | None:
    """A tree entry's `securityFileStatus` read, or None when absent or not an object."""
    if not isinstance(raw, dict):
        return None
    verdict = _verdict(raw.get("status"))
    parts: list[str] = []
    av = raw.get("avScan")
    if isinstance(av, dict) and isinstance(av.get("virusFound"), bool):
        names = av.get("virusNames")
        found = ", ".join(str(n) for n in names[:5]) if isinstance(names, list) else ""
        parts.append(
            f"antivirus: {found or 'virus found'}" if av["virusFound"] else "antivirus: clean"
        )
    pickles = raw.get("pickleImportScan")
    if isinstance(pickles, dict) and isinstance(pickles.get("highestSafetyLevel"), str):
        level = str(pickles["highestSafetyLevel"])
        parts.append(f"pickle imports: {level}")
        if verdict is HubVerdict.UNKNOWN:
            verdict = _verdict(level)
    return HubFileStatus(path, verdict, shown("; ".join(parts))[:MAX_DETAIL_CHARS])


def merged(
    repo: HubRepoStatus | None, files: Mapping[str, HubFileStatus]
) -> dict[str, HubFileStatus]:
    """Per-file statuses, the repo-wide list filling in files with no status of their own."""
    found = dict(files)
    for flagged in repo.flagged if repo is not None else ():
        found.setdefault(flagged.path, flagged)
    return found


def hub_finding(status: HubFileStatus, commit: str) -> Finding:
    """The Hub's word on a file as a finding of ours: INFO, outcome clean, never deciding."""
    what = f" ({status.detail})" if status.detail else ""
    return Finding(
        scanner=HUB_SCANNER,
        code=f"HUB_{status.verdict.value.upper()}",
        severity=Severity.INFO,
        outcome=Outcome.CLEAN,
        message=f"the Hub's own scan reports this file as {status.verdict.value}{what}; "
        "recorded for comparison only, the verdict is this mirror's",
        details={"verdict": status.verdict.value, "detail": status.detail, "commit": commit},
    )


def disagreement(status: HubFileStatus, state: str, outcome: str) -> str | None:
    """Why our verdict and the Hub's differ on a fetched file, or None when they agree (or one
    side has not decided). `state` is the blob's state, `outcome` our scan's outcome."""
    ours = f"{state}{f', our scan: {outcome}' if outcome else ''}"
    if status.verdict.flags and state == "released":
        return (
            f"{status.path}: the Hub reports it {status.verdict.value}"
            f"{f' ({status.detail})' if status.detail else ''}; this mirror released it ({ours})"
        )
    if status.verdict is HubVerdict.SAFE and state in ("quarantined", "rejected"):
        return f"{status.path}: the Hub reports it safe; this mirror holds it ({ours})"
    return None
