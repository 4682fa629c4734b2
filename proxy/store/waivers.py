"""Waivers in the database: create, list, revoke, and find the one that covers a file."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.repos import RepoRef, RepoType
from proxy.store.models import Blob, BlobState, WaivedBlob, Waiver, WaiverScope
from proxy.store.repository import utcnow

MAX_LISTED = 1000
WAIVER_STATUSES = ("active", "expiring", "expired", "revoked")
EXPIRING = dt.timedelta(days=7)  # an active waiver ending sooner than this is "expiring"


@dataclass(frozen=True, slots=True)
class WaiverRecord:
    pk: int
    scope: WaiverScope
    repo_type: RepoType
    namespace: str
    repo_id: str | None
    path: str | None
    comment: str
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def is_active(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def status(self, now: dt.datetime) -> str:
        """One of WAIVER_STATUSES."""
        if self.revoked_at is not None:
            return "revoked"
        if not self.is_active(now):
            return "expired"
        if self.expires_at is not None and self.expires_at - now <= EXPIRING:
            return "expiring"
        return "active"

    @property
    def covers(self) -> str:
        """What it covers, for people: `path model/org/m:x.bin`, `repo model/org/m`, `org org`."""
        if self.scope is WaiverScope.ORG:
            return f"org {self.repo_type.value}/{self.namespace}"
        target = f"{self.repo_type.value}/{self.repo_id}"
        return f"path {target}:{self.path}" if self.scope is WaiverScope.PATH else f"repo {target}"


@dataclass(frozen=True, slots=True)
class WaivedFile:
    """A file an ended waiver let through, still released: to be judged again."""

    pk: int
    waiver: WaiverRecord
    blob_pk: int
    held_for: str


def _record(row: Waiver) -> WaiverRecord:
    return WaiverRecord(
        row.id, WaiverScope(row.scope), RepoType(row.repo_type), row.namespace, row.repo_id,
        row.path, row.comment, row.created_by, row.created_at, row.expires_at, row.revoked_at,
    )  # fmt: skip


def namespace_of(repo: RepoRef) -> str:
    """The organisation or user a repo belongs to ("" for legacy one-segment ids)."""
    return repo.repo_id.split("/", 1)[0] if "/" in repo.repo_id else ""


class Waivers:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self._sessions = sessions
        self._read = read_sessions or sessions

    async def add(
        self,
        scope: WaiverScope,
        repo: RepoRef,
        path: str,
        *,
        comment: str,
        by: str,
        expires_at: dt.datetime | None,
    ) -> WaiverRecord:
        row = Waiver(
            scope=scope.value,
            repo_type=repo.repo_type.value,
            namespace=namespace_of(repo),
            repo_id=None if scope is WaiverScope.ORG else repo.repo_id,
            path=path if scope is WaiverScope.PATH else None,
            comment=comment,
            created_by=by,
            expires_at=expires_at,
        )
        async with self._sessions() as session:
            session.add(row)
            await session.commit()
            return _record(row)

    async def listed(self) -> list[WaiverRecord]:
        async with self._read() as session:
            result = await session.execute(
                select(Waiver).order_by(Waiver.id.desc()).limit(MAX_LISTED)
            )
            return [_record(row) for row in result.scalars()]

    async def get(self, pk: int) -> WaiverRecord | None:
        async with self._read() as session:
            row = await session.get(Waiver, pk)
            return _record(row) if row is not None else None

    async def revoke(self, pk: int, by: str) -> bool:
        async with self._sessions() as session:
            result = await session.execute(
                update(Waiver)
                .where(Waiver.id == pk, Waiver.revoked_at.is_(None))
                .values(revoked_at=utcnow(), revoked_by=by)
            )
            await session.commit()
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def covering(self, repo: RepoRef, path: str) -> WaiverRecord | None:
        """The newest active waiver that covers `path` of `repo`, if any."""
        async with self._read() as session:
            result = await session.execute(
                select(Waiver)
                .where(
                    Waiver.repo_type == repo.repo_type.value,
                    Waiver.namespace == namespace_of(repo),
                    Waiver.revoked_at.is_(None),
                    or_(
                        Waiver.scope == WaiverScope.ORG.value,
                        (Waiver.repo_id == repo.repo_id)
                        & ((Waiver.scope == WaiverScope.REPO.value) | (Waiver.path == path)),
                    ),
                )
                .order_by(Waiver.id.desc())
                .limit(MAX_LISTED)
            )
            now = utcnow()  # expiry compared here: the same on SQLite and PostgreSQL
            active = (r for r in map(_record, result.scalars()) if r.is_active(now))
            return next(active, None)

    async def record_waived(self, waiver_pk: int, blob_pk: int, held_for: str) -> None:
        """Remember that `waiver_pk` let blob `blob_pk` through (held for `held_for`)."""
        async with self._sessions() as session:
            session.add(WaivedBlob(waiver_pk=waiver_pk, blob_pk=blob_pk, held_for=held_for))
            await session.commit()

    async def waived_counts(self) -> dict[int, int]:
        """waiver pk → how many files it let through."""
        async with self._read() as session:
            result = await session.execute(
                select(WaivedBlob.waiver_pk, func.count()).group_by(WaivedBlob.waiver_pk)
            )
            return {pk: int(count) for pk, count in result.all()}

    async def ended_waived(self, *, limit: int = MAX_LISTED) -> list[WaivedFile]:
        """Released files let through by a waiver that has expired or been revoked, not yet
        judged again (oldest first, at most `limit`)."""
        now = utcnow()
        async with self._read() as session:
            result = await session.execute(
                select(WaivedBlob, Waiver)
                .join(Waiver, Waiver.id == WaivedBlob.waiver_pk)
                .join(Blob, Blob.id == WaivedBlob.blob_pk)
                .where(
                    WaivedBlob.judged_at.is_(None),
                    Blob.state == BlobState.RELEASED.value,
                    or_(Waiver.revoked_at.is_not(None), Waiver.expires_at <= now),
                )
                .order_by(WaivedBlob.id)
                .limit(limit)
            )
            return [  # expiry checked again here: SQLite compares datetimes as text
                WaivedFile(waived.id, waiver, waived.blob_pk, waived.held_for)
                for waived, waiver in ((w, _record(r)) for w, r in result.all())
                if not waiver.is_active(now)
            ]

    async def mark_judged(self, waived_pk: int) -> None:
        async with self._sessions() as session:
            await session.execute(
                update(WaivedBlob).where(WaivedBlob.id == waived_pk).values(judged_at=utcnow())
            )
            await session.commit()
