"""`AccessList`: grants of repo globs to client tokens, who `allows` what (client, admin, other
roles, unknown), the positive-answer cache, and the offline `AccessChecker` built on it."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.admin.access_list import (
    CACHE_TTL_S,
    AccessList,
    NotAClientToken,
    UnknownGrant,
    parse_pattern,
)
from proxy.admin.identity import Identities, Role, UnknownToken
from proxy.catalog import Caller
from proxy.errors import GatedRepo, InvalidInput, RepoNotFound
from proxy.repos import RepoRef, RepoType
from proxy.store.repository import RepoRecord, Repository
from proxy.trust.access import AccessChecker

ADMIN = "os:alice"
ACME_MODEL = RepoRef(RepoType.MODEL, "acme/llm")
OTHER_MODEL = RepoRef(RepoType.MODEL, "other/llm")


class FakeClock:
    """The injected monotonic clock of the cache."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def repository(db_sessions: async_sessionmaker[AsyncSession]) -> Repository:
    return Repository(db_sessions)


@pytest.fixture
def identities(db_sessions: async_sessionmaker[AsyncSession], repository: Repository) -> Identities:
    return Identities(db_sessions, repository)


@pytest.fixture
def access(
    db_sessions: async_sessionmaker[AsyncSession],
    repository: Repository,
    identities: Identities,
    clock: FakeClock,
) -> AccessList:
    return AccessList(db_sessions, repository, identities, clock=clock)


async def _client(identities: Identities, name: str = "ci") -> str:
    _, token = await identities.create(name, Role.CLIENT, None, ADMIN)
    return token


# -- patterns -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern", ["model/acme/*", "*/acme/*", "dataset/acme/data-?", "model/gpt2"]
)
def test_parse_pattern_accepts_globs_over_type_namespace_name(pattern: str) -> None:
    assert parse_pattern(pattern) == pattern


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("", "must be 1 to 256 characters"),
        ("model/" + "a" * 251, "must be 1 to 256 characters"),
        ("acme/*", "must start with model/, dataset/, space/ or a glob"),
        ("models/acme/*", "must start with model/, dataset/, space/ or a glob"),
        ("model/acme/ x", "may hold only"),
        ("model/acme/\n", "may hold only"),
    ],
)
def test_parse_pattern_refuses_what_cannot_name_repos(pattern: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=rf"^pattern .* {reason}"):
        parse_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "repo", "allowed"),
    [
        ("model/acme/*", RepoRef(RepoType.MODEL, "acme/llm"), True),
        ("model/acme/*", RepoRef(RepoType.DATASET, "acme/llm"), False),
        ("model/acme/*", RepoRef(RepoType.MODEL, "acmecorp/llm"), False),
        ("model/acme/*", RepoRef(RepoType.MODEL, "other/acme"), False),
        ("*/acme/secret-*", RepoRef(RepoType.SPACE, "acme/secret-demo"), True),
        ("*/acme/secret-*", RepoRef(RepoType.SPACE, "acme/public-demo"), False),
        ("model/gpt2", RepoRef(RepoType.MODEL, "gpt2"), True),
        ("model/Acme/*", RepoRef(RepoType.MODEL, "acme/llm"), False),  # case-sensitive
    ],
)
async def test_allows_client_matches_its_globs_over_type_namespace_name(
    access: AccessList, identities: Identities, pattern: str, repo: RepoRef, allowed: bool
) -> None:
    token = await _client(identities)
    await access.grant("ci", pattern, ADMIN)
    assert await access.allows(token, repo) is allowed


# -- who is allowed -------------------------------------------------------------------------------


async def test_allows_client_without_grants_is_refused(
    access: AccessList, identities: Identities
) -> None:
    token = await _client(identities)
    assert await access.allows(token, ACME_MODEL) is False


async def test_allows_client_reads_only_its_own_grants(
    access: AccessList, identities: Identities
) -> None:
    await _client(identities, "ci")
    other = await _client(identities, "other")
    await access.grant("ci", "model/acme/*", ADMIN)
    assert await access.allows(other, ACME_MODEL) is False


async def test_allows_admin_reads_every_repo_without_grants(
    access: AccessList, identities: Identities
) -> None:
    _, token = await identities.create("boss", Role.ADMIN, None, ADMIN)
    assert await access.allows(token, ACME_MODEL) is True
    assert await access.allows(token, RepoRef(RepoType.DATASET, "any/thing")) is True


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.VIEWER])
async def test_allows_reviewer_and_viewer_read_nothing(
    access: AccessList, identities: Identities, role: Role
) -> None:
    _, token = await identities.create("staff", role, None, ADMIN)
    assert await access.allows(token, ACME_MODEL) is False


@pytest.mark.parametrize("token", [None, "", "hwa_unknown", "hf_upstream_token"])
async def test_allows_anonymous_or_unknown_token_is_refused(
    access: AccessList, identities: Identities, token: str | None
) -> None:
    await _client(identities)
    await access.grant("ci", "*/*/*", ADMIN)
    assert await access.allows(token, ACME_MODEL) is False


async def test_allows_revoked_client_is_refused(access: AccessList, identities: Identities) -> None:
    token = await _client(identities)
    await access.grant("ci", "model/acme/*", ADMIN)
    await identities.revoke("ci", ADMIN)
    assert await access.allows(token, ACME_MODEL) is False


async def test_allows_expired_client_is_refused(
    db_sessions: async_sessionmaker[AsyncSession], repository: Repository
) -> None:
    moments = [dt.datetime(2026, 12, 1, tzinfo=dt.UTC)]
    identities = Identities(db_sessions, repository, clock=lambda: moments[-1])
    access = AccessList(db_sessions, repository, identities)
    _, token = await identities.create("ci", Role.CLIENT, dt.timedelta(hours=1), ADMIN)
    await access.grant("ci", "model/acme/*", ADMIN)
    moments.append(moments[0] + dt.timedelta(hours=1))
    assert await access.allows(token, ACME_MODEL) is False


# -- revoke and the cache -------------------------------------------------------------------------


async def test_revoke_grant_refuses_the_client_at_once_in_this_process(
    access: AccessList, identities: Identities
) -> None:
    token = await _client(identities)
    await access.grant("ci", "model/acme/*", ADMIN)
    assert await access.allows(token, ACME_MODEL) is True
    await access.revoke("ci", "model/acme/*", ADMIN)
    assert await access.allows(token, ACME_MODEL) is False


async def test_allows_positive_answer_is_trusted_for_at_most_the_cache_ttl(
    access: AccessList, identities: Identities, clock: FakeClock
) -> None:
    token = await _client(identities)
    await access.grant("ci", "model/acme/*", ADMIN)
    assert await access.allows(token, ACME_MODEL) is True
    await identities.revoke("ci", ADMIN)  # as another process would: this cache is not told
    clock.now += CACHE_TTL_S - 0.1
    assert await access.allows(token, ACME_MODEL) is True
    clock.now += 0.1
    assert await access.allows(token, ACME_MODEL) is False


async def test_allows_refusal_is_not_cached(access: AccessList, identities: Identities) -> None:
    token = await _client(identities)
    assert await access.allows(token, ACME_MODEL) is False
    await access.grant("ci", "model/acme/*", ADMIN)
    assert await access.allows(token, ACME_MODEL) is True


def test_access_list_cache_longer_than_five_seconds_is_refused(
    db_sessions: async_sessionmaker[AsyncSession], repository: Repository, identities: Identities
) -> None:
    with pytest.raises(ValueError, match="cache_ttl_s"):
        AccessList(db_sessions, repository, identities, cache_ttl_s=60.0)


async def test_revoke_unknown_grant_raises_unknown_grant_saying_what_to_do(
    access: AccessList, identities: Identities
) -> None:
    await _client(identities)
    with pytest.raises(UnknownGrant, match=r'"ci" has no grant "model/x/\*"; .*admin access list'):
        await access.revoke("ci", "model/x/*", ADMIN)


# -- grant ----------------------------------------------------------------------------------------


async def test_grant_unknown_token_raises_unknown_token(access: AccessList) -> None:
    with pytest.raises(UnknownToken, match='no token is named "ghost"'):
        await access.grant("ghost", "model/acme/*", ADMIN)


@pytest.mark.parametrize("role", [Role.ADMIN, Role.REVIEWER, Role.VIEWER])
async def test_grant_to_a_token_that_is_not_a_client_is_refused(
    access: AccessList, identities: Identities, role: Role
) -> None:
    await identities.create("staff", role, None, ADMIN)
    with pytest.raises(NotAClientToken, match=f"has role {role.value}: only client tokens"):
        await access.grant("staff", "model/acme/*", ADMIN)


async def test_grant_to_a_revoked_client_is_refused(
    access: AccessList, identities: Identities
) -> None:
    await _client(identities)
    await identities.revoke("ci", ADMIN)
    with pytest.raises(NotAClientToken, match="is revoked"):
        await access.grant("ci", "model/acme/*", ADMIN)


async def test_grant_invalid_pattern_raises_invalid_input(
    access: AccessList, identities: Identities
) -> None:
    await _client(identities)
    with pytest.raises(InvalidInput, match="must start with model/"):
        await access.grant("ci", "acme/*", ADMIN)


async def test_grant_twice_keeps_one_grant_and_one_audit_event(
    access: AccessList, identities: Identities, repository: Repository
) -> None:
    await _client(identities)
    first = await access.grant("ci", "model/acme/*", ADMIN)
    second = await access.grant("ci", "model/acme/*", "os:bob")
    assert first == second
    assert [(g.token_name, g.pattern) for g in await access.list()] == [("ci", "model/acme/*")]
    assert len(await repository.list_audit(action="access.granted")) == 1


async def test_list_filters_by_token_and_orders_by_token_then_pattern(
    access: AccessList, identities: Identities
) -> None:
    await _client(identities, "b")
    await _client(identities, "a")
    await access.grant("b", "model/z/*", ADMIN)
    await access.grant("a", "model/y/*", ADMIN)
    await access.grant("a", "dataset/y/*", ADMIN)
    assert [(g.token_name, g.pattern) for g in await access.list()] == [
        ("a", "dataset/y/*"),
        ("a", "model/y/*"),
        ("b", "model/z/*"),
    ]
    assert [g.pattern for g in await access.list("b")] == ["model/z/*"]


async def test_grant_and_revoke_are_audited_with_the_acting_identity(
    access: AccessList, identities: Identities, repository: Repository
) -> None:
    await _client(identities)
    await access.grant("ci", "model/acme/*", "os:alice")
    await access.revoke("ci", "model/acme/*", "os:bob")
    events = [
        (e.actor, e.action, e.details)
        for e in await repository.list_audit()
        if e.action.startswith("access.")
    ]
    assert events == [
        ("os:alice", "access.granted", {"token": "ci", "pattern": "model/acme/*"}),
        ("os:bob", "access.revoked", {"token": "ci", "pattern": "model/acme/*"}),
    ]


# -- offline AccessChecker with the local list ----------------------------------------------------

GATED = RepoRecord(pk=1, ref=ACME_MODEL, private=False, gated="manual")
PRIVATE = RepoRecord(pk=1, ref=ACME_MODEL, private=True, gated="false")
GATED_ELSEWHERE = RepoRecord(pk=2, ref=OTHER_MODEL, private=False, gated="auto")
PROBES = [None, ("a" * 40, "config.json")]
PROBE_IDS = ["repo", "file"]


@pytest.mark.parametrize("record", [GATED, PRIVATE], ids=["gated", "private"])
@pytest.mark.parametrize("probe", PROBES, ids=PROBE_IDS)
async def test_offline_checker_allows_a_granted_client(
    access: AccessList,
    identities: Identities,
    record: RepoRecord,
    probe: tuple[str, str] | None,
) -> None:
    token = await _client(identities)
    await access.grant("ci", "model/acme/*", ADMIN)
    await AccessChecker(None, 300.0, local=access).check(record, Caller(token), probe)


@pytest.mark.parametrize("probe", PROBES, ids=PROBE_IDS)
async def test_offline_checker_allows_an_admin_token(
    access: AccessList, identities: Identities, probe: tuple[str, str] | None
) -> None:
    _, token = await identities.create("boss", Role.ADMIN, None, ADMIN)
    await AccessChecker(None, 300.0, local=access).check(PRIVATE, Caller(token), probe)


@pytest.mark.parametrize(
    ("record", "refusal"),
    [(GATED, GatedRepo), (PRIVATE, RepoNotFound)],
    ids=["gated", "private"],
)
@pytest.mark.parametrize("probe", PROBES, ids=PROBE_IDS)
async def test_offline_checker_still_refuses_anonymous(
    access: AccessList,
    identities: Identities,
    record: RepoRecord,
    refusal: type[GatedRepo | RepoNotFound],
    probe: tuple[str, str] | None,
) -> None:
    await _client(identities)
    await access.grant("ci", "*/*/*", ADMIN)
    checker = AccessChecker(None, 300.0, local=access)
    with pytest.raises(refusal, match=r"offline.*local access list.*admin") as caught:
        await checker.check(record, Caller(None), probe)
    assert isinstance(caught.value, GatedRepo | RepoNotFound)
    assert caught.value.authenticated is False


@pytest.mark.parametrize("probe", PROBES, ids=PROBE_IDS)
async def test_offline_checker_still_refuses_a_client_not_granted_that_repo(
    access: AccessList, identities: Identities, probe: tuple[str, str] | None
) -> None:
    token = await _client(identities)
    await access.grant("ci", "model/acme/*", ADMIN)
    checker = AccessChecker(None, 300.0, local=access)
    with pytest.raises(GatedRepo, match=r"offline.*local access list") as caught:
        await checker.check(GATED_ELSEWHERE, Caller(token), probe)
    assert caught.value.authenticated is True


async def test_offline_checker_refuses_a_revoked_grant(
    access: AccessList, identities: Identities
) -> None:
    token = await _client(identities)
    await access.grant("ci", "model/acme/*", ADMIN)
    checker = AccessChecker(None, 300.0, local=access)
    await checker.check(PRIVATE, Caller(token), None)
    await access.revoke("ci", "model/acme/*", ADMIN)
    with pytest.raises(RepoNotFound, match="local access list"):
        await checker.check(PRIVATE, Caller(token), None)


async def test_offline_checker_with_local_list_serves_public_repos_to_anyone(
    access: AccessList,
) -> None:
    public = RepoRecord(pk=3, ref=OTHER_MODEL, private=False, gated="false")
    await AccessChecker(None, 300.0, local=access).check(public, Caller(None), PROBES[1])
