"""Grading a pickle walk for people: decompiled calls, and each finding with its call.

`describe` renders a symbolic value (never more than 200 characters); `findings_with_calls`
attaches to each global's finding the first call the pickle makes to it, and `pickle_span` says
which pickle of a stream an offset is in (fickling's second opinion decompiles that one).
"""

from __future__ import annotations

import bisect

from scanners.pickle_state import WalkResult
from scanners.pickle_values import Global, LongText, Made
from scanners.report import Finding


def describe(value: object, depth: int = 0) -> str:
    """A short, readable rendering of a symbolic value for findings (never more than 200 chars)."""
    text = _describe(value, depth)
    return text if len(text) <= 200 else text[:197] + "..."


def _describe(value: object, depth: int) -> str:
    if isinstance(value, Global):
        return value.dotted
    if isinstance(value, str):
        return repr(value[:80])
    if isinstance(value, bytes):
        return repr(value[:40])
    if isinstance(value, int | float | bool) or value is None:
        return repr(value)
    if depth > 2:
        return "…"
    if isinstance(value, tuple):
        return "(" + ", ".join(_describe(v, depth + 1) for v in value[:6]) + ")"
    if isinstance(value, Made):
        return describe_call(value.origin, value.args, depth + 1)
    if isinstance(value, LongText):
        return f"<{value.length} chars>"
    return f"<{type(value).__name__.removesuffix('V').lower()}>"


def describe_call(callee: object, args: object, depth: int = 0) -> str:
    """`module.name(arg, ...)`: the decompiled form of one call."""
    if isinstance(callee, str):
        return f"<{callee}>"
    inner = (
        ", ".join(_describe(v, depth + 1) for v in args[:6])
        if isinstance(args, tuple)
        else _describe(args, depth + 1)
    )
    text = f"{_describe(callee, depth + 1)}({inner})"
    return text if len(text) <= 200 else text[:197] + "..."


def pickle_span(result: WalkResult, offset: int, size: int) -> tuple[int, int]:
    """The pickle (start, end) that `offset` falls in; `size`: where the stream ends."""
    start = bisect.bisect_right(result.starts, offset) - 1
    if start < 0:
        return 0, size
    begin = result.starts[start]
    if start + 1 < len(result.starts):
        return begin, result.starts[start + 1]
    return begin, result.end if result.end > begin else size


def findings_with_calls(result: WalkResult, member: str | None = None) -> list[Finding]:
    """The walk's findings, each global finding carrying its decompiled call and the member."""
    out: list[Finding] = []
    for finding in result.findings:
        details = dict(finding.details)
        glob = details.get("global")
        if isinstance(glob, str) and glob in result.calls:
            details["call"] = result.calls[glob]
        if member is not None:
            details["member"] = member
        out.append(
            Finding(
                finding.scanner,
                finding.code,
                finding.severity,
                finding.outcome,
                finding.message if member is None else f"{member}: {finding.message}",
                details,
            )
        )
    return out
