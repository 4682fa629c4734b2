"""Verdicts: a scan report and the policy's rule hits → release, quarantine or reject.

In this order (the first that applies decides):
1. a MALICIOUS finding → reject, whatever the rules say (no rule, audit mode or waiver helps);
2. an enforced REJECT hit → reject, naming the rule;
3. an enforced HOLD hit → quarantine, naming the rule;
4. a REVIEW or ERROR finding not waived → quarantine, with the worst findings as the reason.
   Only REVIEW findings of a rule set to "allow" (`Policy.waived`: `remote_code`,
   `unknown_formats`) are waived; ERROR findings never are (DESIGN.md rule 6);
5. otherwise → release.

Audited hits (rules in audit mode) never change the verdict; they come back in
`Decision.audited` for the audit log. With every rule at its default the verdict is the scan's:
malicious → reject, review or error → quarantine, clean → release.

    hits = policy.before_fetch(...) + policy.after_scan(repo, entry, report, new_repo=...)
    decision = decide(report, hits, waived=policy.waived)
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from proxy.config import RuleAction
from proxy.errors import shown
from proxy.trust.rules import SCANNER_ERRORS, RuleHit, finding_rule
from scanners.report import Finding, Outcome, ScanReport

SUMMARY_FINDINGS = 3


class Verdict(enum.StrEnum):
    """What becomes of a scanned blob."""

    RELEASE = "release"
    QUARANTINE = "quarantine"  # an admin decides
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict, its short human reason (escaped), the rule that decided it (None: the scan
    itself), and the audit-mode hits that were recorded but not enforced."""

    verdict: Verdict
    reason: str
    rule: str | None = None
    audited: tuple[RuleHit, ...] = ()


def summary(report: ScanReport, limit: int = SUMMARY_FINDINGS) -> str:
    """A short reason for a held message: the worst findings' messages, escaped."""
    return _worst(report.findings, limit) or report.outcome.value


def _worst(findings: Iterable[Finding], limit: int = SUMMARY_FINDINGS) -> str:
    ranked = sorted(findings, key=lambda f: -f.outcome.rank)[:limit]
    return "; ".join(shown(f.message) for f in ranked)


def _is_waived(finding: Finding, waived: Collection[str]) -> bool:
    rule = finding_rule(finding)
    return (
        finding.outcome is Outcome.REVIEW
        and rule is not None
        and rule != SCANNER_ERRORS
        and rule in waived
    )


def decide(
    report: ScanReport, hits: Sequence[RuleHit], *, waived: Collection[str] = frozenset()
) -> Decision:
    """The verdict of a scanned file (see the module docstring for the order).

    `waived`: the finding rules set to "allow" (`Policy.waived`); empty, the scan alone holds
    every REVIEW finding, as it did before policy rules existed."""
    audited = tuple(hit for hit in hits if hit.audited)
    enforced = [hit for hit in hits if not hit.audited]
    if report.outcome is Outcome.MALICIOUS:
        return Decision(Verdict.REJECT, summary(report), None, audited)
    for action, verdict in (
        (RuleAction.REJECT, Verdict.REJECT),
        (RuleAction.HOLD, Verdict.QUARANTINE),
    ):
        for hit in enforced:
            if hit.action is action:
                return Decision(verdict, hit.message, hit.rule, audited)
    holding = [
        f
        for f in report.findings
        if f.outcome in (Outcome.REVIEW, Outcome.ERROR) and not _is_waived(f, waived)
    ]
    if holding:
        return Decision(Verdict.QUARANTINE, _worst(holding), None, audited)
    return Decision(Verdict.RELEASE, summary(report), None, audited)
