"""A tar stream of regular files, written and read strictly, in bounded memory.

Written: POSIX ustar headers (a pax record only for a size of 8 GiB or more), mode 0644,
mtime 0, no owner names, each member padded to 512 bytes, two zero blocks at the end, the
whole padded to 10 KiB records: what `tar`, `oras` and Python's tarfile read.

Read: a bundle is hostile, so this reader does not use tarfile (which reads a pax or GNU
long-name record of any size into memory and follows what links say). It accepts regular
files, directory entries, and pax records of at most MAX_PAX_BYTES that set `size` or `path`;
it refuses links, devices, FIFOs, GNU long names and sparse files, global pax headers, bad
header checksums, a stream that ends before its end-of-archive blocks, and data after them.
Which names are acceptable is the caller's business (`TarMember.name` is as written).

Split output: `SplitWriter` cuts the stream into `NAME.000`, `NAME.001`… of a fixed size (what
`split -b SIZE -d -a 3` would make, so `cat NAME.* | tar t` reads it); `open_parts` reads the
parts back as one stream.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from proxy.airgap.errors import BundleError
from proxy.errors import shown

BLOCK = 512
RECORD = 20 * BLOCK
MAX_PAX_BYTES = 64 * 1024
MAX_TRAILING_BYTES = 1024 * 1024
"""Zero padding accepted after the end-of-archive blocks (some tools pad to large records)."""
PART_SUFFIX_DIGITS = 3
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\x00")
_REFUSED_TYPES = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"L": "a GNU long-name record",
    b"K": "a GNU long-link record",
    b"S": "a GNU sparse file",
    b"g": "a global pax header",
}


# -- writing ------------------------------------------------------------------------------------


def member_header(name: str, size: int) -> bytes:
    """The header block(s) of a regular file `name` of `size` bytes."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.type = tarfile.REGTYPE
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def padding(size: int) -> bytes:
    """Zeros that bring a member of `size` bytes to a whole block."""
    return bytes(-size % BLOCK)


def end_of_archive(written: int) -> bytes:
    """Two zero blocks, then zeros to a whole record, after `written` bytes of stream."""
    total = written + 2 * BLOCK
    return bytes(2 * BLOCK + (-total % RECORD))


class SplitWriter(io.RawIOBase):
    """A write-only stream cut into files `<base>.000`, `<base>.001`… of `part_size` bytes
    each (the last shorter). `parts` lists the files written."""

    def __init__(self, base: Path, part_size: int) -> None:
        super().__init__()
        if part_size < BLOCK:
            raise BundleError(f"a split size of {part_size} bytes is below one tar block (512)")
        self._base = base
        self._part_size = part_size
        self._file: BinaryIO | None = None
        self._left = 0
        self.parts: list[Path] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            if self._file is None or self._left == 0:
                self._next_part()
            assert self._file is not None
            take = min(self._left, len(view) - done)
            self._file.write(view[done : done + take])
            self._left -= take
            done += take
        return done

    def _next_part(self) -> None:
        self._close_part()
        path = part_path(self._base, len(self.parts))
        self._file = path.open("wb")
        self.parts.append(path)
        self._left = self._part_size

    def _close_part(self) -> None:
        if self._file is not None:
            self._file.flush()
            _fsync(self._file)
            self._file.close()
            self._file = None

    def close(self) -> None:
        if not self.closed:
            self._close_part()
        super().close()


def part_path(base: Path, index: int) -> Path:
    return base.with_name(f"{base.name}.{index:0{PART_SUFFIX_DIGITS}d}")


def _fsync(file: BinaryIO) -> None:
    os.fsync(file.fileno())


# -- reading ------------------------------------------------------------------------------------


class PartsReader(io.RawIOBase):
    """The files `paths` read one after the other as one stream."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self._paths = list(paths)
        self._file: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while True:
            if self._file is None:
                if not self._paths:
                    return 0
                self._file = self._paths.pop(0).open("rb")
            count = self._file.readinto(buffer)
            if count:
                return count
            self._file.close()
            self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


def find_parts(path: Path) -> list[Path] | None:
    """The parts, in order, of the split tar `path` names: `path` is the base name (`x.tar` for
    `x.tar.000`…) or the first part itself. None when `path` is not a split tar. Raises
    BundleError for a part that is not the first, or a gap between parts."""
    if path.is_file():
        match = re.fullmatch(rf"(.+)\.(\d{{{PART_SUFFIX_DIGITS},}})", path.name)
        base = path.with_name(match.group(1)) if match else None
        if match is None or base is None or base.exists():
            return None
        if int(match.group(2)) != 0:
            raise BundleError(f"{path} is not the first part of a split bundle; give the .000 part")
        path = base
    elif not part_path(path, 0).is_file():
        return None
    parts: list[Path] = []
    while part_path(path, len(parts)).is_file():
        parts.append(part_path(path, len(parts)))
    pattern = re.compile(rf"{re.escape(path.name)}\.(\d{{{PART_SUFFIX_DIGITS},}})")
    later = sorted(
        int(m.group(1))
        for p in path.parent.iterdir()
        if (m := pattern.fullmatch(p.name)) and int(m.group(1)) >= len(parts)
    )
    if later:
        raise BundleError(
            f"part {part_path(path, len(parts)).name} of the split bundle is missing while part "
            f"{part_path(path, later[0]).name} exists; copy every part"
        )
    return parts


@dataclass(frozen=True, slots=True)
class TarMember:
    name: str
    size: int
    is_dir: bool
    offset: int
    """Where the member's header starts in the stream (for messages)."""


class TarReader:
    """Members of a tar stream in order. After `next()` returns a regular file, read its content
    with `read()` (or not: the next `next()` skips what is left)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._position = 0
        self._left = 0
        self._pad = 0
        self._ended = False

    # The one place that reads the underlying stream: counts the position, never reads past
    # what was asked.
    def _read(self, size: int) -> bytes:
        chunks: list[bytes] = []
        wanted = size
        while wanted:
            chunk = self._stream.read(wanted)
            if not chunk:
                break
            chunks.append(chunk)
            wanted -= len(chunk)
        data = b"".join(chunks)
        self._position += len(data)
        return data

    def _read_exact(self, size: int, what: str) -> bytes:
        data = self._read(size)
        if len(data) != size:
            raise BundleError(
                f"the bundle ends in the middle of {what} (byte {self._position}): it is "
                "truncated; copy it again"
            )
        return data

    def next(self) -> TarMember | None:
        """The next member, or None after the end-of-archive blocks. Raises BundleError."""
        if self._ended:
            return None
        self._skip_rest()
        pax: dict[str, str] = {}
        while True:
            offset = self._position
            block = self._read(BLOCK)
            if not block:
                raise BundleError(
                    f"the bundle ends at byte {offset} without the tar end-of-archive blocks: "
                    "it is truncated; copy it again"
                )
            if len(block) != BLOCK:
                raise BundleError(
                    f"the bundle ends in the middle of a tar header (byte {self._position}): "
                    "it is truncated; copy it again"
                )
            if block == _ZERO_BLOCK:
                self._finish(offset)
                return None
            name, size, typeflag = _parse_header(block, offset)
            if typeflag == b"x":
                if pax:
                    raise BundleError(f"two pax headers in a row at byte {offset}")
                if size > MAX_PAX_BYTES:
                    raise BundleError(
                        f"a pax header of {size} bytes at byte {offset} (at most "
                        f"{MAX_PAX_BYTES}); Hubwarden bundles never need one that large"
                    )
                pax = _parse_pax(self._read_exact(size + len(padding(size)), "a pax header")[:size])
                if not pax:
                    raise BundleError(f"an empty pax header at byte {offset}")
                continue
            name = pax.get("path", name)
            if "size" in pax:
                size = _pax_size(pax["size"], offset)
            if typeflag in _REFUSED_TYPES:
                raise BundleError(
                    f'member "{shown(name)}" is {_REFUSED_TYPES[typeflag]}; a bundle holds '
                    "regular files only"
                )
            if typeflag == b"5":
                if size != 0:
                    raise BundleError(f'directory member "{shown(name)}" has content')
                return TarMember(name, 0, is_dir=True, offset=offset)
            if typeflag not in _REGULAR:
                raise BundleError(
                    f'member "{shown(name)}" has tar type {typeflag!r}; a bundle holds regular '
                    "files only"
                )
            self._left = size
            self._pad = len(padding(size))
            return TarMember(name, size, is_dir=False, offset=offset)

    def read(self, size: int) -> bytes:
        """Up to `size` bytes of the current member's content; b"" at its end. Raises
        BundleError when the stream ends before the member does."""
        size = min(size, self._left)
        if size <= 0:
            return b""
        data = self._read(size)
        if not data:
            raise BundleError(
                f"the bundle ends in the middle of a member (byte {self._position}, "
                f"{self._left} bytes short): it is truncated; copy it again"
            )
        self._left -= len(data)
        return data

    def _skip_rest(self) -> None:
        while self._left:
            self.read(min(self._left, 1024 * 1024))
        if self._pad:
            self._read_exact(self._pad, "a member's padding")
            self._pad = 0

    def _finish(self, offset: int) -> None:
        """After the first zero block: the second, then only zeros (bounded) until the end."""
        self._ended = True
        if self._read(BLOCK) != _ZERO_BLOCK:
            raise BundleError(
                f"the tar end-of-archive at byte {offset} is incomplete: the bundle is "
                "truncated or damaged; copy it again"
            )
        trailing = self._read(MAX_TRAILING_BYTES + 1)
        if trailing.strip(b"\x00") or len(trailing) > MAX_TRAILING_BYTES:
            raise BundleError(
                f"data follows the tar end-of-archive at byte {offset}; the bundle is damaged "
                "or two bundles were concatenated"
            )


def _parse_header(block: bytes, offset: int) -> tuple[str, int, bytes]:
    """Name, size and type flag of a ustar (POSIX or GNU) header block."""
    stored = _octal(block[148:156], "checksum", offset)
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + bytes(8) + block[156:])
    signed += 8 * 0x20
    if stored not in (unsigned, signed):
        raise BundleError(
            f"the tar header at byte {offset} is corrupt (bad checksum): the bundle is damaged; "
            "copy it again"
        )
    magic = block[257:263]
    if magic not in (b"ustar\x00", b"ustar "):
        raise BundleError(f"the tar header at byte {offset} is not a ustar header")
    name = _text(block[0:100], offset)
    if magic == b"ustar\x00":
        prefix = _text(block[345:500], offset)
        if prefix:
            name = f"{prefix}/{name}"
    size_field = block[124:136]
    if size_field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        if size_field[0] != 0x80:
            raise BundleError(f"the tar header at byte {offset} has a negative size")
        size = int.from_bytes(size_field[1:], "big")
    else:
        size = _octal(size_field, "size", offset)
    typeflag = block[156:157]
    return name, size, typeflag


def _octal(field: bytes, what: str, offset: int) -> int:
    digits = field.split(b"\x00", 1)[0].strip(b" ")
    if not digits or not re.fullmatch(rb"[0-7]+", digits):
        raise BundleError(f"the tar header at byte {offset} has a malformed {what}")
    return int(digits, 8)


def _text(field: bytes, offset: int) -> str:
    raw = field.split(b"\x00", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"the tar header at byte {offset} has a name that is not UTF-8") from None


def _parse_pax(data: bytes) -> dict[str, str]:
    """Records "LEN key=value\\n"; only `path` and `size` matter here, others are ignored;
    GNU sparse keys and `linkpath` are refused."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        space = data.find(b" ", position, position + 24)
        length_text = data[position:space] if space > 0 else b""
        if not re.fullmatch(rb"[1-9][0-9]*", length_text):
            raise BundleError("a pax header is malformed (bad record length)")
        end = position + int(length_text)
        record = data[space + 1 : end]
        if end > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise BundleError("a pax header is malformed (bad record)")
        key_bytes, value_bytes = record[:-1].split(b"=", 1)
        try:
            key, value = key_bytes.decode("utf-8"), value_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError("a pax header holds text that is not UTF-8") from None
        if key.startswith("GNU.sparse") or key == "linkpath":
            raise BundleError(f'a pax header sets "{shown(key)}"; a bundle holds regular files')
        if "\x00" in value:
            raise BundleError(f'a pax header\'s "{shown(key)}" holds a NUL byte')
        records[key] = value
        position = end
    return records


def _pax_size(text: str, offset: int) -> int:
    if not re.fullmatch(r"[0-9]{1,20}", text):
        raise BundleError(f"the pax size of the member at byte {offset} is malformed")
    return int(text)


def iter_members(reader: TarReader) -> Iterator[TarMember]:
    while (member := reader.next()) is not None:
        yield member
