"""Containers: zip (and the torch/npz/keras zips), tar, gzip/bzip2/xz streams, 7z.

Zip members are read through their *local* headers with our own reader, so the tricks that make
Python's `zipfile` give up while PyTorch's reader carries on (flag bits, broken CRCs, a local name
that differs from the central directory) do not hide a member: they become findings and the member
is scanned anyway. Every container is bounded: members, depth, total bytes, compression ratio.
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Protocol

from scanners.limits import ArchiveLimits
from scanners.report import Finding, JsonValue, Outcome, Severity

SCANNER = "archive"
SCANNER_VERSION = "1.0"

ZIP_TAIL_BYTES = 65536 + 22  # where a zip's end-of-central-directory record can start
# local header, central directory, end of central directory, zip64 end and its locator
ZIP_SIGNATURE = re.compile(rb"PK(?:\x03\x04|\x01\x02|\x05\x06|\x06\x06|\x06\x07)")

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_EOCD_SIGNATURE = b"PK\x05\x06"
_READ_CHUNK = 1024 * 1024
_MIN_DIRECTORY_ENTRY = 46  # bytes of a central directory entry with an empty name
_UNUSUAL_FLAGS = 0x1 | 0x20 | 0x40  # encrypted, patched data, strong encryption


@dataclass(slots=True)
class ArchiveBudget:
    """What one scan may still read out of containers, shared across nesting levels."""

    limits: ArchiveLimits
    bytes_left: int = 0
    members_left: int = 0

    def __post_init__(self) -> None:
        self.bytes_left = self.limits.max_total_bytes
        self.members_left = self.limits.max_members


class MemberInfo(Protocol):
    """What reading a member needs: `zipfile.ZipInfo`, or the same fields from a local header."""

    filename: str
    compress_type: int
    compress_size: int
    file_size: int
    CRC: int
    flag_bits: int


@dataclass(slots=True)
class ZipMember:
    """One central-directory entry, with what its local header says."""

    name: str
    info: MemberInfo
    data_offset: int = 0
    local_name: str = ""
    problems: list[str] = field(default_factory=list)


class ArchiveError(Exception):
    """A container cannot be read: carries the finding that says why."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


def finding(
    code: str,
    outcome: Outcome,
    message: str,
    severity: Severity = Severity.HIGH,
    **details: JsonValue,
) -> Finding:
    return Finding(SCANNER, code, severity, outcome, message, details)


def unsafe_member_name(name: str) -> str | None:
    """Why a member name could escape the extraction folder (None when it cannot)."""
    if "\x00" in name:
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "is absolute"
    if any(part == ".." for part in name.split("/")):
        return "climbs out with '..'"
    return None


def spool(limits: ArchiveLimits) -> IO[bytes]:
    """A temp buffer: memory up to `spool_memory_bytes`, then a file removed on close."""
    return tempfile.SpooledTemporaryFile(max_size=limits.spool_memory_bytes)


# ---- zip ---------------------------------------------------------------------------------------
def read_zip_members(
    fh: BinaryIO, size: int, budget: ArchiveBudget
) -> tuple[list[ZipMember], list[Finding]]:
    """The members of a zip and the structural findings (names, duplicates, flags, layout).

    Raises ArchiveError when no central directory can be read at all."""
    _check_declared_entries(fh, size, budget)
    archive = _open_zip(fh)
    infos = archive.infolist()
    findings = _layout_findings(fh, size, archive)
    _check_members(infos, budget)
    seen: set[str] = set()
    members: list[ZipMember] = []
    for info in infos:
        member = ZipMember(info.filename, info)
        _check_name(member, seen, findings)
        _read_local_header(fh, size, member, info.header_offset, findings)
        members.append(member)
    return members, findings


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


def _check_members(infos: list[zipfile.ZipInfo], budget: ArchiveBudget) -> None:
    """Members count, and each member's declared size and ratio, before anything is inflated:
    PyTorch inflates its storage records too (issue 13: a storage that inflates a thousand-fold
    was never looked at, since storages are raw data)."""
    if len(infos) > budget.members_left:
        raise ArchiveError(_too_many_members(len(infos)))
    budget.members_left -= len(infos)
    limits = budget.limits
    for info in infos:
        _check_ratio(info.filename, info.file_size, info.compress_size, limits)
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


def _check_ratio(name: str, file_size: int, compress_size: int, limits: ArchiveLimits) -> None:
    ratio = file_size / max(compress_size, 1)
    if file_size > limits.ratio_grace_bytes and ratio > limits.max_ratio:
        raise ArchiveError(
            finding(
                "ARCHIVE_RATIO_RESOURCE",
                Outcome.ERROR,
                f"the member {name[:200]!r} declares {file_size} bytes from {compress_size} "
                f"(ratio {ratio:.0f}, over the limit of {limits.max_ratio}): not extracted",
                member=name[:200],
                size=file_size,
                compressed=compress_size,
            )
        )


def _open_zip(fh: BinaryIO) -> zipfile.ZipFile:
    """`zipfile` over `fh`: it parses the central directory (ZIP64 too) and reads nothing else.

    Raises ArchiveError for a directory it cannot read, or a "version needed" it refuses
    (PyTorch's reader ignores that field: such a file still loads, so it is held, not skipped)."""
    try:
        fh.seek(0)
        return zipfile.ZipFile(fh)
    except NotImplementedError as exc:  # zipfile: "zip file version 6.5" (fuzzing, issue 13)
        raise ArchiveError(
            finding(
                "ZIP_UNSUPPORTED_VERSION",
                Outcome.ERROR,
                f"the zip asks for a reader version that is not supported ({exc}); readers that "
                "ignore the field still open it",
            )
        ) from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise ArchiveError(
            finding(
                "ZIP_MALFORMED", Outcome.ERROR, f"the zip central directory cannot be read ({exc})"
            )
        ) from exc


def _layout_findings(fh: BinaryIO, size: int, archive: zipfile.ZipFile) -> list[Finding]:
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
    start = getattr(archive, "start_dir", 0) - sum(i.compress_size for i in archive.infolist())
    first_offset = min((i.header_offset for i in archive.infolist()), default=0)
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
    first = min(
        (m.info.header_offset for m in members if hasattr(m.info, "header_offset")), default=0
    )
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
    fh: BinaryIO, size: int, member: ZipMember, header_offset: int, findings: list[Finding]
) -> None:
    info = member.info
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
    fh.seek(header_offset)
    raw = fh.read(_LOCAL_HEADER.size)
    if len(raw) < _LOCAL_HEADER.size or raw[:4] != _LOCAL_SIGNATURE:
        raise ArchiveError(
            finding(
                "ZIP_MALFORMED",
                Outcome.ERROR,
                f"the local header of {member.name[:200]!r} is missing or damaged",
                member=member.name[:200],
            )
        )
    fields = _LOCAL_HEADER.unpack(raw)
    name_len, extra_len = fields[9], fields[10]
    local_name = fh.read(name_len).decode("utf-8" if fields[2] & 0x800 else "cp437", "replace")
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
    _check_bomb(member.name, info.file_size, info.compress_size, budget)
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


def _check_bomb(name: str, file_size: int, compress_size: int, budget: ArchiveBudget) -> None:
    limits = budget.limits
    if file_size > limits.max_member_bytes or file_size > budget.bytes_left:
        raise ArchiveError(
            finding(
                "ARCHIVE_SIZE_RESOURCE",
                Outcome.ERROR,
                f"the member {name[:200]!r} declares {file_size} bytes, over the member or total "
                "size limit: not extracted",
                member=name[:200],
                size=file_size,
                compressed=compress_size,
            )
        )
    _check_ratio(name, file_size, compress_size, limits)


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
            yield from _bounded_inflate(decompress, raw)
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
            raise ArchiveError(
                finding(
                    "ZIP_MALFORMED",
                    Outcome.ERROR,
                    f"the member {member.name[:200]!r} does not decompress ({exc})",
                    member=member.name[:200],
                )
            ) from exc


_ZLIB_TYPE = type(zlib.decompressobj())


def _bounded_inflate(inflater: Any, raw: bytes) -> Iterator[bytes]:
    """Inflate `raw` at most one chunk at a time (the caller stops past the declared size)."""
    data = raw
    while True:
        chunk: bytes = inflater.decompress(data, _READ_CHUNK)
        if chunk:
            yield chunk
        if isinstance(inflater, _ZLIB_TYPE):
            data = inflater.unconsumed_tail
            if not data:
                return
        elif inflater.needs_input or inflater.eof:
            return
        else:
            data = b""


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


# ---- tar ---------------------------------------------------------------------------------------
def iter_tar_members(
    fh: BinaryIO, budget: ArchiveBudget
) -> Iterator[tuple[str, IO[bytes] | None, list[Finding]]]:
    """(name, content or None for non-files, findings) for each tar member, bounded.

    Raises ArchiveError when the tar cannot be read."""
    fh.seek(0)
    try:
        with tarfile.open(fileobj=fh, mode="r:") as archive:
            for info in archive:
                yield _tar_member(archive, info, budget)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(
            finding("TAR_MALFORMED", Outcome.ERROR, f"the tar cannot be read ({exc})")
        ) from exc


def _tar_member(
    archive: tarfile.TarFile, info: tarfile.TarInfo, budget: ArchiveBudget
) -> tuple[str, IO[bytes] | None, list[Finding]]:
    if budget.members_left <= 0:
        raise ArchiveError(
            finding("ARCHIVE_MEMBERS_RESOURCE", Outcome.ERROR, "the tar has too many members")
        )
    budget.members_left -= 1
    findings: list[Finding] = []
    why = unsafe_member_name(info.name)
    if why is not None:
        findings.append(
            finding(
                "ARCHIVE_TRAVERSAL_NAME",
                Outcome.MALICIOUS,
                f"the member name {info.name[:200]!r} {why}: extracting it writes outside the "
                "folder",
                member=info.name[:200],
            )
        )
    if info.issym() or info.islnk() or info.isdev():
        findings.append(
            finding(
                "TAR_LINK_MEMBER",
                Outcome.REVIEW,
                f"the member {info.name[:200]!r} is a link or device (to {info.linkname[:200]!r})",
                Severity.MEDIUM,
                member=info.name[:200],
            )
        )
        return info.name, None, findings
    if not info.isfile():
        return info.name, None, findings
    _check_bomb(info.name, info.size, info.size, budget)
    source = archive.extractfile(info)
    if source is None:
        return info.name, None, findings
    out = spool(budget.limits)
    copy_bounded(source.read, out, info.size, budget)
    out.seek(0)
    return info.name, out, findings


def copy_bounded(
    read: Callable[[int], bytes], out: IO[bytes], cap: int, budget: ArchiveBudget
) -> int:
    """Copy up to `cap` bytes; raises ArchiveError past the scan budget."""
    total = 0
    while total <= cap:
        chunk = read(min(_READ_CHUNK, cap + 1 - total))
        if not chunk:
            break
        total += len(chunk)
        if total > budget.bytes_left:
            raise ArchiveError(
                finding(
                    "ARCHIVE_SIZE_RESOURCE",
                    Outcome.ERROR,
                    "the archive inflates past the scan budget",
                )
            )
        out.write(chunk)
    budget.bytes_left -= total
    return total


# ---- compressed streams -------------------------------------------------------------------------
_STREAM_KINDS: dict[str, Callable[[], Any]] = {
    "gzip": lambda: zlib.decompressobj(31),
    "zlib": zlib.decompressobj,
    "bzip2": bz2.BZ2Decompressor,
    "xz": lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ),
    "lzma": lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE),
}
STREAM_KINDS = frozenset(_STREAM_KINDS)


def decompress_stream(
    fh: BinaryIO, kind: str, compressed_size: int, budget: ArchiveBudget
) -> IO[bytes]:
    """Inflate a gzip/zlib/bzip2/xz/lzma file into a spooled buffer (rewound), bounded by size
    and ratio; concatenated gzip/bzip2 members are all inflated.

    Raises ArchiveError when it is damaged or a bomb."""
    fh.seek(0)
    limits = budget.limits
    size_cap = min(limits.max_member_bytes, budget.bytes_left)
    ratio_cap = max(limits.ratio_grace_bytes, compressed_size * limits.max_ratio)
    code = "ARCHIVE_RATIO_RESOURCE" if ratio_cap < size_cap else "ARCHIVE_SIZE_RESOURCE"
    out = spool(limits)
    try:
        total = _inflate_into(fh, _STREAM_KINDS[kind], out, min(size_cap, ratio_cap), code)
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ArchiveError) as exc:
        out.close()
        if isinstance(exc, ArchiveError):
            raise
        raise ArchiveError(
            finding(
                "COMPRESSED_MALFORMED",
                Outcome.ERROR,
                f"the {kind} stream does not decompress ({exc})",
            )
        ) from exc
    budget.bytes_left -= total
    out.seek(0)
    return out


def _inflate_into(
    fh: BinaryIO, make: Callable[[], Any], out: IO[bytes], cap: int, code: str
) -> int:
    inflater = make()
    total = 0
    while True:
        raw = fh.read(_READ_CHUNK)
        if not raw:
            if not inflater.eof:
                raise EOFError("the compressed stream is truncated")
            return total
        while raw:
            for chunk in _bounded_inflate(inflater, raw):
                total += len(chunk)
                if total > cap:
                    raise ArchiveError(
                        finding(
                            code,
                            Outcome.ERROR,
                            f"the compressed stream inflates past {cap} bytes (size or ratio "
                            "limit): not scanned",
                        )
                    )
                out.write(chunk)
            raw = inflater.unused_data if inflater.eof else b""
            if inflater.eof and raw:
                inflater = make()  # the next concatenated member
