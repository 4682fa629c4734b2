"""Tar archives and compressed streams as format scanners (zips: `scanners.zip_scan`).

A tar is refined to legacy torch (`sys_info`, `pickle`, `storages`, `tensors`) or NeMo (a
`model_config.yaml`); a gzip/bzip2/xz/zlib/lzma stream is inflated within the archive budget and
scanned as the file it holds. 7z, zstd and lz4 are not opened: held for review.
"""

from __future__ import annotations

import functools
from typing import IO, BinaryIO

from scanners import archives, nemo, torch
from scanners.archives import ArchiveError
from scanners.detect import FileFormat
from scanners.pickle_scan import walk_findings
from scanners.pickles import PickleWalker
from scanners.report import Finding, Outcome, Severity
from scanners.scan_context import (
    Handler,
    ScanContext,
    Scanned,
    in_member,
    slice_of,
    stream_size,
)

_LEGACY_TAR_MEMBERS = frozenset({"sys_info", "pickle", "storages", "tensors"})


def scan_tar(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    """Every member scanned (legacy torch's `storages`/`tensors` walked as torch reads them)."""
    ctx.ran(archives.SCANNER, archives.SCANNER_VERSION)
    findings: list[Finding] = []
    names: list[str] = []
    try:
        for member, content, member_findings in archives.iter_tar_members(fh, ctx.budget):
            names.append(member)
            findings.extend(member_findings)
            if content is None:
                continue
            with content:
                findings.extend(_scan_tar_member(content, member, ctx))
    except ArchiveError as exc:
        findings.append(exc.finding)
    if set(names) >= _LEGACY_TAR_MEMBERS:
        return FileFormat.TORCH_TAR, findings
    return (FileFormat.NEMO if any(nemo.is_nemo_config(n) for n in names) else None), findings


def _scan_tar_member(content: IO[bytes], member: str, ctx: ScanContext) -> list[Finding]:
    size = stream_size(content)
    if member not in ("storages", "tensors"):
        return ctx.scan_member(content, size, member)
    ctx.ran(torch.SCANNER, torch.SCANNER_VERSION)
    data = content.read(size)
    walker = PickleWalker(data, len(data), ctx.limits.pickle)
    (torch.walk_tar_storages if member == "storages" else torch.walk_tar_tensors)(walker)
    found = walk_findings(walker.result, functools.partial(slice_of, data), size, ctx)
    return [in_member(f, member) for f in found]


def compressed_scanner(kind: str) -> Handler:
    """The scanner of one kind of compressed stream (`archives.STREAM_KINDS`): inflated within
    the budget and scanned as what it holds."""
    if kind not in archives.STREAM_KINDS:
        raise ValueError(f"no decompressor for {kind!r}")

    def scan_compressed(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
        ctx.ran(archives.SCANNER, archives.SCANNER_VERSION)
        try:
            content = archives.decompress_stream(fh, kind, size, ctx.budget)
        except ArchiveError as exc:
            return None, [exc.finding]
        with content:
            inner_size = stream_size(content)
            inner_name = name.rsplit(".", 1)[0] if "." in name.rsplit("/", 1)[-1] else name
            return None, ctx.scan_member(content, inner_size, inner_name)

    return scan_compressed


def scan_not_opened(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    return None, [
        archives.finding(
            "ARCHIVE_NOT_OPENED",
            Outcome.REVIEW,
            "this archive format (7z, zstd, lz4) is not opened by the scanner; its members were "
            "not checked",
            Severity.MEDIUM,
        )
    ]
