"""Gated and private repos through Hubwarden with the real client: a cached copy is served only
to a client the Hub allows, checked with that client's own token (DESIGN.md rule 8)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from proxy.admin.identity import Role
from proxy.hub.context import SERVICES
from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Repo
from tests.fakehub.plugin import make_gated_repo, make_private_repo
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

GATED = "org/gated-model"
PRIVATE = "org/private-model"
WEIGHTS = "model.safetensors"


@pytest.fixture
def alice(fake_hub: FakeHub) -> str:
    return fake_hub.add_user("alice")


@pytest.fixture
def gated(fake_hub: FakeHub, alice: str) -> Repo:
    return make_gated_repo(fake_hub, granted=["alice", "svc"])


@asynccontextmanager
async def _proxy_with(
    fake_hub: FakeHub, tmp_path: Path, **settings: object
) -> AsyncIterator[RunningProxy]:
    running, runner = await start_proxy(
        proxy_settings(fake_hub, tmp_path / "data", **settings), tmp_path / "client-cache"
    )
    try:
        yield running
    finally:
        await runner.cleanup()


@pytest.fixture
async def service_proxy(fake_hub: FakeHub, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    """Hubwarden whose service token may read the gated repo."""
    token = fake_hub.add_user("svc")
    async with _proxy_with(fake_hub, tmp_path, **{"fetch.token": token}) as running:
        yield running


@pytest.fixture
async def lending_proxy(fake_hub: FakeHub, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    """Hubwarden that lends its service token to clients without one (the admin's choice)."""
    token = fake_hub.add_user("svc")
    settings = {"fetch.token": token, "fetch.anonymous_uses_service_token": True}
    async with _proxy_with(fake_hub, tmp_path, **settings) as running:
        yield running


# -- gated ----------------------------------------------------------------------------------------


async def test_gated_file_fetched_with_an_allowed_token_is_refused_to_an_anonymous_client(
    proxy: RunningProxy, gated: Repo, alice: str, tmp_path: Path
) -> None:
    await proxy.download(GATED, WEIGHTS, token=alice)
    with pytest.raises(GatedRepoError, match="Please log in"):
        await proxy.download(GATED, WEIGHTS, cache_dir=tmp_path / "anonymous")


async def test_gated_file_at_its_recorded_commit_is_refused_to_an_anonymous_client(
    proxy: RunningProxy, gated: Repo, alice: str, tmp_path: Path
) -> None:
    await proxy.download(GATED, WEIGHTS, token=alice, revision=gated.head())
    with pytest.raises(GatedRepoError):
        await proxy.download(
            GATED, WEIGHTS, revision=gated.head(), cache_dir=tmp_path / "anonymous"
        )


async def test_gated_file_fetched_with_an_allowed_token_is_refused_to_a_token_without_grant(
    proxy: RunningProxy, gated: Repo, alice: str, fake_hub: FakeHub, tmp_path: Path
) -> None:
    bob = fake_hub.add_user("bob")
    await proxy.download(GATED, WEIGHTS, token=alice)
    with pytest.raises(GatedRepoError, match="not in the authorized list"):
        await proxy.download(GATED, WEIGHTS, token=bob, cache_dir=tmp_path / "bob")


@pytest.mark.parametrize("by_commit", [False, True], ids=["branch", "commit"])
async def test_gated_file_is_refused_to_a_token_the_hub_does_not_know(
    proxy: RunningProxy, gated: Repo, alice: str, tmp_path: Path, by_commit: bool
) -> None:
    revision = gated.head() if by_commit else None
    await proxy.download(GATED, WEIGHTS, token=alice, revision=revision)
    # By branch the repo info call already fails (401); by commit the file check does (GatedRepo).
    with pytest.raises(RepositoryNotFoundError):
        await proxy.download(
            GATED, WEIGHTS, token="hf_unknown", revision=revision, cache_dir=tmp_path / "x"
        )


async def test_gated_file_is_still_served_to_the_allowed_client_after_refusals(
    proxy: RunningProxy, gated: Repo, alice: str, fake_hub: FakeHub, tmp_path: Path
) -> None:
    first = await proxy.download(GATED, WEIGHTS, token=alice)
    with pytest.raises(GatedRepoError):
        await proxy.download(GATED, WEIGHTS, cache_dir=tmp_path / "anonymous")
    again = await proxy.download(GATED, WEIGHTS, token=alice, cache_dir=tmp_path / "alice2")
    assert again.read_bytes() == first.read_bytes()
    assert fake_hub.body_fetches(f"*/{WEIGHTS}") == 1


# -- private --------------------------------------------------------------------------------------


@pytest.mark.parametrize("by_commit", [False, True], ids=["branch", "commit"])
async def test_private_file_fetched_by_a_reader_is_refused_to_an_anonymous_client(
    proxy: RunningProxy, fake_hub: FakeHub, alice: str, tmp_path: Path, by_commit: bool
) -> None:
    repo = make_private_repo(fake_hub, readers=["alice"])
    revision = repo.head() if by_commit else None
    await proxy.download(PRIVATE, "config.json", token=alice, revision=revision)
    with pytest.raises(RepositoryNotFoundError) as caught:
        await proxy.download(
            PRIVATE, "config.json", revision=revision, cache_dir=tmp_path / "anonymous"
        )
    assert not isinstance(caught.value, GatedRepoError)


async def test_private_file_fetched_by_a_reader_is_refused_to_a_token_without_read(
    proxy: RunningProxy, fake_hub: FakeHub, alice: str, tmp_path: Path
) -> None:
    repo = make_private_repo(fake_hub, readers=["alice"])
    bob = fake_hub.add_user("bob")
    await proxy.download(PRIVATE, "config.json", token=alice, revision=repo.head())
    with pytest.raises(RepositoryNotFoundError) as caught:
        await proxy.download(
            PRIVATE, "config.json", token=bob, revision=repo.head(), cache_dir=tmp_path / "bob"
        )
    assert not isinstance(caught.value, GatedRepoError)


# -- the service token --------------------------------------------------------------------------


async def test_service_token_with_access_never_widens_what_an_anonymous_client_sees(
    service_proxy: RunningProxy, gated: Repo, alice: str, fake_hub: FakeHub, tmp_path: Path
) -> None:
    await service_proxy.download(GATED, WEIGHTS, token=alice)
    fake_hub.reset_requests()
    with pytest.raises(GatedRepoError):
        await service_proxy.download(GATED, WEIGHTS, cache_dir=tmp_path / "anonymous")
    assert fake_hub.requests  # the refusal came from asking upstream...
    assert [r.path for r in fake_hub.requests if r.has_auth] == []  # ...without any token


@pytest.mark.parametrize("by_commit", [False, True], ids=["branch", "commit"])
async def test_service_token_with_access_never_shows_a_private_repo_to_an_anonymous_client(
    service_proxy: RunningProxy, fake_hub: FakeHub, alice: str, tmp_path: Path, by_commit: bool
) -> None:
    repo = make_private_repo(fake_hub, readers=["alice", "svc"])
    revision = repo.head() if by_commit else None
    await service_proxy.download(PRIVATE, "config.json", token=alice, revision=revision)
    fake_hub.reset_requests()
    with pytest.raises(RepositoryNotFoundError) as caught:
        await service_proxy.download(
            PRIVATE, "config.json", revision=revision, cache_dir=tmp_path / "anonymous"
        )
    assert not isinstance(caught.value, GatedRepoError)
    assert [r.path for r in fake_hub.requests if r.has_auth] == []


async def test_service_token_serves_an_anonymous_client_when_the_admin_lends_it(
    lending_proxy: RunningProxy, gated: Repo, alice: str, tmp_path: Path
) -> None:
    first = await lending_proxy.download(GATED, WEIGHTS, token=alice)
    path = await lending_proxy.download(GATED, WEIGHTS, cache_dir=tmp_path / "anonymous")
    assert path.read_bytes() == first.read_bytes()


# -- offline: no local access list yet ----------------------------------------------------------


async def test_offline_mirror_refuses_its_gated_copy_even_to_the_client_that_fetched_it(
    fake_hub: FakeHub, gated: Repo, alice: str, tmp_path: Path
) -> None:
    async with _proxy_with(fake_hub, tmp_path) as online:
        await online.download(GATED, WEIGHTS, token=alice)
    async with _proxy_with(fake_hub, tmp_path, offline=True) as offline:
        with pytest.raises(GatedRepoError, match=r"offline.*local access list"):
            await offline.download(GATED, WEIGHTS, token=alice, cache_dir=tmp_path / "again")


async def test_offline_mirror_refuses_private_repo_info_by_branch_to_anonymous(
    fake_hub: FakeHub, alice: str, tmp_path: Path
) -> None:
    make_private_repo(fake_hub, readers=["alice"])
    async with _proxy_with(fake_hub, tmp_path) as online:
        await online.download(PRIVATE, WEIGHTS, token=alice)
    async with _proxy_with(fake_hub, tmp_path, offline=True) as offline:
        api = HfApi(endpoint=offline.url, token=False)
        with pytest.raises(RepositoryNotFoundError):
            await offline.call(api.model_info, PRIVATE)


async def test_offline_mirror_serves_gated_copy_to_a_client_token_on_the_access_list(
    fake_hub: FakeHub, gated: Repo, alice: str, tmp_path: Path
) -> None:
    async with _proxy_with(fake_hub, tmp_path) as online:
        fetched = await online.download(GATED, WEIGHTS, token=alice)
    async with _proxy_with(fake_hub, tmp_path, offline=True) as offline:
        services = offline.app[SERVICES]
        _, granted = await services.identities.create("team-a", Role.CLIENT, None, "test")
        _, other = await services.identities.create("team-b", Role.CLIENT, None, "test")
        await services.access_list.grant("team-a", "model/org/*", "test")
        path = await offline.download(GATED, WEIGHTS, token=granted, cache_dir=tmp_path / "a")
        assert path.read_bytes() == fetched.read_bytes()
        for token in (other, False):
            with pytest.raises(GatedRepoError):
                await offline.download(GATED, WEIGHTS, token=token, cache_dir=tmp_path / "b")
