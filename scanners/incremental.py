"""`StreamScan`: scan a file as its bytes arrive, saying how much of it may already go out.

Clearance by format (what the proxy may send before the verdict; it holds back the tail anyway):
- safetensors / GGUF: everything once the header is checked clean; 0 forever if it is not.
- zip (torch checkpoints, npz...): each member once its local entry is complete and scanned clean;
  the central directory is checked by `finish`.
- data and text formats: everything (protobuf too, unless its first bytes are a TensorFlow
  graph's: held whole, `finish` walks its operators).
- raw pickles, legacy torch and joblib dumps: as far as the pickle walk, run on the bytes as
  they arrive, has found nothing (`scanners.pickle_stream`); legacy torch's raw storages after
  its last pickle as they arrive.
- binary `detect` cannot name, when its first bytes already rule out a pickle (a first byte no
  unpickler accepts), every magic, tar header and zip signature a loader looks for and a
  protobuf parse (`scanners.opaque.StreamCheck`): as it arrives, all but the last 8 bytes seen
  and never the file's last `ZIP_TAIL_BYTES` (a zip directory there is checked by `finish`);
  an HDF5 signature at a user-block offset stops it there. `finish` decides opaque or unknown
  exactly as `scan_file` does.
- numpy, tar, compressed streams, formats that are also pickles (polyglots), other unknown
  binary: 0 (held whole until `finish`).

Memory: until the format is known, and for the formats held whole, bytes are kept in a spooled
temp file (memory up to `stream_memory_bytes`, then disk, removed by `finish`/`close`). Header and
data formats keep only the header or the detection prefix. Pickle-family streams keep only what
their `finish` needs (`scanners.pickle_stream` says what): usually a window of about 64 KiB, the
first and the last 64 KiB. `finish` runs exactly what `scan_file` runs, on what was kept (and,
for pickles, on the walk already done), so both give the same report for the same bytes.
"""

from __future__ import annotations

import io
import logging
import struct
import tempfile
import zlib
from typing import IO, BinaryIO, cast

from scanners import archives, dispatch, opaque, tf_graph, torch, zip_reader
from scanners.archives import ArchiveBudget, ArchiveError
from scanners.detect import FileFormat, PicklePrefix, detect_format, pickle_prefix
from scanners.limits import DEFAULT_LIMITS, ScanLimits
from scanners.pickle_stream import PickleStream
from scanners.registry import FormatScanner, StreamMode, scanner_for
from scanners.report import Finding, Outcome, ScanReport, Severity
from scanners.second_opinion import SecondOpinion, fickling_view
from scanners.zip_directory import ZipMember

logger = logging.getLogger(__name__)

_LOCAL = struct.Struct("<4s5H3L2H")
_BAD = (Outcome.MALICIOUS, Outcome.ERROR)


class StreamScan:
    """The incremental interface the ingest feeds as bytes arrive (see the module docstring)."""

    def __init__(
        self,
        *,
        name: str,
        size: int,
        limits: ScanLimits = DEFAULT_LIMITS,
        second_opinion: SecondOpinion | None = fickling_view,
    ) -> None:
        self._name = name
        self._size = size
        self._limits = limits
        self._second_opinion = second_opinion
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed in finish
            max_size=limits.stream_memory_bytes
        )
        self._received = 0
        self._kept = 0
        self._keep_limit: int | None = None  # None: keep everything
        self._format: FileFormat | None = None
        self._scanner: FormatScanner | None = None  # the registry's, once detected
        self._cleared = 0
        self._clear_all = False
        self._alarmed = False
        self._header_checked_at = 0
        self._header_judged = False  # the whole header was scanned: its verdict is final
        self._zip = _ZipProgress()
        self._pickles: PickleStream | None = None
        self._opaque: opaque.StreamCheck | None = None  # binary `detect` could not name
        self._finished = False
        self._crash: Exception | None = None  # a bug met while feeding: `finish` reports it
        self._cleared_before_crash = 0

    @property
    def cleared(self) -> int:
        """How many bytes from the start may be sent before the verdict (never decreases)."""
        if self._crash is not None:
            return self._cleared_before_crash
        if self._clear_all:
            return self._received
        if self._pickles is not None:
            return self._pickles.cleared
        return self._cleared

    @property
    def alarmed(self) -> bool:
        """Something malicious or unparseable is already seen: send nothing more."""
        return self._alarmed

    @property
    def clears_rest(self) -> bool:
        """Every byte from now on is cleared as it arrives (a clean header, a data format):
        a caller may stop feeding and count `cleared` as everything received."""
        return self._clear_all and not self._alarmed and self._crash is None

    @property
    def undecided(self) -> bool:
        """More bytes may still clear more or raise the alarm. False once the clearance is
        final (all from now on, none more, or alarmed): feeding more changes nothing until
        `finish`, which the proxy leaves to its full scan."""
        if self._alarmed or self._crash is not None or self._clear_all:
            return False
        if self._format is None or self._pickles is not None or self._opaque is not None:
            return True
        if self._mode == StreamMode.HEADER:
            return not self._header_judged
        return self._mode == StreamMode.ZIP_MEMBERS and not self._zip.stopped

    @property
    def failure(self) -> Exception | None:
        """The exception a scanner raised while feeding (the stream is alarmed since), if any:
        a `MemoryError` there is the process's memory limit, not the file's verdict."""
        return self._crash

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes, in order. Cheap once the format's header is decided."""
        if self._finished:
            raise ValueError("StreamScan.feed after finish")
        self._received += len(chunk)
        if self._received > self._size:
            self._alarm()
        if self._crash is not None:
            return  # nothing more is cleared; `finish` scans it all and says what failed
        try:
            self._advance(chunk)
        except (
            Exception
        ) as exc:  # hostile bytes: a scanner bug holds the file, never reaches the ingest
            logger.exception("stream scan crashed on %s", self._name[:200])
            self._cleared_before_crash = self.cleared
            self._crash = exc
            self._alarm()

    def _advance(self, chunk: bytes) -> None:
        if self._pickles is not None:
            self._pickles.feed(chunk)
            if self._pickles.alarmed:
                self._alarm()
            return
        self._keep(chunk)
        if self._format is None:
            self._detect()
        if self._format is None or self._alarmed:
            return
        if self._mode == StreamMode.HEADER and not self._clear_all and not self._header_judged:
            self._check_header()
        elif self._mode == StreamMode.ZIP_MEMBERS:
            self._advance_zip()
        elif self._opaque is not None:
            self._cleared = self._opaque.advance(self._read_at, self._received)

    @property
    def _mode(self) -> StreamMode | None:
        return None if self._scanner is None else self._scanner.stream

    def finish(self) -> ScanReport:
        """The final report, after the last byte; removes any temp file. Never raises for the
        content: a scanner bug is a SCANNER_CRASHED finding (held)."""
        self._finished = True
        try:
            return self._finish()
        except (
            Exception
        ) as exc:  # hostile bytes: a scanner bug holds the file, never reaches the ingest
            logger.exception("stream scan crashed on %s", self._name[:200])
            self.close()
            return ScanReport(
                path=self._name,
                file_format=FileFormat.UNKNOWN.value,
                size=self._received,
                findings=(_crashed(exc),),
                scanners={},
                elapsed_s=0.0,
            )

    def _finish(self) -> ScanReport:
        if self._pickles is not None:
            return self._finish_pickles(self._pickles)
        try:
            if self._format is None:
                self._detect(final=True)
            stream = self._pickle_stream()
            if stream is not None:
                return self._finish_pickles(stream)
            self._spool.seek(0)
            report = dispatch.scan_stream(
                cast(BinaryIO, self._spool),
                self._report_size(),
                self._name,
                limits=self._limits,
                second_opinion=self._second_opinion,
            )
        finally:
            self._spool.close()
        return self._checked(report)

    def close(self) -> None:
        """Drop what was kept (when the ingest gives up before `finish`)."""
        self._finished = True
        self._spool.close()
        if self._pickles is not None:
            self._pickles.close()

    @property
    def kept_bytes(self) -> int:
        """Bytes held for `finish` in a temp file (memory, then disk): the whole stream for the
        formats held whole, only what `finish` needs for pickle-family streams (tests, bench)."""
        if self._pickles is not None:
            return self._pickles.kept_bytes
        return 0 if self._spool.closed else self._kept

    def _pickle_stream(self) -> PickleStream | None:
        return self._pickles

    def _finish_pickles(self, stream: PickleStream) -> ScanReport:
        try:
            walked, view = stream.finish()
            with view:
                report = dispatch.scan_stream(
                    cast(BinaryIO, view),
                    self._received,
                    self._name,
                    limits=self._limits,
                    walked=walked,
                    second_opinion=self._second_opinion,
                )
        finally:
            stream.close()
        return self._checked(report)

    def _checked(self, report: ScanReport) -> ScanReport:
        """The report with what `finish` adds: a size that differs, a crash while feeding."""
        if self._received != self._size:
            report = _with_finding(report, _size_mismatch(self._received, self._size))
        if self._crash is not None:
            report = _with_finding(report, _crashed(self._crash))
        return report

    # ---- internals ----------------------------------------------------------------------------
    def _report_size(self) -> int:
        # Header and data formats keep a prefix only: their scanners need the full size.
        return self._received

    def _keep(self, chunk: bytes) -> None:
        if self._keep_limit is not None:
            room = self._keep_limit - self._kept
            if room <= 0:
                return
            chunk = chunk[:room]
        self._spool.seek(0, io.SEEK_END)
        self._spool.write(chunk)
        self._kept += len(chunk)

    def _prefix(self, length: int) -> bytes:
        self._spool.seek(0)
        data = self._spool.read(length)
        self._spool.seek(0, io.SEEK_END)
        return data

    def _read_at(self, offset: int, length: int) -> bytes:
        self._spool.seek(offset)
        data = self._spool.read(length)
        self._spool.seek(0, io.SEEK_END)
        return data

    def _detect(self, *, final: bool = False) -> None:
        need = min(self._size, self._limits.detect_prefix_bytes)
        if self._received < need and not final:
            return
        prefix = self._prefix(need)
        self._format = detect_format(prefix, self._size, self._name)
        self._scanner = scanner_for(self._format)
        mode = self._scanner.stream
        if mode == StreamMode.PICKLE:
            self._start_pickles()
            return
        if pickle_prefix(prefix, len(prefix), self._size) != PicklePrefix.NOT_PICKLE:
            return  # also a pickle (a polyglot) or not yet ruled out: held whole, all kept
        if self._format == FileFormat.PROTOBUF and tf_graph.graph_kind(
            prefix, self._size, self._name
        ):
            return  # a TensorFlow graph: its operators are walked by `finish`, held whole
        if mode in (StreamMode.CLEARED, StreamMode.CLEARED_PREFIX):
            self._clear_all = True
        if mode == StreamMode.OPAQUE:
            self._opaque = opaque.StreamCheck(prefix, self._size)
        if mode == StreamMode.CLEARED_PREFIX:
            self._keep_limit = self._limits.detect_prefix_bytes

    def _start_pickles(self) -> None:
        """Hand the stream to the pickle walk, with the bytes so far; stop spooling."""
        stream = PickleStream(self._size, self._limits)
        self._spool.seek(0)
        while chunk := self._spool.read(1 << 20):
            stream.feed(chunk)
        self._spool.close()
        self._pickles = stream
        if stream.alarmed:
            self._alarm()

    def _check_header(self) -> None:
        scanner = self._scanner
        if scanner is None:
            return
        # header_size re-parses from the start: call it only when the data doubled (linear work)
        if (
            self._received < max(2 * self._header_checked_at, 64 * 1024)
            and self._received < self._size
        ):
            return
        self._header_checked_at = self._received
        kept = self._prefix(self._kept)
        needed = scanner.header_size(kept, self._size, self._limits)
        if needed is None or needed > len(kept):
            return
        self._keep_limit = max(needed, self._limits.detect_prefix_bytes)
        ctx = dispatch.new_context(self._limits, second_opinion=None)
        _, found = scanner.scan(io.BytesIO(kept[:needed]), self._size, self._name, ctx)
        self._header_judged = True  # more bytes do not change what the header says
        if any(f.outcome in _BAD for f in found):
            self._alarm()
        elif all(f.outcome == Outcome.CLEAN for f in found):
            self._clear_all = True

    def _alarm(self) -> None:
        self._alarmed = True

    def _advance_zip(self) -> None:
        """Clear zip members one by one as their local entries complete and scan clean."""
        progress = self._zip
        while not progress.stopped:
            entry = self._local_entry(progress.next_offset)
            if entry is None:
                return
            info, data_start, flags = entry
            data_end = data_start + info.compress_size
            if self._received < data_end:
                return
            outcome = self._scan_local_member(info, data_start)
            if outcome in _BAD:
                self._alarm()
            if outcome != Outcome.CLEAN or flags & 0x1:
                progress.stopped = True
                return
            progress.next_offset = data_end + progress.descriptor_len
            progress.descriptor_len = 0
            progress.descriptor = _DescriptorSearch()
            self._cleared = max(self._cleared, data_end)

    def _local_entry(self, offset: int) -> tuple[_LocalInfo, int, int] | None:
        if self._received < offset + _LOCAL.size:
            return None
        self._spool.seek(offset)
        raw = self._spool.read(_LOCAL.size)
        if raw[:4] != b"PK\x03\x04":
            self._zip.stopped = True  # the central directory (or junk): `finish` decides
            self._spool.seek(0, io.SEEK_END)
            return None
        fields = _LOCAL.unpack(raw)
        flags, method, crc, compressed, file_size = (
            fields[2],
            fields[3],
            fields[6],
            fields[7],
            fields[8],
        )
        name_len, extra_len = fields[9], fields[10]
        if self._received < offset + _LOCAL.size + name_len + extra_len:
            self._spool.seek(0, io.SEEK_END)
            return None
        name = self._spool.read(name_len).decode("utf-8", "replace")
        self._spool.seek(0, io.SEEK_END)
        data_start = offset + _LOCAL.size + name_len + extra_len
        if compressed == 0xFFFFFFFF or archives.unsafe_member_name(name):
            self._zip.stopped = True  # ZIP64 sizes or a bad name: `finish` decides
            return None
        if flags & 0x8 and compressed == 0:
            # torch writes sizes after the data (a data descriptor): find it, stored members only
            if method != 0:
                self._zip.stopped = True
                return None
            found = self._zip.descriptor.search(self._spool, data_start, self._received)
            self._spool.seek(0, io.SEEK_END)
            if found is None:
                return None
            crc, compressed, descriptor_len = found
            file_size = compressed
            self._zip.descriptor_len = descriptor_len
        return _LocalInfo(name, method, compressed, file_size, crc), data_start, flags

    def _scan_local_member(self, info: _LocalInfo, data_start: int) -> Outcome:
        name = info.filename
        if torch.is_storage_member(name) and self._zip.seen_data_pkl:
            # raw tensor bytes: torch never unpickles them, but it inflates them (issue 13)
            return self._storage_ratio(info)
        if name.endswith("data.pkl"):
            self._zip.seen_data_pkl = True
        if torch.is_torchscript_member(name):
            return Outcome.REVIEW
        member = ZipMember.of(info, 0)
        member.data_offset, member.local_name = data_start, name
        budget = ArchiveBudget(self._limits.archive)
        try:
            content, found = zip_reader.open_zip_member(self._spool, member, budget)  # type: ignore[arg-type]
        except ArchiveError as exc:
            self._spool.seek(0, io.SEEK_END)
            return exc.finding.outcome
        self._spool.seek(0, io.SEEK_END)
        with content:
            report = dispatch.scan_stream(
                content,  # type: ignore[arg-type]
                info.file_size,
                name,
                limits=self._limits,
                second_opinion=None,  # only the outcome matters here: `finish` has the details
            )
        worst = report.outcome
        for finding in found:
            if finding.outcome.rank > worst.rank:
                worst = finding.outcome
        return worst

    def _storage_ratio(self, info: _LocalInfo) -> Outcome:
        """A storage record's declared inflation, checked as `scan_file` checks every member
        (a zip bomb in a storage record): ERROR over the ratio limit, else CLEAN."""
        limits = self._limits.archive
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_grace_bytes and ratio > limits.max_ratio:
            return Outcome.ERROR
        if info.file_size > limits.max_member_bytes:
            return Outcome.ERROR
        return Outcome.CLEAN


class _ZipProgress:
    __slots__ = ("descriptor", "descriptor_len", "next_offset", "seen_data_pkl", "stopped")

    def __init__(self) -> None:
        self.next_offset = 0
        self.stopped = False
        self.seen_data_pkl = False
        self.descriptor = _DescriptorSearch()
        self.descriptor_len = 0


class _DescriptorSearch:
    """Finds a stored member's data descriptor (`PK\x07\x08`, CRC, sizes) as bytes arrive.

    A candidate counts only if its sizes equal the distance from the data start and its CRC
    matches the bytes before it; each byte is read once (a cursor and a running CRC)."""

    __slots__ = ("_crc", "_cursor")

    def __init__(self) -> None:
        self._cursor = -1
        self._crc = 0

    def search(self, spool: IO[bytes], start: int, received: int) -> tuple[int, int, int] | None:
        if self._cursor < 0:
            self._cursor = start
        # keep 24 bytes back: a descriptor may straddle what arrived
        end = received - 24
        while self._cursor < end:
            spool.seek(self._cursor)
            chunk = spool.read(min(1 << 20, end - self._cursor))
            at = chunk.find(b"PK\x07\x08")
            while at >= 0:
                found = self._check(
                    spool, start, self._cursor + at, zlib.crc32(chunk[:at], self._crc)
                )
                if found is not None:
                    return found
                at = chunk.find(b"PK\x07\x08", at + 1)
            self._crc = zlib.crc32(chunk, self._crc)
            self._cursor += len(chunk)
        return None

    @staticmethod
    def _check(spool: IO[bytes], start: int, at: int, crc: int) -> tuple[int, int, int] | None:
        spool.seek(at + 4)
        raw = spool.read(20)
        size = at - start
        got_crc, small_c, small_u = struct.unpack_from("<3L", raw)
        if got_crc == crc and small_c == size and small_u == size:
            return crc, size, 16
        big_c, big_u = struct.unpack_from("<2Q", raw, 4)
        if got_crc == crc and big_c == size and big_u == size:
            return crc, size, 24
        return None


class _LocalInfo:
    """The fields of `zipfile.ZipInfo` that `zip_reader.open_zip_member` reads."""

    def __init__(self, name: str, method: int, compressed: int, file_size: int, crc: int) -> None:
        self.filename = name
        self.compress_type = method
        self.compress_size = compressed
        self.file_size = file_size
        self.CRC = crc
        self.flag_bits = 0


def _size_mismatch(received: int, size: int) -> Finding:
    return Finding(
        "stream",
        "STREAM_SIZE_MISMATCH",
        Severity.HIGH,
        Outcome.ERROR,
        f"{received} bytes arrived for a file advertised as {size} bytes",
        {"received": received, "advertised": size},
    )


def _crashed(exc: Exception) -> Finding:
    return Finding(
        "stream",
        "SCANNER_CRASHED",
        Severity.HIGH,
        Outcome.ERROR,
        f"the stream scan failed on this file ({type(exc).__name__}); it is held until an admin "
        "looks at it",
        {"error": str(exc)[:200]},
    )


def _with_finding(report: ScanReport, finding: Finding) -> ScanReport:
    return ScanReport(
        path=report.path,
        file_format=report.file_format,
        size=report.size,
        findings=(*report.findings, finding),
        scanners=report.scanners,
        elapsed_s=report.elapsed_s,
    )
