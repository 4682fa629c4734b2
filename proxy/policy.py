"""Policy: findings → verdict, and the gate of pins and blocks in front of every file.

Rules of trust (DESIGN.md): a blob is released only when its verdict is release and no pin or block
says otherwise; a new commit that changes a pinned file follows the `pinned_change` setting; a
repo whose bytes did not match what upstream advertised is blocked as tampered.
"""

from __future__ import annotations

import enum
import logging

from proxy.errors import shown
from proxy.lifecycle import Settlement
from proxy.store.models import BlobState
from scanners.report import Outcome, ScanReport

logger = logging.getLogger(__name__)


class Verdict(enum.StrEnum):
    RELEASE = "release"
    QUARANTINE = "quarantine"
    REJECT = "reject"


def verdict_for(report: ScanReport) -> Verdict:
    """Malicious → reject; anything not clean (review, could not scan) → quarantine."""
    outcome = report.outcome
    if outcome is Outcome.CLEAN:
        return Verdict.RELEASE
    if outcome is Outcome.MALICIOUS:
        return Verdict.REJECT
    return Verdict.QUARANTINE


def summary(report: ScanReport, limit: int = 3) -> str:
    """A short reason for a held message: the worst findings' messages."""
    worst = sorted(report.findings, key=lambda f: -f.outcome.rank)[:limit]
    return "; ".join(shown(f.message) for f in worst) or report.outcome.value


_STATES = {
    Verdict.RELEASE: BlobState.RELEASED,
    Verdict.QUARANTINE: BlobState.QUARANTINED,
    Verdict.REJECT: BlobState.REJECTED,
}


async def default_settlement(spec: object, report: ScanReport) -> Settlement:
    """The verdict of the findings alone (no policy rule): a blob's next state and reason."""
    return Settlement(_STATES[verdict_for(report)], summary(report))
