"""Each Hub error reaches the real client as the exception class the real Hub would cause."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    DisabledRepoError,
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.fakehub import FakeHub
from tests.fakehub.plugin import make_gated_repo, make_private_repo


async def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, *args, **kwargs)


def _download(hub: FakeHub, cache: Path, repo_id: str, path: str, **kwargs: Any) -> Any:
    return _call(hf_hub_download, repo_id, path, endpoint=hub.url, cache_dir=cache, **kwargs)


async def test_model_info_unknown_repo_anonymous_raises_repository_not_found(
    fake_hub: FakeHub,
) -> None:
    with pytest.raises(RepositoryNotFoundError, match="Invalid username or password"):
        await _call(HfApi(endpoint=fake_hub.url, token=False).model_info, "org/nope")


async def test_resolve_unknown_repo_anonymous_answers_401_with_www_authenticate(
    fake_hub: FakeHub,
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.head(f"{fake_hub.url}/org/nope/resolve/main/x") as response,
    ):
        assert response.status == 401
        assert response.headers["X-Error-Code"] == "RepoNotFound"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_hf_hub_download_unknown_repo_with_token_raises_repository_not_found(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    token = fake_hub.add_user("alice")

    with pytest.raises(RepositoryNotFoundError, match="404 Client Error") as caught:
        await _download(fake_hub, tmp_path, "org/nope", "config.json", token=token)

    assert caught.value.server_message == "Repository not found"


async def test_model_info_private_repo_stranger_raises_repository_not_found(
    fake_hub: FakeHub,
) -> None:
    make_private_repo(fake_hub, readers=["alice"])
    token = fake_hub.add_user("mallory")

    with pytest.raises(RepositoryNotFoundError):
        await _call(HfApi(endpoint=fake_hub.url, token=token).model_info, "org/private-model")


async def test_hf_hub_download_private_repo_reader_gets_file(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    repo = make_private_repo(fake_hub, readers=["alice"])
    token = fake_hub.add_user("alice")

    local = await _download(fake_hub, tmp_path, "org/private-model", "config.json", token=token)

    assert await asyncio.to_thread(Path(local).read_bytes) == repo.file("config.json").read()


async def test_hf_hub_download_gated_anonymous_raises_gated_repo_error(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    make_gated_repo(fake_hub)

    with pytest.raises(GatedRepoError, match="Please log in"):
        await _download(fake_hub, tmp_path, "org/gated-model", "config.json", token=False)


async def test_hf_hub_download_gated_without_grant_raises_gated_repo_error(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    make_gated_repo(fake_hub, granted=["alice"])
    token = fake_hub.add_user("bob")

    with pytest.raises(GatedRepoError, match="not in the authorized list"):
        await _download(fake_hub, tmp_path, "org/gated-model", "config.json", token=token)


async def test_hf_hub_download_gated_with_grant_gets_file(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    make_gated_repo(fake_hub, granted=["alice"])
    token = fake_hub.add_user("alice")

    local = await _download(fake_hub, tmp_path, "org/gated-model", "config.json", token=token)

    assert await asyncio.to_thread(Path(local).read_bytes) == b'{"model_type": "bert"}'


async def test_model_info_gated_anonymous_reads_metadata(fake_hub: FakeHub) -> None:
    make_gated_repo(fake_hub)

    info = await _call(HfApi(endpoint=fake_hub.url, token=False).model_info, "org/gated-model")

    assert info.gated == "manual"


async def test_hf_hub_download_unknown_revision_raises_revision_not_found(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.create_repo("org/m", files={"config.json": b"{}"})

    with pytest.raises(RevisionNotFoundError, match="Invalid rev id: nope"):
        await _download(fake_hub, tmp_path, "org/m", "config.json", revision="nope", token=False)


async def test_hf_hub_download_missing_file_raises_entry_not_found(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.create_repo("org/m")

    with pytest.raises(EntryNotFoundError):
        await _download(fake_hub, tmp_path, "org/m", "missing.json", token=False)


async def test_resolve_missing_file_answers_404_with_repo_commit(fake_hub: FakeHub) -> None:
    repo = fake_hub.create_repo("org/m")

    async with (
        aiohttp.ClientSession() as session,
        session.head(f"{fake_hub.url}/org/m/resolve/main/missing.json") as response,
    ):
        assert response.status == 404
        assert response.headers["X-Error-Code"] == "EntryNotFound"
        assert response.headers["X-Error-Message"] == "Entry not found"
        assert response.headers["X-Repo-Commit"] == repo.head()


async def test_list_repo_tree_missing_folder_raises_entry_not_found(fake_hub: FakeHub) -> None:
    fake_hub.create_repo("org/m")
    api = HfApi(endpoint=fake_hub.url, token=False)

    with pytest.raises(
        EntryNotFoundError, match='additional_chat_templates does not exist on "main"'
    ):
        await _call(lambda: list(api.list_repo_tree("org/m", "additional_chat_templates")))


async def test_file_metadata_disabled_repo_raises_disabled_repo_error(fake_hub: FakeHub) -> None:
    fake_hub.create_repo("org/m", files={"config.json": b"{}"}).disabled = True
    url = hf_hub_url("org/m", "config.json", endpoint=fake_hub.url)

    with pytest.raises(DisabledRepoError):
        await _call(get_hf_file_metadata, url, token=False)


async def test_whoami_unknown_token_raises_http_error(fake_hub: FakeHub) -> None:
    with pytest.raises(HfHubHTTPError, match="Invalid user token"):
        await _call(HfApi(endpoint=fake_hub.url).whoami, token="hf_unknown")
