"""`scan_file`: detect a file's format by content and run the scanners that format needs.

Containers recurse through `scan_content` with a shared budget, so a zip inside a tar inside a
gzip is scanned member by member within the same bounds. `scan_file` and `StreamScan.finish`
both end in `scan_stream`, which is why they give the same report for the same bytes.

Containers are refined by what they hold: a torch zip with TorchScript code (`torchscript`, its
code checked by `scanners.torchscript`), a zip with skops' `schema.json` (`skops`), a tar with
NeMo's `model_config.yaml` (`nemo`, YAML checked by `scanners.nemo`); protobuf that is a
TensorFlow graph is `tensorflow` (`scanners.tf_graph`). Bytes no zip member claims (comment,
preamble, trailer) are walked for a hidden pickle.

Binary that `detect` cannot name is opaque data (format `opaque`, one INFO `DATA_OPAQUE` finding,
clean) when `scanners.opaque` finds nothing a loader could open in it, and the pickle and zip
polyglot checks agree; otherwise it stays `unknown` with a `FORMAT_UNKNOWN` finding (held).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import logging
import mmap
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import IO, BinaryIO

from scanners import (
    archives,
    nemo,
    numpy,
    opaque,
    pickles,
    second_opinion,
    skops,
    st_modules,
    tf_graph,
    torch,
    torchscript,
)
from scanners.archives import ZIP_TAIL_BYTES, ArchiveBudget, ArchiveError
from scanners.detect import FileFormat, PicklePrefix, detect_format, pickle_prefix
from scanners.foreign_output import ForeignOutput, capture
from scanners.limits import DEFAULT_LIMITS, ScanLimits
from scanners.pickles import PickleWalker
from scanners.report import Finding, JsonValue, Outcome, ScanReport, Severity
from scanners.second_opinion import SecondOpinion, fickling_view

logger = logging.getLogger(__name__)

SCANNER = "dispatch"
SCANNER_VERSION = "1.0"
IN_MEMORY_BYTES = 256 * 1024 * 1024  # a pickle-bearing stream up to this is read, beyond mmapped
_REMOTE_CONFIG_NAMES = ("config.json", "tokenizer_config.json", st_modules.MODULES_NAME)


@dataclass(slots=True)
class _Context:
    limits: ScanLimits
    budget: ArchiveBudget
    scanners: dict[str, str] = field(default_factory=dict)
    depth: int = 0
    walked: pickles.Walked | None = None  # the top-level pickle walk, done as bytes arrived
    second_opinion: SecondOpinion | None = fickling_view  # on pickles with a finding only

    def ran(self, name: str, version: str) -> None:
        self.scanners[name] = version


Handler = Callable[[BinaryIO, int, str, _Context], tuple[FileFormat | None, list[Finding]]]


def scan_file(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    limits: ScanLimits = DEFAULT_LIMITS,
    second_opinion: SecondOpinion | None = fickling_view,
) -> ScanReport:
    """Scan one file; `name` is its path inside its repo (a hint, never a reason to trust it).

    `second_opinion` decompiles a pickle that raised a finding into the finding's details
    (fickling by default; None: off). Never raises for the file's content; raises OSError when
    the file cannot be opened."""
    with Path(path).open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        return scan_stream(
            fh,
            size,
            name if name is not None else os.fspath(path),
            path=os.fspath(path),
            limits=limits,
            second_opinion=second_opinion,
        )


def scan_stream(
    fh: BinaryIO,
    size: int,
    name: str,
    *,
    path: str | None = None,
    limits: ScanLimits = DEFAULT_LIMITS,
    walked: pickles.Walked | None = None,
    second_opinion: SecondOpinion | None = fickling_view,
) -> ScanReport:
    """Scan the `size` bytes of `fh` (seekable) as the file `name`. Never raises for content.

    `walked`: the stream is a pickle-family file whose pickles were already walked as its bytes
    arrived (`StreamScan`); the rest of the scan is the same, and so is the report."""
    started = time.perf_counter()
    ctx = _Context(
        limits, ArchiveBudget(limits.archive), walked=walked, second_opinion=second_opinion
    )
    ctx.ran(SCANNER, SCANNER_VERSION)
    with capture() as caught:  # nothing a dependency prints may reach our stdout (issue 13)
        file_format, findings = scan_content(fh, size, name, ctx)
    said = caught.details()
    if said:  # not attached by the scanner that caused it: kept in our log, not on stdout
        logger.debug("dependency output while scanning %s: %s", name[:200], said)
    return ScanReport(
        path=path if path is not None else name,
        file_format=file_format.value,
        size=size,
        findings=tuple(_dedupe(findings)),
        scanners=dict(sorted(ctx.scanners.items())),
        elapsed_s=time.perf_counter() - started,
    )


def scan_content(
    fh: BinaryIO, size: int, name: str, ctx: _Context
) -> tuple[FileFormat, list[Finding]]:
    """Detect and scan; the one place a scanner bug becomes a fail-closed finding."""
    fh.seek(0)
    prefix = fh.read(min(size, ctx.limits.detect_prefix_bytes))
    file_format = FileFormat.UNKNOWN  # what a crash in detection reports
    try:
        file_format = detect_format(prefix, size, name)
        refined, findings = _HANDLERS[file_format](fh, size, name, ctx)
        if file_format in _POLYGLOT_CANDIDATES:
            findings.extend(_zip_polyglot(fh, size, name, ctx))
        if file_format not in _PICKLE_FORMATS:
            findings.extend(_pickle_polyglot(fh, size, prefix, name, ctx))
        if refined == FileFormat.OPAQUE and any(f.code != opaque.CODE for f in findings):
            # a polyglot check saw what the opaque checks did not: fail closed, never "data"
            refined = None
            findings = [_unknown(None), *(f for f in findings if f.code != opaque.CODE)]
    except Exception as exc:
        logger.exception("scanner crashed on %s", name[:200])
        findings = [
            Finding(
                SCANNER,
                "SCANNER_CRASHED",
                Severity.HIGH,
                Outcome.ERROR,
                f"the {file_format.value} scanner failed on this file ({type(exc).__name__}); "
                "it is held until an admin looks at it",
                {"error": str(exc)[:200]},
            )
        ]
        refined = None
    return refined or file_format, findings


# ---- pickle family ------------------------------------------------------------------------------
@contextlib.contextmanager
def _buffer(fh: BinaryIO, size: int, ctx: _Context) -> Iterator[bytes | mmap.mmap | None]:
    """The stream as one buffer the walker indexes: bytes when small, else a read-only mmap."""
    if size <= IN_MEMORY_BYTES:
        fh.seek(0)
        yield fh.read(size)
        return
    if size > ctx.limits.max_pickle_bytes:
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
def _mapped(fh: BinaryIO, size: int) -> Iterator[bytes | mmap.mmap]:
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


def _pickle_polyglot(
    fh: BinaryIO, size: int, prefix: bytes, name: str, ctx: _Context
) -> list[Finding]:
    """A file of another format that is also a pickle importing something (a GIF, BMP, tar or
    HDF5 user block that `pickle.load`/`joblib.load` would run): scanned as the pickle too."""
    verdict = pickle_prefix(prefix, len(prefix), size)
    if verdict == PicklePrefix.UNDECIDED and size > len(prefix) and size > 0:
        with _mapped(fh, size) as data:
            verdict = pickle_prefix(data, min(len(data), size), size, ctx.limits.pickle)
    if verdict == PicklePrefix.NOT_PICKLE:
        return []
    _, found = _scan_pickle(fh, size, name, ctx)
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


def _too_large(size: int) -> Finding:
    return Finding(
        SCANNER,
        "PICKLE_TOO_LARGE",
        Severity.HIGH,
        Outcome.ERROR,
        f"a pickle-bearing stream of {size} bytes is over the scanning limit",
        {"size": size},
    )


def _scan_pickle(
    fh: BinaryIO, size: int, name: str, ctx: _Context
) -> tuple[FileFormat | None, list[Finding]]:
    ctx.ran(pickles.SCANNER, pickles.SCANNER_VERSION)
    walked, ctx.walked = (ctx.walked if ctx.depth == 0 else None), None
    refined: FileFormat | None = None
    if walked is not None:
        if walked.legacy:
            ctx.ran(torch.SCANNER, torch.SCANNER_VERSION)
            refined = FileFormat.TORCH_LEGACY
        read = functools.partial(_read_at, fh)
        nested = _scan_nested(read, walked.result, name, ctx)
        return _pickle_findings(walked.result, refined, nested, read, size, ctx)
    with _buffer(fh, size, ctx) as data:
        if data is None:
            return None, [_too_large(size)]
        walker = PickleWalker(data, len(data), ctx.limits.pickle, joblib=True)
        first_end = walker.walk_one(0)
        if first_end is not None and walker.last_value == torch.LEGACY_MAGIC_NUMBER:
            ctx.ran(torch.SCANNER, torch.SCANNER_VERSION)
            refined = FileFormat.TORCH_LEGACY
            torch.walk_legacy_rest(walker, first_end)
        elif first_end is not None:
            walker.walk_all(first_end)
        read = functools.partial(_slice, data)
        nested = _scan_nested(read, walker.result, name, ctx)
        return _pickle_findings(walker.result, refined, nested, read, size, ctx)


def _pickle_findings(
    result: pickles.WalkResult,
    refined: FileFormat | None,
    nested: list[Finding],
    read: Callable[[int, int], bytes],
    size: int,
    ctx: _Context,
) -> tuple[FileFormat | None, list[Finding]]:
    if any(g.module == "joblib.numpy_pickle" for g in result.globals):
        refined = refined or FileFormat.JOBLIB
    return refined, _walk_findings(result, read, size, ctx) + nested


def _walk_findings(
    result: pickles.WalkResult,
    read: Callable[[int, int], bytes],
    size: int,
    ctx: _Context,
    member: str | None = None,
) -> list[Finding]:
    """The walk's findings, each with the second opinion on the pickle it is in (if any)."""
    findings = pickles.findings_with_calls(result, member)
    opinion = ctx.second_opinion
    if opinion is None or not findings:
        return findings
    limits = ctx.limits.fickling
    views: dict[tuple[int, int], dict[str, JsonValue]] = {}
    out: list[Finding] = []
    for finding in findings:
        offset = finding.details.get("offset")
        if finding.scanner != pickles.SCANNER or type(offset) is not int:
            out.append(finding)
            continue
        span = pickles.pickle_span(result, offset, size)
        view = views.get(span)
        if finding.code.endswith("_RESOURCE"):
            # built to exhaust whatever walks it: fickling's decompiler is no exception
            view = {"error": "not decompiled: the pickle is built to exhaust a decompiler too"}
        elif view is None:
            length = span[1] - span[0]
            if length > limits.max_pickle_bytes:
                view = {
                    "error": f"the pickle is {length} bytes, over the {limits.max_pickle_bytes}"
                    "-byte limit for decompiling it"
                }
            else:
                ctx.ran(second_opinion.SCANNER, second_opinion.version())
                view = opinion(read(span[0], length), limits)
            views[span] = view
        out.append(replace(finding, details={**finding.details, "fickling": view}))
    return out


def _slice(data: bytes | mmap.mmap, offset: int, length: int) -> bytes:
    return bytes(data[offset : offset + length])


def _read_at(fh: BinaryIO, offset: int, length: int) -> bytes:
    fh.seek(offset)
    return fh.read(length)


def _scan_nested(
    read: Callable[[int, int], bytes], result: pickles.WalkResult, name: str, ctx: _Context
) -> list[Finding]:
    """Scan the torch files embedded by `torch.storage._load_from_bytes` (torch.load runs them)."""
    findings: list[Finding] = []
    for payload in result.nested:
        if isinstance(payload, bytes):
            blob, label = payload, "embedded torch storage"
        else:
            offset, length, text = payload
            if length > ctx.budget.bytes_left:
                findings.append(_too_large(length))
                continue
            ctx.budget.bytes_left -= length
            blob, label = read(offset, length), f"embedded torch storage @{offset}"
            if text:  # `_codecs.encode(text, "latin1")`: the walker checked it is UTF-8
                blob = blob.decode("utf-8", "surrogatepass").encode("latin-1", "replace")
        findings.extend(_scan_member(io.BytesIO(blob), len(blob), label, name, ctx))
    return findings


def _scan_npy(
    fh: BinaryIO, size: int, name: str, ctx: _Context
) -> tuple[FileFormat | None, list[Finding]]:
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
    with _buffer(fh, size, ctx) as data:
        if data is None:
            return None, [_too_large(size)]
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
        return None, _walk_findings(walker.result, functools.partial(_slice, data), size, ctx)


# ---- containers ---------------------------------------------------------------------------------
def _scan_zip(
    fh: BinaryIO, size: int, name: str, ctx: _Context
) -> tuple[FileFormat | None, list[Finding]]:
    ctx.ran(archives.SCANNER, archives.SCANNER_VERSION)
    try:
        members, findings = archives.read_zip_members(fh, size, ctx.budget)
    except ArchiveError as exc:
        return None, [exc.finding]
    findings.extend(_zip_hidden_pickles(fh, size, members, ctx))
    names = [m.name for m in members]
    is_torch = torch.is_torch_zip(names)
    scanned = [n for n in names if not (is_torch and torch.is_storage_member(n))]
    if len(scanned) > ctx.limits.archive.max_scanned_members:
        return None, [*findings, _too_many_scanned(len(scanned), ctx)]
    refined = _zip_kind(names, name, is_torch)
    if refined == FileFormat.KERAS:
        findings.extend(_run_optional("keras", fh, size, name, ctx))
    script = None
    if is_torch and any(torch.is_torchscript_member(n) for n in names):
        ctx.ran(torchscript.SCANNER, torchscript.SCANNER_VERSION)
        script, refined = torchscript.CodeCheck(), FileFormat.TORCHSCRIPT
    for member in members:
        if member.name.endswith("/") or (is_torch and torch.is_storage_member(member.name)):
            continue
        if script is not None and _is_script_member(member.name):
            findings.extend(_read_script_member(fh, member, script, ctx))
            continue
        findings.extend(_scan_zip_member(fh, member, name, ctx))
    if refined == FileFormat.SKOPS:
        findings.extend(_scan_skops_schema(fh, members, name, ctx))
    if script is not None:
        findings = [f for f in findings if not _is_own_torch_class(f, script)]
        findings.extend(script.findings())
    return refined, findings


def _scan_skops_schema(
    fh: BinaryIO, members: list[archives.ZipMember], name: str, ctx: _Context
) -> list[Finding]:
    """The types a skops file's `schema.json` makes `skops.io.load` import."""
    ctx.ran(skops.SCANNER, skops.SCANNER_VERSION)
    schema = [m for m in members if m.name == skops.SCHEMA_MEMBER]
    if not schema:
        return skops.scan_schema(None, name)
    try:
        content, _ = archives.open_zip_member(fh, schema[-1], ctx.budget)
    except ArchiveError as exc:
        return [exc.finding]
    with content:
        return skops.scan_schema(content.read(skops.DEFAULT_LIMITS.max_schema_bytes + 1), name)


def _zip_hidden_pickles(
    fh: BinaryIO, size: int, members: list[archives.ZipMember], ctx: _Context
) -> list[Finding]:
    """A pickle in the bytes no member claims (the archive comment, what precedes the first
    member, what follows the end record): zip readers skip them, a loader told to read them
    unpickles them (a polyglot that scanners walking members only never see)."""
    findings: list[Finding] = []
    for where, offset, length in archives.unclaimed_spans(fh, size, members):
        fh.seek(offset)
        data = fh.read(min(length, ctx.limits.max_pickle_bytes))
        if pickle_prefix(data, len(data), len(data), ctx.limits.pickle) == PicklePrefix.NOT_PICKLE:
            continue
        walker = PickleWalker(data, len(data), ctx.limits.pickle, joblib=True)
        walker.walk_all(0)
        found = _walk_findings(walker.result, functools.partial(_slice, data), len(data), ctx)
        findings.append(
            archives.finding(
                "ZIP_HIDDEN_PICKLE",
                Outcome.REVIEW,
                f"the zip's {where} ({length} bytes at offset {offset}) is a pickle that imports "
                "code: zip readers skip it, a loader pointed at it runs it",
                where=where,
                offset=offset,
                bytes=length,
            )
        )
        findings.extend(_in_member(f, f"zip {where}") for f in found)
    return findings


def _is_script_member(member: str) -> bool:
    return (torch.is_torchscript_member(member) and member.endswith(".py")) or (
        torchscript.is_bytecode_member(member)
    )


def _read_script_member(
    fh: BinaryIO, member: archives.ZipMember, script: torchscript.CodeCheck, ctx: _Context
) -> list[Finding]:
    """A TorchScript code member (checked as code) or the mobile bytecode table (checked for
    file operators, then walked as the pickle it also is)."""
    try:
        content, findings = archives.open_zip_member(fh, member, ctx.budget)
    except ArchiveError as exc:
        return [exc.finding]
    with content:
        data = content.read(script.limits.max_source_bytes + 1)
        if member.name.endswith(".py"):
            script.add_source(member.name, data)
            return findings
        script.add_bytecode(member.name, data)
        content.seek(0, os.SEEK_END)
        size = content.tell()
        content.seek(0)
        return findings + _scan_member(content, size, member.name, member.name, ctx)


def _is_own_torch_class(finding: Finding, script: torchscript.CodeCheck) -> bool:
    """A pickle of the archive importing a `__torch__` class its own code defines: resolved by
    TorchScript's C++ unpickler in that code, never imported from Python."""
    glob = finding.details.get("global")
    return (
        finding.code == "PICKLE_GLOBAL_UNKNOWN"
        and isinstance(glob, str)
        and torchscript.torch_class_allowed(glob, script)
    )


def _too_many_scanned(count: int, ctx: _Context) -> Finding:
    """Tens of thousands of members to scan one by one (issue 13); a torch checkpoint's storage
    records are raw data, not scanned, and do not count."""
    return archives.finding(
        "ARCHIVE_MEMBERS_RESOURCE",
        Outcome.ERROR,
        f"the zip has {count} members to scan, over the limit of "
        f"{ctx.limits.archive.max_scanned_members}: not scanned",
        count=count,
    )


def _zip_kind(names: list[str], name: str, is_torch: bool) -> FileFormat | None:
    if is_torch:
        return FileFormat.TORCH_ZIP
    top = {n for n in names if "/" not in n}
    if skops.is_skops(sorted(top), name):
        return FileFormat.SKOPS
    if names and all(n.endswith(".npy") for n in names):
        return FileFormat.NPZ
    if name.lower().endswith(".keras") or ("config.json" in top and "metadata.json" in top):
        return FileFormat.KERAS
    return None


def _scan_zip_member(
    fh: BinaryIO, member: archives.ZipMember, outer: str, ctx: _Context
) -> list[Finding]:
    try:
        content, findings = archives.open_zip_member(fh, member, ctx.budget)
    except ArchiveError as exc:
        return [exc.finding]
    with content:
        # the bytes the member inflated to, not what its header declares: a member whose size
        # lies (ZIP_CRC_MISMATCH) must not make a scanner index past its end (fuzzing)
        content.seek(0, os.SEEK_END)
        size = content.tell()
        content.seek(0)
        findings.extend(_scan_member(content, size, member.name, outer, ctx))
    return findings


def _scan_member(
    content: IO[bytes], size: int, member: str, outer: str, ctx: _Context
) -> list[Finding]:
    if ctx.depth + 1 > ctx.limits.archive.max_depth:
        return [
            archives.finding(
                "ARCHIVE_DEPTH_RESOURCE",
                Outcome.ERROR,
                f"{member[:200]!r} is nested deeper than the limit",
            )
        ]
    inner = replace(ctx, depth=ctx.depth + 1)
    _, findings = scan_content(content, size, member, inner)  # type: ignore[arg-type]
    ctx.scanners.update(inner.scanners)
    return [_in_member(f, member) for f in findings]


def _in_member(finding: Finding, member: str) -> Finding:
    shown = member[:200]
    details = dict(finding.details)
    inner = details.get("member")
    details["member"] = f"{shown}/{inner}" if isinstance(inner, str) else shown
    return replace(finding, message=f"{shown}: {finding.message}", details=details)


def _scan_tar(
    fh: BinaryIO, size: int, name: str, ctx: _Context
) -> tuple[FileFormat | None, list[Finding]]:
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
                findings.extend(_scan_tar_member(content, member, name, ctx))
    except ArchiveError as exc:
        findings.append(exc.finding)
    legacy = {"sys_info", "pickle", "storages", "tensors"} <= set(names)
    if legacy:
        return FileFormat.TORCH_TAR, findings
    return (FileFormat.NEMO if any(nemo.is_nemo_config(n) for n in names) else None), findings


def _scan_tar_member(content: IO[bytes], member: str, outer: str, ctx: _Context) -> list[Finding]:
    content.seek(0, os.SEEK_END)
    size = content.tell()
    if member not in ("storages", "tensors"):
        return _scan_member(content, size, member, outer, ctx)
    ctx.ran(torch.SCANNER, torch.SCANNER_VERSION)
    content.seek(0)
    data = content.read(size)
    walker = PickleWalker(data, len(data), ctx.limits.pickle)
    (torch.walk_tar_storages if member == "storages" else torch.walk_tar_tensors)(walker)
    found = _walk_findings(walker.result, functools.partial(_slice, data), size, ctx)
    return [_in_member(f, member) for f in found]


def _compressed(kind: str) -> Handler:
    def handler(
        fh: BinaryIO, size: int, name: str, ctx: _Context
    ) -> tuple[FileFormat | None, list[Finding]]:
        ctx.ran(archives.SCANNER, archives.SCANNER_VERSION)
        try:
            content = archives.decompress_stream(fh, kind, size, ctx.budget)
        except ArchiveError as exc:
            return None, [exc.finding]
        with content:
            content.seek(0, os.SEEK_END)
            inner_size = content.tell()
            inner_name = name.rsplit(".", 1)[0] if "." in name.rsplit("/", 1)[-1] else name
            return None, _scan_member(content, inner_size, inner_name, name, ctx)

    return handler


def _not_opened(
    fh: BinaryIO, size: int, name: str, ctx: _Context
) -> tuple[FileFormat | None, list[Finding]]:
    return None, [
        archives.finding(
            "ARCHIVE_NOT_OPENED",
            Outcome.REVIEW,
            "this archive format (7z, zstd, lz4) is not opened by the scanner; its members were "
            "not checked",
            Severity.MEDIUM,
        )
    ]


def _zip_polyglot(fh: BinaryIO, size: int, name: str, ctx: _Context) -> list[Finding]:
    """A file that is something else at its start but ends with a zip directory (a polyglot)."""
    tail_len = min(size, ZIP_TAIL_BYTES)
    fh.seek(size - tail_len)
    if b"PK\x05\x06" not in fh.read(tail_len):
        return []
    try:
        archives.read_zip_members(fh, size, ArchiveBudget(ctx.limits.archive))
    except ArchiveError:
        return []
    _, findings = _scan_zip(fh, size, name, ctx)
    return [
        archives.finding(
            "POLYGLOT_ZIP",
            Outcome.REVIEW,
            "the file also reads as a zip archive from its end: readers may see different content",
        ),
        *findings,
    ]


# ---- formats scanned by S2's modules ------------------------------------------------------------
def _run_optional(
    module_name: str, fh: BinaryIO, size: int, name: str, ctx: _Context
) -> list[Finding]:
    module = _optional_module(module_name)
    if module is None:
        return [_unavailable(module_name)]
    ctx.ran(getattr(module, "SCANNER", module_name), str(getattr(module, "SCANNER_VERSION", "1")))
    fh.seek(0)
    with capture() as caught:  # h5py, onnx, gguf... warn and print: kept with the findings
        found: list[Finding] = module.scan(fh, size, name)
    return _with_output(found, caught)


def _with_output(found: list[Finding], caught: ForeignOutput) -> list[Finding]:
    """`found`, each carrying what the dependency said while it looked (when it said anything)."""
    said = caught.details()
    if not said:
        return found
    return [replace(f, details={**f.details, "output": said}) for f in found]


def _optional_module(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"scanners.{module_name}")
    except ImportError:
        return None


def _unavailable(module_name: str) -> Finding:
    return Finding(
        SCANNER,
        "SCANNER_UNAVAILABLE",
        Severity.MEDIUM,
        Outcome.REVIEW,
        f"the {module_name} scanner is not available in this installation: the file was not "
        "checked",
        {"scanner": module_name},
    )


def _header_format(module_name: str) -> Handler:
    def handler(
        fh: BinaryIO, size: int, name: str, ctx: _Context
    ) -> tuple[FileFormat | None, list[Finding]]:
        return None, _run_optional(module_name, fh, size, name, ctx)

    return handler


def _scan_json(
    fh: BinaryIO, size: int, name: str, ctx: _Context
) -> tuple[FileFormat | None, list[Finding]]:
    base = name.rsplit("/", 1)[-1]
    if size > ctx.limits.max_text_bytes:
        return None, _unchecked_config(base, "too large to parse")
    fh.seek(0)
    try:
        data = json.loads(fh.read(size).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, _unchecked_config(base, "not valid JSON")
    if st_modules.is_modules_json(name):
        ctx.ran(st_modules.SCANNER, "1")
        return None, st_modules.scan_modules(data, name)
    module = _optional_module("remote_code")
    if module is None:
        return None, [_unavailable("remote_code")] if base in _REMOTE_CONFIG_NAMES else []
    ctx.ran(getattr(module, "SCANNER", "remote_code"), "1")
    found: list[Finding] = module.scan_config(data, name)
    return None, found


def _unchecked_config(base: str, why: str) -> list[Finding]:
    if base not in _REMOTE_CONFIG_NAMES:
        return []
    return [
        Finding(
            SCANNER,
            "CONFIG_UNREADABLE",
            Severity.MEDIUM,
            Outcome.REVIEW,
            f"{base} is {why}: the code it makes loaders import (auto_map, module classes) "
            "and its chat template could not be checked",
        )
    ]


def _scan_text(
    fh: BinaryIO, size: int, name: str, ctx: _Context
) -> tuple[FileFormat | None, list[Finding]]:
    lowered = name.lower()
    if lowered.endswith(".py"):
        module = _optional_module("remote_code")
        if module is None:
            return FileFormat.PYTHON, [_unavailable("remote_code")]
        ctx.ran(getattr(module, "SCANNER", "remote_code"), "1")
        fh.seek(0)
        return FileFormat.PYTHON, list(module.scan_python(fh, size, name))
    if lowered.endswith(".jinja") or lowered.endswith(".j2"):
        return FileFormat.JINJA, _scan_jinja(fh, size, name, ctx)
    if lowered.endswith((".yaml", ".yml")):
        ctx.ran(nemo.SCANNER, nemo.SCANNER_VERSION)
        fh.seek(0)
        return None, nemo.scan_yaml(
            fh.read(min(size, nemo.DEFAULT_LIMITS.max_config_bytes + 1)), name
        )
    if lowered.rsplit("/", 1)[-1] in _REMOTE_CONFIG_NAMES:
        return None, _unchecked_config(lowered.rsplit("/", 1)[-1], "not valid JSON")
    return None, []


def _scan_jinja(fh: BinaryIO, size: int, name: str, ctx: _Context) -> list[Finding]:
    module = _optional_module("templates")
    if module is None:
        return [_unavailable("templates")]
    ctx.ran(getattr(module, "SCANNER", "templates"), "1")
    fh.seek(0)
    source = fh.read(min(size, ctx.limits.max_text_bytes)).decode("utf-8", "replace")
    found: list[Finding] = module.scan_template(source, name)
    return found


def _scan_unknown(
    fh: BinaryIO, size: int, name: str, ctx: _Context
) -> tuple[FileFormat | None, list[Finding]]:
    """Opaque data, or unknown structure a loader could open (DESIGN.md rule 10)."""
    fh.seek(0)
    if tf_graph.graph_kind(fh.read(min(size, ctx.limits.detect_prefix_bytes)), size, name):
        # a graph whose first message outgrows detection's prefix, or one TensorFlow opens by
        # its name (saved_model.pb): walked as a graph, never "unknown" or "data"
        return _scan_protobuf(fh, size, name, ctx)
    ctx.ran(opaque.SCANNER, opaque.SCANNER_VERSION)
    with _mapped(fh, size) as data:
        structure = opaque.openable_structure(data, size, ctx.limits)
    if structure is None:
        return FileFormat.OPAQUE, [opaque.opaque_finding()]
    return None, [_unknown(structure)]


def _unknown(structure: opaque.Structure | None) -> Finding:
    why = (
        f"{structure.what}, which a loader could open"
        if structure is not None
        else "a check for formats hidden in it found one"
    )
    return Finding(
        SCANNER,
        "FORMAT_UNKNOWN",
        Severity.LOW,
        Outcome.REVIEW,
        f"the format of this binary file could not be told from its content, and it is not "
        f"opaque data: {why}; it is held until an admin looks at it",
        structure.details() if structure is not None else {},
    )


# Files that are empty in real repos by convention; an empty file of any other name is what a
# truncated transfer or a loader-crashing placeholder looks like (issue 13: an empty `.pkl`).
_EMPTY_IS_NORMAL = frozenset(
    {"__init__.py", "py.typed", ".gitkeep", ".keep", ".gitignore", ".gitattributes"}
)
_EMPTY_IS_NORMAL_SUFFIXES = (".md", ".txt")


def _scan_empty(
    fh: BinaryIO, size: int, name: str, ctx: _Context
) -> tuple[FileFormat | None, list[Finding]]:
    base = name.rsplit("/", 1)[-1].lower()
    if base in _EMPTY_IS_NORMAL or base.endswith(_EMPTY_IS_NORMAL_SUFFIXES):
        return None, []
    return None, [
        Finding(
            SCANNER,
            "FILE_EMPTY",
            Severity.HIGH,
            Outcome.ERROR,
            "the file is empty: there is nothing to scan, and a loader expecting a model fails "
            "on it (a truncated transfer or a placeholder); it is held",
        )
    ]


def _scan_data(
    fh: BinaryIO, size: int, name: str, ctx: _Context
) -> tuple[FileFormat | None, list[Finding]]:
    return None, []


def _scan_protobuf(
    fh: BinaryIO, size: int, name: str, ctx: _Context
) -> tuple[FileFormat | None, list[Finding]]:
    """Protobuf is data (a sentencepiece tokenizer) unless it is a TensorFlow graph."""
    fh.seek(0)
    kind = tf_graph.graph_kind(fh.read(min(size, ctx.limits.detect_prefix_bytes)), size, name)
    if kind is None:
        return None, []
    ctx.ran(tf_graph.SCANNER, tf_graph.SCANNER_VERSION)
    return FileFormat.TF_GRAPH, tf_graph.scan(fh, size, name, kind)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[str] = set()
    out: list[Finding] = []
    for finding in findings:
        key = json.dumps(finding.to_dict(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(finding)
    return out


_HANDLERS: dict[FileFormat, Handler] = {
    FileFormat.EMPTY: _scan_empty,
    FileFormat.SAFETENSORS: _header_format("safetensors"),
    FileFormat.GGUF: _header_format("gguf"),
    FileFormat.ZIP: _scan_zip,
    FileFormat.TAR: _scan_tar,
    FileFormat.GZIP: _compressed("gzip"),
    FileFormat.BZIP2: _compressed("bzip2"),
    FileFormat.XZ: _compressed("xz"),
    FileFormat.ZLIB: _compressed("zlib"),
    FileFormat.LZMA: _compressed("lzma"),
    FileFormat.LZ4: _not_opened,
    FileFormat.SEVEN_Z: _not_opened,
    FileFormat.ZSTD: _not_opened,
    FileFormat.PICKLE: _scan_pickle,
    FileFormat.TORCH_LEGACY: _scan_pickle,
    FileFormat.NUMPY: _scan_npy,
    FileFormat.HDF5: _header_format("keras"),
    FileFormat.ONNX: _header_format("onnx"),
    FileFormat.PROTOBUF: _scan_protobuf,
    FileFormat.MSGPACK: _scan_data,
    FileFormat.JSON: _scan_json,
    FileFormat.TEXT: _scan_text,
    FileFormat.DATA: _scan_data,
    FileFormat.UNKNOWN: _scan_unknown,
}
_PICKLE_FORMATS = frozenset({FileFormat.PICKLE, FileFormat.TORCH_LEGACY, FileFormat.EMPTY})
_POLYGLOT_CANDIDATES = frozenset(
    {FileFormat.PICKLE, FileFormat.TORCH_LEGACY, FileFormat.UNKNOWN, FileFormat.NUMPY}
)
