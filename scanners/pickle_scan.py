"""The pickle family as format scanners: raw pickles, legacy `torch.save`, joblib, object `.npy`.

Each walks the stream with `PickleWalker` (or takes the walk `StreamScan` did as the bytes
arrived), scans the torch files a pickle embeds, and attaches fickling's decompilation to the
findings of the pickle they are in (`walk_findings`, used by every container holding a pickle).
"""

from __future__ import annotations

import functools
import gc
import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from scanners import numpy, pickles, second_opinion, torch
from scanners.detect import FileFormat, PicklePrefix, pickle_prefix
from scanners.gc_pause import gc_paused
from scanners.pickles import PickleWalker
from scanners.report import Finding, JsonValue, Outcome, Severity
from scanners.scan_context import (
    ScanContext,
    Scanned,
    mapped_view,
    read_at,
    slice_of,
    whole_buffer,
)
from scanners.second_opinion import SecondOpinion

SCANNER = "dispatch"  # the findings this module adds are the dispatch's, as they always were


def too_large(size: int) -> Finding:
    return Finding(
        SCANNER,
        "PICKLE_TOO_LARGE",
        Severity.HIGH,
        Outcome.ERROR,
        f"a pickle-bearing stream of {size} bytes is over the scanning limit",
        {"size": size},
    )


def scan_pickle(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    """A raw pickle, a legacy torch file or a joblib dump (refined by what the walk sees).

    The walk's symbolic values (an object per opcode) live until the findings are out: the
    cyclic collector is paused meanwhile (`scanners.gc_pause`)."""
    if not gc.isenabled():  # a nested scan: the outer one paused it
        return _scan_pickle(fh, size, name, ctx)
    with gc_paused():
        return _scan_pickle(fh, size, name, ctx)


def _scan_pickle(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    ctx.ran(pickles.SCANNER, pickles.SCANNER_VERSION)
    walked, ctx.walked = (ctx.walked if ctx.depth == 0 else None), None
    refined: FileFormat | None = None
    if walked is not None:
        if walked.legacy:
            ctx.ran(torch.SCANNER, torch.SCANNER_VERSION)
            refined = FileFormat.TORCH_LEGACY
        read = functools.partial(read_at, fh)
        nested = _scan_nested(read, walked.result, ctx)
        return _pickle_findings(walked.result, refined, nested, read, size, ctx)
    with whole_buffer(fh, size, ctx.limits) as data:
        if data is None:
            return None, [too_large(size)]
        walker = PickleWalker(data, len(data), ctx.limits.pickle, joblib=True)
        first_end = walker.walk_one(0)
        if first_end is not None and walker.last_value == torch.LEGACY_MAGIC_NUMBER:
            ctx.ran(torch.SCANNER, torch.SCANNER_VERSION)
            refined = FileFormat.TORCH_LEGACY
            torch.walk_legacy_rest(walker, first_end)
        elif first_end is not None:
            walker.walk_all(first_end)
        read = functools.partial(slice_of, data)
        nested = _scan_nested(read, walker.result, ctx)
        return _pickle_findings(walker.result, refined, nested, read, size, ctx)


def _pickle_findings(
    result: pickles.WalkResult,
    refined: FileFormat | None,
    nested: list[Finding],
    read: Callable[[int, int], bytes],
    size: int,
    ctx: ScanContext,
) -> Scanned:
    if any(g.module == "joblib.numpy_pickle" for g in result.globals):
        refined = refined or FileFormat.JOBLIB
    return refined, walk_findings(result, read, size, ctx) + nested


def walk_findings(
    result: pickles.WalkResult,
    read: Callable[[int, int], bytes],
    size: int,
    ctx: ScanContext,
    member: str | None = None,
) -> list[Finding]:
    """The walk's findings, each with the second opinion on the pickle it is in (if any)."""
    findings = pickles.findings_with_calls(result, member)
    if ctx.second_opinion is None or not findings:
        return findings
    decompiler = _Decompiler(ctx.second_opinion, read, ctx)
    out: list[Finding] = []
    for finding in findings:
        offset = finding.details.get("offset")
        if finding.scanner != pickles.SCANNER or type(offset) is not int:
            out.append(finding)
            continue
        view = decompiler.view(finding, pickles.pickle_span(result, offset, size))
        out.append(replace(finding, details={**finding.details, "fickling": view}))
    return out


@dataclass(slots=True)
class _Decompiler:
    """fickling's view of each pickle that raised a finding, decompiled once per pickle."""

    opinion: SecondOpinion
    read: Callable[[int, int], bytes]
    ctx: ScanContext
    views: dict[tuple[int, int], dict[str, JsonValue]] = field(default_factory=dict)

    def view(self, finding: Finding, span: tuple[int, int]) -> dict[str, JsonValue]:
        if finding.code.endswith("_RESOURCE"):
            # built to exhaust whatever walks it: fickling's decompiler is no exception
            return {"error": "not decompiled: the pickle is built to exhaust a decompiler too"}
        view = self.views.get(span)
        if view is not None:
            return view
        limits = self.ctx.limits.fickling
        length = span[1] - span[0]
        if length > limits.max_pickle_bytes:
            view = {
                "error": f"the pickle is {length} bytes, over the {limits.max_pickle_bytes}"
                "-byte limit for decompiling it"
            }
        else:
            self.ctx.ran(second_opinion.SCANNER, second_opinion.version())
            view = self.opinion(self.read(span[0], length), limits)
        self.views[span] = view
        return view


def _scan_nested(
    read: Callable[[int, int], bytes], result: pickles.WalkResult, ctx: ScanContext
) -> list[Finding]:
    """Scan the torch files embedded by `torch.storage._load_from_bytes` (torch.load runs them)."""
    findings: list[Finding] = []
    for payload in result.nested:
        if isinstance(payload, bytes):
            blob, label = payload, "embedded torch storage"
        else:
            offset, length, text = payload
            if length > ctx.budget.bytes_left:
                findings.append(too_large(length))
                continue
            ctx.budget.bytes_left -= length
            blob, label = read(offset, length), f"embedded torch storage @{offset}"
            if text:  # `_codecs.encode(text, "latin1")`: the walker checked it is UTF-8
                blob = blob.decode("utf-8", "surrogatepass").encode("latin-1", "replace")
        findings.extend(ctx.scan_member(io.BytesIO(blob), len(blob), label))
    return findings


def scan_npy(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    """A `.npy`: its declared shape against the bytes present; an object array's pickle."""
    ctx.ran(numpy.SCANNER, numpy.SCANNER_VERSION)
    fh.seek(0)
    header = numpy.parse_npy_header(fh.read(min(size, numpy.MAX_HEADER_BYTES + 12)))
    if isinstance(header, Finding):
        return None, [header]
    declared = numpy.declared_size_finding(header, size, ctx.limits.numpy)
    if declared is not None:
        return None, [declared]
    if not header.has_object:
        return None, []
    ctx.ran(pickles.SCANNER, pickles.SCANNER_VERSION)
    with whole_buffer(fh, size, ctx.limits) as data:
        if data is None:
            return None, [too_large(size)]
        walker = PickleWalker(data, len(data), ctx.limits.pickle)
        if header.data_offset >= len(data):
            walker.flag(
                "PICKLE_EMPTY",
                Severity.HIGH,
                Outcome.ERROR,
                "the object array has no pickle payload",
            )
        else:
            walker.walk_one(header.data_offset)
        return None, walk_findings(walker.result, functools.partial(slice_of, data), size, ctx)


def pickle_polyglot(
    fh: BinaryIO, size: int, prefix: bytes, name: str, ctx: ScanContext
) -> list[Finding]:
    """A file of another format that is also a pickle importing something (a GIF, BMP, tar or
    HDF5 user block that `pickle.load`/`joblib.load` would run): scanned as the pickle too."""
    verdict = pickle_prefix(prefix, len(prefix), size)
    if verdict == PicklePrefix.UNDECIDED and size > len(prefix) and size > 0:
        with mapped_view(fh, size) as data:
            verdict = pickle_prefix(data, min(len(data), size), size, ctx.limits.pickle)
    if verdict == PicklePrefix.NOT_PICKLE:
        return []
    _, found = scan_pickle(fh, size, name, ctx)
    return [
        Finding(
            SCANNER,
            "POLYGLOT_PICKLE",
            Severity.HIGH,
            Outcome.REVIEW,
            "the file is also a valid pickle that imports code when loaded with pickle or "
            "joblib: a second format hides in it",
            {"pickle": verdict.value},
        ),
        *found,
    ]
