"""A chat template's findings: the scanner name they carry and how they are built."""

from __future__ import annotations

from scanners.report import Finding, JsonValue, Outcome, Severity, cut_text

SCANNER = "templates"


def finding(
    code: str,
    outcome: Outcome,
    message: str,
    severity: Severity | None = None,
    **details: JsonValue,
) -> Finding:
    if severity is None:
        severity = outcome.default_severity
    return Finding(SCANNER, code, severity, outcome, message, dict(details))


def cut(text: str, limit: int = 120) -> str:
    return cut_text(text, limit)
