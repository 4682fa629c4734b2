"""The strict tar stream: what it writes, what it reads, what it refuses."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from proxy.airgap import tarstream
from proxy.airgap.errors import BundleError

NAME = "blobs/sha256/" + "a" * 64


def _reader(data: bytes) -> tarstream.TarReader:
    return tarstream.TarReader(io.BytesIO(data))


def _archive(*members: tuple[str, bytes]) -> bytes:
    out = b""
    for name, data in members:
        out += tarstream.member_header(name, len(data)) + data + tarstream.padding(len(data))
    return out + tarstream.end_of_archive(len(out))


def test_written_stream_is_read_back_member_by_member() -> None:
    reader = _reader(_archive(("oci-layout", b"{}"), (NAME, b"x" * 1000)))
    names = []
    while (member := reader.next()) is not None:
        names.append((member.name, member.size, reader.read(10_000)))
    assert names == [("oci-layout", 2, b"{}"), (NAME, 1000, b"x" * 1000)]


def test_written_stream_is_a_tar_the_standard_library_reads() -> None:
    data = _archive(("oci-layout", b"{}"), (NAME, b"hello"))
    assert len(data) % tarstream.RECORD == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert [(m.name, m.size, m.mode, m.mtime) for m in tar.getmembers()] == [
            ("oci-layout", 2, 0o644, 0),
            (NAME, 5, 0o644, 0),
        ]


def test_unread_content_is_skipped_by_next() -> None:
    reader = _reader(_archive((NAME, b"x" * 5000), ("index.json", b"[]")))
    assert reader.next() is not None
    member = reader.next()
    assert member is not None and (member.name, reader.read(10)) == ("index.json", b"[]")


def test_size_of_8_gib_and_more_travels_in_a_pax_record() -> None:
    size = 10 * 1024**3
    header = tarstream.member_header(NAME, size)
    assert len(header) > tarstream.BLOCK  # a pax header precedes the ustar one
    member = _reader(header).next()
    assert member is not None and (member.name, member.size) == (NAME, size)


def test_gnu_base256_size_is_read() -> None:
    info = tarfile.TarInfo(NAME)
    info.size = 9 * 1024**3
    member = _reader(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")).next()
    assert member is not None and member.size == 9 * 1024**3


def test_member_cut_short_is_truncated() -> None:
    data = _archive((NAME, b"x" * 2000))
    reader = _reader(data[:1000])
    assert reader.next() is not None
    with pytest.raises(BundleError, match=r"ends in the middle of a member .* truncated"):
        while reader.read(4096):
            pass


def test_half_a_header_is_truncated() -> None:
    with pytest.raises(BundleError, match="middle of a tar header"):
        _reader(_archive((NAME, b"x"))[:300]).next()


def test_single_end_block_is_incomplete() -> None:
    data = _archive(("oci-layout", b"{}"))
    reader = _reader(data[: 1024 + 512])
    reader.next()
    with pytest.raises(BundleError, match=r"end-of-archive .* incomplete"):
        reader.next()


def test_nonzero_trailing_data_is_refused() -> None:
    reader = _reader(_archive(("oci-layout", b"{}")) + b"\x01")
    reader.next()
    with pytest.raises(BundleError, match="data follows the tar end-of-archive"):
        reader.next()


def test_header_without_ustar_magic_is_refused() -> None:
    info = tarfile.TarInfo(NAME)
    block = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
    v7 = bytearray(block)
    v7[257:265] = bytes(8)  # a pre-POSIX (v7) header
    checksum = sum(v7[:148]) + 8 * 0x20 + sum(v7[156:])
    v7[148:156] = b"%06o\x00 " % checksum
    with pytest.raises(BundleError, match="not a ustar header"):
        _reader(bytes(v7)).next()


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ({"GNU.sparse.map": "0,1"}, "GNU.sparse"),
        ({"linkpath": "/etc/passwd"}, "linkpath"),
        ({"size": "-1"}, "pax size .* malformed"),
    ],
)
def test_pax_records_that_change_the_member_kind_are_refused(
    records: dict[str, str], message: str
) -> None:
    info = tarfile.TarInfo(NAME)
    info.pax_headers = records
    with pytest.raises(BundleError, match=message):
        _reader(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")).next()


def test_directory_member_is_reported_as_such() -> None:
    info = tarfile.TarInfo("blobs/")
    info.type = tarfile.DIRTYPE
    member = _reader(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")).next()
    assert member is not None and member.is_dir


def test_split_writer_cuts_exact_parts(tmp_path: Path) -> None:
    base = tmp_path / "b.tar"
    with tarstream.SplitWriter(base, 1024) as writer:
        writer.write(b"a" * 2500)
    assert [p.stat().st_size for p in writer.parts] == [1024, 1024, 452]
    assert tarstream.find_parts(base) == writer.parts
    reader = tarstream.PartsReader(writer.parts)
    assert reader.read() == b"a" * 2500
