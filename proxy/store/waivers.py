"""Waivers in the database: create, list, revoke, and find the one that covers a file."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.repos import RepoRef, RepoType
from proxy.store.models import Waiver, WaiverScope
from proxy.store.repository import utcnow

MAX_LISTED = 1000


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

    @property
    def covers(self) -> str:
        """What it covers, for people: `path model/org/m:x.bin`, `repo model/org/m`, `org org`."""
        if self.scope is WaiverScope.ORG:
            return f"org {self.repo_type.value}/{self.namespace}"
        target = f"{self.repo_type.value}/{self.repo_id}"
        return f"path {target}:{self.path}" if self.scope is WaiverScope.PATH else f"repo {target}"


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
