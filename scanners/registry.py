"""The one registry of format scanners: which scanner takes each detected format, and how.

`detect_format` names a file's format from its content (one ordered decision: precedence between
formats is the point of it); `SCANNERS` below says, for each format it can name, the one scanner
that takes it: how `scan_file`/`scan_stream` scan it, how `StreamScan` clears its bytes as they
arrive (`StreamMode`, and `header_size` for header formats), and which polyglot checks the
dispatch adds. Adding a format is one detection rule and one entry here; nothing dispatches by
module name, and no other table lists formats.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from scanners import archive_scan, data_scan, pickle_scan, text_scan, zip_scan
from scanners.detect import FileFormat
from scanners.limits import ScanLimits
from scanners.scan_context import Handler, ScanContext, Scanned

HeaderSize = Callable[[bytes, int, ScanLimits], "int | None"]


class StreamMode(enum.StrEnum):
    """How `StreamScan` treats a format's bytes before `finish` (the proxy holds a tail anyway)."""

    HELD = "held"  # kept whole, nothing cleared until `finish`
    HEADER = "header"  # everything once the header (`header_size` bytes) scans clean
    CLEARED = "cleared"  # cleared as it arrives, kept whole for `finish` (text, JSON)
    CLEARED_PREFIX = "cleared-prefix"  # cleared as it arrives, only the detection prefix kept
    PICKLE = "pickle"  # walked as it arrives (`scanners.pickle_stream`)
    ZIP_MEMBERS = "zip-members"  # each member once its local entry is complete and clean
    OPAQUE = "opaque"  # as far as `scanners.opaque.StreamCheck` rules loaders out


class FormatScanner(Protocol):
    """One format's scanner: the detected formats it takes, its scan, its streaming."""

    @property
    def name(self) -> str: ...

    @property
    def formats(self) -> frozenset[FileFormat]:
        """The formats `detect_format` names that this scanner takes (and no other does)."""
        ...

    @property
    def stream(self) -> StreamMode: ...

    @property
    def also_pickle(self) -> bool:
        """The file may also be a pickle (a polyglot): the dispatch checks it as one too."""
        ...

    @property
    def also_zip(self) -> bool:
        """The file may end with a zip directory (a polyglot): checked as a zip too."""
        ...

    def header_size(self, prefix: bytes, size: int, limits: ScanLimits) -> int | None:
        """Header formats: bytes the header takes, once `prefix` shows it (None: not yet)."""
        ...

    def scan(self, fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
        """(refined format or None, findings) for the `size` bytes of `fh`; reads its own
        limits from `ctx.limits`. May raise only for a scanner bug (the dispatch holds it)."""
        ...


@dataclass(frozen=True, slots=True)
class Registered:
    """A `FormatScanner` made of a scan function and what the registry says about it."""

    name: str
    formats: frozenset[FileFormat]
    handler: Handler
    stream: StreamMode = StreamMode.HELD
    header: HeaderSize | None = None
    also_pickle: bool = True
    also_zip: bool = False

    def header_size(self, prefix: bytes, size: int, limits: ScanLimits) -> int | None:
        return None if self.header is None else self.header(prefix, size, limits)

    def scan(self, fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
        return self.handler(fh, size, name, ctx)


def _one(*formats: FileFormat) -> frozenset[FileFormat]:
    return frozenset(formats)


_F = FileFormat
SCANNERS: tuple[FormatScanner, ...] = (
    Registered("empty", _one(_F.EMPTY), data_scan.scan_empty, StreamMode.CLEARED_PREFIX,
               also_pickle=False),
    Registered("safetensors", _one(_F.SAFETENSORS), data_scan.scan_safetensors,
               StreamMode.HEADER, data_scan.safetensors_header_size),
    Registered("gguf", _one(_F.GGUF), data_scan.scan_gguf, StreamMode.HEADER,
               data_scan.gguf_header_size),
    Registered("zip", _one(_F.ZIP), zip_scan.scan_zip, StreamMode.ZIP_MEMBERS),
    Registered("tar", _one(_F.TAR), archive_scan.scan_tar),
    Registered("gzip", _one(_F.GZIP), archive_scan.compressed_scanner("gzip")),
    Registered("bzip2", _one(_F.BZIP2), archive_scan.compressed_scanner("bzip2")),
    Registered("xz", _one(_F.XZ), archive_scan.compressed_scanner("xz")),
    Registered("zlib", _one(_F.ZLIB), archive_scan.compressed_scanner("zlib")),
    Registered("lzma", _one(_F.LZMA), archive_scan.compressed_scanner("lzma")),
    Registered("not-opened", _one(_F.LZ4, _F.SEVEN_Z, _F.ZSTD), archive_scan.scan_not_opened),
    Registered("pickle", _one(_F.PICKLE, _F.TORCH_LEGACY), pickle_scan.scan_pickle,
               StreamMode.PICKLE, also_pickle=False, also_zip=True),
    Registered("numpy", _one(_F.NUMPY), pickle_scan.scan_npy, also_zip=True),
    Registered("hdf5", _one(_F.HDF5), data_scan.scan_hdf5),
    Registered("onnx", _one(_F.ONNX), data_scan.scan_onnx),
    Registered("protobuf", _one(_F.PROTOBUF), data_scan.scan_protobuf,
               StreamMode.CLEARED_PREFIX),
    Registered("data", _one(_F.MSGPACK, _F.DATA), data_scan.scan_data, StreamMode.CLEARED_PREFIX),
    Registered("json", _one(_F.JSON), text_scan.scan_json, StreamMode.CLEARED),
    Registered("text", _one(_F.TEXT), text_scan.scan_text, StreamMode.CLEARED),
    Registered("unknown", _one(_F.UNKNOWN), data_scan.scan_unknown, StreamMode.OPAQUE,
               also_zip=True),
)  # fmt: skip
_BY_FORMAT = {file_format: scanner for scanner in SCANNERS for file_format in scanner.formats}


def scanner_for(file_format: FileFormat) -> FormatScanner:
    """The scanner registered for a detected format. Raises KeyError for a format only scanners
    refine to (`FileFormat.TORCH_ZIP`...), which detection never names."""
    return _BY_FORMAT[file_format]
