"""HfFileSystem through Hubwarden: listings, whole and partial reads, globs."""

from __future__ import annotations

import huggingface_hub as hf

from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model, make_wide_repo
from tests.proxyplugin import RunningProxy


def filesystem(proxy: RunningProxy) -> hf.HfFileSystem:
    return hf.HfFileSystem(endpoint=proxy.url, token=False, skip_instance_cache=True)


async def test_hffs_ls_lists_the_repo_root(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    names = await proxy.call(filesystem(proxy).ls, "org/tiny-model", detail=False)
    assert sorted(str(n).rsplit("/", 1)[-1] for n in names) == sorted(
        [".gitattributes", *tiny_model_files]
    )


async def test_hffs_open_read_returns_the_whole_file(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)

    def read() -> bytes:
        with filesystem(proxy).open("org/tiny-model/model.safetensors", "rb") as handle:
            data: bytes = handle.read()
            return data

    assert await proxy.call(read) == tiny_model_files["model.safetensors"]


async def test_hffs_partial_read_returns_the_requested_bytes(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    expected = tiny_model_files["model.safetensors"]

    def read_middle() -> bytes:
        with filesystem(proxy).open("org/tiny-model/model.safetensors", "rb") as handle:
            handle.seek(100)
            data: bytes = handle.read(200)
            return data

    assert await proxy.call(read_middle) == expected[100:300]


async def test_hffs_glob_finds_files_in_every_folder(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = make_wide_repo(fake_hub)
    found = await proxy.call(filesystem(proxy).glob, "org/wide-model/**/*.bin")
    expected = {f"org/wide-model/{p}" for p in repo.resolve("main").files if p.endswith(".bin")}
    assert set(found) == expected
