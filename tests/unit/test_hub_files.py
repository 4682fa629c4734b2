"""The resolve route's pure helpers: Range parsing, If-None-Match, the file headers."""

from __future__ import annotations

import pytest

from proxy.catalog import Resolved
from proxy.delivery import FileTarget
from proxy.errors import InvalidInput
from proxy.hub.files import MAX_ADVERTISED_SIZE, _etag_matches, _parse_range, file_headers
from proxy.metadata import EntryType, LfsInfo, TreeEntry
from proxy.repos import RepoRef, RepoType
from proxy.store.repository import RepoRecord

SIZE = 100
COMMIT = "c" * 40
SHA1 = "1" * 40
SHA256 = "2" * 64


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=0-0", (0, 1)),
        ("bytes=99-99", (99, 100)),
        ("bytes=10-", (10, 100)),
        ("bytes=0-", (0, 100)),
        ("bytes=90-5000", (90, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=-100", (0, 100)),
        ("bytes=-5000", (0, 100)),
        ("bytes=0-99999999999999999999999", (0, 100)),
        (" bytes = 5-6 ", (5, 7)),
    ],
)
def test_parse_range_satisfiable_forms_give_half_open_span(
    header: str, span: tuple[int, int]
) -> None:
    assert _parse_range(header, SIZE) == span


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", SIZE),
        ("bytes=100-200", SIZE),
        ("bytes=5000-", SIZE),
        ("bytes=-0", SIZE),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
    ],
)
def test_parse_range_unsatisfiable_range_is_none_for_416(header: str, size: int) -> None:
    assert _parse_range(header, size) is None


@pytest.mark.parametrize(
    "header",
    [
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "items=0-9",
        "Bytes=0-9",
        "bytes=0-1,5-6",
        "bytes=a-b",
        "bytes=0x10-",
        "bytes=1-2-3",
        "bytes=-5-",
        "bytes=1.5-2",
        "bytes=" + "9" * 5000 + "-",
    ],
)
def test_parse_range_malformed_header_is_invalid_input(header: str) -> None:
    with pytest.raises(InvalidInput, match="Range header"):
        _parse_range(header, SIZE)


@pytest.mark.parametrize("header", ["bytes=+1-2", "bytes=1_0-20"])
def test_parse_range_non_digit_positions_are_invalid_input(header: str) -> None:
    with pytest.raises(InvalidInput, match="Range header"):
        _parse_range(header, SIZE)


def test_parse_range_error_message_escapes_the_header() -> None:
    with pytest.raises(InvalidInput) as caught:
        _parse_range("bytes=\x1b[2J", SIZE)
    assert "\x1b" not in caught.value.message


@pytest.mark.parametrize(
    "if_none_match",
    ['"abc"', 'W/"abc"', "abc", "*", '"x", "abc"', '"x",W/"abc"', ' "abc" '],
)
def test_etag_matches_listed_etag_matches(if_none_match: str) -> None:
    assert _etag_matches(if_none_match, "abc")


@pytest.mark.parametrize("if_none_match", ["", '"x"', '"abcd"', '"ab"', '"x", "y"', 'W/"ABC"'])
def test_etag_matches_other_etags_do_not_match(if_none_match: str) -> None:
    assert not _etag_matches(if_none_match, "abc")


def _target(path: str, size: int = 10, *, lfs: bool = True) -> FileTarget:
    record = RepoRecord(1, RepoRef(RepoType.MODEL, "org/m"), private=False, gated="false")
    lfs_info = LfsInfo(SHA256, size, 130) if lfs else None
    return FileTarget(
        Resolved(record, COMMIT), TreeEntry(EntryType.FILE, path, SHA1, size, lfs_info)
    )


def test_file_headers_lfs_file_carries_the_hubs_metadata() -> None:
    headers = file_headers(_target("sub/model.safetensors"))
    assert headers["X-Repo-Commit"] == COMMIT
    assert headers["ETag"] == headers["X-Linked-Etag"] == f'"{SHA256}"'
    assert headers["X-Linked-Size"] == "10"


def test_file_headers_regular_file_etag_is_the_git_oid() -> None:
    assert file_headers(_target("config.json", lfs=False))["ETag"] == f'"{SHA1}"'


def test_file_headers_disposition_quotes_a_hostile_name() -> None:
    disposition = file_headers(_target('dir/ü "x";.bin'))["Content-Disposition"]
    assert disposition.isascii()
    assert "filename*=UTF-8''%C3%BC%20%22x%22%3B.bin" in disposition
    assert 'filename="? _x_;.bin"' in disposition


def test_file_headers_size_above_client_cap_is_not_advertised() -> None:
    assert "X-Linked-Size" not in file_headers(_target("big.bin", MAX_ADVERTISED_SIZE + 1))


def test_file_headers_carry_no_xet_header() -> None:
    assert not [h for h in file_headers(_target("m.bin")) if h.lower().startswith("x-xet")]
