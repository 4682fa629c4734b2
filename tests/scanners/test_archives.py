"""Containers: zip header games, tar, compressed streams, bombs and nesting."""

from __future__ import annotations

import gzip
import pickle
import zipfile
from pathlib import Path

import pytest

from scanners import Outcome, scan_file
from scanners.archives import unsafe_member_name
from tests.scanners.corpus import EVIL, container_attacks, zip_bytes
from tests.scanners.corpus_formats import decoy_local_entry, with_comment


def _scan(tmp_path: Path, name: str, data: bytes) -> set[str]:
    path = tmp_path / name
    path.write_bytes(data)
    return {f.code for f in scan_file(path).findings}


@pytest.mark.parametrize(
    ("sample", "code"),
    [
        ("torch_zip_flag_0x1.pt", "ZIP_UNUSUAL_FLAGS"),
        ("torch_zip_crc_broken.pt", "ZIP_CRC_MISMATCH"),
        ("torch_zip_local_name_differs.pt", "ZIP_NAME_MISMATCH"),
        ("torch_zip_duplicate_names.pt", "ZIP_DUPLICATE_NAME"),
        ("torch_zip_traversal.pt", "ARCHIVE_TRAVERSAL_NAME"),
        ("torch_zip_data_after_end.pt", "ZIP_DATA_AFTER_END"),
        ("zip_bomb.zip", "ARCHIVE_RATIO_RESOURCE"),
        ("nested_too_deep.zip", "ARCHIVE_DEPTH_RESOURCE"),
        ("traversal.tar", "ARCHIVE_TRAVERSAL_NAME"),
        ("pickle_zip_polyglot.bin", "POLYGLOT_ZIP"),
    ],
)
def test_archives_structural_trick_is_a_finding(tmp_path: Path, sample: str, code: str) -> None:
    assert code in _scan(tmp_path, sample, container_attacks()[sample][0])


def test_archives_payload_scanned_despite_zip_tricks(tmp_path: Path) -> None:
    assert "PICKLE_GLOBAL_DENIED" in _scan(
        tmp_path, "x.pt", container_attacks()["torch_zip_flag_0x40.pt"][0]
    )


def test_archives_gzip_of_payload_is_malicious(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(gzip.compress(EVIL))
    assert scan_file(path).outcome == Outcome.MALICIOUS


def test_archives_gzip_bomb_is_refused(tmp_path: Path) -> None:
    assert "ARCHIVE_RATIO_RESOURCE" in _scan(
        tmp_path, "b.gz", gzip.compress(b"\0" * (40 * 1024 * 1024))
    )


def test_archives_member_with_text_name_is_scanned_by_content(tmp_path: Path) -> None:
    assert "PICKLE_GLOBAL_DENIED" in _scan(tmp_path, "a.zip", zip_bytes([("notes.txt", EVIL)]))


def test_archives_benign_zip_of_text_is_clean(tmp_path: Path) -> None:
    data = zip_bytes([("a.txt", b"hello"), ("b.json", b"{}")], compression=zipfile.ZIP_DEFLATED)
    assert _scan(tmp_path, "a.zip", data) == set()


def test_archives_truncated_zip_is_error(tmp_path: Path) -> None:
    data = zip_bytes([("data.pkl", pickle.dumps(1))])
    path = tmp_path / "t.zip"
    path.write_bytes(data[: len(data) // 2])
    assert scan_file(path).outcome in (Outcome.ERROR, Outcome.REVIEW)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "c:evil", "a\\b", "a\x00b"])
def test_archives_unsafe_member_name_is_detected(name: str) -> None:
    assert unsafe_member_name(name) is not None


def test_archives_pickle_in_the_zip_comment_is_found(tmp_path: Path) -> None:
    data = with_comment(zip_bytes([("notes.txt", b"hello")]), EVIL)
    assert {"ZIP_HIDDEN_PICKLE", "PICKLE_GLOBAL_DENIED"} <= _scan(tmp_path, "a.zip", data)


def test_archives_text_zip_comment_is_clean(tmp_path: Path) -> None:
    data = with_comment(zip_bytes([("notes.txt", b"hello")]), b"made by numpy 2.1 (os.system)")
    assert _scan(tmp_path, "a.zip", data) == set()


def test_archives_pickle_after_the_end_record_is_found(tmp_path: Path) -> None:
    data = zip_bytes([("notes.txt", b"hello")]) + EVIL
    assert "ZIP_HIDDEN_PICKLE" in _scan(tmp_path, "a.zip", data)


def test_archives_unlisted_local_entry_before_the_first_member_is_scanned(tmp_path: Path) -> None:
    data = decoy_local_entry(EVIL) + zip_bytes([("notes.txt", b"hello")])
    found = _scan(tmp_path, "a.zip", data)
    assert {"ZIP_DATA_BEFORE_START", "ZIP_HIDDEN_PICKLE", "PICKLE_GLOBAL_DENIED"} <= found
