"""The lean central-directory parser lists exactly what `zipfile` lists, or leaves it to zipfile."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from scanners.zip_directory import _plain_directory, list_directory


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
