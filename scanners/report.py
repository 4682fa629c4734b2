"""The values a scan produces: findings, severities, verdicts and the report.

These types are the contract between the scanners, the `hubwarden scan` command and the proxy's
ingest (which receives a report from a worker process as JSON, see `ScanReport.to_json`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]


class Severity(enum.StrEnum):
    """How bad one finding is. Ordered: compare with `rank`."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {
    Severity.INFO: 0,
    Severity.LOW: 1,
    Severity.MEDIUM: 2,
    Severity.HIGH: 3,
    Severity.CRITICAL: 4,
}


class Outcome(enum.StrEnum):
    """What a scan concludes about one file, worst last.

    `clean` passes; `review` needs an admin (unknown imports, remote code, formats not
    understood); `malicious` is a known way to run code; `error` means the file could not be
    scanned (fail closed).
    """

    CLEAN = "clean"
    REVIEW = "review"
    MALICIOUS = "malicious"
    ERROR = "error"

    @property
    def exit_code(self) -> int:
        """`hubwarden scan` exit status: 0 clean, 1 needs review, 2 malicious, 3 could not scan."""
        return _OUTCOME_EXIT[self]

    @property
    def rank(self) -> int:
        return _OUTCOME_RANK[self]

    @property
    def default_severity(self) -> Severity:
        """The severity a finding with this outcome has unless its scanner says otherwise."""
        return _OUTCOME_SEVERITY[self]


_OUTCOME_EXIT = {Outcome.CLEAN: 0, Outcome.REVIEW: 1, Outcome.MALICIOUS: 2, Outcome.ERROR: 3}
# "error" ranks below "malicious": a file we know to be malicious stays malicious even if a later
# part of it could not be read.
_OUTCOME_RANK = {Outcome.CLEAN: 0, Outcome.REVIEW: 1, Outcome.ERROR: 2, Outcome.MALICIOUS: 3}
_OUTCOME_SEVERITY = {
    Outcome.CLEAN: Severity.INFO,
    Outcome.REVIEW: Severity.MEDIUM,
    Outcome.ERROR: Severity.HIGH,
    Outcome.MALICIOUS: Severity.CRITICAL,
}


def cut_text(text: str, limit: int) -> str:
    """`text` cut to `limit` characters (an ellipsis marks the cut), for messages and details."""
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True, slots=True)
class Finding:
    """One scanner result. `code` is stable (e.g. PICKLE_GLOBAL_DENIED); `outcome` is what this
    finding alone makes of the file."""

    scanner: str
    code: str
    severity: Severity
    outcome: Outcome
    message: str
    details: dict[str, JsonValue] = field(default_factory=dict)

    def to_dict(self) -> dict[str, JsonValue]:
        return {
            "scanner": self.scanner,
            "code": self.code,
            "severity": self.severity.value,
            "outcome": self.outcome.value,
            "message": self.message,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(
            scanner=str(data["scanner"]),
            code=str(data["code"]),
            severity=Severity(data["severity"]),
            outcome=Outcome(data["outcome"]),
            message=str(data["message"]),
            details=dict(data.get("details") or {}),
        )


def worst_outcome(findings: Iterable[Finding]) -> Outcome:
    """The worst outcome among `findings`; clean when there are none."""
    return max((f.outcome for f in findings), key=lambda o: o.rank, default=Outcome.CLEAN)


@dataclass(frozen=True, slots=True)
class ScanReport:
    """The result of scanning one file: its detected format, the findings, and the outcome."""

    path: str
    file_format: str
    size: int
    findings: tuple[Finding, ...]
    scanners: dict[str, str]  # scanner name -> version
    elapsed_s: float

    @property
    def outcome(self) -> Outcome:
        """The worst outcome among the findings; clean when there are none."""
        return worst_outcome(self.findings)

    def to_dict(self) -> dict[str, JsonValue]:
        return {
            "path": self.path,
            "format": self.file_format,
            "size": self.size,
            "outcome": self.outcome.value,
            "findings": [f.to_dict() for f in self.findings],
            "scanners": dict(self.scanners),
            "elapsed_s": round(self.elapsed_s, 6),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScanReport:
        return cls(
            path=str(data["path"]),
            file_format=str(data["format"]),
            size=int(data["size"]),
            findings=tuple(Finding.from_dict(f) for f in data["findings"]),
            scanners={str(k): str(v) for k, v in dict(data["scanners"]).items()},
            elapsed_s=float(data["elapsed_s"]),
        )
