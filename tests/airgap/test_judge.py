"""Judging a bundle's revisions against this mirror's records (pure: no database)."""

from __future__ import annotations

import dataclasses

import pytest

from proxy.airgap.judge import Ancestry, ImportRefused, RepoFacts, RepoJudgement, judge_repo
from proxy.airgap.state import RevisionState, StateRef
from proxy.config import PinnedChange
from proxy.metadata import EntryType, LfsInfo, RefKind, TreeEntry
from proxy.repos import RepoRef, RepoType
from proxy.store.bundles import LocalCommit, LocalRepo
from proxy.store.repository import PinRecord, RefRecord

REPO = RepoRef(RepoType.MODEL, "org/model")
A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
OLD, NEW = "1" * 64, "2" * 64
PATH = "model.safetensors"


def entry(sha256: str) -> TreeEntry:
    return TreeEntry(EntryType.FILE, PATH, "f" * 40, 10, LfsInfo(sha256, 10, 130))


def state(
    commit: str,
    history: list[str] | None,
    weights: str = OLD,
    ref: str = "main",
    kind: RefKind | None = RefKind.BRANCH,
) -> RevisionState:
    return RevisionState(
        REPO,
        False,
        "false",
        commit,
        StateRef(ref, kind, commit) if ref else None,
        {"sha": commit},
        (entry(weights),),
        tuple(history) if history else None,
        {s: {"id": s} for s in history or ()},
        (),
        (),
        (),
        (),
    )


def local(
    ref: str | None = None,
    pin: PinRecord | None = None,
    approved: str | None = None,
    block: str | None = None,
) -> LocalRepo:
    refs = {"main": RefRecord("main", ref, approved or ref, RefKind.BRANCH)} if ref else {}
    pins = {pin.path: pin} if pin else {}
    return LocalRepo(1, False, "false", refs, pins, block)


def judge(
    facts: RepoFacts, *states: RevisionState, change: PinnedChange = PinnedChange.HOLD
) -> RepoJudgement:
    return judge_repo(
        facts,
        states,
        pinned_path=lambda p: not p.endswith(".md"),
        pinned_change=change,
        released=lambda _etag: True,
    )


def facts(
    repo: LocalRepo | None,
    histories: dict[str, list[str]] | None = None,
    commits: dict[str, LocalCommit] | None = None,
) -> RepoFacts:
    return RepoFacts(REPO, repo, commits or {}, histories or {})


def test_ancestry_reads_either_listing() -> None:
    ancestry = Ancestry({B: [B, A], D: [D]})
    assert ancestry.is_ancestor(A, B) is True
    assert ancestry.is_ancestor(B, A) is False  # A's listing is unknown, B's names A
    assert ancestry.is_ancestor(A, D) is False
    assert ancestry.is_ancestor(A, C) is None
    assert ancestry.is_ancestor(C, C) is True


def test_judge_ref_moving_forward_is_moved() -> None:
    judged = judge(facts(local(ref=A)), state(B, [B, A]))
    assert [(o.name, o.status, o.commit) for o in judged.outcomes] == [("main", "moved", B)]
    assert judged.refs[0].expected == RefRecord("main", A, A, RefKind.BRANCH)


def test_judge_ref_older_than_this_mirrors_is_kept() -> None:
    judged = judge(facts(local(ref=B), {B: [B, A]}), state(A, [A]))
    assert [(o.status, o.commit) for o in judged.outcomes] == [("kept", B)]
    assert judged.refs == []


def test_judge_ref_rewritten_is_refused() -> None:
    with pytest.raises(ImportRefused, match="history rewritten"):
        judge(facts(local(ref=A)), state(C, [C]))


def test_judge_ref_move_without_any_listing_is_refused() -> None:
    with pytest.raises(ImportRefused, match="cannot tell whether"):
        judge(facts(local(ref=A)), state(C, None))


def test_judge_pull_request_moves_without_the_descent_check() -> None:
    repo = dataclasses.replace(
        local(), refs={"refs/pr/1": RefRecord("refs/pr/1", A, A, RefKind.PULL_REQUEST)}
    )
    judged = judge(facts(repo), state(C, [C], ref="refs/pr/1", kind=RefKind.PULL_REQUEST))
    assert [o.status for o in judged.outcomes] == ["moved"]


def test_judge_blocked_repo_is_refused() -> None:
    with pytest.raises(ImportRefused, match="blocked on this mirror"):
        judge(facts(local(block="admin: no")), state(A, [A]))


def test_judge_recorded_commit_with_other_content_is_refused() -> None:
    recorded = LocalCommit({"sha": A}, True, {PATH: entry(OLD)})
    with pytest.raises(ImportRefused, match="the same commit with other content"):
        judge(facts(local(ref=A), commits={A: recorded}), state(A, [A], weights=NEW))


def test_judge_pin_given_another_hash_at_its_commit_is_refused() -> None:
    pinned = local(ref=A, pin=PinRecord(PATH, OLD, A))
    revision = dataclasses.replace(state(B, [B, A]), pins=(PinRecord(PATH, NEW, A),))
    with pytest.raises(ImportRefused, match="pinned file replaced"):
        judge(facts(pinned), revision)


@pytest.mark.parametrize(
    ("change", "status", "serves"),
    [(PinnedChange.HOLD, "held", A), (PinnedChange.ALLOW, "moved", B)],
)
def test_judge_newer_commit_changing_a_pin_follows_pinned_change(
    change: PinnedChange, status: str, serves: str
) -> None:
    judged = judge(
        facts(local(ref=A, pin=PinRecord(PATH, OLD, A))), state(B, [B, A], NEW), change=change
    )
    assert [(o.status, o.commit) for o in judged.outcomes] == [(status, serves)]
    assert [p.pin for p in judged.pins] == ([PinRecord(PATH, NEW, B)] if serves == B else [])


def test_judge_newer_commit_changing_a_pin_under_block_is_refused() -> None:
    with pytest.raises(ImportRefused, match='pinned_change = "block"'):
        judge(
            facts(local(ref=A, pin=PinRecord(PATH, OLD, A))),
            state(B, [B, A], NEW),
            change=PinnedChange.BLOCK,
        )


def test_judge_exporters_pin_is_taken_where_the_tree_agrees() -> None:
    revision = dataclasses.replace(state(A, [A]), pins=(PinRecord(PATH, OLD, A),))
    disagreeing = dataclasses.replace(state(A, [A]), pins=(PinRecord(PATH, NEW, A),))
    assert [p.pin for p in judge(facts(None), revision).pins] == [PinRecord(PATH, OLD, A)]
    assert judge(facts(None), disagreeing).pins == []
