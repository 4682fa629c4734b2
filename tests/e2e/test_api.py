"""HfApi calls and error classes through Hubwarden, with the real client."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import huggingface_hub as hf
import pytest
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import (
    make_gated_repo,
    make_parquet_dataset,
    make_private_repo,
    make_tiny_model,
    make_wide_repo,
)
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

MODEL = "org/tiny-model"


def api_for(proxy: RunningProxy, token: str | bool = False) -> hf.HfApi:
    return hf.HfApi(endpoint=proxy.url, token=token)


async def test_model_info_reports_upstream_sha_and_complete_siblings(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    info = await proxy.call(api_for(proxy).model_info, MODEL, files_metadata=True)
    assert info.sha == repo.head()
    assert info.siblings is not None
    names = {s.rfilename for s in info.siblings}
    assert names == set(repo.resolve("main").files)
    weights = next(s for s in info.siblings if s.rfilename == "model.safetensors")
    assert weights.lfs is not None
    assert weights.lfs.sha256 == repo.file("model.safetensors").sha256


async def test_dataset_info_at_a_revision_reports_that_commit(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = make_parquet_dataset(fake_hub)
    sha = repo.head()
    info = await proxy.call(api_for(proxy).dataset_info, "org/tiny-dataset", revision=sha)
    assert info.sha == sha


async def test_list_repo_files_over_many_pages_is_complete(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = make_wide_repo(fake_hub)
    files = await proxy.call(api_for(proxy).list_repo_files, "org/wide-model")
    assert sorted(files) == sorted(repo.resolve("main").files)


async def test_list_repo_tree_of_a_folder_lists_its_children(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    make_wide_repo(fake_hub)
    entries = await proxy.call(
        lambda: list(api_for(proxy).list_repo_tree("org/wide-model", path_in_repo="d0"))
    )
    paths = sorted(e.path for e in entries)
    assert paths == ["d0/d0", "d0/d1", "d0/f0.txt", "d0/f1.txt", "d0/weights.bin"]
    assert {type(e) for e in entries} == {RepoFile, RepoFolder}


async def test_get_paths_info_returns_known_paths_and_omits_unknown(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    infos = await proxy.call(
        api_for(proxy).get_paths_info, MODEL, ["config.json", "model.safetensors", "nope.txt"]
    )
    by_path = {i.path: i for i in infos}
    assert set(by_path) == {"config.json", "model.safetensors"}
    weights = by_path["model.safetensors"]
    assert isinstance(weights, RepoFile) and weights.lfs is not None
    assert weights.lfs.sha256 == repo.file("model.safetensors").sha256


async def test_file_exists_and_repo_exists_answer_truthfully(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    api = api_for(proxy)
    assert await proxy.call(api.file_exists, MODEL, "config.json")
    assert not await proxy.call(api.file_exists, MODEL, "missing.json")
    assert await proxy.call(api.repo_exists, MODEL)
    assert not await proxy.call(api.repo_exists, "org/does-not-exist")


async def test_list_repo_refs_lists_branches_and_tags(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = fake_hub.create_repo(MODEL, files={"a.txt": b"a"})
    repo.tag("v1")
    refs = await proxy.call(api_for(proxy).list_repo_refs, MODEL)
    assert [b.name for b in refs.branches] == ["main"]
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", repo.head())]


async def test_list_repo_commits_follows_every_page_through_the_mirror(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = fake_hub.create_repo(MODEL, files={"a.txt": b"a"})
    for n in range(6):
        repo.commit({"a.txt": f"{n}".encode()}, message=f"change {n}")
    commits = await proxy.call(api_for(proxy).list_repo_commits, MODEL)
    assert [c.commit_id for c in commits] == [c.sha for c in repo.history("main")]
    links = [r for r in fake_hub.requests if "/commits/" in r.path]
    assert len(links) > 1  # several upstream pages, each reached through our own Link


async def test_unknown_repo_raises_repository_not_found(proxy: RunningProxy) -> None:
    with pytest.raises(RepositoryNotFoundError):
        await proxy.call(api_for(proxy).model_info, "org/nope")


async def test_private_repo_without_access_raises_repository_not_found(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    make_private_repo(fake_hub)
    with pytest.raises(RepositoryNotFoundError):
        await proxy.call(api_for(proxy).model_info, "org/private-model")


async def test_private_repo_with_reader_token_is_visible(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    token = fake_hub.add_user("alice")
    make_private_repo(fake_hub, readers=["alice"])
    info = await proxy.call(api_for(proxy, token).model_info, "org/private-model")
    assert info.id == "org/private-model"


async def test_unknown_revision_raises_revision_not_found(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo(MODEL, files={"a.txt": b"a"})
    with pytest.raises(RevisionNotFoundError):
        await proxy.download(MODEL, "a.txt", revision="nope")


async def test_missing_file_raises_entry_not_found(proxy: RunningProxy, fake_hub: FakeHub) -> None:
    fake_hub.create_repo(MODEL, files={"a.txt": b"a"})
    with pytest.raises(EntryNotFoundError):
        await proxy.download(MODEL, "b.txt")


async def test_gated_repo_without_access_raises_gated_repo_error(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    make_gated_repo(fake_hub)
    with pytest.raises(GatedRepoError):
        await proxy.download("org/gated-model", "config.json")


async def test_gated_repo_with_granted_token_downloads(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    token = fake_hub.add_user("bob")
    make_gated_repo(fake_hub, granted=["bob"])
    path = await proxy.download("org/gated-model", "config.json", token=token)
    assert path.name == "config.json"


async def test_write_routes_answer_read_only(proxy: RunningProxy) -> None:
    with pytest.raises(HfHubHTTPError, match="read-only mirror"):
        await proxy.call(api_for(proxy, "hf_x").create_repo, "org/new-repo")


async def test_upstream_outage_is_not_reported_as_repo_not_found(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo(MODEL, files={"a.txt": b"a"})
    fake_hub.inject("/api/models/*", status=503, times=10)
    with pytest.raises(HfHubHTTPError) as caught:
        await proxy.call(api_for(proxy).model_info, MODEL)
    assert not isinstance(caught.value, RepositoryNotFoundError)
    assert caught.value.response.status_code in (502, 503, 504)


async def test_upstream_rate_limit_is_passed_on_as_429(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo(MODEL, files={"a.txt": b"a"})
    fake_hub.inject("/api/models/*", status=429, headers={"Retry-After": "30"}, times=10)
    with pytest.raises(HfHubHTTPError) as caught:
        await proxy.call(api_for(proxy).model_info, MODEL)
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "30"


async def test_repo_info_by_branch_is_cached_for_the_metadata_ttl(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    repo = fake_hub.create_repo(MODEL, files={"a.txt": b"a"})
    settings = proxy_settings(fake_hub, tmp_path / "data", **{"fetch.metadata_ttl_s": 300})
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        first = await running.call(api_for(running).model_info, MODEL)
        repo.commit({"a.txt": b"b"})
        second = await running.call(api_for(running).model_info, MODEL)
    finally:
        await runner.cleanup()
    assert first.sha == second.sha
    assert fake_hub.count(f"/api/models/{MODEL}", method="GET") == 1


async def test_tree_pages_link_to_the_mirror_never_to_upstream(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = make_wide_repo(fake_hub)
    sha = repo.head()
    url = f"{proxy.url}/api/models/org/wide-model/tree/{sha}?recursive=true&expand=false"
    seen: list[str] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.get(url) as response:
                assert response.status == 200
                seen.extend(entry["path"] for entry in await response.json())
                link = response.headers.get("Link")
            if link is None:
                break
            assert link.startswith(f"<{proxy.url}/api/models/org/wide-model/tree/")
            url = link[1 : link.index(">")]
    commit = repo.resolve("main")
    assert {p for p in seen if p in commit.files} == set(commit.files)
    assert len(seen) == len(set(seen)) > 4


async def test_whoami_answers_for_the_callers_token(proxy: RunningProxy, fake_hub: FakeHub) -> None:
    token = fake_hub.add_user("carol", orgs=["acme"])
    me = await proxy.call(api_for(proxy, token).whoami)
    assert me["name"] == "carol"
    assert [org["name"] for org in me["orgs"]] == ["acme"]


async def test_agent_harnesses_and_datasets_server_info_are_answered_locally(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.url}/api/agent-harnesses") as harnesses:
            assert harnesses.status == 200
            assert await harnesses.json() == {"standardEnvVars": [], "harnesses": {}}
        async with session.get(f"{proxy.url}/info?dataset=org/x") as info:
            assert info.status == 404
    assert fake_hub.requests == []
