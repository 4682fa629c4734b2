"""Who calls: named bearer tokens with a role, and what each role may do.

A token is `hwa_` + 32 random bytes (urlsafe base64). It is shown once, when created; the database
keeps only its sha256 (hex), which `authenticate` looks up and then compares in constant time. A
token is refused once revoked or past its expiry. Tokens are revoked, never deleted: a name is
never reused, so the audit log keeps meaning what it said.

Permissions (`PERMISSIONS`, `Identity.can`):

    action          viewer  reviewer  admin  client
    view              x        x        x             quarantine, changes, repos, pins, audit
    decide                     x        x             release/reject/rescan files; pinned changes
    block                               x             block and unblock repos
    manage_tokens                       x             create, list and revoke tokens
    manage_access                       x             grant and revoke on the local access list
    read_any_repo                       x             read every gated or private repo offline

A client token has no admin action: it only reads the gated and private repos the local access
list grants it (`proxy.admin.access_list.AccessList.allows`).
"""

from __future__ import annotations

import builtins
import datetime as dt
import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.errors import HubwardenError, InvalidInput, shown
from proxy.store.models import AdminToken, Role
from proxy.store.repository import Repository

__all__ = [
    "MAX_TOKEN_CHARS",
    "PERMISSIONS",
    "TOKEN_PREFIX",
    "Action",
    "Identities",
    "Identity",
    "Role",
    "TokenNameTaken",
    "TokenRecord",
    "UnknownToken",
    "hash_token",
    "parse_token_name",
]

TOKEN_PREFIX = "hwa_"  # noqa: S105 (a public prefix that marks our tokens, not a secret)
TOKEN_BYTES = 32
# Longer than any token we issue (4 + 43 characters): refused before hashing.
MAX_TOKEN_CHARS = 128
MAX_NAME_CHARS = 64
# last_used_at is written at most this often per token: a busy client costs no write per request.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
MAX_LISTED = 10_000
_NAME = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_NAME_CHARS}}}")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Action(enum.StrEnum):
    """What an identity may be allowed to do (see the module's permission table)."""

    VIEW = "view"
    DECIDE = "decide"
    BLOCK = "block"
    MANAGE_TOKENS = "manage_tokens"
    MANAGE_ACCESS = "manage_access"
    READ_ANY_REPO = "read_any_repo"


_VIEWER = frozenset({Action.VIEW})
_REVIEWER = _VIEWER | {Action.DECIDE}
_ADMIN = _REVIEWER | {
    Action.BLOCK,
    Action.MANAGE_TOKENS,
    Action.MANAGE_ACCESS,
    Action.READ_ANY_REPO,
}
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.VIEWER: _VIEWER,
    Role.REVIEWER: _REVIEWER,
    Role.ADMIN: _ADMIN,
    Role.CLIENT: frozenset(),  # reads only what the local access list grants it
}


class UnknownToken(HubwardenError):
    """No token has this name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f'no token is named "{shown(name)}"; see the names with `hubwarden admin token list`'
        )


class TokenNameTaken(HubwardenError):
    """A token (perhaps revoked: names are never reused) already has this name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f'a token named "{shown(name)}" already exists (revoked tokens keep their name); '
            "choose another name"
        )


def parse_token_name(name: str) -> str:
    """A token name: 1 to 64 letters, digits, '.', '_' or '-'. Raises InvalidInput."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            "token name",
            name,
            f"must be 1 to {MAX_NAME_CHARS} characters, each a letter, digit, '.', '_' or '-'",
        )
    return name


def hash_token(token: str) -> str:
    """What the database keeps of a token: its sha256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller: the token's name and role."""

    name: str
    role: Role

    def can(self, action: Action) -> bool:
        return action in PERMISSIONS[self.role]


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token as listed: never the token, nor its hash."""

    name: str
    role: Role
    created_at: dt.datetime
    created_by: str
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    def is_active(self, now: dt.datetime) -> bool:
        """Neither revoked nor expired at `now`."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def _record(row: AdminToken) -> TokenRecord:
    return TokenRecord(
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class Identities:
    """Creates, lists, revokes and authenticates tokens; each create and revoke is audited.

    `clock` gives the current time (timezone-aware UTC), injectable for tests; `read_sessions`
    may be sessions that never write (`proxy.store.db.read_session_maker`).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        repository: Repository,
        *,
        read_sessions: async_sessionmaker[AsyncSession] | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._read = read_sessions or sessions
        self._repository = repository
        self._clock = clock

    async def create(
        self, name: str, role: Role, expires_in: dt.timedelta | None, by: str
    ) -> tuple[TokenRecord, str]:
        """A new token named `name`: its record and the clear token, which is never shown again.

        Raises InvalidInput (name, expiry), TokenNameTaken.
        """
        parse_token_name(name)
        role = Role(role)
        if expires_in is not None and expires_in <= dt.timedelta(0):
            raise InvalidInput("expiry", expires_in, "must be in the future")
        now = self._clock()
        token = _new_token()
        row = AdminToken(
            name=name,
            role=role,
            token_hash=hash_token(token),
            created_at=now,
            created_by=by,
            expires_at=None if expires_in is None else now + expires_in,
        )
        async with self._sessions() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError as exc:
                await session.rollback()
                raise TokenNameTaken(name) from exc
            record = _record(row)
        expires = None if record.expires_at is None else record.expires_at.isoformat()
        await self._repository.audit(
            by, "token.created", details={"name": name, "role": role.value, "expires_at": expires}
        )
        return record, token

    async def revoke(self, name: str, by: str) -> TokenRecord:
        """Revoke the token named `name` (from now on it authenticates nobody); revoking a
        revoked token changes nothing. Raises UnknownToken."""
        async with self._sessions() as session:
            row = await self._row(session, name)
            if row is None:
                raise UnknownToken(name)
            if row.revoked_at is not None:
                return _record(row)
            row.revoked_at = self._clock()
            await session.commit()
            record = _record(row)
        await self._repository.audit(
            by, "token.revoked", details={"name": name, "role": record.role.value}
        )
        return record

    async def get(self, name: str) -> TokenRecord | None:
        async with self._read() as session:
            row = await self._row(session, name)
            return None if row is None else _record(row)

    async def authenticate(self, token: str) -> Identity | None:
        """The identity of a bearer token; None when it is unknown, revoked or expired."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = hash_token(token)
        async with self._read() as session:
            result = await session.execute(
                select(AdminToken).where(AdminToken.token_hash == digest)
            )
            row = result.scalar_one_or_none()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        record = _record(row)
        now = self._clock()
        if not record.is_active(now):
            return None
        if record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION:
            await self._touch(row.id, now)
        return Identity(record.name, record.role)

    async def _touch(self, pk: int, now: dt.datetime) -> None:
        # Conditional, so that replicas authenticating the same token together write once.
        async with self._sessions() as session:
            await session.execute(
                update(AdminToken)
                .where(
                    AdminToken.id == pk,
                    or_(
                        AdminToken.last_used_at.is_(None),
                        AdminToken.last_used_at <= now - LAST_USED_RESOLUTION,
                    ),
                )
                .values(last_used_at=now)
            )
            await session.commit()

    @staticmethod
    async def _row(session: AsyncSession, name: str) -> AdminToken | None:
        result = await session.execute(select(AdminToken).where(AdminToken.name == name))
        return result.scalar_one_or_none()

    # Last: inside the class body, `list` names this method from here on.
    async def list(self) -> builtins.list[TokenRecord]:
        """Every token, revoked and expired ones included, by name (at most MAX_LISTED)."""
        async with self._read() as session:
            result = await session.execute(
                select(AdminToken).order_by(AdminToken.name).limit(MAX_LISTED)
            )
            return [_record(row) for row in result.scalars()]
