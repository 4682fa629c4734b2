"""`Gate` on a real database: blocks, pins by lineage, `pinned_change`, history rewrites
(DESIGN.md rules 3 to 5).

Ancestry here is recorded in the database beforehand and the gate runs offline (no upstream), so
each case states the history it is about; the same questions asked of a real upstream are tested
end to end in tests/e2e/test_lineage.py.
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.config import PinnedChange
from proxy.errors import Held
from proxy.metadata import EntryType, LfsInfo, TreeEntry
from proxy.repos import RepoRef, RepoType
from proxy.store.models import BlockReason
from proxy.store.repository import PinRecord, RepoRecord, Repository
from proxy.trust.blocks import Blocks
from proxy.trust.gate import Gate, Standing
from proxy.trust.lineage import Lineage
from proxy.trust.pins import Pins

# History of main: A ← B (head). P is a pull request on top of B; S a stray commit.
COMMIT_A, COMMIT_B, COMMIT_P, COMMIT_S = "a" * 40, "b" * 40, "c" * 40, "d" * 40
OLD, NEW = "1" * 64, "2" * 64
WEIGHTS = "model.safetensors"


@pytest.fixture
def repository(db_sessions: async_sessionmaker[AsyncSession]) -> Repository:
    return Repository(db_sessions)


@pytest.fixture
async def record(repository: Repository) -> RepoRecord:
    record = await repository.upsert_repo(
        RepoRef(RepoType.MODEL, "org/m"), private=False, gated="false"
    )
    await repository.set_ref(record.pk, "main", COMMIT_B)
    facts = [
        (COMMIT_A, COMMIT_B, True),
        (COMMIT_B, COMMIT_A, False),
        (COMMIT_A, COMMIT_P, True),
        (COMMIT_B, COMMIT_P, True),
        (COMMIT_P, COMMIT_B, False),
        (COMMIT_S, COMMIT_B, False),
        (COMMIT_A, COMMIT_S, False),
        (COMMIT_B, COMMIT_S, False),
        (COMMIT_S, COMMIT_A, False),
    ]
    for older, newer, answer in facts:
        await repository.record_ancestry(record.pk, older, newer, is_ancestor=answer)
    return record


def _gate(repository: Repository, rule: PinnedChange = PinnedChange.HOLD) -> Gate:
    return Gate(
        repository,
        Blocks(repository, "sec@example"),
        Pins(repository, ("*.md",)),
        Lineage(repository, None, refs_ttl_s=0),
        pinned_change=lambda: rule,
        contact="sec@example",
    )


def _entry(sha256: str, path: str = WEIGHTS) -> TreeEntry:
    return TreeEntry(EntryType.FILE, path, "9" * 40, 10, LfsInfo(sha256, 10, 130))


async def _pinned(repository: Repository, record: RepoRecord, commit: str = COMMIT_A) -> None:
    await repository.set_pin(record.pk, WEIGHTS, OLD, commit, "hubwarden")


async def test_gate_check_unpinned_file_passes(repository: Repository, record: RepoRecord) -> None:
    judged = await _gate(repository).check(record, COMMIT_A, _entry(OLD), None)
    assert judged.standing is Standing.UNPINNED
    assert await repository.active_block(record.pk) is None


async def test_gate_check_blocked_repo_holds_every_file_with_the_message(
    repository: Repository, record: RepoRecord
) -> None:
    gate = _gate(repository)
    block = await gate.blocks.place(record, BlockReason.ADMIN, "under review")
    pattern = rf"blocked: org/m \(admin: under review\); since .*Z; review {block.pk}; ask sec@e"
    with pytest.raises(Held, match=pattern):
        await gate.check(record, COMMIT_A, _entry(OLD, "README.md"), None)


@pytest.mark.parametrize("rule", list(PinnedChange))
async def test_gate_check_pinned_commit_with_other_hash_blocks_as_tampered(
    repository: Repository, record: RepoRecord, rule: PinnedChange
) -> None:
    await _pinned(repository, record)
    with pytest.raises(Held, match=r"blocked: org/m \(tampered"):
        await _gate(repository, rule).check(record, COMMIT_A, _entry(NEW), None)
    block = await repository.active_block(record.pk)
    assert block is not None and block.reason == BlockReason.TAMPERED


async def test_gate_check_older_commit_with_other_hash_is_history_and_passes(
    repository: Repository, record: RepoRecord
) -> None:
    await _pinned(repository, record, COMMIT_B)
    gate = _gate(repository, PinnedChange.BLOCK)
    judged = await gate.check(record, COMMIT_A, _entry(NEW), None)
    assert judged.standing is Standing.OLDER
    await gate.after_release(record, COMMIT_A, _entry(NEW), None)
    assert await repository.get_pin(record.pk, WEIGHTS) == PinRecord(WEIGHTS, OLD, COMMIT_B)
    assert await repository.active_block(record.pk) is None


async def test_gate_check_newer_commit_on_branch_is_held_on_hold(
    repository: Repository, record: RepoRecord
) -> None:
    await _pinned(repository, record)
    with pytest.raises(Held, match="awaits review"):
        await _gate(repository, PinnedChange.HOLD).check(record, COMMIT_B, _entry(NEW), None)
    assert await repository.active_block(record.pk) is None


async def test_gate_check_newer_commit_on_branch_blocks_on_block(
    repository: Repository, record: RepoRecord
) -> None:
    await _pinned(repository, record)
    with pytest.raises(Held, match=r"blocked: org/m \(pinned_changed"):
        await _gate(repository, PinnedChange.BLOCK).check(record, COMMIT_B, _entry(NEW), None)


async def test_gate_after_release_on_allow_re_pins_the_newer_commit(
    repository: Repository, record: RepoRecord
) -> None:
    await _pinned(repository, record)
    gate = _gate(repository, PinnedChange.ALLOW)
    assert (await gate.check(record, COMMIT_B, _entry(NEW), None)).standing is Standing.NEWER
    await gate.after_release(record, COMMIT_B, _entry(NEW), None)
    assert await repository.get_pin(record.pk, WEIGHTS) == PinRecord(WEIGHTS, NEW, COMMIT_B)


@pytest.mark.parametrize("rule", list(PinnedChange))
@pytest.mark.parametrize("commit", [COMMIT_P, COMMIT_S])
async def test_gate_check_pull_request_or_stray_commit_passes_and_never_moves_the_pin(
    repository: Repository, record: RepoRecord, rule: PinnedChange, commit: str
) -> None:
    await _pinned(repository, record, COMMIT_B)
    gate = _gate(repository, rule)
    assert (await gate.check(record, commit, _entry(NEW), None)).standing is Standing.OFF_BRANCH
    await gate.after_release(record, commit, _entry(NEW), None)
    assert await repository.get_pin(record.pk, WEIGHTS) == PinRecord(WEIGHTS, OLD, COMMIT_B)
    assert await repository.active_block(record.pk) is None


async def test_gate_check_unknown_ancestry_offline_is_held(
    repository: Repository, record: RepoRecord
) -> None:
    await _pinned(repository, record)
    with pytest.raises(Held, match="cannot tell"):
        await _gate(repository).check(record, "e" * 40, _entry(NEW), None)


async def test_gate_after_release_pins_the_first_version_at_a_branch_head(
    repository: Repository, record: RepoRecord
) -> None:
    await _gate(repository).after_release(record, COMMIT_B, _entry(OLD), None)
    assert await repository.get_pin(record.pk, WEIGHTS) == PinRecord(WEIGHTS, OLD, COMMIT_B)


async def test_gate_after_release_never_pins_first_from_an_older_commit(
    repository: Repository, record: RepoRecord
) -> None:
    await _gate(repository).after_release(record, COMMIT_A, _entry(OLD), None)
    assert await repository.get_pin(record.pk, WEIGHTS) is None


async def test_gate_after_release_never_pins_from_a_pull_request(
    repository: Repository, record: RepoRecord
) -> None:
    await _gate(repository).after_release(record, COMMIT_P, _entry(NEW), None)
    assert await repository.get_pin(record.pk, WEIGHTS) is None


async def test_gate_after_release_skips_documentation(
    repository: Repository, record: RepoRecord
) -> None:
    await _gate(repository).after_release(record, COMMIT_A, _entry(OLD, "docs/README.md"), None)
    assert await repository.get_pin(record.pk, "docs/README.md") is None


async def test_gate_on_ref_moved_without_descent_blocks_as_history_rewritten(
    repository: Repository, record: RepoRecord
) -> None:
    await _gate(repository).on_ref_moved(record, "main", (COMMIT_B, COMMIT_S), None)
    block = await repository.active_block(record.pk)
    assert block is not None and block.reason == BlockReason.HISTORY_REWRITTEN


async def test_gate_on_ref_moved_fast_forward_blocks_nothing(
    repository: Repository, record: RepoRecord
) -> None:
    await _gate(repository).on_ref_moved(record, "main", (COMMIT_A, COMMIT_B), None)
    assert await repository.active_block(record.pk) is None


async def test_gate_served_commit_on_hold_keeps_the_approved_commit(
    repository: Repository, record: RepoRecord
) -> None:
    await _pinned(repository, record)
    await repository.set_approved(record.pk, "main", COMMIT_A)

    async def entries_at(paths: list[str]) -> list[TreeEntry]:
        return [_entry(NEW)]

    served = await _gate(repository).served_commit(record, "main", COMMIT_B, entries_at, None)
    assert served == COMMIT_A


async def test_gate_served_commit_without_pinned_change_approves_the_head(
    repository: Repository, record: RepoRecord
) -> None:
    await _pinned(repository, record)

    async def entries_at(paths: list[str]) -> list[TreeEntry]:
        return [_entry(OLD)]

    served = await _gate(repository).served_commit(record, "main", COMMIT_B, entries_at, None)
    assert served == COMMIT_B
    ref = await repository.get_ref_record(record.pk, "main")
    assert ref is not None and ref.approved_commit == COMMIT_B


async def test_gate_blocks_place_twice_keeps_the_first_reason(
    repository: Repository, record: RepoRecord
) -> None:
    gate = _gate(repository)
    await gate.blocks.place(record, BlockReason.TAMPERED, "first")
    await gate.blocks.place(record, BlockReason.HISTORY_REWRITTEN, "second")
    block = await repository.active_block(record.pk)
    assert block is not None
    assert (block.reason, block.detail) == (BlockReason.TAMPERED, "first")
