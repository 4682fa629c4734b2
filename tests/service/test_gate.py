"""`Gate` on a real database: blocks, pins and `pinned_change` (DESIGN.md rules 3 and 5)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.config import PinnedChange
from proxy.errors import Held
from proxy.metadata import EntryType, LfsInfo, TreeEntry
from proxy.policy import BlockReason, Gate, PolicyRules
from proxy.repos import RepoRef, RepoType
from proxy.store.repository import RepoRecord, Repository

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
OLD, NEW = "1" * 64, "2" * 64


@pytest.fixture
def repository(db_sessions: async_sessionmaker[AsyncSession]) -> Repository:
    return Repository(db_sessions)


@pytest.fixture
async def record(repository: Repository) -> RepoRecord:
    return await repository.upsert_repo(
        RepoRef(RepoType.MODEL, "org/m"), private=False, gated="false"
    )


def _gate(repository: Repository, rule: PinnedChange = PinnedChange.BLOCK) -> Gate:
    return Gate(repository, PolicyRules(rule, ("*.md",), "sec@example"))


def _entry(sha256: str, path: str = "model.safetensors") -> TreeEntry:
    return TreeEntry(EntryType.FILE, path, "9" * 40, 10, LfsInfo(sha256, 10, 130))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_gate_check_unpinned_file_passes(repository: Repository, record: RepoRecord) -> None:
    await _gate(repository).check(record, COMMIT_A, _entry(OLD))
    assert await repository.active_block(record.pk) is None


async def test_gate_check_blocked_repo_holds_every_file(
    repository: Repository, record: RepoRecord
) -> None:
    await _gate(repository).block(record, BlockReason.ADMIN, "under review")
    with pytest.raises(Held, match=r"blocked: org/m \(admin: under review\); ask sec@example"):
        await _gate(repository).check(record, COMMIT_A, _entry(OLD, "README.md"))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_gate_check_pinned_file_unchanged_passes(
    repository: Repository, record: RepoRecord
) -> None:
    gate = _gate(repository)
    await gate.pin(record, COMMIT_A, _entry(OLD))
    await gate.check(record, COMMIT_B, _entry(OLD))
    assert await repository.active_block(record.pk) is None


async def test_gate_check_same_commit_other_hash_blocks_as_tampered(
    repository: Repository, record: RepoRecord
) -> None:
    gate = _gate(repository, PinnedChange.ALLOW)  # even the most lenient rule blocks tampering
    await gate.pin(record, COMMIT_A, _entry(OLD))
    with pytest.raises(Held, match="tampered"):
        await gate.check(record, COMMIT_A, _entry(NEW))
    block = await repository.active_block(record.pk)
    assert block is not None
    assert block.reason == BlockReason.TAMPERED


async def test_gate_check_new_commit_changing_a_pin_blocks_by_default(
    repository: Repository, record: RepoRecord
) -> None:
    gate = _gate(repository, PinnedChange.BLOCK)
    await gate.pin(record, COMMIT_A, _entry(OLD))
    with pytest.raises(Held, match="an admin must approve"):
        await gate.check(record, COMMIT_B, _entry(NEW))
    block = await repository.active_block(record.pk)
    assert block is not None
    assert block.reason == BlockReason.PINNED_CHANGED


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_gate_check_new_commit_changing_a_pin_is_held_without_block_on_hold(
    repository: Repository, record: RepoRecord
) -> None:
    gate = _gate(repository, PinnedChange.HOLD)
    await gate.pin(record, COMMIT_A, _entry(OLD))
    with pytest.raises(Held, match="awaits review"):
        await gate.check(record, COMMIT_B, _entry(NEW))
    assert await repository.active_block(record.pk) is None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_gate_check_new_commit_changing_a_pin_passes_on_allow(
    repository: Repository, record: RepoRecord
) -> None:
    gate = _gate(repository, PinnedChange.ALLOW)
    await gate.pin(record, COMMIT_A, _entry(OLD))
    await gate.check(record, COMMIT_B, _entry(NEW))
    assert await repository.active_block(record.pk) is None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_gate_check_documentation_change_is_never_held(
    repository: Repository, record: RepoRecord
) -> None:
    gate = _gate(repository)
    await repository.set_pin(record.pk, "README.md", OLD, COMMIT_A, "admin")
    await gate.check(record, COMMIT_A, _entry(NEW, "README.md"))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_gate_pin_keeps_the_first_verified_hash(
    repository: Repository, record: RepoRecord
) -> None:
    gate = _gate(repository, PinnedChange.BLOCK)
    await gate.pin(record, COMMIT_A, _entry(OLD))
    await gate.pin(record, COMMIT_B, _entry(NEW))
    pin = await repository.get_pin(record.pk, "model.safetensors")
    assert pin is not None
    assert (pin.etag, pin.commit) == (OLD, COMMIT_A)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_gate_pin_on_allow_re_pins_a_changed_file(
    repository: Repository, record: RepoRecord
) -> None:
    gate = _gate(repository, PinnedChange.ALLOW)
    await gate.pin(record, COMMIT_A, _entry(OLD))
    await gate.pin(record, COMMIT_B, _entry(NEW))
    pin = await repository.get_pin(record.pk, "model.safetensors")
    assert pin is not None
    assert (pin.etag, pin.commit) == (NEW, COMMIT_B)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_gate_pin_skips_documentation(repository: Repository, record: RepoRecord) -> None:
    await _gate(repository).pin(record, COMMIT_A, _entry(OLD, "docs/README.md"))
    assert await repository.get_pin(record.pk, "docs/README.md") is None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_gate_block_twice_keeps_the_first_reason(
    repository: Repository, record: RepoRecord
) -> None:
    gate = _gate(repository)
    await gate.block(record, BlockReason.TAMPERED, "first")
    await gate.block(record, BlockReason.HISTORY_REWRITTEN, "second")
    block = await repository.active_block(record.pk)
    assert block is not None
    assert (block.reason, block.detail) == (BlockReason.TAMPERED, "first")
