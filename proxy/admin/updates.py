"""What the upstream watch saw, as the admin API (`GET /admin/api/updates`), the page
(`/admin/updates`) and `hubwarden watch status` all show it: one shape, one function.

Each watched branch or tag (`WatchRecord`: last check, upstream head, the last change and the
files it changed with the Hub's verdict on each, what prefetching them gave) is joined with what
this mirror decided of each changed file at the new head (released, quarantined, rejected, or not
fetched) and with how many commits the change brought when the head's history is recorded. Where
the Hub's verdict and ours disagree, the file says so (`proxy.trust.hub_scans.disagreement`).

`updates(changed_only=True)` is the API's default (the refs with a change noticed, "update
available" and the rest); `changed_only=False` lists every watched ref (`?all=true`, and
`hubwarden watch status` without `--changed`).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config import Settings
from proxy.store.models import BlobState
from proxy.store.repository import Repository
from proxy.store.watches import ChangedFile, WatchRecord, WatchRecords
from proxy.trust.hub_scans import HubFileStatus, HubVerdict, disagreement
from scanners.report import JsonValue

MAX_STATES = 200  # changed files of one ref whose state is looked up
NOT_FETCHED = "not fetched"
_SETTLED = (BlobState.RELEASED, BlobState.QUARANTINED, BlobState.REJECTED)
_VERDICTS = {v.value: v for v in HubVerdict}


@dataclass(frozen=True, slots=True)
class ChangedView:
    """A changed file: the change, our state at the new head, the Hub's verdict, and where the
    two disagree."""

    file: ChangedFile
    state: str | None  # None: not looked up (past MAX_STATES), or deleted
    disagreement: str = ""

    def to_json(self) -> dict[str, JsonValue]:
        return {**self.file.to_json(), "state": self.state, "disagreement": self.disagreement}


@dataclass(frozen=True, slots=True)
class UpdateView:
    """One watched ref and what its last change came to here."""

    record: WatchRecord
    changed: tuple[ChangedView, ...]
    new_commits: int | None  # commits from the previous head to the new one (None: unknown)

    @property
    def disagreements(self) -> int:
        return sum(1 for c in self.changed if c.disagreement)

    def to_json(self) -> dict[str, JsonValue]:
        return {
            **self.record.to_json(),
            "changed": [c.to_json() for c in self.changed],
            "new_commits": self.new_commits,
        }


def watch_state(settings: Settings) -> str:
    """Whether the watch runs, in words: `every 3600 s (prefetch on)`, `off (offline)`…"""
    if settings.offline:
        return "off (offline)"
    interval = settings.watch.interval_s
    if interval <= 0:
        return "off (interval_s = 0)"
    return f"every {interval:g} s (prefetch {'on' if settings.watch.prefetch else 'off'})"


async def updates(
    records: WatchRecords, repository: Repository, *, changed_only: bool
) -> list[UpdateView]:
    """The watched refs (`changed_only`: those with a change noticed), newest change first."""
    return [await _view(repository, r) for r in await records.listed(noticed_only=changed_only)]


async def _view(repository: Repository, record: WatchRecord) -> UpdateView:
    head = record.upstream_head
    states: dict[str, str] = {}
    if record.changed and head is not None:
        states = await _states(repository, record, head)
    changed = tuple(_changed(c, states) for c in record.changed)
    return UpdateView(record, changed, await _new_commits(repository, record))


async def _states(repository: Repository, record: WatchRecord, head: str) -> dict[str, str]:
    """path → our state of the changed files at the new head (first MAX_STATES of them)."""
    commit = await repository.get_commit(record.repo.pk, head)
    if commit is None:
        return {}
    wanted = [c.path for c in record.changed if c.change != "deleted"][:MAX_STATES]
    states: dict[str, str] = {}
    for entry in await repository.get_entries(commit.pk, wanted):
        blob = await repository.get_blob(entry.etag)
        settled = blob is not None and blob.state in _SETTLED
        states[entry.path] = blob.state.value if blob is not None and settled else NOT_FETCHED
    return states


def _changed(file: ChangedFile, states: dict[str, str]) -> ChangedView:
    state = states.get(file.path)
    text = ""
    if file.hub and state is not None:
        hub = HubFileStatus(file.path, _VERDICTS.get(file.hub, HubVerdict.UNKNOWN), file.hub_detail)
        text = disagreement(hub, state, "") or ""
    return ChangedView(file, state, text)


async def _new_commits(repository: Repository, record: WatchRecord) -> int | None:
    if record.previous is None or record.upstream_head is None:
        return None
    history = await repository.get_history(record.repo.pk, record.upstream_head)
    shas = [c.commit_id for c in history] if history is not None else []
    return shas.index(record.previous) if record.previous in shas else None
