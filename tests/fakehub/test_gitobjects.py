"""The fake's oids are git's own: checked against the git binary."""

from __future__ import annotations

import hashlib
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from tests.fakehub.gitobjects import LfsRule, commit_oid, git_blob_sha1, make_blob, tree_oids

FILES = {"a.txt": b"hello\n", "d/b.txt": b"x", "d/e/c": b"yy", "d.txt": b"z", "d-e": b"q"}


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(  # noqa: S603 - fixed git arguments in a tmp dir
        ["git", *args],  # noqa: S607 - git from PATH is what we compare against
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return completed.stdout.strip()


def _write_repo(root: Path) -> None:
    _git(root, "init", "-q", ".")
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    _git(root, "add", ".")


def test_git_blob_sha1_known_content_matches_git() -> None:
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_tree_oids_nested_files_match_git_write_tree(tmp_path: Path) -> None:
    _write_repo(tmp_path)
    blobs = {p: make_blob(p, d, lfs=False, rule=LfsRule()) for p, d in FILES.items()}

    oids = tree_oids(blobs)

    assert oids[""] == _git(tmp_path, "write-tree")
    assert oids["d/e"] == _git(tmp_path, "rev-parse", f"{oids['']}:d/e")


def test_commit_oid_fields_match_git_commit_tree(tmp_path: Path) -> None:
    _write_repo(tmp_path)
    tree = _git(tmp_path, "write-tree")
    stamp = "1704067200 +0000"
    env = {
        "GIT_AUTHOR_NAME": "fake-user",
        "GIT_AUTHOR_EMAIL": "fake-user@users.noreply.huggingface.co",
        "GIT_AUTHOR_DATE": stamp,
        "GIT_COMMITTER_NAME": "fake-user",
        "GIT_COMMITTER_EMAIL": "fake-user@users.noreply.huggingface.co",
        "GIT_COMMITTER_DATE": stamp,
    }
    expected = _git(tmp_path, "commit-tree", tree, "-m", "Upload files", env=env)

    date = datetime(2024, 1, 1, tzinfo=UTC)
    assert commit_oid(tree, (), "fake-user", date, "Upload files") == expected


def test_make_blob_lfs_file_advertises_sha256_and_pointer_oid() -> None:
    data = b"\x00" * 2000
    blob = make_blob("model.safetensors", data, lfs=None, rule=LfsRule())

    assert blob.is_lfs
    assert blob.etag == hashlib.sha256(data).hexdigest()
    assert blob.pointer.startswith(b"version https://git-lfs.github.com/spec/v1\noid sha256:")
    assert blob.oid == git_blob_sha1(blob.pointer)
    assert blob.xet_hash != blob.sha256


def test_make_blob_on_disk_content_hashes_like_bytes(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    path = tmp_path / "big.bin"
    path.write_bytes(data)

    on_disk = make_blob("big.bin", path, lfs=None, rule=LfsRule())
    in_memory = make_blob("big.bin", data, lfs=None, rule=LfsRule())

    assert (on_disk.sha1, on_disk.sha256, on_disk.size) == (
        in_memory.sha1,
        in_memory.sha256,
        in_memory.size,
    )
    assert on_disk.read_range(10, 20) == data[10:20]


def test_lfs_rule_small_text_file_is_regular() -> None:
    assert not LfsRule().is_lfs("config.json", 100)
    assert LfsRule().is_lfs("config.json", 5000)
    assert LfsRule(threshold_bytes=10**9).is_lfs("weights.gguf", 10)
