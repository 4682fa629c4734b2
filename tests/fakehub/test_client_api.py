"""HfApi against the fake Hub: repo info, tree, paths-info, refs, commits, whoami, renames."""

from __future__ import annotations

import asyncio
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoFile, RepoFolder

from tests.fakehub import FakeHub, Repo
from tests.fakehub.plugin import make_parquet_dataset, make_wide_repo


def _api(hub: FakeHub) -> HfApi:
    return HfApi(endpoint=hub.url, token=False)


def _repo(hub: FakeHub) -> Repo:
    files = {"config.json": b"{}", "model.safetensors": b"\0" * 2048, "sub/a.txt": b"a"}
    return hub.create_repo("org/m", files=files)


async def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, *args, **kwargs)


async def test_model_info_files_metadata_gives_sha_and_lfs_siblings(fake_hub: FakeHub) -> None:
    repo = _repo(fake_hub)
    blob = repo.file("model.safetensors")

    info = await _call(_api(fake_hub).model_info, "org/m", files_metadata=True)

    assert info.sha == repo.head()
    siblings = {s.rfilename: s for s in info.siblings}
    assert siblings["model.safetensors"].lfs.sha256 == blob.sha256
    assert siblings["model.safetensors"].blob_id == blob.oid
    assert siblings["config.json"].lfs is None
    assert info.last_modified is not None


async def test_model_info_revision_gives_that_commit(fake_hub: FakeHub) -> None:
    repo = _repo(fake_hub)
    first = repo.head()
    repo.commit({"config.json": b'{"v": 2}'})

    info = await _call(_api(fake_hub).model_info, "org/m", revision=first)

    assert info.sha == first


async def test_model_info_expand_gives_only_asked_properties(fake_hub: FakeHub) -> None:
    _repo(fake_hub)

    info = await _call(_api(fake_hub).model_info, "org/m", expand=["sha"])

    assert info.sha is not None
    assert info.siblings is None


async def test_dataset_info_parquet_dataset_gives_card_data(fake_hub: FakeHub) -> None:
    make_parquet_dataset(fake_hub)

    info = await _call(_api(fake_hub).dataset_info, "org/tiny-dataset")

    assert info.card_data["configs"][0]["config_name"] == "default"
    assert "data/train-00000-of-00001.parquet" in {s.rfilename for s in info.siblings}


async def test_list_repo_tree_recursive_follows_every_page(fake_hub: FakeHub) -> None:
    repo = make_wide_repo(fake_hub, repo_id="org/m")
    commit = repo.resolve("main")

    entries = await _call(lambda: list(_api(fake_hub).list_repo_tree("org/m", recursive=True)))

    assert {e.path for e in entries if isinstance(e, RepoFile)} == set(commit.files)
    folders = {e.path: e.tree_id for e in entries if isinstance(e, RepoFolder)}
    assert folders == {p: oid for p, oid in commit.directories.items() if p}


async def test_list_repo_tree_expand_gives_last_commit_of_each_path(fake_hub: FakeHub) -> None:
    repo = _repo(fake_hub)
    first = repo.head()
    second = repo.commit({"config.json": b'{"v": 2}'})

    entries = await _call(lambda: list(_api(fake_hub).list_repo_tree("org/m", expand=True)))

    initial = repo.history("main")[-1].sha
    last = {e.path: e.last_commit.oid for e in entries}
    assert last == {".gitattributes": initial, "config.json": second, "model.safetensors": first,
                    "sub": first}  # fmt: skip


async def test_get_paths_info_omits_missing_paths(fake_hub: FakeHub) -> None:
    repo = _repo(fake_hub)

    entries = await _call(_api(fake_hub).get_paths_info, "org/m", ["sub", "config.json", "nope"])

    assert [(type(e).__name__, e.path) for e in entries] == [
        ("RepoFolder", "sub"),
        ("RepoFile", "config.json"),
    ]
    assert entries[1].blob_id == repo.file("config.json").sha1


async def test_list_repo_refs_gives_branches_tags_prs_and_converts(fake_hub: FakeHub) -> None:
    repo = _repo(fake_hub)
    repo.tag("v1")
    repo.create_branch("dev")
    pr = repo.open_pr({"x.txt": b"x"})
    repo.set_convert({"default/train/0000.parquet": b"PAR1"})

    refs = await _call(_api(fake_hub).list_repo_refs, "org/m", include_pull_requests=True)

    assert sorted(b.name for b in refs.branches) == ["dev", "main"]
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", repo.head())]
    assert [p.ref for p in refs.pull_requests] == [pr]
    assert [c.ref for c in refs.converts] == ["refs/convert/parquet"]


async def test_list_repo_commits_paginated_history_newest_first(fake_hub: FakeHub) -> None:
    repo = _repo(fake_hub)
    shas = [repo.commit({"n.txt": str(n).encode()}, message=f"step {n}") for n in range(5)]

    commits = await _call(_api(fake_hub).list_repo_commits, "org/m", formatted=True)

    assert [c.commit_id for c in commits[:5]] == shas[::-1]
    assert len(commits) == 7
    assert commits[0].title == "step 4"
    assert commits[0].formatted_title == "<p>step 4</p>"
    assert fake_hub.count("/api/models/org/m/commits/main") == 3


async def test_list_repo_commits_after_force_push_lacks_old_history(fake_hub: FakeHub) -> None:
    repo = _repo(fake_hub)
    old = repo.head()
    repo.force_push({"config.json": b"{}"})

    commits = await _call(_api(fake_hub).list_repo_commits, "org/m")

    assert [c.commit_id for c in commits] == [repo.head()]
    assert old not in {c.commit_id for c in commits}


async def test_whoami_known_token_gives_user_and_orgs(fake_hub: FakeHub) -> None:
    token = fake_hub.add_user("alice", orgs=["acme"])

    me = await _call(HfApi(endpoint=fake_hub.url).whoami, token=token)

    assert me["name"] == "alice"
    assert [o["name"] for o in me["orgs"]] == ["acme"]


async def test_file_and_repo_exists_answer_truthfully(fake_hub: FakeHub) -> None:
    _repo(fake_hub)
    api = _api(fake_hub)

    answers = await asyncio.gather(
        _call(api.file_exists, "org/m", "config.json"),
        _call(api.file_exists, "org/m", "missing.json"),
        _call(api.repo_exists, "org/m"),
        _call(api.repo_exists, "org/nope"),
    )

    assert list(answers) == [True, False, True, False]


async def test_model_info_renamed_repo_follows_relative_redirect(fake_hub: FakeHub) -> None:
    repo = _repo(fake_hub)
    fake_hub.rename_repo("org/m", "org/renamed")

    info = await _call(_api(fake_hub).model_info, "org/m")

    assert (info.id, info.sha) == ("org/renamed", repo.head())
    assert fake_hub.requests[0].status == 307
