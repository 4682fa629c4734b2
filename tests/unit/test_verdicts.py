"""Verdicts (`proxy.trust.verdicts.decide`): a scan report and the policy's rule hits → release,
quarantine or reject, with the reason and the rule that decided."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from proxy.config import NewRepos, PolicySettings, RuleAction
from proxy.metadata import EntryType, TreeEntry
from proxy.repos import RepoRef, RepoType
from proxy.trust.rules import Policy, RuleHit
from proxy.trust.verdicts import Decision, Verdict, decide, summary
from scanners import scan_file
from scanners.report import Finding, Outcome, ScanReport, Severity

REPO = RepoRef.parse(RepoType.MODEL, "org/model")


def _policy(**settings: object) -> Policy:
    return Policy(PolicySettings(**settings))  # type: ignore[arg-type]


def _entry(path: str = "model.bin") -> TreeEntry:
    return TreeEntry(EntryType.FILE, path, "0" * 40, 10)


def _finding(outcome: Outcome, message: str = "m", code: str = "") -> Finding:
    code = code or f"CODE_{outcome.value.upper()}"
    return Finding("test", code, Severity.HIGH, outcome, message)


def _report(*findings: Finding, file_format: str = "pickle") -> ScanReport:
    return ScanReport("f", file_format, 1, findings, {"test": "1"}, 0.0)


def _outcomes(*outcomes: Outcome) -> ScanReport:
    return _report(*(_finding(o, f"finding {i}") for i, o in enumerate(outcomes)))


def _judge(
    policy: Policy, report: ScanReport, path: str = "model.bin", *, new_repo: bool = False
) -> Decision:
    hits = policy.after_scan(REPO, _entry(path), report, new_repo=new_repo)
    return decide(report, hits, waived=policy.waived)


def _scanned(tmp_path: Path, name: str, content: bytes) -> ScanReport:
    path = tmp_path / name
    path.write_bytes(content)
    return scan_file(path, name=name)


# -- defaults reproduce the scan's verdicts --------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "verdict"),
    [
        ((), Verdict.RELEASE),
        ((Outcome.CLEAN,), Verdict.RELEASE),
        ((Outcome.REVIEW,), Verdict.QUARANTINE),
        ((Outcome.ERROR,), Verdict.QUARANTINE),
        ((Outcome.MALICIOUS,), Verdict.REJECT),
        ((Outcome.CLEAN, Outcome.REVIEW), Verdict.QUARANTINE),
        ((Outcome.ERROR, Outcome.MALICIOUS), Verdict.REJECT),
    ],
)
def test_decide_default_policy_each_outcome_gives_todays_verdict(
    outcomes: tuple[Outcome, ...], verdict: Verdict
) -> None:
    assert _judge(_policy(), _outcomes(*outcomes)).verdict is verdict


@pytest.mark.parametrize(
    ("name", "content", "verdict"),
    [
        ("model.pkl", pickle.dumps({"weights": [1.0, 2.0]}), Verdict.RELEASE),
        ("modeling.py", b"def f():\n    return 1\n", Verdict.QUARANTINE),
        ("README.md", b"# model\n", Verdict.RELEASE),
    ],
)
def test_decide_default_policy_real_scans_give_todays_verdict(
    tmp_path: Path, name: str, content: bytes, verdict: Verdict
) -> None:
    assert _judge(_policy(), _scanned(tmp_path, name, content), name).verdict is verdict


def test_decide_default_policy_releases_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(path))
    decision = _judge(_policy(), scan_file(path), path.name)
    assert decision == Decision(Verdict.RELEASE, "clean", None, ())


def test_decide_default_policy_releases_opaque_data() -> None:
    report = _report(_finding(Outcome.CLEAN, code="DATA_OPAQUE"), file_format="opaque")
    assert _judge(_policy(), report).verdict is Verdict.RELEASE


def test_decide_without_hits_holds_what_the_scan_holds() -> None:
    report = _report(_finding(Outcome.REVIEW, "unknown import", code="REMOTE_CODE_PYTHON"))
    assert decide(report, []) == Decision(Verdict.QUARANTINE, "unknown import", None, ())


# -- malicious is never waived ---------------------------------------------------------------------


def test_decide_malicious_is_rejected_whatever_the_rules_say() -> None:
    report = _report(
        _finding(Outcome.MALICIOUS, "exec of decoded data", code="REMOTE_CODE_OBFUSCATED_EXEC"),
        _finding(Outcome.REVIEW, code="REMOTE_CODE_PYTHON"),
        file_format="python",
    )
    policy = _policy(remote_code=RuleAction.ALLOW, audit_rules=("*",))
    decision = _judge(policy, report, "modeling.py")
    assert decision.verdict is Verdict.REJECT
    assert decision.reason.startswith("exec of decoded data")
    assert decision.rule is None


def test_decide_malicious_with_waiver_for_its_code_is_still_rejected() -> None:
    report = _report(_finding(Outcome.MALICIOUS, code="FORMAT_UNKNOWN"))
    assert decide(report, [], waived={"unknown_formats"}).verdict is Verdict.REJECT


# -- enforced hits ---------------------------------------------------------------------------------


def test_decide_enforced_reject_hit_rejects_naming_the_rule() -> None:
    policy = _policy(allowed_formats=("safetensors",))
    decision = _judge(policy, _report(file_format="pickle"), "model.bin")
    assert decision.verdict is Verdict.REJECT
    assert decision.rule == "allowed_formats"
    assert decision.reason.startswith('policy rule allowed_formats: "model.bin" is pickle')


def test_decide_reject_hit_beats_an_earlier_hold_hit() -> None:
    hold = RuleHit("new_repos", RuleAction.HOLD, "policy rule new_repos: new")
    reject = RuleHit("max_file_bytes", RuleAction.REJECT, "policy rule max_file_bytes: big")
    decision = decide(_report(), [hold, reject])
    assert (decision.verdict, decision.rule) == (Verdict.REJECT, "max_file_bytes")


def test_decide_enforced_hold_hit_quarantines_a_clean_file() -> None:
    decision = _judge(_policy(new_repos=NewRepos.REVIEW), _report(), new_repo=True)
    assert (decision.verdict, decision.rule) == (Verdict.QUARANTINE, "new_repos")


@pytest.mark.parametrize(
    ("action", "verdict"),
    [(RuleAction.HOLD, Verdict.QUARANTINE), (RuleAction.REJECT, Verdict.REJECT)],
)
def test_decide_scanner_error_follows_scanner_errors(action: RuleAction, verdict: Verdict) -> None:
    report = _report(_finding(Outcome.ERROR, "timed out", code="SCANNER_TIMEOUT"))
    decision = _judge(_policy(scanner_errors=action), report)
    assert (decision.verdict, decision.rule) == (verdict, "scanner_errors")
    assert decision.reason.endswith("could not be fully scanned: timed out")


def test_decide_scanner_error_is_never_waived() -> None:
    report = _report(_finding(Outcome.ERROR, code="REMOTE_CODE_UNPARSEABLE"))
    decision = decide(report, [], waived={"scanner_errors", "remote_code"})
    assert decision.verdict is Verdict.QUARANTINE


# -- waivers --------------------------------------------------------------------------------------


def test_decide_remote_code_allowed_releases_review_only_remote_code(tmp_path: Path) -> None:
    report = _scanned(tmp_path, "modeling.py", b"import os\nos.system('ls')\n")
    assert report.outcome is Outcome.REVIEW
    decision = _judge(_policy(remote_code=RuleAction.ALLOW), report, "modeling.py")
    assert decision.verdict is Verdict.RELEASE


def test_decide_remote_code_allowed_still_holds_other_review_findings() -> None:
    report = _report(
        _finding(Outcome.REVIEW, code="REMOTE_CODE_AUTO_MAP"),
        _finding(Outcome.REVIEW, "imports foo.bar", code="PICKLE_GLOBAL_UNKNOWN"),
    )
    decision = _judge(_policy(remote_code=RuleAction.ALLOW), report)
    assert decision == Decision(Verdict.QUARANTINE, "imports foo.bar", None, ())


def test_decide_unknown_formats_allowed_releases_unknown_format() -> None:
    report = _report(_finding(Outcome.REVIEW, code="FORMAT_UNKNOWN"), file_format="unknown")
    decision = _judge(_policy(unknown_formats=RuleAction.ALLOW), report)
    assert decision.verdict is Verdict.RELEASE


def test_decide_remote_code_rejected_rejects_remote_code() -> None:
    report = _report(_finding(Outcome.REVIEW, code="REMOTE_CODE_PYTHON"), file_format="python")
    decision = _judge(_policy(remote_code=RuleAction.REJECT), report, "modeling.py")
    assert (decision.verdict, decision.rule) == (Verdict.REJECT, "remote_code")


# -- audit mode ------------------------------------------------------------------------------------


def test_decide_audited_reject_is_recorded_and_released() -> None:
    policy = _policy(allowed_formats=("safetensors",), audit_rules=("allowed_formats",))
    decision = _judge(policy, _report(file_format="pickle"))
    assert decision.verdict is Verdict.RELEASE
    assert [hit.rule for hit in decision.audited] == ["allowed_formats"]


def test_decide_audited_remote_code_rule_still_holds_on_the_finding() -> None:
    report = _report(_finding(Outcome.REVIEW, "python code", code="REMOTE_CODE_PYTHON"))
    policy = _policy(remote_code=RuleAction.REJECT, audit_rules=("remote_code",))
    decision = _judge(policy, report, "modeling.py")
    assert decision == Decision(Verdict.QUARANTINE, "python code", None, decision.audited)
    assert [hit.rule for hit in decision.audited] == ["remote_code"]


def test_decide_audited_scanner_errors_still_holds() -> None:
    report = _report(_finding(Outcome.ERROR, code="SCANNER_CRASHED"))
    policy = _policy(scanner_errors=RuleAction.REJECT, audit_rules=("*",))
    assert _judge(policy, report).verdict is Verdict.QUARANTINE


# -- reasons ---------------------------------------------------------------------------------------


def test_decide_reason_escapes_finding_messages() -> None:
    report = _report(_finding(Outcome.REVIEW, "imports x\r\nINFO forged"))
    assert decide(report, []).reason == "imports x\\r\\nINFO forged"


def test_summary_lists_the_worst_findings_first() -> None:
    report = _outcomes(Outcome.CLEAN, Outcome.MALICIOUS, Outcome.REVIEW, Outcome.ERROR)
    assert summary(report, limit=2) == "finding 1; finding 3"
