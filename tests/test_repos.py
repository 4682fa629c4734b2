"""Value objects refuse hostile repo ids, revisions and paths with a message naming the part."""

from __future__ import annotations

import pytest

from proxy.errors import InvalidInput
from proxy.repos import RepoPath, RepoRef, RepoType, Revision


@pytest.mark.parametrize("repo_id", ["org/model", "gpt2", "a.b/c_d-e", "Org123/x"])
def test_repo_ref_valid_ids_parse(repo_id: str) -> None:
    assert RepoRef.parse(RepoType.MODEL, repo_id).repo_id == repo_id


@pytest.mark.parametrize(
    "repo_id",
    [
        "",
        "a/b/c",
        "../etc",
        "org/..",
        "org/a..b",
        "org/a--b",
        "org/-a",
        "org/a.",
        "org/x.git",
        "org/a b",
        "org/a\x00",
        "org\\a",
        "/abs",
        "org/" + "x" * 97,
        "ö/x",
    ],
)
def test_repo_ref_hostile_ids_are_refused(repo_id: str) -> None:
    with pytest.raises(InvalidInput, match="repo id"):
        RepoRef.parse(RepoType.MODEL, repo_id)


def test_repo_ref_one_segment_dataset_is_refused() -> None:
    with pytest.raises(InvalidInput, match="namespace/name"):
        RepoRef.parse(RepoType.DATASET, "squad")


@pytest.mark.parametrize(
    "name",
    [
        "main",
        "v1.0",
        "refs/pr/12",
        "refs/convert/parquet",
        "feature/x",
        "a" * 40,
        "0123456789abcdef0123456789abcdef01234567",
    ],
)
def test_revision_valid_names_parse(name: str) -> None:
    assert Revision.parse(name).name == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        "main/../x",
        "a..b",
        "/main",
        "main/",
        "a//b",
        ".hidden",
        "x.lock",
        "a@{1}",
        "a b",
        "a\x00",
        "a\\b",
        "refs/heads/main",
        "refs/pr/x",
        "m" * 257,
        "a:b",
        "a~1",
        "a^",
    ],
)
def test_revision_hostile_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="revision"):
        Revision.parse(name)


def test_revision_is_commit_only_for_40_lowercase_hex() -> None:
    assert Revision.parse("0123456789abcdef0123456789abcdef01234567").is_commit
    assert not Revision.parse("0123456789ABCDEF0123456789ABCDEF01234567").is_commit
    assert not Revision.parse("main").is_commit


@pytest.mark.parametrize(
    "path",
    ["config.json", "a/b/c.safetensors", "dir/file with space.txt", "é.txt", "x..y"],
)
def test_repo_path_valid_paths_parse(path: str) -> None:
    assert RepoPath.parse(path).value == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "../x",
        "a/../b",
        "a/./b",
        "/etc/passwd",
        "a//b",
        "a/",
        "C:/x",
        "c:x",
        "a\\b",
        "a\x00b",
        "a\nb",
        "a\x7fb",
        "x" * 1025,
        "/".join(["a"] * 65),
    ],
)
def test_repo_path_hostile_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidInput, match="path"):
        RepoPath.parse(path)


def test_invalid_input_message_escapes_and_cuts_the_value() -> None:
    with pytest.raises(InvalidInput) as caught:
        RepoPath.parse("a\nb" + "x" * 500)
    assert "\n" not in caught.value.message
    assert "\\n" in caught.value.message
    assert len(caught.value.message) < 300
