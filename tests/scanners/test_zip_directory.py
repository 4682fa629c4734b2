"""The lean central-directory parser lists exactly what `zipfile` lists, or leaves it to zipfile."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from scanners import zip_columns
from scanners.archives import ArchiveBudget, ArchiveError
from scanners.limits import ScanLimits
from scanners.zip_directory import ZipMember, _entries, _plain_directory, list_directory
from scanners.zip_reader import read_zip_members


def _listing(members: Sequence[Any]) -> list[tuple[object, ...]]:
    fields = ("filename", "header_offset", "compress_size", "file_size", "CRC", "flag_bits")
    return [tuple(getattr(m, f) for f in (*fields, "compress_type")) for m in members]


def _zip(entries: dict[str, bytes], *, comment: bytes = b"", extra: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.extra = extra
            archive.writestr(info, data)
        archive.comment = comment
    return buf.getvalue()


def _torch_zip() -> bytes:
    buf = io.BytesIO()
    torch.save({f"w{i}": torch.zeros(2) for i in range(50)}, buf)
    return buf.getvalue()


PLAIN = {
    "torch checkpoint (ZIP64 end records)": _torch_zip(),
    "deflated members": _zip({"a.txt": b"a" * 100, "dir/b.bin": bytes(range(256))}),
    "utf-8 names": _zip({"modèle/données.json": b"{}"}),
    "preceded by other bytes": b"GIF89a" + b"\x00" * 100 + _zip({"x": b"1"}),
}
LEFT_TO_ZIPFILE = {
    "archive comment": _zip({"a": b"1"}, comment=b"hello"),
    # an extended-timestamp extra field in the directory entry
    "extra fields": _zip({"a": b"1"}, extra=b"UT\x05\x00\x01\x00\x00\x00\x00"),
}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_zip_directory_plain_zip_lists_what_zipfile_lists(name: str) -> None:
    data = PLAIN[name]
    lean = _plain_directory(io.BytesIO(data))
    reference = zipfile.ZipFile(io.BytesIO(data))
    assert lean is not None
    assert (_listing(lean.members), lean.start_dir) == (
        _listing(reference.infolist()),
        reference.start_dir,
    )


@pytest.mark.parametrize("name", sorted(LEFT_TO_ZIPFILE))
def test_zip_directory_unusual_zip_is_listed_by_zipfile(name: str) -> None:
    data = LEFT_TO_ZIPFILE[name]
    assert _plain_directory(io.BytesIO(data)) is None
    listed = list_directory(io.BytesIO(data))
    assert _listing(listed.members) == _listing(zipfile.ZipFile(io.BytesIO(data)).infolist())


def test_zip_directory_name_with_nul_is_cut_as_zipfile_cuts_it() -> None:
    data = _zip({"evil.pkl": b"x"})
    doctored = data.replace(b"evil.pkl", b"evil\x00pkl")
    assert _plain_directory(io.BytesIO(doctored)) is None
    assert [m.filename for m in list_directory(io.BytesIO(doctored)).members] == ["evil"]


# -- the column fast paths (`scanners.zip_columns`): large zips, same answer as the loops --


def _big_zip(count: int = 600, name: str = "archive/data/{}", data: bytes = b"xy") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            archive.writestr(name.format(i), data)
    return buf.getvalue()


def _central(data: bytes) -> tuple[bytes, int]:
    """The central directory bytes of `data` and the shift `_plain_directory` computes (0)."""
    reference = zipfile.ZipFile(io.BytesIO(data))
    end = data.rfind(b"PK\x05\x06")
    return data[reference.start_dir : end], 0


@pytest.mark.parametrize(
    "data",
    [_big_zip(), _big_zip(800, "m/{}.bin", b"")],
    ids=["storages", "empty members"],
)
def test_zip_columns_list_what_the_member_loop_lists(data: bytes) -> None:
    directory, shift = _central(data)
    columns = zip_columns.central_entries(directory, shift, ZipMember)
    loop = _entries(directory, shift)
    assert columns is not None and loop is not None
    reference = zipfile.ZipFile(io.BytesIO(data)).infolist()
    assert _listing(columns) == _listing(loop) == _listing(reference)
    assert [m.raw_name for m in columns] == [m.raw_name for m in loop]


def test_zip_columns_torch_checkpoint_lists_what_zipfile_lists() -> None:
    buf = io.BytesIO()
    torch.save({f"w{i}": torch.zeros(1) for i in range(700)}, buf)
    data = buf.getvalue()
    listed = list_directory(io.BytesIO(data))
    assert len(listed.members) > zip_columns.MIN_MEMBERS
    assert _listing(listed.members) == _listing(zipfile.ZipFile(io.BytesIO(data)).infolist())


@pytest.mark.parametrize(
    "name",
    ["evil/PK\x01\x02/{}", "modèle/{}.bin", "n{}_x"],
    ids=["directory signature inside a name", "non-ASCII names", "NUL in a name"],
)
def test_zip_columns_leave_unusual_directories_to_the_loop(name: str) -> None:
    data = _big_zip(600, name).replace(b"n5_x", b"n5\x00x")  # zipfile cannot write a NUL
    directory, shift = _central(data)
    assert zip_columns.central_entries(directory, shift, ZipMember) is None
    listed = list_directory(io.BytesIO(data))
    assert _listing(listed.members) == _listing(zipfile.ZipFile(io.BytesIO(data)).infolist())


def test_zip_columns_local_headers_give_the_loops_offsets(tmp_path: Path) -> None:
    path = tmp_path / "big.zip"
    path.write_bytes(_big_zip(700))
    data = path.read_bytes()
    with path.open("rb") as fh:
        fast_members = list_directory(fh).members
        assert zip_columns.read_local_headers(fh, len(data), fast_members)
    loop_members = list_directory(io.BytesIO(data)).members  # a spool: never mapped
    assert not zip_columns.read_local_headers(io.BytesIO(data), len(data), loop_members)
    listed, findings = read_zip_members(
        io.BytesIO(data), len(data), ArchiveBudget(ScanLimits().archive)
    )
    assert findings == []
    assert [(m.data_offset, m.local_name) for m in fast_members] == [
        (m.data_offset, m.local_name) for m in listed
    ]
    reference = zipfile.ZipFile(io.BytesIO(data))
    assert [reference.read(i) for i in reference.infolist()[:3]] == [
        data[m.data_offset : m.data_offset + m.compress_size] for m in fast_members[:3]
    ]


def _doctor_local(data: bytes, index: int, change: Callable[[bytearray, int], None]) -> bytes:
    """`data` with the local header of member `index` changed by `change(buf, header_at)`."""
    info = zipfile.ZipFile(io.BytesIO(data)).infolist()[index]
    buf = bytearray(data)
    change(buf, info.header_offset)
    return bytes(buf)


def _rename_local(buf: bytearray, at: int) -> None:
    buf[at + 30 : at + 34] = b"ZZZZ"  # "archive/data/5" -> "ZZZZive/data/5"


def _flag_utf8(buf: bytearray, at: int) -> None:
    buf[at + 7] |= 0x08  # general purpose flags, high byte: bit 11 (UTF-8 names)


def _break_signature(buf: bytearray, at: int) -> None:
    buf[at : at + 4] = b"PK\x07\x08"


def _long_extra(buf: bytearray, at: int) -> None:
    buf[at + 28 : at + 30] = (0xFFFF).to_bytes(2, "little")  # data would start past the end


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_rename_local, "ZIP_NAME_MISMATCH"),
        (_flag_utf8, None),  # same bytes, a flag the loop also accepts for ASCII names
        (_break_signature, "ZIP_MALFORMED"),
        (_long_extra, "ZIP_MALFORMED"),
    ],
    ids=["local name differs", "local UTF-8 flag", "no local signature", "data past the end"],
)
def test_zip_columns_doctored_local_header_goes_through_the_loop(
    tmp_path: Path, change: Callable[[bytearray, int], None], expected: str | None
) -> None:
    path = tmp_path / "doctored.zip"
    path.write_bytes(_doctor_local(_big_zip(700), 699, change))
    size = path.stat().st_size
    with path.open("rb") as fh:
        assert not zip_columns.read_local_headers(fh, size, list_directory(fh).members)
        try:
            _, findings = read_zip_members(fh, size, ArchiveBudget(ScanLimits().archive))
        except ArchiveError as exc:
            findings = [exc.finding]
    assert [f.code for f in findings] == ([expected] if expected else [])
