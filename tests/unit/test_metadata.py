"""Typed Hub metadata: Xet keys never survive, tree entries render as the Hub renders them."""

from __future__ import annotations

from proxy.metadata import XET_KEYS, EntryType, LfsInfo, TreeEntry, strip_xet
from scanners.report import JsonValue

SHA1 = "1" * 40
SHA256 = "2" * 64


def _nested(depth: int) -> JsonValue:
    value: JsonValue = {"xetHash": "x", "keep": 1}
    for level in range(depth):
        value = {"level": level, "items": [value, {"xet_hash": "y"}], "xetEnabled": True}
    return value


def _keys(value: JsonValue) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def test_strip_xet_top_level_keys_are_removed() -> None:
    assert strip_xet({"xetEnabled": True, "id": "org/m"}) == {"id": "org/m"}


def test_strip_xet_keys_deep_in_lists_and_objects_are_removed() -> None:
    cleaned = strip_xet(_nested(60))
    assert _keys(cleaned) & XET_KEYS == set()
    assert "keep" in _keys(cleaned)


def test_strip_xet_leaves_the_input_unchanged() -> None:
    original: JsonValue = {"siblings": [{"rfilename": "a", "xetHash": "x"}]}
    strip_xet(original)
    assert original == {"siblings": [{"rfilename": "a", "xetHash": "x"}]}


def test_strip_xet_values_named_like_xet_keys_are_kept() -> None:
    assert strip_xet(["xetHash", {"name": "xetEnabled"}]) == ["xetHash", {"name": "xetEnabled"}]


def test_strip_xet_scalars_pass_through() -> None:
    assert [strip_xet(v) for v in ("s", 1, 1.5, True, None)] == ["s", 1, 1.5, True, None]


def test_tree_entry_etag_of_lfs_file_is_its_sha256() -> None:
    entry = TreeEntry(EntryType.FILE, "m.bin", SHA1, 10, LfsInfo(SHA256, 10, 130))
    assert entry.etag == SHA256


def test_tree_entry_etag_of_regular_file_is_its_git_oid() -> None:
    assert TreeEntry(EntryType.FILE, "config.json", SHA1, 2).etag == SHA1


def test_tree_entry_to_json_of_lfs_file_has_the_hubs_lfs_block() -> None:
    entry = TreeEntry(EntryType.FILE, "d/m.bin", SHA1, 10, LfsInfo(SHA256, 10, 130))
    assert entry.to_json() == {
        "type": "file",
        "oid": SHA1,
        "size": 10,
        "path": "d/m.bin",
        "lfs": {"oid": SHA256, "size": 10, "pointerSize": 130},
    }


def test_tree_entry_to_json_of_folder_has_no_lfs_block() -> None:
    entry = TreeEntry(EntryType.DIRECTORY, "d", SHA1, 0)
    assert entry.to_json() == {"type": "directory", "oid": SHA1, "size": 0, "path": "d"}
