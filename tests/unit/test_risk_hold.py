"""`[policy] max_risk`'s pure parts: the rule's message (rating, dimensions, remedy, escaping),
the settled rating it reads, what it never holds, and the per-commit cache of `RiskHold`
(one gathering for many files, forgotten when a settle changes the card)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from proxy.config import MaxRisk, PolicySettings, RuleAction
from proxy.errors import HubwardenError
from proxy.repos import RepoRef, RepoType
from proxy.store.repository import RepoRecord
from proxy.trust.risk import DimensionName, Rating, RepoFile, assess
from proxy.trust.risk_hold import RiskCardUnknown, RiskHold, changes_the_card, is_exempt
from proxy.trust.rules import MAX_RISK, Policy
from scanners.report import Finding, Outcome, ScanReport, Severity
from tests.unit.test_risk import _facts

REPO = RepoRef(RepoType.MODEL, "org/m")
COMMIT = "a" * 40


def _policy(limit: str, **others: object) -> Policy:
    return Policy(PolicySettings(max_risk=MaxRisk(limit), **others))  # type: ignore[arg-type]


def _report(path: str, file_format: str = "safetensors", *findings: Finding) -> ScanReport:
    return ScanReport(path, file_format, 10, tuple(findings), {}, 0.0)


def _record() -> RepoRecord:
    return RepoRecord(pk=7, ref=REPO, private=False, gated="false")


def test_risk_hits_off_and_high_hold_nothing() -> None:
    card = assess(_facts(private=True))  # access control high
    assert _policy("off").risk_hits(REPO, card) == []
    assert _policy("high").risk_hits(REPO, card) == []
    assert _policy("off").risk_limit is None and _policy("high").risk_limit is Rating.HIGH


def test_risk_hits_name_rating_dimensions_and_what_to_do() -> None:
    card = assess(_facts(private=True, card_licence="cc-by-nc-4.0"))
    (hit,) = _policy("medium").risk_hits(REPO, card)
    assert (hit.rule, hit.action, hit.audited) == (MAX_RISK, RuleAction.HOLD, False)
    assert hit.message.startswith(
        'policy rule max_risk: model "org/m" is rated high on its risk card, above max_risk '
        "medium: access control high (private: "
    )
    assert "licence high (cc-by-nc-4.0: custom-restricted (CC-BY-NC-4.0))" in hit.message
    assert "publisher traceability" not in hit.message  # low: not behind the hold
    assert hit.message.endswith(
        "a reviewer may release the file, or waive the repo (release with scope repo), or an "
        "admin may raise [policy] max_risk"
    )


def test_risk_hits_in_audit_mode_are_recorded_not_enforced() -> None:
    card = assess(_facts(gated="auto"))
    (hit,) = _policy("low", audit_rules=("max_risk",)).risk_hits(REPO, card)
    assert hit.audited and not hit.enforced


def test_risk_hits_escape_hostile_text_and_cut_long_summaries() -> None:
    files = tuple(
        RepoFile(f"modeling_{'x' * 60}_{n}\x1b[2J.py", 10, "released", "python", "clean")
        for n in range(3)
    )
    card = assess(_facts(files=files))
    (hit,) = _policy("medium").risk_hits(REPO, card)
    assert "\x1b" not in hit.message and "\\x1b[2J" in hit.message
    assert "..." in hit.message and len(hit.message) < 600
    assert hit.message.isascii()


def test_risk_unknown_hit_holds_when_the_card_cannot_be_computed() -> None:
    (hit,) = _policy("low").risk_unknown_hit(REPO, "the file list cannot be had now")
    assert hit.action is RuleAction.HOLD and "cannot be computed" in hit.message
    assert _policy("off").risk_unknown_hit(REPO, "x") == []


def test_settled_rating_leaves_out_files_not_scanned_yet() -> None:
    unscanned = _facts(
        files=(RepoFile("config.json", 600, "released", "json", "clean"),
               RepoFile("model.safetensors", 10_000)),
    )  # fmt: skip
    card = assess(unscanned)
    (formats,) = [d for d in card.dimensions if d.name is DimensionName.FORMAT]
    assert (formats.rating, formats.settled_rating) == (Rating.MEDIUM, Rating.LOW)
    assert _policy("low").risk_hits(REPO, card) == []
    pickled = dataclasses.replace(
        unscanned, files=(*unscanned.files, RepoFile("extra.bin", 10, "released", "pickle"))
    )
    (formats,) = [d for d in assess(pickled).dimensions if d.name is DimensionName.FORMAT]
    assert formats.settled_rating is Rating.MEDIUM  # a pickle beside safetensors: known


def test_settled_rating_holds_for_no_guess_from_a_name() -> None:
    """An unscanned `.bin` is pickle-bearing by its name (OpenVINO's are not): it holds nothing
    before its own scan says so; once scanned as a pickle, it does."""
    guessed = _facts(
        files=(RepoFile("openvino.bin", 10_000), RepoFile("tokenizer.model", 10, "released",
                                                            "protobuf", "clean")),
    )  # fmt: skip
    (formats,) = [d for d in assess(guessed).dimensions if d.name is DimensionName.FORMAT]
    assert (formats.rating, formats.settled_rating) == (Rating.HIGH, Rating.LOW)
    scanned = dataclasses.replace(
        guessed, files=(RepoFile("openvino.bin", 10_000, "quarantined", "pickle", "review"),)
    )
    (formats,) = [d for d in assess(scanned).dimensions if d.name is DimensionName.FORMAT]
    assert formats.settled_rating is Rating.HIGH


def test_files_held_by_max_risk_are_not_held_files_of_the_card() -> None:
    held = RepoFile(
        "model.safetensors", 10_000, "quarantined", "safetensors", "clean",
        reason="policy rule max_risk: model \"org/m\" is rated medium",
    )  # fmt: skip
    card = assess(_facts(files=(held,)))
    (formats,) = [d for d in card.dimensions if d.name is DimensionName.FORMAT]
    assert formats.rating is Rating.LOW
    assert formats.facts["held_files"] == [] and formats.facts["held_by_max_risk"] == [held.path]
    other = dataclasses.replace(held, reason="policy rule remote_code: ...")
    (formats,) = [d for d in assess(_facts(files=(other,))).dimensions
                  if d.name is DimensionName.FORMAT]  # fmt: skip
    assert formats.rating is Rating.HIGH and formats.summary == "1 file(s) held"


@pytest.mark.parametrize(
    ("file_format", "exempt"),
    [("text", True), ("json", True), ("empty", True), ("safetensors", False),
     ("python", False), ("jinja", False), ("data", False), ("pickle", False)],
)  # fmt: skip
def test_is_exempt_text_json_and_empty_only(file_format: str, exempt: bool) -> None:
    assert is_exempt(file_format) is exempt


def test_changes_the_card_on_holds_findings_and_licences() -> None:
    clean = _report("model.safetensors")
    assert not changes_the_card("model.safetensors", clean, held_by_another_rule=False)
    assert changes_the_card("model.safetensors", clean, held_by_another_rule=True)
    assert changes_the_card("LICENSE", _report("LICENSE", "text"), held_by_another_rule=False)
    finding = Finding("s", "X", Severity.MEDIUM, Outcome.CLEAN, "m")
    assert changes_the_card("a.bin", _report("a.bin", "data", finding), held_by_another_rule=False)


async def test_risk_hold_gathers_once_per_commit_and_again_after_a_change() -> None:
    calls: list[tuple[str, bool]] = []

    async def facts(repo: RepoRecord, commit: str, token: str | None, fetch: bool) -> object:
        calls.append((commit, fetch))
        await asyncio.sleep(0.01)
        return _facts()

    now = [0.0]
    hold = RiskHold(facts, ttl_s=30.0, clock=lambda: now[0])  # type: ignore[arg-type]
    settling = ("model.safetensors", 10, _report("model.safetensors"))
    cards = await asyncio.gather(
        *(hold.card(_record(), COMMIT, settling, None, Rating.MEDIUM) for _ in range(8))
    )
    assert calls == [(COMMIT, True)]  # eight files, one gathering
    assert all(c.max_risk is Rating.MEDIUM and c.held_for == () for c in cards)
    hold.changed(7, COMMIT)
    await hold.card(_record(), COMMIT, settling, None, Rating.MEDIUM)
    assert len(calls) == 2
    now[0] = 31.0  # expired: another replica's settles are seen within TTL_S
    await hold.card(_record(), COMMIT, settling, None, Rating.MEDIUM)
    assert len(calls) == 3
    await hold.card(_record(), COMMIT, settling, None, Rating.MEDIUM, fetch=False)
    assert len(calls) == 3  # the cached facts serve a file gathered without fetching


async def test_risk_hold_judges_the_settling_file_by_its_own_scan() -> None:
    async def facts(repo: RepoRecord, commit: str, token: str | None, fetch: bool) -> object:
        return _facts(files=(RepoFile("model.bin", 10_000),))  # by its name: pickle-bearing

    hold = RiskHold(facts)  # type: ignore[arg-type]
    opaque = ("model.bin", 10_000, _report("model.bin", "opaque"))
    card = await hold.card(_record(), COMMIT, opaque, None, Rating.MEDIUM)
    assert card.held_for == ()  # its scan says opaque data, not a pickle
    pickled = ("model.bin", 10_000, _report("model.bin", "pickle"))
    card = await hold.card(_record(), COMMIT, pickled, None, Rating.MEDIUM)
    assert [d.name for d in card.held_for] == [DimensionName.FORMAT]


async def test_risk_hold_commit_of_a_rescanned_file_must_be_recorded() -> None:
    async def first(etag: str) -> str:
        return COMMIT if etag == "known" else ""

    hold = RiskHold(lambda *a: None, first_commit=first)  # type: ignore[arg-type]
    assert await hold.commit_of("known") == COMMIT
    with pytest.raises(RiskCardUnknown):
        await hold.commit_of("unknown")
    assert issubclass(RiskCardUnknown, HubwardenError)
