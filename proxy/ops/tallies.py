"""The database counts `/metrics` shows: blobs by state (the held ones are the review queue) and
repos under an active block. Read at scrape time through the read-only sessions, at most every
`max_age_s`, each read bounded by `timeout_s`: a slow or absent database makes the scrape show
the last counts (and count the failure), never hang it.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import distinct, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.ops.metrics import Tallies
from proxy.ops.snapshots import Snapshot
from proxy.store.models import Blob, BlobState, Block

logger = logging.getLogger(__name__)

MAX_AGE_S = 5.0
TIMEOUT_S = 2.0


class TallyReader:
    """Counts for the scrape, cached `max_age_s`; None when the database did not answer."""

    def __init__(
        self,
        read_sessions: async_sessionmaker[AsyncSession],
        *,
        max_age_s: float = MAX_AGE_S,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._sessions = read_sessions
        self._timeout_s = timeout_s
        self._snapshot: Snapshot[Tallies | None] = Snapshot(self._count, max_age_s)

    async def read(self) -> Tallies | None:
        return await self._snapshot.read()

    async def close(self) -> None:
        await self._snapshot.close()

    async def _count(self) -> Tallies | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._query()
        except (TimeoutError, SQLAlchemyError, OSError) as exc:
            logger.warning("metrics: database counts unavailable: %s", type(exc).__name__)
            return None

    async def _query(self) -> Tallies:
        async with self._sessions() as session:
            rows = await session.execute(select(Blob.state, func.count()).group_by(Blob.state))
            by_state = {str(state): 0 for state in BlobState}
            by_state.update({str(state): int(count) for state, count in rows.all()})
            blocked = await session.scalar(
                select(func.count(distinct(Block.repo_pk))).where(Block.lifted_at.is_(None))
            )
        return Tallies(by_state, int(blocked or 0))
