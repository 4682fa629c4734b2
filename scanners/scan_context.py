"""`ScanContext`: what one scan carries from format to format, and how containers recurse.

A container scanner (zip, tar, gzip...) never imports the dispatch: it hands each member to
`ScanContext.scan_member`, which checks the nesting depth and calls back into the dispatch the
context was built with (`recurse`). The archive budget, the record of which scanners ran and the
limits tree are shared by every level of one scan.
"""

from __future__ import annotations

import contextlib
import io
import mmap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import IO, BinaryIO

from scanners import archives
from scanners.archives import ArchiveBudget
from scanners.detect import FileFormat
from scanners.foreign_output import ForeignOutput, capture
from scanners.limits import ScanLimits
from scanners.pickles import Walked
from scanners.report import Finding, Outcome
from scanners.second_opinion import SecondOpinion, fickling_view

IN_MEMORY_BYTES = 256 * 1024 * 1024  # a pickle-bearing stream up to this is read, beyond mmapped

# (refined format or None, findings): what one format scanner says about one stream
Scanned = tuple[FileFormat | None, list[Finding]]
Recurse = Callable[[BinaryIO, int, str, "ScanContext"], tuple[FileFormat, list[Finding]]]
# a format scanner's scan: (stream, its size, its name, the context) -> what it found
Handler = Callable[[BinaryIO, int, str, "ScanContext"], Scanned]


@dataclass(slots=True)
class ScanContext:
    """One scan's shared state: limits, archive budget, the scanners that ran, the depth."""

    limits: ScanLimits
    budget: ArchiveBudget
    recurse: Recurse  # the dispatch: detect and scan a member as a file of its own
    scanners: dict[str, str] = field(default_factory=dict)
    depth: int = 0
    walked: Walked | None = None  # the top-level pickle walk, done as bytes arrived
    second_opinion: SecondOpinion | None = fickling_view  # on pickles with a finding only

    def ran(self, name: str, version: str) -> None:
        self.scanners[name] = version

    def scan_member(
        self, content: IO[bytes], size: int, member: str, *, named: bool = True
    ) -> list[Finding]:
        """Scan a container's member one level deeper; its findings name the member (unless
        `named` is False: the caller labels them)."""
        if self.depth + 1 > self.limits.archive.max_depth:
            return [
                archives.finding(
                    "ARCHIVE_DEPTH_RESOURCE",
                    Outcome.ERROR,
                    f"{member[:200]!r} is nested deeper than the limit",
                )
            ]
        inner = replace(self, depth=self.depth + 1)
        _, findings = self.recurse(content, size, member, inner)  # type: ignore[arg-type]
        self.scanners.update(inner.scanners)
        return [in_member(f, member) for f in findings] if named else findings

    def scan_embedded(self, blob: bytes, label: str) -> list[Finding]:
        """Bytes a file embeds (a Keras layer's `torch.save` payload), scanned one level deeper
        as a file of their own; the caller says where they came from."""
        return self.scan_member(io.BytesIO(blob), len(blob), label, named=False)

    def run_foreign(
        self, scanner: str, version: str, scan: Callable[[], list[Finding]]
    ) -> list[Finding]:
        """Run a scanner built on a third-party parser (h5py, onnx, gguf, jinja2...): what the
        library prints or warns is captured and kept with the findings, never on stdout."""
        self.ran(scanner, version)
        with capture() as caught:
            found = scan()
        return with_output(found, caught)


def in_member(finding: Finding, member: str) -> Finding:
    """`finding` as seen from the container: its message and details name the member."""
    shown = member[:200]
    details = dict(finding.details)
    inner = details.get("member")
    details["member"] = f"{shown}/{inner}" if isinstance(inner, str) else shown
    return replace(finding, message=f"{shown}: {finding.message}", details=details)


def with_output(found: list[Finding], caught: ForeignOutput) -> list[Finding]:
    """`found`, each carrying what the dependency said while it looked (when it said anything)."""
    said = caught.details()
    if not said:
        return found
    return [replace(f, details={**f.details, "output": said}) for f in found]


def stream_size(content: IO[bytes]) -> int:
    """The bytes a member really holds (rewound): what it inflated to, not what it declares."""
    content.seek(0, io.SEEK_END)
    size = content.tell()
    content.seek(0)
    return size


@contextlib.contextmanager
def whole_buffer(fh: BinaryIO, size: int, limits: ScanLimits) -> Iterator[bytes | mmap.mmap | None]:
    """The stream as one buffer the walker indexes: bytes when small, else a read-only mmap;
    None when it is over `max_pickle_bytes`."""
    if size <= IN_MEMORY_BYTES:
        fh.seek(0)
        yield fh.read(size)
        return
    if size > limits.max_pickle_bytes:
        yield None
        return
    try:
        fileno = fh.fileno()
    except (OSError, AttributeError, ValueError):
        fh.seek(0)
        yield fh.read(size)
        return
    with mmap.mmap(fileno, 0, access=mmap.ACCESS_READ) as mapped:
        yield mapped


@contextlib.contextmanager
def mapped_view(fh: BinaryIO, size: int) -> Iterator[bytes | mmap.mmap]:
    """The whole stream for a walk that will most likely stop within a few bytes: mapped, not
    read, when it is a real file (a multi-GB data file costs nothing until touched)."""
    try:
        fileno = fh.fileno()
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        fh.seek(0)
        yield fh.read(size)
        return
    with mmap.mmap(fileno, 0, access=mmap.ACCESS_READ) as mapped:
        yield mapped


def slice_of(data: bytes | mmap.mmap, offset: int, length: int) -> bytes:
    return bytes(data[offset : offset + length])


def read_at(fh: BinaryIO, offset: int, length: int) -> bytes:
    fh.seek(offset)
    return fh.read(length)
