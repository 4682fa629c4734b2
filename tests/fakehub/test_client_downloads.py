"""The real huggingface_hub client downloads from the fake Hub directly and gets right bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import huggingface_hub.constants
import pytest
from huggingface_hub import HfFileSystem, hf_hub_download, snapshot_download

from tests.fakehub import FakeHub, Origin, Repo
from tests.fakehub.plugin import make_tiny_model, make_wide_repo

CONFIG = b'{"model_type": "bert"}\n'


@pytest.fixture
def no_xet(monkeypatch: pytest.MonkeyPatch) -> None:
    """A direct client would use hf_xet on LFS files; the fake's CAS is a dead end on purpose."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)


def _repo(hub: FakeHub) -> Repo:
    return hub.create_repo("org/m", files={"config.json": CONFIG, "weights.bin": b"w" * 4096})


def _fetch(endpoint: str, cache: Path, path: str, revision: str | None, token: str | bool) -> bytes:
    local = hf_hub_download(
        "org/m", path, revision=revision, endpoint=endpoint, cache_dir=cache, token=token
    )
    return Path(local).read_bytes()


async def _download(
    hub: FakeHub, cache: Path, path: str, *, revision: str | None = None, token: str | bool = False
) -> bytes:
    return await asyncio.to_thread(_fetch, hub.url, cache, path, revision, token)


def _files_under(root: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file()}


async def test_hf_hub_download_branch_gets_regular_file(fake_hub: FakeHub, tmp_path: Path) -> None:
    _repo(fake_hub)

    assert await _download(fake_hub, tmp_path, "config.json") == CONFIG


async def test_hf_hub_download_tag_gets_tagged_content(fake_hub: FakeHub, tmp_path: Path) -> None:
    repo = _repo(fake_hub)
    repo.tag("v1")
    repo.commit({"config.json": b"{}"})

    assert await _download(fake_hub, tmp_path, "config.json", revision="v1") == CONFIG


async def test_hf_hub_download_pr_ref_gets_pr_content(fake_hub: FakeHub, tmp_path: Path) -> None:
    ref = _repo(fake_hub).open_pr({"config.json": b'{"pr": 1}'})

    assert await _download(fake_hub, tmp_path, "config.json", revision=ref) == b'{"pr": 1}'


async def test_hf_hub_download_commit_gets_old_content(fake_hub: FakeHub, tmp_path: Path) -> None:
    repo = _repo(fake_hub)
    old = repo.head()
    repo.commit({"config.json": b"{}"})

    assert await _download(fake_hub, tmp_path, "config.json", revision=old) == CONFIG


@pytest.mark.usefixtures("no_xet")
async def test_hf_hub_download_lfs_file_comes_from_cdn_without_token(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    _repo(fake_hub)
    token = fake_hub.add_user("alice")

    data = await _download(fake_hub, tmp_path, "weights.bin", token=token)

    assert data == b"w" * 4096
    assert fake_hub.body_fetches("*/weights.bin") == 1
    assert fake_hub.count("*/weights.bin", method="GET", origin=Origin.CDN) == 1
    assert fake_hub.cdn_requests_with_auth() == []


async def test_hf_hub_download_lfs_with_xet_enabled_reaches_xet_token_route(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    """The Xet signals are real enough to engage hf_xet: a proxy that leaks them is caught."""
    _repo(fake_hub)

    with pytest.raises(RuntimeError, match="reconstruction"):
        await _download(fake_hub, tmp_path, "weights.bin")

    assert fake_hub.xet_token_requests() == 1


@pytest.mark.usefixtures("no_xet")
async def test_snapshot_download_paginated_tree_gets_every_file(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    repo = make_wide_repo(fake_hub, repo_id="org/m")

    local = await asyncio.to_thread(
        snapshot_download, "org/m", endpoint=fake_hub.url, cache_dir=tmp_path, token=False
    )

    assert await asyncio.to_thread(_files_under, local) == set(repo.resolve("main").files)
    assert fake_hub.count("/api/models/org/m/tree/*", method="GET") > 3


async def test_snapshot_download_allow_patterns_gets_matching_files_only(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    make_wide_repo(fake_hub, repo_id="org/m")

    local = await asyncio.to_thread(
        snapshot_download,
        "org/m",
        endpoint=fake_hub.url,
        cache_dir=tmp_path,
        token=False,
        allow_patterns=["*.md", "d0/d0/d0/f*"],
    )

    expected = {"README.md", "d0/d0/d0/f0.txt", "d0/d0/d0/f1.txt"}
    assert await asyncio.to_thread(_files_under, local) == expected


@pytest.mark.usefixtures("no_xet")
async def test_hf_file_system_ls_open_glob_read_the_tiny_model(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    fs = HfFileSystem(endpoint=fake_hub.url, token=False, skip_instance_cache=True)

    def browse() -> tuple[list[str], list[str], bytes, bytes]:
        listing = sorted(str(p) for p in fs.ls("org/tiny-model", detail=False))
        found = sorted(fs.glob("org/tiny-model/*.json"))
        with fs.open("org/tiny-model/model.safetensors", "rb", block_size=64) as handle:
            handle.seek(8)
            partial = bytes(handle.read(16))
        with fs.open("org/tiny-model/config.json", "rb") as handle:
            whole = bytes(handle.read())
        return listing, found, partial, whole

    listing, found, partial, whole = await asyncio.to_thread(browse)

    assert [p.rpartition("/")[2] for p in listing] == sorted([".gitattributes", *tiny_model_files])
    assert found == [f"org/tiny-model/{n}" for n in ("config.json", "tokenizer.json",
                                                     "tokenizer_config.json")]  # fmt: skip
    assert partial == tiny_model_files["model.safetensors"][8:24]
    assert whole == tiny_model_files["config.json"]
