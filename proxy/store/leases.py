"""Blob leases: which one task, of every process and replica on the database, fetches a blob.

A lease is the blob row's `(lease_owner, lease_token, lease_expires_at)`. The holder renews it
while its ingest runs; a replica that dies stops renewing, and once the lease has expired any
other replica may take the row over. Taking over raises the token, and every write an ingest
makes (fetching → scanning → verdict, or back to absent) is conditional on the owner and token
it holds, so a holder that was only slow (a long GC pause, a network partition) and lost its
lease cannot publish a verdict over the new holder's (a fencing token).

Expiry compares this replica's clock with the writer's: replicas are expected to run NTP, and
`lease_s` (default 30 s) is long against any sane skew.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from proxy.store.models import Blob, BlobState, FindingRow, utcnow

_UNFINISHED = (BlobState.FETCHING.value, BlobState.SCANNING.value)


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to write one blob's unfinished states: `owner` (`host:pid`) with `token`."""

    etag: str
    owner: str
    token: int


@dataclass(frozen=True, slots=True)
class NewBlob:
    """The row a claim inserts (`fetching`)."""

    etag: str
    size: int
    repo_pk: int
    path: str


class BlobLeases:
    """Claims, renews, takes over and fences the blob rows of ingests."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        lease_s: float,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self.lease_s = lease_s
        self._clock = clock

    def _expiry(self) -> dt.datetime:
        return self._clock() + dt.timedelta(seconds=self.lease_s)

    async def claim(self, blob: NewBlob, owner: str) -> Lease | None:
        """Insert the blob `fetching` under a new lease; None when a row exists already (another
        task or replica has it, or it is finished)."""
        async with self._sessions() as session:
            session.add(
                Blob(
                    etag=blob.etag,
                    size=blob.size,
                    state=BlobState.FETCHING.value,
                    reason="",
                    first_repo_pk=blob.repo_pk,
                    first_path=blob.path,
                    lease_owner=owner,
                    lease_token=1,
                    lease_expires_at=self._expiry(),
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                return None
        return Lease(blob.etag, owner, 1)

    async def take_over(
        self, etag: str, seen_token: int, owner: str, *, expired_only: bool
    ) -> Lease | None:
        """Make an unfinished row `fetching` again under a new lease for `owner`, its token one
        higher than the `seen_token` it must still carry (a compare-and-set: of two replicas
        taking over at once, one wins). With `expired_only`, only a lease past its expiry is
        taken. Its findings (of a scan that never settled) go. None when the row moved on."""
        query = (
            update(Blob)
            .where(Blob.etag == etag, Blob.state.in_(_UNFINISHED), Blob.lease_token == seen_token)
            .values(
                state=BlobState.FETCHING.value,
                reason="",
                sha256=None,
                lease_owner=owner,
                lease_token=seen_token + 1,
                lease_expires_at=self._expiry(),
                updated_at=self._clock(),
            )
        )
        if expired_only:
            query = query.where(Blob.lease_expires_at < self._clock())
        async with self._sessions() as session:
            result = await session.execute(query.returning(Blob.id))
            pk = result.scalar_one_or_none()
            if pk is not None:
                await session.execute(delete(FindingRow).where(FindingRow.blob_pk == pk))
            await session.commit()
        return None if pk is None else Lease(etag, owner, seen_token + 1)

    async def renew(self, lease: Lease) -> bool:
        """Push the lease's expiry on; False when it was lost (taken over, or the row ended)."""
        query = (
            update(Blob)
            .where(*_held_by(lease), Blob.state.in_(_UNFINISHED))
            .values(lease_expires_at=self._expiry())
            .execution_options(synchronize_session=False)
        )
        return await self._changed(query)

    async def set_state(
        self, lease: Lease, state: BlobState, *, reason: str = "", **fields: object
    ) -> bool:
        """Move the leased blob to `state` (its lease ends with a final state); False when the
        lease was lost, and nothing is written."""
        values: dict[str, object] = {"state": state.value, "reason": reason, **fields}
        values["updated_at"] = self._clock()
        if state not in (BlobState.FETCHING, BlobState.SCANNING):
            values["lease_expires_at"] = None
        return await self._changed(update(Blob).where(*_held_by(lease)).values(**values))

    async def forget(self, lease: Lease) -> bool:
        """Delete the leased, unfinished row (the ingest ended without a verdict); False when the
        lease was lost."""
        query = delete(Blob).where(*_held_by(lease), Blob.state.in_(_UNFINISHED))
        return await self._changed(query)

    async def expired(self, etag: str) -> bool:
        """Whether the blob's row is unfinished with a lease past its expiry (or with none: a
        row written before leases had one)."""
        query = (
            select(Blob.id)
            .where(Blob.etag == etag, Blob.state.in_(_UNFINISHED))
            .where(or_(Blob.lease_expires_at.is_(None), Blob.lease_expires_at < self._clock()))
        )
        async with self._sessions() as session:
            return (await session.execute(query)).first() is not None

    async def _changed(self, query: object) -> bool:
        async with self._sessions() as session:
            result = await session.execute(query)  # type: ignore[call-overload]
            await session.commit()
            return bool(getattr(result, "rowcount", 0))


def _held_by(lease: Lease) -> tuple[ColumnElement[bool], ...]:
    return (
        Blob.etag == lease.etag,
        Blob.lease_owner == lease.owner,
        Blob.lease_token == lease.token,
    )
