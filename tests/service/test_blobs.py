"""`BlobStore` on a real directory: temp clean-up, atomic moves, hash-only paths."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from proxy.store.blobs import BlobStore

DATA = b"verified bytes"
SHA256 = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    blob_store = BlobStore(tmp_path / "data")
    blob_store.prepare()
    return blob_store


def _temp_with(store: BlobStore, data: bytes = DATA) -> Path:
    temp = store.new_temp()
    temp.write_bytes(data)
    return temp


def test_blob_store_prepare_creates_the_three_directories(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "fresh")
    assert store.prepare() == 0
    assert all(d.is_dir() for d in (store.tmp_dir, store.quarantine_dir, store.blobs_dir))


def test_blob_store_prepare_removes_half_written_temp_files(store: BlobStore) -> None:
    for _ in range(3):
        _temp_with(store)
    assert BlobStore(store.root).prepare() == 3
    assert list(store.tmp_dir.iterdir()) == []


def test_blob_store_prepare_removes_a_symlink_not_its_target(
    store: BlobStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep me")
    (store.tmp_dir / "link.part").symlink_to(outside)
    assert store.prepare() == 1
    assert outside.read_bytes() == b"keep me"


def test_blob_store_prepare_keeps_released_and_quarantined_blobs(store: BlobStore) -> None:
    store.release(_temp_with(store), SHA256)
    other = b"held"
    store.quarantine(_temp_with(store, other), hashlib.sha256(other).hexdigest())
    store.prepare()
    assert store.has_released(SHA256)
    assert store.quarantined_path(hashlib.sha256(other).hexdigest()).read_bytes() == other


def test_blob_store_new_temp_is_empty_private_and_unique(store: BlobStore) -> None:
    first, second = store.new_temp(), store.new_temp()
    assert first != second
    assert first.parent == store.tmp_dir
    assert first.stat().st_size == 0
    assert first.stat().st_mode & 0o077 == 0


def test_blob_store_release_moves_the_temp_into_the_content_store(store: BlobStore) -> None:
    temp = _temp_with(store)
    released = store.release(temp, SHA256)
    assert not temp.exists()
    assert released == store.blobs_dir / SHA256[:2] / SHA256
    assert released.read_bytes() == DATA
    assert store.has_released(SHA256)


def test_blob_store_release_keeps_the_inode(store: BlobStore) -> None:
    temp = _temp_with(store)
    inode = temp.stat().st_ino
    assert store.release(temp, SHA256).stat().st_ino == inode  # a rename, never a copy


def test_blob_store_quarantine_is_never_a_released_blob(store: BlobStore) -> None:
    held = store.quarantine(_temp_with(store), SHA256)
    assert held.read_bytes() == DATA
    assert not store.has_released(SHA256)


def test_blob_store_release_from_quarantine_moves_it_to_the_store(store: BlobStore) -> None:
    store.quarantine(_temp_with(store), SHA256)
    store.release_from_quarantine(SHA256)
    assert store.has_released(SHA256)
    assert not store.quarantined_path(SHA256).exists()


def test_blob_store_release_over_an_existing_blob_replaces_it(store: BlobStore) -> None:
    store.release(_temp_with(store), SHA256)
    store.release(_temp_with(store), SHA256)
    assert store.released_path(SHA256).read_bytes() == DATA
    assert list(store.tmp_dir.iterdir()) == []


def test_blob_store_discard_removes_the_temp_and_tolerates_absence(store: BlobStore) -> None:
    temp = _temp_with(store)
    store.discard(temp)
    store.discard(temp)
    assert not temp.exists()


@pytest.mark.parametrize(
    "name",
    ["", "../" + "a" * 61, "A" * 64, "a" * 63, "a" * 65, "g" * 64, "a" * 63 + "/",
     "a" * 64 + "\n", "/" + "a" * 63, "..", " " + "a" * 63],
)  # fmt: skip
def test_blob_store_non_sha256_names_are_refused(store: BlobStore, name: str) -> None:
    with pytest.raises(ValueError, match="not a sha256"):
        store.released_path(name)
    with pytest.raises(ValueError, match="not a sha256"):
        store.quarantined_path(name)


def test_blob_store_release_with_a_bad_name_leaves_the_temp_alone(store: BlobStore) -> None:
    temp = _temp_with(store)
    with pytest.raises(ValueError, match="not a sha256"):
        store.release(temp, "../../etc/passwd")
    assert temp.read_bytes() == DATA


def test_blob_store_paths_stay_under_the_root(store: BlobStore) -> None:
    for path in (store.released_path(SHA256), store.quarantined_path(SHA256), store.new_temp()):
        assert path.resolve().is_relative_to(store.root)


def test_blob_store_root_is_resolved(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert BlobStore(tmp_path / "link").root == (tmp_path / "real").resolve()
