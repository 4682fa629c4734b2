"""The blob lifecycle under leases: an ingest that lost its lease to another replica is told so,
writes nothing more, and leaves the row to the new holder; start-up leaves another replica's
live ingest alone and clears the expired ones."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.errors import UpstreamUnavailable
from proxy.lifecycle import BlobLifecycle, BlobOrigin, LeaseLost
from proxy.metadata import EntryType, LfsInfo, TreeEntry
from proxy.repos import RepoRef, RepoType
from proxy.store.blobs import BlobStore
from proxy.store.leases import NewBlob
from proxy.store.models import BlobState
from proxy.store.repository import Repository
from proxy.trust.blocks import Blocks

SHA = "5" * 64
LEASE_S = 0.6


@pytest.fixture
def repository(db_sessions: async_sessionmaker[AsyncSession]) -> Repository:
    return Repository(db_sessions)


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    store = BlobStore(tmp_path / "data")
    store.prepare()
    return store


def _lifecycle(repository: Repository, store: BlobStore) -> BlobLifecycle:
    blocks = Blocks(repository, "sec@example")
    return BlobLifecycle(repository, store, blocks, "sec@example", lease_s=LEASE_S)


@pytest.fixture
async def origin(repository: Repository) -> BlobOrigin:
    repo = await repository.upsert_repo(RepoRef(RepoType.MODEL, "org/m"), private=False, gated="")
    entry = TreeEntry(EntryType.FILE, "model.bin", "1" * 40, 10, LfsInfo(SHA, 10, 130))
    return BlobOrigin(repo, "c" * 40, entry)


async def test_ingest_whose_lease_is_taken_over_is_stopped_and_writes_nothing(
    repository: Repository, store: BlobStore, origin: BlobOrigin
) -> None:
    lifecycle = _lifecycle(repository, store)
    assert await lifecycle.claim(origin)
    lost = asyncio.Event()
    async with lifecycle.keep_lease(SHA, lost.set):
        await asyncio.sleep(LEASE_S)  # renewed meanwhile: nobody may take it
        blob = await repository.get_blob(SHA)
        assert blob is not None
        thief = repository.blob_leases(LEASE_S)
        assert (
            await thief.take_over(SHA, blob.lease_token, "elsewhere:1", expired_only=True) is None
        )
        assert await thief.take_over(SHA, blob.lease_token, "elsewhere:1", expired_only=False)
        await asyncio.wait_for(lost.wait(), 5 * LEASE_S)
        with pytest.raises(LeaseLost):
            await lifecycle.verified(origin, SHA)
        temp = store.new_temp()
        await lifecycle.abandon(origin, temp, UpstreamUnavailable("stop"))
    blob = await repository.get_blob(SHA)
    assert blob is not None
    assert (blob.state, blob.owner, blob.sha256) == (BlobState.FETCHING, "elsewhere:1", None)


async def test_ingest_that_keeps_its_lease_settles_normally(
    repository: Repository, store: BlobStore, origin: BlobOrigin
) -> None:
    lifecycle = _lifecycle(repository, store)
    assert await lifecycle.claim(origin)
    lost = asyncio.Event()
    async with lifecycle.keep_lease(SHA, lost.set):
        await asyncio.sleep(3 * LEASE_S)
        await lifecycle.verified(origin, SHA)
    assert not lost.is_set()
    blob = await repository.get_blob(SHA)
    assert blob is not None and blob.state is BlobState.SCANNING


async def test_start_up_keeps_another_replicas_live_ingest_and_clears_an_expired_one(
    repository: Repository, store: BlobStore, origin: BlobOrigin
) -> None:
    leases = repository.blob_leases(LEASE_S)
    live = NewBlob("6" * 64, 1, origin.repo.pk, "a.bin")
    stale = NewBlob("7" * 64, 1, origin.repo.pk, "b.bin")
    assert await leases.claim(stale, "other-host:1")
    await asyncio.sleep(LEASE_S * 1.5)
    assert await leases.claim(live, "other-host:2")
    await _lifecycle(repository, store).forget_unfinished()
    assert await repository.get_blob(live.etag) is not None
    assert await repository.get_blob(stale.etag) is None


async def test_other_replicas_expired_row_is_taken_over_with_a_higher_token(
    repository: Repository, store: BlobStore, origin: BlobOrigin
) -> None:
    leases = repository.blob_leases(LEASE_S)
    new = NewBlob(SHA, 10, origin.repo.pk, "model.bin")
    assert await leases.claim(new, "other-host:9")
    lifecycle = _lifecycle(repository, store)
    blob = await repository.get_blob(SHA)
    assert blob is not None
    assert not await lifecycle.take_over_stale(blob)  # its lease still runs
    await asyncio.sleep(LEASE_S * 1.5)
    assert await lifecycle.take_over_stale(blob)
    assert await lifecycle.claim(origin)  # the taken row is this process's now
    taken = await repository.get_blob(SHA)
    assert taken is not None and taken.lease_token == 2 and taken.owner != "other-host:9"
