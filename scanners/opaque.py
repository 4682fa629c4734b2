"""Opaque data (DESIGN.md rule 10): bytes no loader would execute, told from unknown structure.

`scanners.detect` names every format with a magic at the start (pickle, zip, tar `ustar`, the
compressed streams, npy, HDF5 at 0-2048, safetensors, GGUF, protobuf, data formats...). What is
left is binary it cannot name: `dispatch` releases it as opaque data (format `opaque`, one INFO
`DATA_OPAQUE` finding, outcome clean) only when nothing is where an ML loader looks for something
to open, and otherwise keeps it `unknown` (`FORMAT_UNKNOWN`, held) naming what it found:

- **the start**, where `pickle.load`, `joblib.load`, `np.load(allow_pickle=True)` and
  `torch.load`'s legacy path read: a pickle that completes, or that imports or calls anything, or
  that the walker cannot finish within its limits (`PickleWalker`, over the whole file: a pickle
  may break long after its payload); a tar header whose checksum holds (`tarfile` needs no
  `ustar`); joblib's compressor prefixes that `detect` does not require in full (`ZF`, `BZ`,
  `5d 00`); an executable, Python bytecode or an archive format the scanners do not open;
- **zip signatures** in the first `detect_prefix_bytes` and in the last `ZIP_TAIL_BYTES`, where
  `zipfile`, `torch.load`, `np.load`, joblib and keras find a zip's end-of-central-directory;
- **the HDF5 signature** at every user-block offset h5py tries: 0, 512, 1024, 2048... to the end;
- **a protobuf parse of the whole file**: ONNX and TensorFlow read a file as one message, so a
  file whose every byte parses as protobuf fields could be opened as a graph.

Random bytes, raw tensors (`ndarray.tofile`, OpenVINO `.bin`, TensorFlow checkpoint shards) and
TensorFlow's checkpoint `.index` (an SSTable of tensor names and offsets: TensorFlow's bundle
reader parses it, never runs it) pass every check. The pickle and zip polyglot checks of
`scanners.dispatch` still run on every opaque candidate, and a candidate they flag is not opaque.

`StreamCheck` is `StreamScan`'s side: how far such a file may go out before its last byte.
Nothing here unpickles, imports or loads anything.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

from scanners.archives import ZIP_SIGNATURE, ZIP_TAIL_BYTES
from scanners.limits import ScanLimits
from scanners.pickles import OPCODE_BYTES, Buffer, PickleWalker, WalkResult
from scanners.report import Finding, JsonValue, Outcome, Severity

SCANNER = "opaque"
SCANNER_VERSION = "1.0"
CODE = "DATA_OPAQUE"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_PROTOBUF_FIELDS = 1_000_000  # a parse still going after this many fields counts as protobuf
CHECKED = (
    "pickle from the start",
    "tar header",
    "compression prefixes",
    "executables and bytecode",
    "other archives",
    "zip signatures at the start and the end",
    "hdf5 signature at user-block offsets",
    "protobuf",
)

# Magic at offset 0 of something a loader, the dynamic linker or Python could open or run.
_START_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"ZF", "compressed", "a joblib zlib file header (joblib.load decompresses it)"),
    (b"BZ", "compressed", "a bzip2 prefix (joblib.load decompresses what starts so)"),
    (b"\x5d\x00", "compressed", "an LZMA prefix (joblib.load decompresses what starts so)"),
    (b"\x7fELF", "executable", "an ELF executable or shared library"),
    (b"MZ", "executable", "a Windows executable or DLL"),
    (b"\xfe\xed\xfa\xce", "executable", "a Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "executable", "a Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "executable", "a Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "executable", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "executable", "a Mach-O universal binary or Java class"),
    (b"\x00asm", "executable", "a WebAssembly module"),
    (b"Rar!\x1a\x07", "archive", "a RAR archive"),
    (b"MSCF\x00\x00\x00\x00", "archive", "a cabinet archive"),
    (b"!<arch>\n", "archive", "an ar archive"),
    (b"xar!", "archive", "a xar archive"),
    (b"\xc7\x71", "archive", "a cpio archive"),
    (b"070701", "archive", "a cpio archive"),
    (b"070702", "archive", "a cpio archive"),
    (b"070707", "archive", "a cpio archive"),
)
_TAR_BLOCK = 512
_PYC_HEADER = 16


@dataclass(frozen=True, slots=True)
class Structure:
    """Something a loader could open, found where that loader looks."""

    kind: str  # pickle, zip, tar, hdf5, protobuf, compressed, executable, archive
    offset: int
    what: str  # for people: what was found, and where

    def details(self) -> dict[str, JsonValue]:
        return {"structure": self.kind, "offset": self.offset, "found": self.what[:200]}


def opaque_finding() -> Finding:
    """The one finding of a file released as opaque data."""
    return Finding(
        SCANNER,
        CODE,
        Severity.INFO,
        Outcome.CLEAN,
        "opaque data: no pickle, archive or other container a loader would open was found at "
        "any offset a loader reads",
        {"checked": list(CHECKED)},
    )


def openable_structure(data: Buffer, size: int, limits: ScanLimits) -> Structure | None:
    """The first thing in `data` (a whole file of `size` bytes) that a loader could open, or
    None: the file is opaque data."""
    prefix = bytes(data[: min(size, limits.detect_prefix_bytes)])
    found = start_structure(prefix, size)
    if found is not None:
        return found
    tail_at = max(0, size - ZIP_TAIL_BYTES)
    found = zip_signature(bytes(data[tail_at:size]), tail_at, "the last 64 KiB")
    if found is not None:
        return found
    for offset in hdf5_offsets(size):
        if data[offset : offset + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE:
            return _hdf5(offset)
    if protobuf_parse(data, size, size) != Protobuf.NOT_PROTOBUF:
        return Structure("protobuf", 0, "the whole file parses as protobuf fields")
    return pickle_structure(data, size, limits)


def start_structure(prefix: bytes, size: int) -> Structure | None:
    """What the first bytes alone show: a magic, a tar header, a zip signature."""
    for magic, kind, what in _START_MAGIC:
        if prefix.startswith(magic):
            return Structure(kind, 0, what)
    if size >= _PYC_HEADER and prefix[2:4] == b"\r\n" and _pyc_magic(prefix[:2]):
        return Structure("executable", 0, "a Python bytecode (.pyc) header")
    if tar_checksum_holds(prefix[:_TAR_BLOCK]):
        return Structure("tar", 0, "a tar header whose checksum holds")
    return zip_signature(prefix, 0, "the first bytes")


def _pyc_magic(first: bytes) -> bool:
    """CPython's bytecode magic numbers: 3000-3999 for Python 3 so far, 62211 for 2.7."""
    number = int.from_bytes(first, "little")
    return 3000 <= number < 4000 or number == 62211


def zip_signature(window: bytes, base: int, where: str) -> Structure | None:
    found = ZIP_SIGNATURE.search(window)
    if found is None:
        return None
    offset = base + found.start()
    return Structure("zip", offset, f"a zip signature in {where} (offset {offset})")


def _hdf5(offset: int) -> Structure:
    return Structure("hdf5", offset, f"an HDF5 signature at user-block offset {offset}")


def hdf5_offsets(size: int) -> list[int]:
    """Where h5py looks for the HDF5 signature in a file of `size` bytes: 0, then 512, 1024,
    2048... doubling to the end."""
    out = [0] if size >= len(HDF5_SIGNATURE) else []
    offset = 512
    while offset + len(HDF5_SIGNATURE) <= size:
        out.append(offset)
        offset *= 2
    return out


def tar_checksum_holds(block: bytes) -> bool:
    """`tarfile` reads a header whose checksum field matches (no `ustar` magic needed)."""
    if len(block) < _TAR_BLOCK or block.count(0) == _TAR_BLOCK:
        return False  # a zero block is tarfile's end of archive
    field = block[148:156]
    if field[0] in (0o200, 0o377):  # base-256, as tarfile.nti reads it
        stored = int.from_bytes(field[1:], "big")
        if field[0] == 0o377:
            stored -= 256 ** (len(field) - 1)
    else:
        try:
            stored = int(field.split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            return False
    unsigned = 256 + sum(block[:148]) + sum(block[156:512])
    signed = 256 + sum(struct.unpack("148b", block[:148])) + sum(struct.unpack("356b", block[156:]))
    return stored in (unsigned, signed)


class Protobuf(enum.Enum):
    """What walking a file's top-level protobuf fields says."""

    NOT_PROTOBUF = "not-protobuf"  # a parser would fail: no graph could come out of it
    PROTOBUF = "protobuf"  # every byte parses as fields (or the walk ran past its limit)
    NEEDS_MORE = "needs-more"  # the bytes given ran out before the walk could decide


def protobuf_parse(data: Buffer, available: int, size: int) -> Protobuf:
    """Walk the top-level fields of a `size`-byte file of which `data[:available]` is known,
    as a protobuf parser would: well-formed tags and wire types, lengths inside the file,
    groups closed, the last field ending exactly at the end. Nested messages are not parsed
    (a parser skips unknown fields whole): lenient, so fail closed."""
    pos = 0
    groups: list[int] = []
    for _ in range(MAX_PROTOBUF_FIELDS):
        if pos >= size:
            return Protobuf.PROTOBUF if pos == size and not groups else Protobuf.NOT_PROTOBUF
        key = _varint(data, pos, available)
        if not isinstance(key, tuple):
            return _ran_out(key, available, size)
        tag, pos = key
        field, wire = tag >> 3, tag & 7
        if field == 0 or tag > 0xFFFFFFFF:
            return Protobuf.NOT_PROTOBUF
        if wire == 0:
            value = _varint(data, pos, available)
            if not isinstance(value, tuple):
                return _ran_out(value, available, size)
            pos = value[1]
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length = _varint(data, pos, available)
            if not isinstance(length, tuple):
                return _ran_out(length, available, size)
            if length[0] > 0x7FFFFFFF:
                return Protobuf.NOT_PROTOBUF
            pos = length[1] + length[0]
        elif wire == 3:
            groups.append(field)
        elif wire == 4 and groups and groups[-1] == field:
            groups.pop()
        else:
            return Protobuf.NOT_PROTOBUF
    return Protobuf.PROTOBUF


def _ran_out(short: bool, available: int, size: int) -> Protobuf:
    if short and available < size:
        return Protobuf.NEEDS_MORE
    return Protobuf.NOT_PROTOBUF


def _varint(data: Buffer, pos: int, available: int) -> tuple[int, int] | bool:
    """(value, next position); True when the bytes ran out first; False when over 10 bytes."""
    value = 0
    for i in range(10):
        if pos + i >= available:
            return True
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    return False


def pickle_structure(data: Buffer, size: int, limits: ScanLimits) -> Structure | None:
    """The pickle `pickle.load` would read from byte 0, if it could do anything at all.

    A first byte that is no opcode fails at once. Otherwise the walk covers the whole file: a
    pickle that completes, imports or calls anything before it breaks, or outruns a limit is a
    structure (a payload placed before a deliberate breakage still runs). A stream that starts
    with a protocol newer than the walker knows is walked again past it: a newer Python may
    load it, and what follows is what it would run."""
    if size == 0 or data[0] not in OPCODE_BYTES:
        return None
    result = _walk(data, size, 0, limits)
    found = _acts(result)
    if found is not None:
        return found
    broke = next((f for f in result.findings if f.code == "PICKLE_MALFORMED"), None)
    reason = broke.details.get("reason") if broke is not None else None
    if isinstance(reason, str) and reason.startswith("unsupported pickle protocol"):
        if broke is not None and broke.details.get("offset") != 0:
            return Structure("pickle", 0, f"a pickle from the start uses {reason[12:]}")
        return _acts(_walk(data, size, 2, limits))
    return None


def _walk(data: Buffer, size: int, pos: int, limits: ScanLimits) -> WalkResult:
    walker = PickleWalker(data, size, limits.pickle, joblib=True)
    walker.walk_all(pos)
    return walker.result


def _acts(result: WalkResult) -> Structure | None:
    """What in a walk means a loader would do something: None for a walk that only broke."""
    if result.pickles:
        return Structure("pickle", 0, "a complete pickle from the start")
    if result.globals:
        first = result.globals[0]
        return Structure(
            "pickle",
            first.offset,
            f"a pickle from the start imports {first.dotted[:200]} before it breaks",
        )
    if result.calls or result.nested:
        return Structure("pickle", 0, "a pickle from the start calls something before it breaks")
    for finding in result.findings:
        if finding.code != "PICKLE_MALFORMED":
            offset = finding.details.get("offset")
            return Structure(
                "pickle",
                offset if isinstance(offset, int) else 0,
                f"a pickle from the start the walker could not rule out ({finding.code})",
            )
    return None


class StreamCheck:
    """How far `StreamScan` may clear a file `detect` could not name, as its bytes arrive.

    Clearing starts only when the first bytes settle everything they can: no structure at the
    start, a first byte no unpickler accepts (a pickle walk would need the whole file), and a
    protobuf walk that already failed. Then every arrived byte is cleared but the last 8 (an
    HDF5 signature not yet whole) and never the last `ZIP_TAIL_BYTES` of the file (where a zip
    directory could be); an HDF5 signature at a user-block offset stops it for good. `finish`
    still decides with `dispatch`, exactly as `scan_file` does."""

    def __init__(self, prefix: bytes, size: int) -> None:
        self._size = size
        self.cleared = 0
        self.stopped = (
            start_structure(prefix, size) is not None
            or not prefix
            or prefix[0] in OPCODE_BYTES
            or protobuf_parse(prefix, len(prefix), size) != Protobuf.NOT_PROTOBUF
        )
        self._offsets = hdf5_offsets(size)

    def advance(self, read: Callable[[int, int], bytes], received: int) -> int:
        """Check what `received` bytes allow (`read(offset, length)` reads them); the new
        clearance (never smaller than before)."""
        while not self.stopped and self._offsets:
            offset = self._offsets[0]
            if offset + len(HDF5_SIGNATURE) > received:
                break
            self._offsets.pop(0)
            if read(offset, len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                self.stopped = True
        if not self.stopped:
            limit = min(received - len(HDF5_SIGNATURE), self._size - ZIP_TAIL_BYTES)
            self.cleared = max(self.cleared, limit)
        return self.cleared
