"""`AccessChecker` against the fake Hub: who may see a gated or private repo's cached copy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from proxy.catalog import Caller
from proxy.errors import GatedRepo, RepoNotFound, UpstreamUnavailable
from proxy.repos import RepoRef, RepoType
from proxy.store.repository import RepoRecord
from proxy.trust.access import AccessChecker
from proxy.upstream import Upstream, UpstreamConfig
from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Repo
from tests.fakehub.plugin import make_gated_repo, make_private_repo

REF = RepoRef(RepoType.MODEL, "org/m")
ANONYMOUS = Caller(None)
GATED = RepoRecord(pk=1, ref=REF, private=False, gated="manual")
PRIVATE = RepoRecord(pk=1, ref=REF, private=True, gated="false")
PUBLIC = RepoRecord(pk=1, ref=REF, private=False, gated="false")
FILE_HEADS = "/org/m/resolve/*"
TTL_S = 300.0

MakeUpstream = Callable[..., Upstream]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client


@pytest.fixture
def make_upstream(fake_hub: FakeHub, session: aiohttp.ClientSession) -> MakeUpstream:
    def make(service_token: str | None = None, *, lend: bool = False) -> Upstream:
        config = UpstreamConfig(
            base_url=fake_hub.url,
            service_token=service_token,
            connect_timeout_s=5.0,
            read_timeout_s=5.0,
            retries=0,
            max_json_bytes=1 << 20,
            max_tree_entries=10_000,
            anonymous_uses_service_token=lend,
        )
        return Upstream(config, session)

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def checker(make_upstream: MakeUpstream, clock: FakeClock) -> AccessChecker:
    return AccessChecker(make_upstream(), TTL_S, clock)


@pytest.fixture
def gated(fake_hub: FakeHub) -> Repo:
    fake_hub.add_user("alice", token="hf_alice")
    fake_hub.add_user("bob", token="hf_bob")
    return make_gated_repo(fake_hub, repo_id="org/m", granted=["alice"])


@pytest.fixture
def private(fake_hub: FakeHub) -> Repo:
    fake_hub.add_user("alice", token="hf_alice")
    fake_hub.add_user("bob", token="hf_bob")
    return make_private_repo(fake_hub, repo_id="org/m", readers=["alice"])


def _probe(repo: Repo) -> tuple[str, str]:
    return repo.head(), "config.json"


# -- who passes -----------------------------------------------------------------------------------


async def test_access_public_repo_passes_without_asking_upstream(
    checker: AccessChecker, fake_hub: FakeHub
) -> None:
    await checker.check(PUBLIC, ANONYMOUS, ("0" * 40, "config.json"))
    assert fake_hub.requests == []


async def test_access_gated_file_with_a_granted_token_passes(
    checker: AccessChecker, gated: Repo, fake_hub: FakeHub
) -> None:
    await checker.check(GATED, Caller("hf_alice"), _probe(gated))
    assert fake_hub.count(FILE_HEADS, method="HEAD") == 1


async def test_access_gated_repo_level_request_passes_since_its_metadata_is_public(
    checker: AccessChecker, gated: Repo, fake_hub: FakeHub
) -> None:
    await checker.check(GATED, ANONYMOUS, None)
    assert fake_hub.requests == []


async def test_access_private_repo_level_request_with_a_reader_token_passes(
    checker: AccessChecker, private: Repo, fake_hub: FakeHub
) -> None:
    await checker.check(PRIVATE, Caller("hf_alice"), None)
    assert fake_hub.count("/api/models/org/m") == 1


async def test_access_private_file_with_a_reader_token_passes(
    checker: AccessChecker, private: Repo
) -> None:
    await checker.check(PRIVATE, Caller("hf_alice"), _probe(private))


# -- who is refused, in the Hub's shape -----------------------------------------------------------


async def test_access_gated_file_anonymous_is_gated_unauthenticated(
    checker: AccessChecker, gated: Repo
) -> None:
    with pytest.raises(GatedRepo, match="Please log in") as caught:
        await checker.check(GATED, ANONYMOUS, _probe(gated))
    assert (caught.value.authenticated, caught.value.repo, caught.value.kind) == (
        False,
        "org/m",
        "model",
    )


async def test_access_gated_file_with_a_token_without_grant_is_gated_authenticated(
    checker: AccessChecker, gated: Repo
) -> None:
    with pytest.raises(GatedRepo, match="not in the authorized list") as caught:
        await checker.check(GATED, Caller("hf_bob"), _probe(gated))
    assert caught.value.authenticated


async def test_access_gated_file_with_a_token_the_hub_refuses_is_refused(
    checker: AccessChecker, gated: Repo
) -> None:
    with pytest.raises(GatedRepo) as caught:
        await checker.check(GATED, Caller("hf_unknown_token"), _probe(gated))
    assert not caught.value.authenticated  # the Hub's 401: log in again


async def test_access_private_repo_anonymous_is_repo_not_found_unauthenticated(
    checker: AccessChecker, private: Repo
) -> None:
    with pytest.raises(RepoNotFound, match="Invalid username or password") as caught:
        await checker.check(PRIVATE, ANONYMOUS, None)
    assert not caught.value.authenticated


async def test_access_private_file_anonymous_is_repo_not_found_unauthenticated(
    checker: AccessChecker, private: Repo
) -> None:
    with pytest.raises(RepoNotFound) as caught:
        await checker.check(PRIVATE, ANONYMOUS, _probe(private))
    assert not caught.value.authenticated


async def test_access_private_repo_with_a_token_without_read_is_repo_not_found_authenticated(
    checker: AccessChecker, private: Repo
) -> None:
    with pytest.raises(RepoNotFound, match="Repository not found") as caught:
        await checker.check(PRIVATE, Caller("hf_bob"), _probe(private))
    assert caught.value.authenticated


async def test_access_private_repo_with_a_token_the_hub_refuses_is_repo_not_found(
    checker: AccessChecker, private: Repo
) -> None:
    with pytest.raises(RepoNotFound) as caught:
        await checker.check(PRIVATE, Caller("hf_unknown_token"), None)
    assert not caught.value.authenticated


async def test_access_private_gated_repo_level_yes_does_not_prove_its_files(
    checker: AccessChecker, fake_hub: FakeHub
) -> None:
    fake_hub.add_user("carol", token="hf_carol")
    repo = fake_hub.create_repo(
        "org/m", files={"config.json": b"{}"}, private=True, gated="manual", readers=["carol"]
    )
    record = RepoRecord(pk=1, ref=REF, private=True, gated="manual")
    await checker.check(record, Caller("hf_carol"), None)
    with pytest.raises(GatedRepo) as caught:
        await checker.check(record, Caller("hf_carol"), _probe(repo))
    assert caught.value.authenticated


# -- the service token never widens --------------------------------------------------------------


async def test_access_anonymous_is_refused_even_when_the_service_token_has_access(
    make_upstream: MakeUpstream, gated: Repo, fake_hub: FakeHub
) -> None:
    checker = AccessChecker(make_upstream("hf_alice"), TTL_S)
    with pytest.raises(GatedRepo):
        await checker.check(GATED, ANONYMOUS, _probe(gated))
    assert [r.path for r in fake_hub.requests if r.has_auth] == []


async def test_access_anonymous_passes_when_the_admin_lends_the_service_token(
    make_upstream: MakeUpstream, gated: Repo
) -> None:
    checker = AccessChecker(make_upstream("hf_alice", lend=True), TTL_S)
    await checker.check(GATED, ANONYMOUS, _probe(gated))


async def test_access_lent_service_token_refused_still_gives_anonymous_the_401_form(
    make_upstream: MakeUpstream, gated: Repo
) -> None:
    checker = AccessChecker(make_upstream("hf_bob", lend=True), TTL_S)
    with pytest.raises(GatedRepo) as caught:
        await checker.check(GATED, ANONYMOUS, _probe(gated))
    assert not caught.value.authenticated


# -- caching: positive answers only, per caller, for the TTL -------------------------------------


async def test_access_positive_answer_within_ttl_asks_upstream_once(
    checker: AccessChecker, gated: Repo, fake_hub: FakeHub, clock: FakeClock
) -> None:
    await checker.check(GATED, Caller("hf_alice"), _probe(gated))
    clock.now += TTL_S - 1
    await checker.check(GATED, Caller("hf_alice"), (gated.head(), "model.safetensors"))
    assert fake_hub.count(FILE_HEADS, method="HEAD") == 1


async def test_access_positive_answer_after_ttl_is_asked_again(
    checker: AccessChecker, gated: Repo, fake_hub: FakeHub, clock: FakeClock
) -> None:
    await checker.check(GATED, Caller("hf_alice"), _probe(gated))
    clock.now += TTL_S
    gated.granted.discard("alice")
    with pytest.raises(GatedRepo):
        await checker.check(GATED, Caller("hf_alice"), _probe(gated))
    assert fake_hub.count(FILE_HEADS, method="HEAD") == 2


async def test_access_refusal_is_not_cached(
    checker: AccessChecker, gated: Repo, fake_hub: FakeHub
) -> None:
    with pytest.raises(GatedRepo):
        await checker.check(GATED, Caller("hf_bob"), _probe(gated))
    gated.granted.add("bob")
    await checker.check(GATED, Caller("hf_bob"), _probe(gated))
    assert fake_hub.count(FILE_HEADS, method="HEAD") == 2


async def test_access_cached_answer_is_per_caller(checker: AccessChecker, gated: Repo) -> None:
    await checker.check(GATED, Caller("hf_alice"), _probe(gated))
    with pytest.raises(GatedRepo):
        await checker.check(GATED, ANONYMOUS, _probe(gated))
    with pytest.raises(GatedRepo):
        await checker.check(GATED, Caller("hf_bob"), _probe(gated))


async def test_access_ttl_zero_asks_upstream_every_time(
    make_upstream: MakeUpstream, gated: Repo, fake_hub: FakeHub
) -> None:
    checker = AccessChecker(make_upstream(), 0.0)
    for _ in range(3):
        await checker.check(GATED, Caller("hf_alice"), _probe(gated))
    assert fake_hub.count(FILE_HEADS, method="HEAD") == 3


async def test_access_upstream_trouble_propagates_and_caches_nothing(
    checker: AccessChecker, gated: Repo, fake_hub: FakeHub
) -> None:
    fake_hub.inject(FILE_HEADS, status=503, method="HEAD")
    with pytest.raises(UpstreamUnavailable):
        await checker.check(GATED, Caller("hf_alice"), _probe(gated))
    await checker.check(GATED, Caller("hf_alice"), _probe(gated))
    assert fake_hub.count(FILE_HEADS, method="HEAD") == 2


# -- offline: no local access list yet, so everyone is refused ------------------------------------


@pytest.mark.parametrize(
    ("record", "caller", "refusal", "authenticated"),
    [
        (GATED, ANONYMOUS, GatedRepo, False),
        (GATED, Caller("hf_alice"), GatedRepo, True),
        (PRIVATE, ANONYMOUS, RepoNotFound, False),
        (PRIVATE, Caller("hf_alice"), RepoNotFound, True),
    ],
    ids=["gated-anonymous", "gated-token", "private-anonymous", "private-token"],
)
@pytest.mark.parametrize("probe", [None, ("a" * 40, "config.json")], ids=["repo", "file"])
async def test_access_offline_refuses_gated_and_private_repos(
    record: RepoRecord,
    caller: Caller,
    refusal: type[GatedRepo | RepoNotFound],
    authenticated: bool,
    probe: tuple[str, str] | None,
) -> None:
    checker = AccessChecker(None, TTL_S)
    with pytest.raises(refusal, match=r"offline.*local access list.*admin") as caught:
        await checker.check(record, caller, probe)
    error = caught.value
    assert isinstance(error, GatedRepo | RepoNotFound)
    assert error.authenticated is authenticated


async def test_access_offline_public_repo_passes() -> None:
    await AccessChecker(None, TTL_S).check(PUBLIC, ANONYMOUS, ("a" * 40, "config.json"))
