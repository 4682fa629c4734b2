"""Blob leases on SQLite and PostgreSQL: one claim wins, renewals keep it, an expired or dead
holder is taken over with a higher token, and a holder that lost its lease writes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.repos import RepoRef, RepoType
from proxy.store.leases import BlobLeases, Lease, NewBlob
from proxy.store.models import BlobState
from proxy.store.repository import Repository

ETAG = "a" * 64


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def repository(db_sessions: async_sessionmaker[AsyncSession]) -> Repository:
    return Repository(db_sessions)


@pytest.fixture
async def new_blob(repository: Repository) -> NewBlob:
    repo = await repository.upsert_repo(RepoRef(RepoType.MODEL, "org/m"), private=False, gated="")
    return NewBlob(ETAG, 10, repo.pk, "model.bin")


def leases_of(sessions: async_sessionmaker[AsyncSession], clock: Clock) -> BlobLeases:
    return BlobLeases(sessions, lease_s=30, clock=clock)


async def test_claim_only_one_of_many_concurrent_claims_wins(
    db_sessions: async_sessionmaker[AsyncSession], clock: Clock, new_blob: NewBlob
) -> None:
    leases = leases_of(db_sessions, clock)
    won = await asyncio.gather(*(leases.claim(new_blob, f"host:{pid}") for pid in range(8)))
    holders = [lease for lease in won if lease is not None]
    assert len(holders) == 1
    assert holders[0].token == 1


async def test_take_over_live_lease_refused_until_it_expires(
    db_sessions: async_sessionmaker[AsyncSession],
    clock: Clock,
    new_blob: NewBlob,
    repository: Repository,
) -> None:
    leases = leases_of(db_sessions, clock)
    first = await leases.claim(new_blob, "replica-a:1")
    assert first is not None
    clock.advance(29)
    assert not await leases.expired(ETAG)
    assert await leases.take_over(ETAG, 1, "replica-b:2", expired_only=True) is None
    clock.advance(2)
    assert await leases.expired(ETAG)
    second = await leases.take_over(ETAG, 1, "replica-b:2", expired_only=True)
    assert second == Lease(ETAG, "replica-b:2", 2)
    blob = await repository.get_blob(ETAG)
    assert blob is not None
    assert (blob.owner, blob.lease_token, blob.state) == ("replica-b:2", 2, BlobState.FETCHING)


async def test_renewal_keeps_a_lease_from_expiring(
    db_sessions: async_sessionmaker[AsyncSession], clock: Clock, new_blob: NewBlob
) -> None:
    leases = leases_of(db_sessions, clock)
    lease = await leases.claim(new_blob, "replica-a:1")
    assert lease is not None
    for _ in range(5):
        clock.advance(20)
        assert await leases.renew(lease)
    assert not await leases.expired(ETAG)
    assert await leases.take_over(ETAG, 1, "replica-b:2", expired_only=True) is None


async def test_stale_holder_cannot_write_after_take_over(
    db_sessions: async_sessionmaker[AsyncSession],
    clock: Clock,
    new_blob: NewBlob,
    repository: Repository,
) -> None:
    leases = leases_of(db_sessions, clock)
    stale = await leases.claim(new_blob, "replica-a:1")
    assert stale is not None
    clock.advance(31)
    fresh = await leases.take_over(ETAG, 1, "replica-b:2", expired_only=True)
    assert fresh is not None
    assert not await leases.renew(stale)
    assert not await leases.set_state(stale, BlobState.SCANNING, sha256="b" * 64)
    assert not await leases.set_state(stale, BlobState.RELEASED)
    assert not await leases.forget(stale)
    blob = await repository.get_blob(ETAG)
    assert blob is not None and blob.state is BlobState.FETCHING and blob.sha256 is None
    assert await leases.set_state(fresh, BlobState.SCANNING, sha256="c" * 64)
    assert await leases.set_state(fresh, BlobState.RELEASED)
    blob = await repository.get_blob(ETAG)
    assert blob is not None and (blob.state, blob.sha256) == (BlobState.RELEASED, "c" * 64)


async def test_two_replicas_taking_over_at_once_one_wins(
    db_sessions: async_sessionmaker[AsyncSession], clock: Clock, new_blob: NewBlob
) -> None:
    leases = leases_of(db_sessions, clock)
    await leases.claim(new_blob, "dead:1")
    clock.advance(60)
    results = await asyncio.gather(
        *(leases.take_over(ETAG, 1, f"replica-{n}:1", expired_only=True) for n in range(4))
    )
    assert len([lease for lease in results if lease is not None]) == 1


async def test_finished_blob_is_never_taken_over(
    db_sessions: async_sessionmaker[AsyncSession], clock: Clock, new_blob: NewBlob
) -> None:
    leases = leases_of(db_sessions, clock)
    lease = await leases.claim(new_blob, "replica-a:1")
    assert lease is not None
    assert await leases.set_state(lease, BlobState.QUARANTINED, reason="held")
    clock.advance(3600)
    assert not await leases.expired(ETAG)
    assert await leases.take_over(ETAG, 1, "replica-b:2", expired_only=False) is None
    assert not await leases.renew(lease)  # a verdict ends the lease
