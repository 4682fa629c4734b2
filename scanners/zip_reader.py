"""Zip archives read the way PyTorch's reader reads them: through their *local* headers.

The central directory is listed by a lean parser (`zipfile`'s own when anything is unusual), and
every member is then located through its local header, so the tricks that make Python's `zipfile`
give up while PyTorch's reader carries on (flag bits, broken CRCs, a local name that differs from
the central directory) do not hide a member: they become findings and the member is scanned
anyway. Members count, declared sizes and compression ratios are bounded before anything is
inflated.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import lzma
import mmap
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, BinaryIO

from scanners import zip_columns
from scanners.archives import (
    ZIP_TAIL_BYTES,
    ArchiveBudget,
    ArchiveError,
    bounded_inflate,
    check_bomb,
    check_ratio,
    finding,
    spool,
    unsafe_member_name,
)
from scanners.gc_pause import gc_paused
from scanners.report import Finding, Outcome, Severity
from scanners.zip_directory import Directory, ZipMember, list_directory

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_NAME = struct.Struct("<4s2xH18xHH")  # the local header's signature, flags, name, extra
_LOCAL_SIGNATURE = b"PK\x03\x04"
_EOCD_SIGNATURE = b"PK\x05\x06"
_READ_CHUNK = 1024 * 1024
_MIN_DIRECTORY_ENTRY = 46  # bytes of a central directory entry with an empty name
_UNUSUAL_FLAGS = 0x1 | 0x20 | 0x40  # encrypted, patched data, strong encryption
_UTF8_NAME = 0x800


def read_zip_members(
    fh: BinaryIO, size: int, budget: ArchiveBudget
) -> tuple[list[ZipMember], list[Finding]]:
    """The members of a zip and the structural findings (names, duplicates, flags, layout).

    Raises ArchiveError when no central directory can be read at all."""
    _check_declared_entries(fh, size, budget)
    with gc_paused():
        directory = list_directory(fh)
        members = directory.members
        findings = _layout_findings(fh, size, directory)
        _check_members(members, budget)
        plain = _plain_names(members)
        if plain and zip_columns.read_local_headers(fh, size, members):
            return members, findings
        seen: set[str] = set()
        with _local_reader(fh) as read:
            for member in members:
                if not plain:
                    _check_name(member, seen, findings)
                _read_local_header(read, size, member, findings)
    return members, findings


# what a name `unsafe_member_name` refuses must contain (any name: "\n" + name)
_UNSAFE_PARTS = ("\x00", "\\", "\n/", ":", "..")


def _plain_names(infos: Sequence[ZipMember]) -> bool:
    """No name, flag or duplicate `_check_name` would report: decided for all members at once
    (substring searches over all names joined), so the per-member checks can be skipped. A
    name with any part an unsafe name needs (a colon, "..") sends every name through them."""
    names = [info.filename for info in infos]
    joined = "\n" + "\n".join(names)
    if joined.count("\n") != len(names) or any(part in joined for part in _UNSAFE_PARTS):
        return False
    if len(set(names)) != len(names):
        return False
    return not any(info.flag_bits & _UNUSUAL_FLAGS for info in infos)


@contextlib.contextmanager
def _local_reader(fh: BinaryIO) -> Iterator[Callable[[int, int], bytes]]:
    """`read(offset, length)` over `fh`: slices of a read-only map when it is a real file (a seek
    and a read per local header cost more than the header), else seek and read."""
    try:
        if not isinstance(fh, io.BufferedReader | io.FileIO):
            raise io.UnsupportedOperation("not a plain file")  # a spool: mapping spills it
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, io.UnsupportedOperation):

        def read(offset: int, length: int) -> bytes:
            fh.seek(offset)
            return fh.read(length)

        yield read
        return
    with mapped:
        yield lambda offset, length: mapped[offset : offset + length]


def _check_declared_entries(fh: BinaryIO, size: int, budget: ArchiveBudget) -> None:
    """Refuse, before `zipfile` builds an object per entry, a directory that declares (or whose
    size allows) more entries than the limit: parsing it is the loader's cost too."""
    tail_len = min(size, ZIP_TAIL_BYTES)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    eocd = tail.rfind(_EOCD_SIGNATURE)
    if eocd < 0 or eocd + 22 > len(tail):
        return  # zipfile says what is wrong
    entries, directory_bytes = struct.unpack_from("<HL", tail, eocd + 10)
    if entries == 0xFFFF or directory_bytes == 0xFFFFFFFF:
        entries, directory_bytes = _zip64_counts(fh, size, tail, eocd) or (entries, directory_bytes)
    most = max(entries, min(directory_bytes, size) // _MIN_DIRECTORY_ENTRY)
    if most > budget.members_left:
        raise ArchiveError(_too_many_members(most))


def _zip64_counts(fh: BinaryIO, size: int, tail: bytes, eocd: int) -> tuple[int, int] | None:
    """(entries, directory bytes) from the ZIP64 end record the locator before `eocd` names."""
    locator = eocd - 20
    if locator < 0 or tail[locator : locator + 4] != b"PK\x06\x07":
        return None
    (record_at,) = struct.unpack_from("<Q", tail, locator + 8)
    if not 0 <= record_at <= size - 56:
        return None
    fh.seek(record_at)
    record = fh.read(56)
    if record[:4] != b"PK\x06\x06":
        return None
    entries, directory_bytes = struct.unpack_from("<2Q", record, 32)
    return entries, directory_bytes


def _too_many_members(count: int) -> Finding:
    return finding(
        "ARCHIVE_MEMBERS_RESOURCE",
        Outcome.ERROR,
        f"the archive lists (or has room for) {count} members, over the limit: listing them is "
        "the loader's cost too",
        count=count,
    )


def _check_members(infos: Sequence[ZipMember], budget: ArchiveBudget) -> None:
    """Members count, and each member's declared size and ratio, before anything is inflated:
    PyTorch inflates its storage records too (issue 13: a storage that inflates a thousand-fold
    was never looked at, since storages are raw data)."""
    if len(infos) > budget.members_left:
        raise ArchiveError(_too_many_members(len(infos)))
    budget.members_left -= len(infos)
    limits = budget.limits
    grace = limits.ratio_grace_bytes
    for info in infos:
        if info.file_size > grace:  # below the grace, `check_ratio` never refuses
            check_ratio(info.filename, info.file_size, info.compress_size, limits)
    declared = sum(info.file_size for info in infos)
    compressed = sum(info.compress_size for info in infos)
    if declared > max(limits.ratio_grace_bytes, compressed * limits.max_ratio):
        raise ArchiveError(
            finding(
                "ARCHIVE_RATIO_RESOURCE",
                Outcome.ERROR,
                f"the members declare {declared} bytes in all from {compressed} compressed (over "
                "the ratio limit): not extracted",
                size=declared,
                compressed=compressed,
            )
        )


def _layout_findings(fh: BinaryIO, size: int, directory: Directory) -> list[Finding]:
    out: list[Finding] = []
    tail_len = min(size, ZIP_TAIL_BYTES)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    eocd = tail.rfind(_EOCD_SIGNATURE)
    if eocd >= 0 and eocd + 22 <= len(tail):
        comment_len = struct.unpack_from("<H", tail, eocd + 20)[0]
        extra = len(tail) - (eocd + 22 + comment_len)
        if extra > 0:
            out.append(
                finding(
                    "ZIP_DATA_AFTER_END",
                    Outcome.REVIEW,
                    f"{extra} bytes follow the end of the zip: a second format may hide there",
                    Severity.MEDIUM,
                    bytes=extra,
                )
            )
    start = directory.start_dir - sum(m.compress_size for m in directory.members)
    first_offset = min((m.header_offset for m in directory.members), default=0)
    if first_offset > 0 and start > 0:
        out.append(
            finding(
                "ZIP_DATA_BEFORE_START",
                Outcome.REVIEW,
                f"{first_offset} bytes precede the first zip member: the file may be another "
                "format as well (a polyglot)",
                Severity.MEDIUM,
                bytes=first_offset,
            )
        )
    return out


def unclaimed_spans(
    fh: BinaryIO, size: int, members: list[ZipMember]
) -> list[tuple[str, int, int]]:
    """(where, offset, length) of the bytes no member claims: what precedes the first local
    header, the archive comment, and what follows the end record."""
    spans: list[tuple[str, int, int]] = []
    first = min((m.header_offset for m in members), default=0)
    if first > 0:
        spans.append(("data before the first member", 0, first))
        spans.extend(_unlisted_local_entries(fh, first))
    tail_len = min(size, ZIP_TAIL_BYTES)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    eocd = tail.rfind(_EOCD_SIGNATURE)
    if eocd < 0 or eocd + 22 > len(tail):
        return spans
    comment_at = size - tail_len + eocd + 22
    comment_len = min(struct.unpack_from("<H", tail, eocd + 20)[0], size - comment_at)
    if comment_len > 0:
        spans.append(("comment", comment_at, comment_len))
    after = comment_at + comment_len
    if after < size:
        spans.append(("data after the end record", after, size - after))
    return spans


def _unlisted_local_entries(fh: BinaryIO, end: int) -> list[tuple[str, int, int]]:
    """Stored local entries before the first listed member: streaming readers (`unzip -`,
    Java's ZipInputStream) extract them, the central directory never mentions them."""
    spans: list[tuple[str, int, int]] = []
    pos = 0
    while pos + _LOCAL_HEADER.size <= end and len(spans) < 16:
        fh.seek(pos)
        fields = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
        if fields[0] != _LOCAL_SIGNATURE:
            break
        data_at = pos + _LOCAL_HEADER.size + fields[9] + fields[10]
        length = min(fields[7], max(end - data_at, 0))
        spans.append(("local entry the directory does not list", data_at, length))
        pos = data_at + fields[7]
    return spans


def _check_name(member: ZipMember, seen: set[str], findings: list[Finding]) -> None:
    name = member.name
    why = unsafe_member_name(name)
    if why is not None:
        findings.append(
            finding(
                "ARCHIVE_TRAVERSAL_NAME",
                Outcome.MALICIOUS,
                f"the member name {name[:200]!r} {why}: extracting it writes outside the folder",
                Severity.HIGH,
                member=name[:200],
            )
        )
    if name in seen:
        findings.append(
            finding(
                "ZIP_DUPLICATE_NAME",
                Outcome.MALICIOUS,
                f"the member {name[:200]!r} appears twice: readers disagree on which one counts, "
                "a known way to show a scanner one file and a loader another (both were scanned)",
                member=name[:200],
            )
        )
    seen.add(name)
    if member.info.flag_bits & _UNUSUAL_FLAGS:
        findings.append(
            finding(
                "ZIP_UNUSUAL_FLAGS",
                Outcome.REVIEW,
                f"the member {name[:200]!r} sets zip flag bits 0x{member.info.flag_bits:x} "
                "(encryption/patch data) that make some scanners skip it; PyTorch ignores them "
                "(it was scanned)",
                Severity.MEDIUM,
                member=name[:200],
                flags=member.info.flag_bits,
            )
        )


def _read_local_header(
    read: Callable[[int, int], bytes], size: int, member: ZipMember, findings: list[Finding]
) -> None:
    """Where the member's data starts, from its local header; a local name that differs from
    the directory's is a finding. Raises ArchiveError when the header is not there."""
    info = member
    header_offset = member.header_offset
    raw_name = member.raw_name
    if not 0 <= header_offset <= size - _LOCAL_HEADER.size:
        # zipfile shifts offsets by what precedes the directory: a lying directory makes them
        # negative or past the end (fuzzing, issue 13: "negative seek value")
        raise ArchiveError(
            finding(
                "ZIP_MALFORMED",
                Outcome.ERROR,
                f"the local header of {member.name[:200]!r} is placed outside the file",
                member=member.name[:200],
                offset=header_offset,
            )
        )
    # one read for the header and, when it has the length the directory gives, the name
    raw = read(header_offset, _LOCAL_HEADER.size + len(raw_name or b""))
    if len(raw) < _LOCAL_HEADER.size or raw[:4] != _LOCAL_SIGNATURE:
        raise ArchiveError(
            finding(
                "ZIP_MALFORMED",
                Outcome.ERROR,
                f"the local header of {member.name[:200]!r} is missing or damaged",
                member=member.name[:200],
            )
        )
    _, flags, name_len, extra_len = _LOCAL_NAME.unpack_from(raw)
    local_raw = raw[_LOCAL_HEADER.size :]
    if name_len != len(local_raw):
        local_raw = read(header_offset + _LOCAL_HEADER.size, name_len)
    if local_raw == raw_name and not (flags ^ info.flag_bits) & _UTF8_NAME:
        local_name = member.name  # the same bytes decoded the same way: the same name
    else:
        local_name = local_raw.decode("utf-8" if flags & _UTF8_NAME else "cp437", "replace")
    member.local_name = local_name
    member.data_offset = header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if local_name != member.name:
        findings.append(
            finding(
                "ZIP_NAME_MISMATCH",
                Outcome.MALICIOUS,
                f"the central directory calls a member {member.name[:200]!r} but its local header "
                f"says {local_name[:200]!r}: readers that trust different records see different "
                "files",
                member=member.name[:200],
                local_name=local_name[:200],
            )
        )
    if member.data_offset + info.compress_size > size:
        raise ArchiveError(
            finding(
                "ZIP_MALFORMED",
                Outcome.ERROR,
                f"the member {member.name[:200]!r} runs past the end of the file",
                member=member.name[:200],
            )
        )


def open_zip_member(
    fh: BinaryIO, member: ZipMember, budget: ArchiveBudget
) -> tuple[IO[bytes], list[Finding]]:
    """The member's uncompressed bytes in a spooled buffer (rewound) plus findings (CRC, bomb).

    Raises ArchiveError when it cannot or may not be read."""
    info = member.info
    limits = budget.limits
    check_bomb(member.name, info.file_size, info.compress_size, budget)
    out = spool(limits)
    crc = 0
    written = 0
    try:
        for chunk in _decompressed_chunks(fh, member):
            written += len(chunk)
            if written > info.file_size or written > budget.bytes_left:
                raise ArchiveError(
                    finding(
                        "ARCHIVE_SIZE_RESOURCE",
                        Outcome.ERROR,
                        f"the member {member.name[:200]!r} inflates past its declared size or the "
                        "scan budget",
                        member=member.name[:200],
                    )
                )
            crc = zlib.crc32(chunk, crc)
            out.write(chunk)
    except ArchiveError:
        out.close()
        raise
    budget.bytes_left -= written
    out.seek(0)
    findings: list[Finding] = []
    if written != info.file_size or crc != info.CRC:
        findings.append(
            finding(
                "ZIP_CRC_MISMATCH",
                Outcome.REVIEW,
                f"the member {member.name[:200]!r} does not match its recorded size or CRC: a "
                "tampered member that strict readers refuse and others load (it was scanned)",
                Severity.MEDIUM,
                member=member.name[:200],
            )
        )
    return out, findings


def _decompressed_chunks(fh: BinaryIO, member: ZipMember) -> Iterator[bytes]:
    info = member.info
    fh.seek(member.data_offset)
    remaining = info.compress_size
    decompress = _zip_decompressor(info.compress_type, member.name)
    while remaining > 0:
        raw = fh.read(min(_READ_CHUNK, remaining))
        if not raw:
            break
        remaining -= len(raw)
        if decompress is None:
            yield raw
            continue
        try:
            # max_length bounds what one compressed chunk may inflate to (bomb guard)
            yield from bounded_inflate(decompress, raw)
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
            raise ArchiveError(
                finding(
                    "ZIP_MALFORMED",
                    Outcome.ERROR,
                    f"the member {member.name[:200]!r} does not decompress ({exc})",
                    member=member.name[:200],
                )
            ) from exc


def _zip_decompressor(method: int, name: str) -> Any:
    if method == zipfile.ZIP_STORED:
        return None
    if method == zipfile.ZIP_DEFLATED:
        return zlib.decompressobj(-15)
    if method == zipfile.ZIP_BZIP2:
        return bz2.BZ2Decompressor()
    if method == zipfile.ZIP_LZMA:
        return _ZipLzma()
    raise ArchiveError(
        finding(
            "ZIP_UNSUPPORTED_METHOD",
            Outcome.ERROR,
            f"the member {name[:200]!r} uses compression method {method}, which is not scanned",
            member=name[:200],
        )
    )


class _ZipLzma:
    """Zip's LZMA members carry a 4-byte version + 2-byte properties size before the props."""

    def __init__(self) -> None:
        self._inner: lzma.LZMADecompressor | None = None
        self._head = b""

    @property
    def needs_input(self) -> bool:
        return self._inner is None or self._inner.needs_input

    @property
    def eof(self) -> bool:
        return self._inner is not None and self._inner.eof

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        if self._inner is None:
            self._head += data
            if len(self._head) < 4:
                return b""
            psize = struct.unpack_from("<H", self._head, 2)[0]
            if len(self._head) < 4 + psize:
                return b""
            props = lzma._decode_filter_properties(lzma.FILTER_LZMA1, self._head[4 : 4 + psize])  # type: ignore[attr-defined]
            self._inner = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[props])
            data = self._head[4 + psize :]
        return self._inner.decompress(data, max_length)
