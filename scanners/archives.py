"""Containers' shared bounds and readers: tar, gzip/bzip2/xz/zlib/lzma streams (zip members:
`scanners.zip_reader`).

Every container is bounded by one `ArchiveBudget` per scan: members, total bytes, member size and
compression ratio (checked on what members declare before anything is inflated, and again on
what they inflate to), and nesting depth (`ScanContext.scan_member`).
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

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


def check_ratio(name: str, file_size: int, compress_size: int, limits: ArchiveLimits) -> None:
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


def check_bomb(name: str, file_size: int, compress_size: int, budget: ArchiveBudget) -> None:
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
    check_ratio(name, file_size, compress_size, limits)


_ZLIB_TYPE = type(zlib.decompressobj())


def bounded_inflate(inflater: Any, raw: bytes) -> Iterator[bytes]:
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
    check_bomb(info.name, info.size, info.size, budget)
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
            for chunk in bounded_inflate(inflater, raw):
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
