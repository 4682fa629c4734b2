"""The local access list: which client tokens may read which gated and private repos when the
upstream cannot be asked (offline, or repos imported from a bundle). DESIGN.md rule 8.

A grant is (client token name, glob); the glob is matched (`fnmatch`, case-sensitive) against
"type/namespace/name", e.g. "model/acme/*" or "*/acme/secret-*". An admin token reads every repo;
reviewer and viewer tokens read none through this list. Positive answers are cached for at most
`cache_ttl_s` (5 s), so a revoked token or grant stops working within that time on every replica.
Grants and revocations are audited with the acting identity.
"""

from __future__ import annotations

import builtins
import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.admin.identity import (
    MAX_TOKEN_CHARS,
    Action,
    Identities,
    UnknownToken,
    hash_token,
    parse_token_name,
)
from proxy.caching import TtlCache
from proxy.errors import HubwardenError, InvalidInput, shown
from proxy.repos import RepoRef, RepoType
from proxy.store.models import AccessGrant, Role
from proxy.store.repository import Repository

MAX_PATTERN_CHARS = 256
MAX_LISTED = 10_000
CACHE_TTL_S = 5.0
# The characters of repo types and ids, plus fnmatch's * ? [ ] !
_PATTERN = re.compile(r"[A-Za-z0-9._\-/*?\[\]!]+")
_GLOB_CHARS = frozenset("*?[")
_PATTERN_HINT = 'give "type/namespace/name" with globs, e.g. "model/acme/*"'


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UnknownGrant(HubwardenError):
    """The token has no grant with this pattern."""

    def __init__(self, token_name: str, pattern: str) -> None:
        self.token_name = token_name
        self.pattern = pattern
        super().__init__(
            f'token "{shown(token_name)}" has no grant "{shown(pattern)}"; see the grants with '
            "`hubwarden admin access list`"
        )


class NotAClientToken(HubwardenError):
    """Only active client tokens are granted repos."""

    def __init__(self, token_name: str, why: str) -> None:
        self.token_name = token_name
        super().__init__(f'token "{shown(token_name)}" {why}')


def parse_pattern(pattern: str) -> str:
    """A grant's glob over "type/namespace/name". Raises InvalidInput."""
    if not pattern or len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidInput(
            "pattern", pattern, f"must be 1 to {MAX_PATTERN_CHARS} characters; {_PATTERN_HINT}"
        )
    if not _PATTERN.fullmatch(pattern):
        raise InvalidInput(
            "pattern",
            pattern,
            f"may hold only letters, digits, '.', '_', '-', '/' and the globs * ? [ ] !; "
            f"{_PATTERN_HINT}",
        )
    kind = pattern.split("/", 1)[0]
    if not (_GLOB_CHARS & set(kind)) and kind not in {t.value for t in RepoType}:
        raise InvalidInput(
            "pattern",
            pattern,
            f"must start with model/, dataset/, space/ or a glob; {_PATTERN_HINT}",
        )
    return pattern


def subject(repo: RepoRef) -> str:
    """What a grant's glob is matched against: "type/namespace/name"."""
    return f"{repo.repo_type.value}/{repo.repo_id}"


@dataclass(frozen=True, slots=True)
class GrantRecord:
    token_name: str
    pattern: str
    created_at: dt.datetime
    created_by: str


def _record(row: AccessGrant) -> GrantRecord:
    return GrantRecord(row.token_name, row.pattern, row.created_at, row.created_by)


class AccessList:
    """Grants of repos to client tokens, and the offline access decision over them.

    `clock` (monotonic seconds) times the cache of positive answers; `now` (timezone-aware UTC)
    stamps new grants; both injectable for tests.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        repository: Repository,
        identities: Identities,
        *,
        read_sessions: async_sessionmaker[AsyncSession] | None = None,
        cache_ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        if not 0 <= cache_ttl_s <= CACHE_TTL_S:
            raise ValueError(f"cache_ttl_s must be between 0 and {CACHE_TTL_S} s")
        self._sessions = sessions
        self._read = read_sessions or sessions
        self._repository = repository
        self._identities = identities
        self._now = now
        self._clock = clock
        self._cache_ttl_s = cache_ttl_s
        self._allowed = self._new_cache()

    def _new_cache(self) -> TtlCache[tuple[str, RepoRef], bool]:
        """Positive answers by (sha256 of the token, repo): never the token itself."""
        return TtlCache(self._cache_ttl_s, self._clock)

    async def grant(self, token_name: str, pattern: str, by: str) -> GrantRecord:
        """Let the client token `token_name` read the repos matching `pattern`; granting an
        existing grant again changes nothing.

        Raises InvalidInput, UnknownToken, NotAClientToken.
        """
        parse_token_name(token_name)
        parse_pattern(pattern)
        token = await self._identities.get(token_name)
        if token is None:
            raise UnknownToken(token_name)
        if token.role is not Role.CLIENT:
            raise NotAClientToken(
                token_name,
                f"has role {token.role.value}: only client tokens are granted repos "
                "(admins read every repo); create one with --role client",
            )
        if token.revoked_at is not None:
            raise NotAClientToken(token_name, "is revoked; create a new client token")
        row = AccessGrant(
            token_name=token_name, pattern=pattern, created_at=self._now(), created_by=by
        )
        async with self._sessions() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                existing = await self._row(session, token_name, pattern)
                if existing is None:  # the token was deleted meanwhile (tokens never are)
                    raise UnknownToken(token_name) from None
                return _record(existing)
            record = _record(row)
        await self._repository.audit(
            by, "access.granted", details={"token": token_name, "pattern": pattern}
        )
        return record

    async def revoke(self, token_name: str, pattern: str, by: str) -> GrantRecord:
        """Withdraw a grant (its exact pattern). Raises UnknownGrant."""
        async with self._sessions() as session:
            row = await self._row(session, token_name, pattern)
            if row is None:
                raise UnknownGrant(token_name, pattern)
            record = _record(row)
            await session.execute(delete(AccessGrant).where(AccessGrant.id == row.id))
            await session.commit()
        self._allowed = self._new_cache()  # this process forgets at once; others within the TTL
        await self._repository.audit(
            by, "access.revoked", details={"token": token_name, "pattern": pattern}
        )
        return record

    async def allows(self, token: str | None, repo: RepoRef) -> bool:
        """Whether the bearer `token` may read `repo`: an active admin token always, an active
        client token when one of its globs matches, anything else never."""
        if token is None or len(token) > MAX_TOKEN_CHARS:
            return False
        key = (hash_token(token), repo)
        if self._allowed.get(key):
            return True
        identity = await self._identities.authenticate(token)
        if identity is None:
            return False
        if identity.can(Action.READ_ANY_REPO):
            allowed = True
        elif identity.role is Role.CLIENT:
            name = subject(repo)
            patterns = await self._patterns(identity.name)
            allowed = any(fnmatchcase(name, pattern) for pattern in patterns)
        else:
            allowed = False
        if allowed and self._cache_ttl_s > 0:
            self._allowed.put(key, True)
        return allowed

    async def _patterns(self, token_name: str) -> builtins.list[str]:
        async with self._read() as session:
            result = await session.execute(
                select(AccessGrant.pattern)
                .where(AccessGrant.token_name == token_name)
                .limit(MAX_LISTED)
            )
            return list(result.scalars())

    @staticmethod
    async def _row(session: AsyncSession, token_name: str, pattern: str) -> AccessGrant | None:
        result = await session.execute(
            select(AccessGrant).where(
                AccessGrant.token_name == token_name, AccessGrant.pattern == pattern
            )
        )
        return result.scalar_one_or_none()

    # Last: inside the class body, `list` names this method from here on.
    async def list(self, token_name: str | None = None) -> builtins.list[GrantRecord]:
        """The grants, of one token or of all, by token then pattern (at most MAX_LISTED)."""
        async with self._read() as session:
            query = select(AccessGrant).order_by(AccessGrant.token_name, AccessGrant.pattern)
            if token_name is not None:
                query = query.where(AccessGrant.token_name == token_name)
            result = await session.execute(query.limit(MAX_LISTED))
            return [_record(row) for row in result.scalars()]
