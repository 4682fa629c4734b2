"""Tampered bytes, Xet signals and traversal attempts never get through."""

from __future__ import annotations

import aiohttp
import pytest
from huggingface_hub.errors import HfHubHTTPError
from yarl import URL

from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model
from tests.proxyplugin import RunningProxy

MODEL = "org/tiny-model"


@pytest.mark.parametrize("keep_size", [True, False])
async def test_tampered_lfs_bytes_never_reach_the_client_and_block_the_repo(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes], keep_size: bool
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    repo.tamper("model.safetensors", keep_size=keep_size)
    with pytest.raises(HfHubHTTPError, match="tampered") as caught:
        await proxy.download(MODEL, "model.safetensors")
    assert caught.value.response.status_code == 403
    assert not list(proxy.cache_dir.rglob("model.safetensors"))
    # The whole repo is blocked now, even its untouched files.
    with pytest.raises(HfHubHTTPError, match="blocked"):
        await proxy.download(MODEL, "config.json")


async def test_tampered_regular_file_is_refused(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    repo.tamper("config.json", keep_size=True)
    with pytest.raises(HfHubHTTPError, match="tampered"):
        await proxy.download(MODEL, "config.json")


async def test_no_xet_signal_leaks_on_resolve_tree_or_info(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    sha = repo.head()
    async with aiohttp.ClientSession() as session:
        async with session.head(
            f"{proxy.url}/{MODEL}/resolve/{sha}/model.safetensors", allow_redirects=False
        ) as head:
            assert head.status == 200
            assert not [h for h in head.headers if h.lower().startswith("x-xet")]
            assert "Link" not in head.headers
            assert head.headers["X-Linked-Etag"] == f'"{repo.file("model.safetensors").sha256}"'
        for url in (
            f"/api/models/{MODEL}/tree/{sha}?recursive=true&expand=false",
            f"/api/models/{MODEL}",
            f"/api/models/{MODEL}/revision/main?blobs=true",
        ):
            async with session.get(proxy.url + url) as response:
                text = await response.text()
                assert response.status == 200
                assert "xet" not in text.lower()
        async with session.get(f"{proxy.url}/api/models/{MODEL}/xet-read-token/{sha}") as token:
            assert token.status == 403
            assert "HF_HUB_DISABLE_XET" in token.headers["X-Error-Message"]
    assert fake_hub.xet_token_requests() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/org/tiny-model/resolve/main/..%2F..%2Fetc%2Fpasswd",
        "/org/tiny-model/resolve/main/a/%2E%2E/%2E%2E/x",
        "/org/tiny-model/resolve/main/a%5Cb",
        "/org/tiny-model/resolve/main/%2Fetc%2Fpasswd",
        "/org/tiny-model/resolve/main/a%00b",
        "/org/tiny-model/resolve/main%2F..%2F..%2Fx/config.json",
        "/org/tiny-model/resolve/ma%0Ain/config.json",
        "/org/..%2F..%2Fetc/resolve/main/config.json",
        "/api/models/org/tiny-model/tree/main/..%2F..",
        "/org/tiny-model/resolve/main/" + "a" * 2000,
    ],
)
async def test_traversal_attempts_get_400_and_never_reach_upstream(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes], path: str
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    fake_hub.reset_requests()
    async with (
        aiohttp.ClientSession() as session,
        session.get(URL(proxy.url + path, encoded=True), allow_redirects=False) as response,
    ):
        assert response.status == 400, path
        assert response.headers["X-Error-Message"]
    assert fake_hub.requests == []


async def test_rewritten_branch_history_blocks_the_repo(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await proxy.download(MODEL, "config.json")
    repo.force_push({"config.json": b'{"model_type": "evil"}'})
    with pytest.raises(HfHubHTTPError, match="history_rewritten"):
        await proxy.download(MODEL, "config.json")


async def test_fast_forward_of_a_branch_is_not_a_rewrite(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = fake_hub.create_repo(MODEL, files={"a.txt": b"one"})
    await proxy.download(MODEL, "a.txt")
    for n in range(5):  # several pages of history between the two heads
        repo.commit({"b.txt": f"{n}".encode()})
    path = await proxy.download(MODEL, "b.txt")
    assert path.name == "b.txt"


async def test_paths_info_with_a_deeply_nested_json_body_gets_400(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    body = b"[" * 200_000 + b"]" * 200_000
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{proxy.url}/api/models/{MODEL}/paths-info/{repo.head()}",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 400
        assert "not JSON" in response.headers["X-Error-Message"]


async def test_block_applies_at_once_to_files_served_a_moment_ago(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/config.json"
    async with aiohttp.ClientSession() as session:
        for _ in range(2):  # the second answer comes from the warm path
            async with session.get(url) as response:
                assert response.status == 200
        repo.tamper("model.safetensors")
        with pytest.raises(HfHubHTTPError, match="tampered"):
            await proxy.download(MODEL, "model.safetensors")
        async with session.get(url) as response:
            assert response.status == 403
            assert "blocked" in response.headers["X-Error-Message"]
