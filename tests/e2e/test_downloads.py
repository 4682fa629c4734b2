"""The real huggingface_hub client downloads through Hubwarden from the fake Hub."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import huggingface_hub as hf
import pytest
from huggingface_hub.errors import HfHubHTTPError

from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model, make_wide_repo
from tests.proxyplugin import RunningProxy

MODEL = "org/tiny-model"
# A protocol-0 pickle that would call os.system("echo pwned") if anyone loaded it (never done).
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."


async def download(proxy: RunningProxy, filename: str, **kwargs: Any) -> Path:
    return await proxy.download(kwargs.pop("repo_id", MODEL), filename, **kwargs)


async def test_hf_hub_download_by_branch_returns_upstream_bytes(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    path = await download(proxy, "config.json")
    assert path.read_bytes() == tiny_model_files["config.json"]


async def test_hf_hub_download_lfs_file_returns_upstream_bytes(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    path = await download(proxy, "model.safetensors")
    assert path.read_bytes() == tiny_model_files["model.safetensors"]
    assert fake_hub.cdn_requests_with_auth() == []


@pytest.mark.parametrize("kind", ["tag", "pr", "commit"])
async def test_hf_hub_download_by_tag_pr_and_commit_gets_that_revision(
    proxy: RunningProxy, fake_hub: FakeHub, kind: str
) -> None:
    repo = fake_hub.create_repo(MODEL, files={"a.txt": b"old\n"})
    old = repo.head()
    repo.tag("v1", old)
    pr = repo.open_pr({"a.txt": b"from the pr\n"})
    repo.commit({"a.txt": b"new\n"})
    revision, expected = {
        "tag": ("v1", b"old\n"),
        "pr": (pr, b"from the pr\n"),
        "commit": (old, b"old\n"),
    }[kind]
    path = await download(proxy, "a.txt", revision=revision)
    assert path.read_bytes() == expected


async def test_second_download_of_a_commit_makes_no_upstream_request(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    sha = repo.head()
    first = await download(proxy, "model.safetensors", revision=sha)
    fake_hub.reset_requests()
    other_cache = proxy.cache_dir.parent / "second-client"
    second = await download(proxy, "model.safetensors", revision=sha, cache_dir=other_cache)
    assert Path(second).read_bytes() == first.read_bytes()
    assert fake_hub.requests == []


async def test_snapshot_download_over_paginated_tree_gets_every_file(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = make_wide_repo(fake_hub, depth=2, width=2, files_per_folder=1)
    folder = await proxy.call(
        hf.snapshot_download,
        "org/wide-model",
        endpoint=proxy.url,
        cache_dir=proxy.cache_dir,
        token=False,
    )
    commit = repo.resolve("main")
    expected = set(commit.files)
    got = {str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file()}
    assert got == expected
    assert fake_hub.xet_token_requests() == 0


async def test_snapshot_download_allow_patterns_gets_only_matching_files(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    folder = await proxy.call(
        hf.snapshot_download,
        MODEL,
        allow_patterns=["*.json"],
        endpoint=proxy.url,
        cache_dir=proxy.cache_dir,
        token=False,
    )
    got = sorted(p.name for p in Path(folder).rglob("*") if p.is_file())
    assert got == ["config.json", "tokenizer.json", "tokenizer_config.json"]
    assert fake_hub.body_fetches("*/model.safetensors") == 0


async def test_held_file_download_fails_with_the_quarantine_message(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo(MODEL, files={"pytorch_model.bin": MALICIOUS_PICKLE * 50})
    with pytest.raises(HfHubHTTPError, match=r"held in quarantine: pytorch_model\.bin") as caught:
        await download(proxy, "pytorch_model.bin")
    assert caught.value.response.status_code == 403
    assert "X-Error-Code" not in caught.value.response.headers
    assert not list(proxy.cache_dir.rglob("pytorch_model.bin"))


async def test_hf_cli_download_through_the_mirror_gets_the_file(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    env = {
        **os.environ,
        "HF_ENDPOINT": proxy.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    }
    env.pop("HF_TOKEN", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from huggingface_hub.cli.hf import main; main()",
        "download",
        MODEL,
        "config.json",
        "--local-dir",
        str(tmp_path / "out"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, stderr.decode()
    assert (tmp_path / "out" / "config.json").read_bytes() == tiny_model_files["config.json"]


async def test_released_file_answers_range_and_304(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await download(proxy, "model.safetensors")
    data = tiny_model_files["model.safetensors"]
    etag = repo.file("model.safetensors").sha256
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/model.safetensors"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Range": "bytes=10-19"}) as ranged:
            assert ranged.status == 206
            assert ranged.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
            assert ranged.headers["ETag"] == f'"{etag}"'
            assert await ranged.read() == data[10:20]
        async with session.get(url, headers={"Range": f"bytes={len(data)}-"}) as beyond:
            assert beyond.status == 416
            assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"
        async with session.get(url, headers={"If-None-Match": f'"{etag}"'}) as cached:
            assert cached.status == 304


async def test_renamed_repo_old_id_still_downloads(proxy: RunningProxy, fake_hub: FakeHub) -> None:
    fake_hub.create_repo("org/old-name", files={"a.txt": b"renamed\n"})
    fake_hub.rename_repo("org/old-name", "org/new-name")
    path = await download(proxy, "a.txt", repo_id="org/old-name")
    assert path.read_bytes() == b"renamed\n"


async def test_documentation_files_are_not_pinned(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await download(proxy, "README.md")
    repo.commit({"README.md": b"# updated card\n"})
    path = await download(proxy, "README.md")
    assert path.read_bytes() == b"# updated card\n"


async def test_absent_file_probed_twice_at_a_commit_asks_upstream_once(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    api = hf.HfApi(endpoint=proxy.url, token=False)
    for _ in range(2):
        assert not await proxy.call(
            api.file_exists, MODEL, "added_tokens.json", revision=repo.head()
        )
    assert fake_hub.count(f"/api/models/{MODEL}/paths-info/*") == 1
