"""What an import may change, judged against this mirror's records: the rules of trust
(DESIGN.md rules 3 to 5) applied to a bundle's revisions before anything is written.

Refused (ImportRefused; nothing is written), for each repo of the bundle:

- the repo is blocked here;
- a commit this mirror recorded has other content in the bundle (a path with another hash or
  size, or a complete file list with other paths): the same commit with other bytes is a
  replaced file (rule 3);
- a pinned file replaced at its pinned commit: the bundle's tree of the pinned commit P, or the
  bundle's own pin at P, gives the path another hash than the pin here;
- history rewritten: a branch or tag the mirror holds at commit O moves to a commit N whose
  history (the bundle's listing of N, or one recorded here) does not contain O. A bundle whose
  N is older than O (O's history contains N) is not a rewrite: the ref is kept at O;
- a branch or tag moves to a commit that changes a pinned file (a commit newer than the pin's,
  rule 5) and `pinned_change = "block"`;
- where a commit stands cannot be told (neither the bundle nor this mirror holds the listing
  that would say) for a ref move or a changed pinned file: fail closed.

Pull requests and conversions (`refs/pr/N`, `refs/convert/NAME`) have histories of their own:
they move without the descent check, as online (proxy.trust.gate.Gate.on_ref_moved).

Applied: a pinned change under `pinned_change = "hold"` records the new head, while the ref
keeps serving its last approved commit (the change then waits in `hubwarden changes`); under
`"allow"` the path is pinned again at the new head once its file is released. The exporter's
pins of paths this mirror has not pinned are taken where the bundle's tree agrees with them and
the file is released here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from proxy.airgap.errors import BundleError
from proxy.airgap.state import RevisionState
from proxy.config import PinnedChange
from proxy.errors import shown
from proxy.metadata import TreeEntry
from proxy.repos import RepoRef
from proxy.store.bundles import LocalCommit, LocalRepo, PinWrite, RefWrite
from proxy.store.repository import PinRecord


class ImportRefused(BundleError):
    """A bundle contradicts what this mirror holds (pins, history, recorded commits)."""


@dataclass(frozen=True, slots=True)
class Ancestry:
    """Commit listings (head → shas, newest first, complete): the bundle's and this mirror's."""

    histories: Mapping[str, Sequence[str]]

    def is_ancestor(self, older: str, newer: str) -> bool | None:
        """Whether `older` is in the history of `newer`; None when no listing tells."""
        if older == newer:
            return True
        listing = self.histories.get(newer)
        if listing is not None:
            return older in listing
        listing = self.histories.get(older)
        if listing is not None and newer in listing:
            return False  # newer is older than `older`: no cycle in a history
        return None


@dataclass(frozen=True, slots=True)
class RefOutcome:
    name: str
    commit: str
    status: str
    """new, moved, unchanged, kept (the bundle's is older), held (a pinned change waits)."""
    detail: str = ""


@dataclass(slots=True)
class RepoJudgement:
    refs: list[RefWrite] = field(default_factory=list)
    pins: list[PinWrite] = field(default_factory=list)
    outcomes: list[RefOutcome] = field(default_factory=list)
    held_changes: list[tuple[str, str, str]] = field(default_factory=list)
    """(ref, path, detail) of pinned changes that wait for review."""
    moved_pins: list[tuple[PinRecord, str]] = field(default_factory=list)
    """(new pin, previous etag) of pins moved under `pinned_change = "allow"`."""


@dataclass(frozen=True, slots=True)
class RepoFacts:
    """What this mirror holds of one repo, read before judging."""

    repo: RepoRef
    local: LocalRepo | None
    commits: Mapping[str, LocalCommit]
    """This mirror's records of the bundle's commits (those it has)."""
    histories: Mapping[str, Sequence[str]]
    """This mirror's recorded listings of the refs', pins' and bundle's commits."""


def judge_repo(
    facts: RepoFacts,
    states: Sequence[RevisionState],
    *,
    pinned_path: Callable[[str], bool],
    pinned_change: PinnedChange,
    released: Callable[[str], bool],
) -> RepoJudgement:
    """Judge one repo's revisions. `released(etag)`: whether that file is (or will be, once
    imported) released here. Raises ImportRefused."""
    repo = facts.repo
    local = facts.local
    if local is not None and local.block is not None:
        raise ImportRefused(
            f"{repo} is blocked on this mirror ({shown(local.block)}); nothing was imported: an "
            "admin lifts the block first (`hubwarden repos unblock`)"
        )
    _check_commits(repo, facts.commits, states)
    histories: dict[str, Sequence[str]] = dict(facts.histories)
    for state in states:
        if state.history is not None:
            histories.setdefault(state.commit, state.history)
    ancestry = Ancestry(histories)
    pins = dict(local.pins) if local is not None else {}
    _check_pins_at_their_commits(repo, pins, states)
    judgement = RepoJudgement()
    done: set[str] = set()
    for state in states:
        if state.ref is None or state.ref.name in done:
            continue
        done.add(state.ref.name)
        _judge_ref(
            facts,
            state,
            pins,
            ancestry,
            judgement,
            pinned_path=pinned_path,
            pinned_change=pinned_change,
            released=released,
        )
    _adopt_pins(states, pins, judgement, pinned_path=pinned_path, released=released)
    return judgement


def _check_commits(
    repo: RepoRef, recorded: Mapping[str, LocalCommit], states: Sequence[RevisionState]
) -> None:
    """A commit is immutable: its tree here and in the bundle (and between the bundle's own
    revisions of one commit) must agree."""
    trees: dict[str, dict[str, TreeEntry]] = {}
    for state in states:
        tree = {e.path: e for e in state.tree}
        earlier = trees.setdefault(state.commit, tree)
        if earlier != tree:
            raise ImportRefused(
                f"the bundle gives commit {state.commit} of {repo} two different file lists; "
                "nothing was imported"
            )
        local = recorded.get(state.commit)
        if local is None:
            continue
        for path, entry in local.entries.items():
            theirs = tree.get(path)
            if theirs is None or _content(theirs) != _content(entry):
                raise ImportRefused(
                    f'commit {state.commit[:12]} of {repo}: "{shown(path)}" is '
                    f"{_described(entry)} on this mirror and {_described(theirs)} in the "
                    "bundle: the same commit with other content, refused as a replaced file "
                    "is; nothing was imported"
                )
        if local.tree_complete and set(tree) != set(local.entries):
            extra = sorted(set(tree) - set(local.entries))[0]
            raise ImportRefused(
                f'commit {state.commit[:12]} of {repo}: the bundle lists "{shown(extra)}", '
                "which this mirror's complete file list of that commit does not hold: the same "
                "commit with other content, refused as a replaced file is; nothing was imported"
            )


def _content(entry: TreeEntry) -> tuple[object, ...]:
    return (entry.entry_type, entry.oid, entry.size, entry.lfs.sha256 if entry.lfs else None)


def _described(entry: TreeEntry | None) -> str:
    if entry is None:
        return "absent"
    return f"{entry.etag[:12]} ({entry.size} bytes)"


def _check_pins_at_their_commits(
    repo: RepoRef, pins: Mapping[str, PinRecord], states: Sequence[RevisionState]
) -> None:
    """A pinned file given another hash at its pinned commit: by the bundle's tree of that
    commit, or by the bundle's own pin."""
    for state in states:
        entries = state.entries()
        for pin in pins.values():
            entry = entries.get(pin.path)
            if state.commit == pin.commit and entry is not None and entry.etag != pin.etag:
                raise _replaced(repo, pin, entry.etag)
        for theirs in state.pins:
            mine = pins.get(theirs.path)
            if mine is not None and mine.commit == theirs.commit and mine.etag != theirs.etag:
                raise _replaced(repo, mine, theirs.etag)


def _replaced(repo: RepoRef, pin: PinRecord, etag: str) -> ImportRefused:
    return ImportRefused(
        f'pinned file replaced: "{shown(pin.path)}" of {repo} is pinned to {pin.etag[:12]} at '
        f"commit {pin.commit[:12]} on this mirror, and the bundle says {etag[:12]} at that same "
        "commit; refused as a replaced file is (the exporter may be compromised); nothing was "
        "imported"
    )


def _judge_ref(
    facts: RepoFacts,
    state: RevisionState,
    pins: dict[str, PinRecord],
    ancestry: Ancestry,
    judgement: RepoJudgement,
    *,
    pinned_path: Callable[[str], bool],
    pinned_change: PinnedChange,
    released: Callable[[str], bool],
) -> None:
    assert state.ref is not None
    repo, name, head = facts.repo, state.ref.name, state.commit
    current = facts.local.refs.get(name) if facts.local is not None else None
    special = name.startswith("refs/")
    kind = state.ref.kind
    if current is not None and current.commit == head:
        if current.kind is None and kind is not None:
            judgement.refs.append(
                RefWrite(name, kind, head, current.approved_commit or head, current)
            )
        judgement.outcomes.append(RefOutcome(name, current.approved_commit or head, "unchanged"))
        return
    if current is not None and not special:
        forward = ancestry.is_ancestor(current.commit, head)
        if forward is None:
            raise ImportRefused(
                f'cannot tell whether "{shown(name)}" of {repo} at {head[:12]} descends from '
                f"{current.commit[:12]}, where this mirror holds it: neither the bundle nor this "
                "mirror holds the commit listing that would say; export it again from a mirror "
                "that recorded it (`hf api list_repo_commits` through that mirror records it); "
                "nothing was imported"
            )
        if not forward:
            if ancestry.is_ancestor(head, current.commit):
                judgement.outcomes.append(
                    RefOutcome(
                        name,
                        current.approved_commit or current.commit,
                        "kept",
                        f"the bundle's {head[:12]} is older than {current.commit[:12]} here",
                    )
                )
                return
            raise ImportRefused(
                f'history rewritten: "{shown(name)}" of {repo} moves from {current.commit[:12]} '
                f"(where this mirror holds it) to {head[:12]}, which does not descend from it "
                "(force-pushed); refused as the mirror blocks a rewritten repo; nothing was "
                "imported"
            )
    approved, held = head, ""
    if not special:
        changed = _changed_pins(repo, state, pins, ancestry, pinned_path)
        if changed and pinned_change is PinnedChange.BLOCK:
            pin, etag = changed[0]
            raise ImportRefused(
                f'"{shown(name)}" of {repo} moves to {head[:12]}, which changes pinned file '
                f'"{shown(pin.path)}" ({pin.etag[:12]} at {pin.commit[:12]} here, {etag[:12]} '
                'there), and pinned_change = "block"; nothing was imported'
            )
        if changed and pinned_change is PinnedChange.HOLD:
            pin, etag = changed[0]
            approved = (current.approved_commit or current.commit) if current else pin.commit
            held = (
                f"{pin.path} changed at {head[:12]} (pinned {pin.etag[:12]} at "
                f"{pin.commit[:12]}); serving {approved[:12]} until the change is approved"
            )
            for pin, _etag in changed:
                judgement.held_changes.append((name, pin.path, held))
        if changed and pinned_change is PinnedChange.ALLOW:
            for pin, etag in changed:
                if released(etag):
                    moved = PinRecord(pin.path, etag, head)
                    judgement.pins.append(
                        PinWrite(moved, facts.local.pins.get(pin.path) if facts.local else None)
                    )
                    judgement.moved_pins.append((moved, pin.etag))
                    pins[pin.path] = moved
    judgement.refs.append(RefWrite(name, kind, head, approved, current))
    status = "held" if held else ("moved" if current is not None else "new")
    judgement.outcomes.append(RefOutcome(name, approved, status, held))


def _changed_pins(
    repo: RepoRef,
    state: RevisionState,
    pins: Mapping[str, PinRecord],
    ancestry: Ancestry,
    pinned_path: Callable[[str], bool],
) -> list[tuple[PinRecord, str]]:
    """The pinned files the revision's commit changes as a newer commit (rule 5)."""
    entries = state.entries()
    changed: list[tuple[PinRecord, str]] = []
    for pin in pins.values():
        entry = entries.get(pin.path)
        if entry is None or entry.etag == pin.etag or not pinned_path(pin.path):
            continue
        newer = ancestry.is_ancestor(pin.commit, state.commit)
        if newer is None:
            raise ImportRefused(
                f'"{shown(pin.path)}" of {repo} at {state.commit[:12]} differs from its pin '
                f"({pin.etag[:12]} at {pin.commit[:12]}) and no commit listing in the bundle or "
                "on this mirror tells where the commit stands; nothing was imported"
            )
        if newer:
            changed.append((pin, entry.etag))
    return changed


def _adopt_pins(
    states: Iterable[RevisionState],
    pins: Mapping[str, PinRecord],
    judgement: RepoJudgement,
    *,
    pinned_path: Callable[[str], bool],
    released: Callable[[str], bool],
) -> None:
    """The exporter's pins of paths not pinned here, where the bundle's tree of the revision
    agrees and the file is released here."""
    taken = set(pins)
    for state in states:
        entries = state.entries()
        for theirs in state.pins:
            entry = entries.get(theirs.path)
            if theirs.path in taken or entry is None or entry.etag != theirs.etag:
                continue
            if not pinned_path(theirs.path) or not released(theirs.etag):
                continue
            taken.add(theirs.path)
            judgement.pins.append(PinWrite(theirs, None))


def relevant_heads(local: LocalRepo | None, states: Iterable[RevisionState]) -> set[str]:
    """The commits whose recorded listings judging may need: the refs', the pins' and the
    bundle's."""
    heads = {s.commit for s in states}
    if local is not None:
        heads |= {r.commit for r in local.refs.values()}
        heads |= {p.commit for p in local.pins.values()}
    return heads
