"""`Identities`: tokens shown once and kept as hashes, authentication (unknown, revoked, expired),
names, the audit trail, and the permission table."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import fields

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.admin.identity import (
    LAST_USED_RESOLUTION,
    PERMISSIONS,
    Action,
    Identities,
    Identity,
    Role,
    TokenNameTaken,
    TokenRecord,
    UnknownToken,
    parse_token_name,
)
from proxy.errors import InvalidInput
from proxy.store.repository import Repository

START = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
ADMIN = "os:alice"


class FakeNow:
    """The injected wall clock."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@pytest.fixture
def now() -> FakeNow:
    return FakeNow()


@pytest.fixture
def repository(db_sessions: async_sessionmaker[AsyncSession]) -> Repository:
    return Repository(db_sessions)


@pytest.fixture
def identities(
    db_sessions: async_sessionmaker[AsyncSession], repository: Repository, now: FakeNow
) -> Identities:
    return Identities(db_sessions, repository, clock=now)


async def _columns(sessions: async_sessionmaker[AsyncSession]) -> list[dict[str, object]]:
    async with sessions() as session:
        result = await session.execute(text("SELECT * FROM admin_tokens"))
        return [dict(row) for row in result.mappings()]


# -- create: shown once, stored as a hash ---------------------------------------------------------


async def test_create_returns_a_prefixed_random_token_and_its_record(
    identities: Identities,
) -> None:
    record, token = await identities.create("ci", Role.CLIENT, None, ADMIN)
    _, other = await identities.create("ci-2", Role.CLIENT, None, ADMIN)
    assert token.startswith("hwa_") and len(token) == 4 + 43  # 32 bytes, urlsafe base64
    assert token != other
    assert (record.name, record.role, record.created_by) == ("ci", Role.CLIENT, ADMIN)
    assert (record.created_at, record.expires_at, record.revoked_at) == (START, None, None)


async def test_create_stores_only_the_sha256_of_the_token(
    identities: Identities, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, token = await identities.create("ci", Role.CLIENT, None, ADMIN)
    (row,) = await _columns(db_sessions)
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert not [name for name, value in row.items() if token in str(value)]


async def test_create_never_writes_the_token_to_the_audit_log(
    identities: Identities, repository: Repository
) -> None:
    _, token = await identities.create("ci", Role.CLIENT, None, ADMIN)
    digest = hashlib.sha256(token.encode()).hexdigest()
    events = await repository.list_audit()
    assert events and all(token not in str(e) and digest not in str(e) for e in events)


def test_token_record_has_no_field_for_the_token_or_its_hash() -> None:
    names = {f.name for f in fields(TokenRecord)}
    assert not {n for n in names if "token" in n or "hash" in n}


async def test_create_with_expiry_sets_expires_at(identities: Identities) -> None:
    record, _ = await identities.create("ci", Role.CLIENT, dt.timedelta(days=30), ADMIN)
    assert record.expires_at == START + dt.timedelta(days=30)


@pytest.mark.parametrize("expires_in", [dt.timedelta(0), dt.timedelta(minutes=-5)])
async def test_create_with_non_positive_expiry_is_refused(
    identities: Identities, expires_in: dt.timedelta
) -> None:
    with pytest.raises(InvalidInput, match=r"expiry .* must be in the future"):
        await identities.create("ci", Role.CLIENT, expires_in, ADMIN)


async def test_create_same_name_twice_raises_token_name_taken(identities: Identities) -> None:
    await identities.create("ci", Role.CLIENT, None, ADMIN)
    with pytest.raises(TokenNameTaken, match='a token named "ci" already exists'):
        await identities.create("ci", Role.ADMIN, None, ADMIN)


async def test_create_name_of_a_revoked_token_is_still_taken(identities: Identities) -> None:
    await identities.create("ci", Role.CLIENT, None, ADMIN)
    await identities.revoke("ci", ADMIN)
    with pytest.raises(TokenNameTaken, match="revoked tokens keep their name"):
        await identities.create("ci", Role.CLIENT, None, ADMIN)


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "A" * 64, "ci.bot_1-x", "0"])
def test_parse_token_name_accepts_valid_names(name: str) -> None:
    assert parse_token_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "a" * 65, "bad name", "a/b", "é", "tab\there", "semi;colon", "new\nline"]
)
async def test_create_invalid_name_raises_invalid_input_saying_what_is_allowed(
    identities: Identities, name: str
) -> None:
    with pytest.raises(InvalidInput, match=r"^token name .* must be 1 to 64 characters") as caught:
        await identities.create(name, Role.CLIENT, None, ADMIN)
    assert caught.value.part == "token name"
    assert await identities.list() == []


# -- authenticate ---------------------------------------------------------------------------------


async def test_authenticate_valid_token_returns_its_identity(identities: Identities) -> None:
    _, token = await identities.create("rev", Role.REVIEWER, None, ADMIN)
    assert await identities.authenticate(token) == Identity("rev", Role.REVIEWER)


@pytest.mark.parametrize("token", ["hwa_unknown", "hf_somethingelse", "", "hwa_" + "x" * 500])
async def test_authenticate_unknown_token_returns_none(identities: Identities, token: str) -> None:
    await identities.create("rev", Role.REVIEWER, None, ADMIN)
    assert await identities.authenticate(token) is None


async def test_authenticate_token_differing_by_one_character_returns_none(
    identities: Identities,
) -> None:
    _, token = await identities.create("rev", Role.REVIEWER, None, ADMIN)
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert await identities.authenticate(altered) is None


async def test_authenticate_revoked_token_returns_none(identities: Identities) -> None:
    _, token = await identities.create("rev", Role.REVIEWER, None, ADMIN)
    await identities.revoke("rev", ADMIN)
    assert await identities.authenticate(token) is None


async def test_authenticate_before_expiry_passes_and_after_returns_none(
    identities: Identities, now: FakeNow
) -> None:
    _, token = await identities.create("rev", Role.REVIEWER, dt.timedelta(hours=12), ADMIN)
    now.advance(dt.timedelta(hours=12) - dt.timedelta(seconds=1))
    assert await identities.authenticate(token) == Identity("rev", Role.REVIEWER)
    now.advance(dt.timedelta(seconds=1))
    assert await identities.authenticate(token) is None


async def test_authenticate_records_last_used_at_most_once_a_minute(
    identities: Identities, now: FakeNow
) -> None:
    _, token = await identities.create("rev", Role.REVIEWER, None, ADMIN)
    assert (await _record(identities, "rev")).last_used_at is None
    await identities.authenticate(token)
    assert (await _record(identities, "rev")).last_used_at == START
    now.advance(LAST_USED_RESOLUTION - dt.timedelta(seconds=1))
    await identities.authenticate(token)
    assert (await _record(identities, "rev")).last_used_at == START
    now.advance(dt.timedelta(seconds=1))
    await identities.authenticate(token)
    assert (await _record(identities, "rev")).last_used_at == now.now


async def _record(identities: Identities, name: str) -> TokenRecord:
    record = await identities.get(name)
    assert record is not None
    return record


# -- list and revoke ------------------------------------------------------------------------------


async def test_list_returns_every_token_by_name_revoked_ones_included(
    identities: Identities,
) -> None:
    await identities.create("zed", Role.VIEWER, None, ADMIN)
    await identities.create("amy", Role.ADMIN, None, ADMIN)
    await identities.revoke("zed", ADMIN)
    listed = await identities.list()
    assert [(t.name, t.role, t.revoked_at is not None) for t in listed] == [
        ("amy", Role.ADMIN, False),
        ("zed", Role.VIEWER, True),
    ]


async def test_revoke_unknown_name_raises_unknown_token_saying_what_to_do(
    identities: Identities,
) -> None:
    with pytest.raises(UnknownToken, match=r'no token is named "nope"; .*admin token list'):
        await identities.revoke("nope", ADMIN)


async def test_revoke_twice_keeps_the_first_revocation(
    identities: Identities, now: FakeNow
) -> None:
    await identities.create("rev", Role.REVIEWER, None, ADMIN)
    first = await identities.revoke("rev", ADMIN)
    now.advance(dt.timedelta(hours=1))
    second = await identities.revoke("rev", ADMIN)
    assert first.revoked_at == second.revoked_at == START


async def test_create_and_revoke_are_audited_with_the_acting_identity(
    identities: Identities, repository: Repository
) -> None:
    await identities.create("rev", Role.REVIEWER, dt.timedelta(days=1), "os:alice")
    await identities.revoke("rev", "os:bob")
    events = [(e.actor, e.action, e.details) for e in await repository.list_audit()]
    assert events == [
        (
            "os:alice",
            "token.created",
            {
                "name": "rev",
                "role": "reviewer",
                "expires_at": (START + dt.timedelta(days=1)).isoformat(),
            },
        ),
        ("os:bob", "token.revoked", {"name": "rev", "role": "reviewer"}),
    ]


# -- permissions ----------------------------------------------------------------------------------

# The documented table, spelled out independently of the code's sets.
EXPECTED_PERMISSIONS = {
    Role.VIEWER: {Action.VIEW},
    Role.REVIEWER: {Action.VIEW, Action.DECIDE},
    Role.ADMIN: {
        Action.VIEW,
        Action.DECIDE,
        Action.BLOCK,
        Action.MANAGE_TOKENS,
        Action.MANAGE_ACCESS,
        Action.READ_ANY_REPO,
    },
    Role.CLIENT: set(),
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
def test_identity_can_follows_the_permission_table(role: Role, action: Action) -> None:
    assert Identity("someone", role).can(action) is (action in EXPECTED_PERMISSIONS[role])


def test_permission_table_covers_every_role() -> None:
    assert set(PERMISSIONS) == set(Role)
