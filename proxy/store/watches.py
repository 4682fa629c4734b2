"""What the upstream watch last saw of each mirrored branch and tag (`watched_refs`), as typed
records. Same habits as `Repository`: one short session per method, ORM objects stay here."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.store.models import Repo, WatchedRef
from proxy.store.repository import RepoRecord, repo_record, utcnow
from scanners.report import JsonValue

MAX_LISTED = 10_000


class WatchStatus(enum.StrEnum):
    """What the last change the watch noticed on a ref came to."""

    CURRENT = "current"  # no change noticed yet
    UPDATE_AVAILABLE = "update available"  # a new head, recorded: clients asking get it
    HELD = "held for review"  # a new head changing pinned files: clients keep the approved one
    BLOCKED = "blocked"  # the change blocked the repo (history rewritten, tampering)


@dataclass(frozen=True, slots=True)
class ChangedFile:
    path: str
    change: str  # added, modified, deleted
    hub: str = ""  # the Hub's own scan of it at the new head (safe, caution, unsafe, unknown)
    hub_detail: str = ""

    def to_json(self) -> dict[str, JsonValue]:
        found: dict[str, JsonValue] = {"path": self.path, "change": self.change}
        if self.hub:  # recorded once the watch read the Hub's scan results
            found.update({"hub": self.hub, "hub_detail": self.hub_detail})
        return found


@dataclass(frozen=True, slots=True)
class WatchRecord:
    repo: RepoRecord
    name: str  # "" is the default branch
    checked_at: dt.datetime | None
    upstream_head: str | None
    status: WatchStatus
    detail: str  # the last check's problem ("" when it went well), or the block's reason
    previous: str | None  # the head before the last change noticed
    noticed_at: dt.datetime | None
    changed: tuple[ChangedFile, ...]
    prefetched: dict[str, JsonValue]

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "repo": self.repo.ref.repo_id,
            "type": self.repo.ref.repo_type.value,
            "ref": self.name,  # "" is the default branch (asked for by no revision)
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "upstream_head": self.upstream_head,
            "status": self.status.value,
            "detail": self.detail,
            "previous": self.previous,
            "noticed_at": self.noticed_at.isoformat() if self.noticed_at else None,
            "changed": [c.to_json() for c in self.changed],
            "prefetched": self.prefetched,
        }


def _record(row: WatchedRef, repo: Repo) -> WatchRecord:
    changed = tuple(
        ChangedFile(
            str(item.get("path", "")),
            str(item.get("change", "")),
            str(item.get("hub") or ""),
            str(item.get("hub_detail") or ""),
        )
        for item in row.changed or []
        if isinstance(item, dict)
    )
    return WatchRecord(
        repo=repo_record(repo),
        name=row.name,
        checked_at=row.checked_at,
        upstream_head=row.upstream_head,
        status=WatchStatus(row.status),
        detail=row.detail,
        previous=row.previous,
        noticed_at=row.noticed_at,
        changed=changed,
        prefetched=dict(row.prefetched or {}),
    )


class WatchRecords:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self._sessions = sessions
        self._read = read_sessions or sessions

    async def _row(self, session: AsyncSession, repo_pk: int, name: str) -> WatchedRef:
        found = await session.execute(
            select(WatchedRef).where(WatchedRef.repo_pk == repo_pk, WatchedRef.name == name)
        )
        row = found.scalar_one_or_none()
        if row is None:
            row = WatchedRef(repo_pk=repo_pk, name=name, status=WatchStatus.CURRENT.value,
                             detail="", changed=[], prefetched={})  # fmt: skip
            session.add(row)
        return row

    async def checked(self, repo_pk: int, name: str, head: str | None, detail: str = "") -> None:
        """Record a check of the ref: when, the head seen upstream (None: could not be told),
        and what went wrong ("" when nothing did)."""
        await self._update(repo_pk, name, checked_at=utcnow(), upstream_head=head,
                           detail=detail[:2000])  # fmt: skip

    async def noticed(
        self,
        repo_pk: int,
        name: str,
        moved: tuple[str, str],
        changed: Sequence[ChangedFile],
        status: WatchStatus,
        detail: str = "",
    ) -> None:
        """Record a change of the ref's head (`moved` = previous, new) and what it came to."""
        previous, head = moved
        now = utcnow()
        await self._update(
            repo_pk, name, checked_at=now, upstream_head=head, previous=previous, noticed_at=now,
            changed=[c.to_json() for c in changed], status=status.value, detail=detail[:2000],
            prefetched={},
        )  # fmt: skip

    async def prefetched(self, repo_pk: int, name: str, counts: dict[str, JsonValue]) -> None:
        """Record what prefetching the changed files gave (verdict → how many)."""
        await self._update(repo_pk, name, prefetched=counts)

    async def hub_scanned(
        self, repo_pk: int, name: str, head: str, verdicts: dict[str, tuple[str, str]]
    ) -> None:
        """Record the Hub's own scan of the changed files (path → verdict, detail) beside them,
        unless the ref moved on from `head` meanwhile."""
        async with self._sessions() as session:
            found = await session.execute(
                select(WatchedRef).where(WatchedRef.repo_pk == repo_pk, WatchedRef.name == name)
            )
            row = found.scalar_one_or_none()
            if row is None or row.upstream_head != head:
                return
            changed: list[JsonValue] = []
            for item in row.changed or []:
                if isinstance(item, dict) and str(item.get("path")) in verdicts:
                    verdict, detail = verdicts[str(item.get("path"))]
                    item = {**item, "hub": verdict, "hub_detail": detail}
                changed.append(item)
            row.changed = changed
            await session.commit()

    async def _update(self, repo_pk: int, name: str, **values: object) -> None:
        for attempt in range(2):
            async with self._sessions() as session:
                row = await self._row(session, repo_pk, name)
                for key, value in values.items():
                    setattr(row, key, value)
                try:
                    await session.commit()
                    return
                except IntegrityError:  # another replica added the row meanwhile
                    await session.rollback()
                    if attempt:
                        raise

    async def listed(self, *, noticed_only: bool = False) -> list[WatchRecord]:
        """Every watched ref (or those with a change noticed), the latest change first."""
        async with self._read() as session:
            query = select(WatchedRef, Repo).join(Repo, Repo.id == WatchedRef.repo_pk)
            if noticed_only:
                query = query.where(WatchedRef.noticed_at.is_not(None))
            rows = await session.execute(query.limit(MAX_LISTED))
            records = [_record(row, repo) for row, repo in rows.all()]
        oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
        return sorted(
            records,
            key=lambda r: (r.noticed_at or oldest, r.repo.ref.repo_id, r.name),
            reverse=True,
        )

    async def of_repo(self, repo_pk: int) -> list[WatchRecord]:
        async with self._read() as session:
            rows = await session.execute(
                select(WatchedRef, Repo)
                .join(Repo, Repo.id == WatchedRef.repo_pk)
                .where(WatchedRef.repo_pk == repo_pk)
                .order_by(WatchedRef.name)
            )
            return [_record(row, repo) for row, repo in rows.all()]
