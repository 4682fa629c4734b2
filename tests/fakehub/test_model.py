"""The repo model behind the fake: commits, refs, history, trees, tampering."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.fakehub import FakeHub, Repo
from tests.fakehub.errors import EntryNotFound, RevisionNotFound
from tests.fakehub.gitobjects import LfsRule
from tests.fakehub.model import Clock, RepoKey, RepoType, list_tree


def _repo() -> Repo:
    repo = Repo(RepoKey(RepoType.MODEL, "org/m"), LfsRule(), Clock())
    repo.commit({"a.txt": b"a", "d/b.txt": b"b", "d/e/c.bin": b"c"})
    return repo


def test_commit_delete_removes_file_from_new_commit_only() -> None:
    repo = _repo()
    old = repo.head()

    repo.commit({}, delete=["a.txt"])

    with pytest.raises(EntryNotFound):
        repo.file("a.txt")
    assert repo.file("a.txt", revision=old).read() == b"a"


def test_commit_explicit_lfs_list_overrides_the_rule() -> None:
    repo = _repo()

    repo.commit({"big.txt": b"x" * 5000, "tiny.dat": b"t"}, lfs=["tiny.dat"])

    assert (repo.file("big.txt").is_lfs, repo.file("tiny.dat").is_lfs) == (False, True)


@pytest.mark.parametrize("revision", ["main", "refs/heads/main", "v1", "refs/tags/v1"])
def test_resolve_branch_and_tag_spellings_give_head(revision: str) -> None:
    repo = _repo()
    repo.tag("v1")

    assert repo.resolve(revision).sha == repo.head()


def test_resolve_unknown_revision_raises_revision_not_found() -> None:
    with pytest.raises(RevisionNotFound, match="Invalid rev id: nope"):
        _repo().resolve("nope")


def test_history_of_pr_includes_its_base_newest_first() -> None:
    repo = _repo()
    base = repo.head()

    ref = repo.open_pr({"x": b"x"})

    assert [c.sha for c in repo.history(ref)] == [repo.resolve(ref).sha, base]


def test_reset_branch_to_older_commit_drops_newer_history() -> None:
    repo = _repo()
    old = repo.head()
    repo.commit({"a.txt": b"A"})

    repo.reset_branch("main", old)

    assert [c.sha for c in repo.history("main")] == [old]


def test_list_tree_non_recursive_gives_direct_children_folders_first() -> None:
    commit = _repo().resolve("main")

    entries = list_tree(commit, "d", recursive=False)

    assert [e.path for e in entries] == ["d/e", "d/b.txt"]


def test_list_tree_missing_folder_raises_entry_not_found() -> None:
    with pytest.raises(EntryNotFound):
        list_tree(_repo().resolve("main"), "nope", recursive=True)


def test_tamper_keep_size_with_other_length_is_refused() -> None:
    with pytest.raises(ValueError, match="keep_size"):
        _repo().tamper("a.txt", b"longer", keep_size=True)


def test_check_files_gated_repo_granted_user_passes() -> None:
    repo = _repo()
    repo.gated, repo.granted = "auto", {"alice"}

    repo.check_files("alice")


async def test_on_disk_content_served_with_range(fake_hub: FakeHub, tmp_path: Path) -> None:
    data = bytes(range(256)) * 8192
    big = tmp_path / "big.bin"
    await asyncio.to_thread(big.write_bytes, data)
    fake_hub.create_repo("org/m", files={"big.bin": big})
    url = f"{fake_hub.url}/org/m/resolve/main/big.bin"

    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Range": "bytes=1000000-1000099"}) as response,
    ):
        assert await response.read() == data[1_000_000:1_000_100]
