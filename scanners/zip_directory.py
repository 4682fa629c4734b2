"""A zip's central directory, listed: a lean parser for the plain case, `zipfile` otherwise.

Issue 13's profile: on a torch checkpoint of 46,000 tiny tensors, `zipfile` took ~80 ms to list
the directory (an object with twenty attributes, five reads and a date conversion per entry) out
of a ~500 ms scan. The lean parser reads the directory in one read and keeps the seven fields the
scanners use. It takes only the plain case (one end record at the very end, its ZIP64 record
right before it if any, one disk, no extra fields, no NUL in a name, a version `zipfile`
supports) and then returns what `zipfile` would: same names, same offsets. Anything else is
`zipfile`'s to list, errors included, so the findings on odd files are exactly what they were.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from scanners import zip_columns
from scanners.archives import ArchiveError, finding
from scanners.report import Outcome

# zipfile.structCentralDir (46 bytes), unpacking only what is read: signature, version needed,
# flags, method, CRC, compressed and file sizes, name, extra and comment lengths, header offset
# (fewer objects per entry: this runs once per member)
_CENTRAL = struct.Struct("<4s2xBxHH4x3L3H8xL")
_END = struct.Struct("<4s4H2LH")  # zipfile.structEndArchive: 22 bytes, comment excluded
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_END_SIGNATURE = b"PK\x06\x06"
_LOCATOR = struct.Struct("<4sLQL")  # zipfile.structEndArchive64Locator: 20 bytes
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # zipfile.structEndArchive64: 56 bytes
_MAX_EXTRACT_VERSION = 63  # zipfile.MAX_EXTRACT_VERSION: above it, zipfile refuses the file
_UTF8_NAME = 0x800


class MemberInfo(Protocol):
    """What reading a member needs: `zipfile.ZipInfo`, a `ZipMember`, or the same fields from a
    local header."""

    filename: str
    compress_type: int
    compress_size: int
    file_size: int
    CRC: int
    flag_bits: int


class ZipMember:
    """One member: its central-directory entry (the `MemberInfo` fields, named as
    `zipfile.ZipInfo` names them) and what its local header says (`zip_reader` fills those)."""

    __slots__ = (
        "CRC",
        "compress_size",
        "compress_type",
        "data_offset",
        "file_size",
        "filename",
        "flag_bits",
        "header_offset",
        "local_name",
        "name",
        "raw_name",
    )

    def __init__(
        self,
        filename: str,
        raw_name: bytes,
        flag_bits: int,
        compress_type: int,
        crc: int,
        compress_size: int,
        file_size: int,
        header_offset: int,
    ) -> None:
        """From a central-directory record: one object per member, made tens of thousands of
        times for a torch checkpoint."""
        self.filename = self.name = filename  # `name`: the scanners' word, `filename` zipfile's
        self.raw_name: bytes | None = raw_name  # a local header with the same bytes is the same
        self.flag_bits, self.compress_type = flag_bits, compress_type
        self.CRC, self.compress_size, self.file_size = crc, compress_size, file_size
        self.header_offset = header_offset
        self.data_offset = 0  # where the member's data starts, from its local header
        self.local_name = ""

    @classmethod
    def of(cls, info: MemberInfo, header_offset: int) -> ZipMember:
        """A member from `zipfile`'s entry, or from the fields of a local header alone."""
        member = cls.__new__(cls)
        member.filename = member.name = info.filename
        member.raw_name = None
        member.flag_bits, member.compress_type = info.flag_bits, info.compress_type
        member.CRC, member.compress_size = info.CRC, info.compress_size
        member.file_size, member.header_offset = info.file_size, header_offset
        member.data_offset, member.local_name = 0, ""
        return member

    @property
    def info(self) -> ZipMember:
        """The member as a `MemberInfo` (it is one)."""
        return self


class _NotPlain(Exception):
    """The directory is not the plain case: `zipfile` lists it."""


@dataclass(frozen=True, slots=True)
class Directory:
    """The listed members and where the directory starts (`zipfile.ZipFile.start_dir`)."""

    members: list[ZipMember]
    start_dir: int


def list_directory(fh: BinaryIO) -> Directory:
    """The central directory of the zip in `fh`.

    Raises ArchiveError for a directory that cannot be read, or a "version needed" `zipfile`
    refuses (PyTorch's reader ignores that field: such a file still loads, so it is held)."""
    fast = _plain_directory(fh)
    if fast is not None:
        return fast
    archive = _open_zip(fh)
    members = [ZipMember.of(info, info.header_offset) for info in archive.infolist()]
    return Directory(members, archive.start_dir)


def _plain_directory(fh: BinaryIO) -> Directory | None:
    """The directory by the lean parser, or None when it is not the plain case."""
    end = fh.seek(0, 2)
    if end < _END.size:
        return None
    fh.seek(end - _END.size)
    record = fh.read(_END.size)
    if record[:4] != _END_SIGNATURE or record[-2:] != b"\x00\x00":
        return None  # no end record, or an archive comment: zipfile searches for the record
    directory_bytes, directory_offset = _END.unpack(record)[5:7]
    location = end - _END.size
    try:
        zip64 = _zip64_directory(fh, location)
    except _NotPlain:
        return None
    shift = location - directory_bytes - directory_offset
    if zip64 is not None:  # as zipfile: the ZIP64 record just before its locator counts
        directory_bytes, directory_offset = zip64
        shift = location - directory_bytes - directory_offset - _ZIP64_END.size - _LOCATOR.size
    start_dir = directory_offset + shift
    if start_dir < 0:
        return None
    fh.seek(start_dir)
    data = fh.read(directory_bytes)
    if len(data) != directory_bytes:
        return None
    infos = zip_columns.central_entries(data, shift, ZipMember)
    if infos is None:
        infos = _entries(data, shift)
    return None if infos is None else Directory(infos, start_dir)


def _zip64_directory(fh: BinaryIO, location: int) -> tuple[int, int] | None:
    """(directory bytes, offset) from a ZIP64 end record read as `zipfile` reads it; None: no
    locator, or no record where zipfile looks (the 32-bit record counts). Raises _NotPlain for a
    case left to zipfile (several disks, a file too short to hold the record)."""
    if location < _LOCATOR.size:
        return None
    fh.seek(location - _LOCATOR.size)
    signature, disk, _, disks = _LOCATOR.unpack(fh.read(_LOCATOR.size))
    if signature != _ZIP64_LOCATOR_SIGNATURE:
        return None
    if disk != 0 or disks > 1 or location < _LOCATOR.size + _ZIP64_END.size:
        raise _NotPlain
    fh.seek(location - _LOCATOR.size - _ZIP64_END.size)
    fields = _ZIP64_END.unpack(fh.read(_ZIP64_END.size))
    if fields[0] != _ZIP64_END_SIGNATURE:
        return None
    return fields[8], fields[9]


def _entries(data: bytes, shift: int) -> list[ZipMember] | None:
    """Each entry of `data`, or None at the first one that is not plain. One flat loop: it runs
    once per member, tens of thousands of times on a torch checkpoint."""
    entries: list[ZipMember] = []
    unpack = _CENTRAL.unpack_from
    pos, total = 0, len(data)
    while pos < total:
        if pos + _CENTRAL.size > total:
            return None
        raw = unpack(data, pos)
        name_end = pos + _CENTRAL.size + raw[7]
        if raw[0] != _CENTRAL_SIGNATURE or raw[1] > _MAX_EXTRACT_VERSION or raw[8]:
            return None  # a bad entry, a version zipfile refuses, extra fields: zipfile's
        if name_end + raw[9] > total:
            return None
        raw_name = data[pos + _CENTRAL.size : name_end]
        try:
            name = raw_name.decode("utf-8" if raw[2] & _UTF8_NAME else "cp437")
        except UnicodeDecodeError:
            return None
        if "\x00" in name:
            return None  # zipfile cuts the name there
        entries.append(
            ZipMember(name, raw_name, raw[2], raw[3], raw[4], raw[5], raw[6], raw[10] + shift)
        )
        pos = name_end + raw[9]
    return entries


def _open_zip(fh: BinaryIO) -> zipfile.ZipFile:
    """`zipfile` over `fh`: it parses the central directory (ZIP64 too) and reads nothing else."""
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
