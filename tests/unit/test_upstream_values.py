"""Upstream's pure helpers: opaque cursors, ETags, Retry-After, tree entries, file metadata."""

from __future__ import annotations

import base64

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import InvalidInput, UpstreamRejected
from proxy.metadata import EntryType, LfsInfo
from proxy.upstream import (
    MAX_CURSOR_CHARS,
    _clean_etag,
    _decode_cursor,
    _encode_cursor,
    _file_metadata,
    _retry_after,
    _tree_entry,
)
from scanners.report import JsonValue

SHA1 = "1" * 40
SHA256 = "2" * 64
COMMIT = "c" * 40


@pytest.mark.parametrize("query", ["p=1", "p=2&limit=3", "cursor=abc%3D%3D&expand=true", ""])
def test_decode_cursor_round_trip_keeps_the_pagination_query(query: str) -> None:
    assert _decode_cursor(_encode_cursor(query)) == query


def test_encode_cursor_is_url_safe_without_padding() -> None:
    cursor = _encode_cursor("p=1&limit=50&expand[]=x??")
    assert "=" not in cursor
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_decode_cursor_drops_keys_that_are_not_pagination() -> None:
    cursor = _encode_cursor("p=1&path=../../x&token=hf_x&limit=2&recursive=true")
    assert _decode_cursor(cursor) == "p=1&limit=2"


def test_decode_cursor_cannot_smuggle_a_second_query_through_a_value() -> None:
    cursor = _encode_cursor("p=1%26path%3Dx")
    assert _decode_cursor(cursor) == "p=1%26path%3Dx"


def test_decode_cursor_too_long_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        _decode_cursor("A" * (MAX_CURSOR_CHARS + 1))


@pytest.mark.parametrize(
    "cursor",
    ["A", base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode()],
)
def test_decode_cursor_undecodable_is_invalid_input(cursor: str) -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        _decode_cursor(cursor)


@pytest.mark.parametrize(
    ("value", "etag"),
    [
        (f'"{SHA1}"', SHA1),
        (f'W/"{SHA1}"', SHA1),
        (f"  {SHA256} ", SHA256),
        ("", ""),
        (None, ""),
    ],
)
def test_clean_etag_removes_quotes_and_weakness(value: str | None, etag: str) -> None:
    assert _clean_etag(value) == etag


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7), ("0", 1), ("999999", 3600), ("", 5), ("soon", 5), ("-3", 5),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 5)],
)  # fmt: skip
def test_retry_after_is_bounded_with_a_default(value: str, seconds: int) -> None:
    assert _retry_after({"Retry-After": value}) == seconds


def test_tree_entry_lfs_item_takes_the_lfs_size() -> None:
    item: JsonValue = {
        "type": "file",
        "path": "m.bin",
        "oid": SHA1,
        "size": 134,
        "lfs": {"oid": SHA256, "size": 5000, "pointerSize": 134},
    }
    entry = _tree_entry(item)
    assert (entry.size, entry.lfs, entry.etag) == (5000, LfsInfo(SHA256, 5000, 134), SHA256)


def test_tree_entry_folder_item_is_a_directory() -> None:
    entry = _tree_entry({"type": "directory", "path": "d", "oid": SHA1, "size": 0})
    assert entry.entry_type is EntryType.DIRECTORY


@pytest.mark.parametrize(
    "item",
    [
        "not an object",
        {"type": "file", "oid": SHA1, "size": 1},
        {"type": "file", "path": "", "oid": SHA1, "size": 1},
        {"type": "file", "path": "x" * 5000, "oid": SHA1, "size": 1},
        {"type": "file", "path": "a", "oid": "zz", "size": 1},
        {"type": "file", "path": "a", "oid": "AB" * 20, "size": 1},
        {"type": "file", "path": "a", "oid": SHA1, "size": -1},
        {"type": "file", "path": "a", "oid": SHA1, "size": "1"},
        {"type": "file", "path": "a", "oid": SHA1, "size": 1, "lfs": {"oid": "x", "size": 1}},
        {"type": "file", "path": "a", "oid": SHA1, "size": 1, "lfs": {"oid": SHA256, "size": "1"}},
    ],
)
def test_tree_entry_hostile_item_is_rejected(item: JsonValue) -> None:
    with pytest.raises(UpstreamRejected):
        _tree_entry(item)


def test_tree_entry_negative_lfs_size_is_rejected() -> None:
    with pytest.raises(UpstreamRejected):
        _tree_entry(
            {
                "type": "file",
                "path": "a",
                "oid": SHA1,
                "size": 1,
                "lfs": {"oid": SHA256, "size": -5},
            }
        )


def _headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in values.items()}))


def test_file_metadata_lfs_redirect_uses_the_linked_etag_not_the_cdn_etag() -> None:
    headers = _headers(
        X_Repo_Commit=COMMIT, X_Linked_Etag=f'"{SHA256}"', X_Linked_Size="10", ETag='"xet"'
    )
    meta = _file_metadata(headers, 302, "m.bin")
    assert (meta.commit, meta.etag, meta.size, meta.is_lfs) == (COMMIT, SHA256, 10, True)


def test_file_metadata_regular_file_uses_etag_and_content_length() -> None:
    headers = _headers(X_Repo_Commit=COMMIT, ETag=f'"{SHA1}"', Content_Length="42")
    meta = _file_metadata(headers, 200, "config.json")
    assert (meta.etag, meta.size, meta.is_lfs) == (SHA1, 42, False)


def test_file_metadata_redirect_content_length_is_not_the_file_size() -> None:
    headers = _headers(X_Repo_Commit=COMMIT, X_Linked_Etag=f'"{SHA1}"', Content_Length="50")
    with pytest.raises(UpstreamRejected, match="no size"):
        _file_metadata(headers, 307, "config.json")


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({"ETag": f'"{SHA1}"', "Content-Length": "1"}, "X-Repo-Commit"),
        ({"X-Repo-Commit": "main", "ETag": f'"{SHA1}"', "Content-Length": "1"}, "X-Repo-Commit"),
        ({"X-Repo-Commit": COMMIT, "Content-Length": "1"}, "ETag"),
        ({"X-Repo-Commit": COMMIT, "ETag": '"abc"', "Content-Length": "1"}, "ETag"),
        ({"X-Repo-Commit": COMMIT, "ETag": f'"{SHA1}"'}, "size"),
        ({"X-Repo-Commit": COMMIT, "ETag": f'"{SHA1}"', "Content-Length": "-1"}, "size"),
    ],
)
def test_file_metadata_missing_or_bad_header_is_rejected(
    headers: dict[str, str], match: str
) -> None:
    with pytest.raises(UpstreamRejected, match=match):
        _file_metadata(CIMultiDictProxy(CIMultiDict(headers)), 200, "x")
