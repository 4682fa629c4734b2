"""Zip archives as a format scanner: torch checkpoints, TorchScript, skops, npz, Keras.

The zip is refined by what it holds: a torch zip (`data.pkl`) whose storage records are raw data
(never scanned, only their declared inflation checked by `archives`), TorchScript (a `code/`
folder, checked by `scanners.torchscript`), skops (`schema.json`), npz, Keras. Every other
member is scanned as a file of its own through the scan context. Bytes no member claims
(comment, preamble, trailer) are walked for a hidden pickle.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import BinaryIO

from scanners import archives, keras, skops, torch, torchscript, zip_reader
from scanners.archives import ZIP_TAIL_BYTES, ArchiveBudget, ArchiveError
from scanners.detect import FileFormat, PicklePrefix, pickle_prefix
from scanners.gc_pause import gc_paused
from scanners.pickle_scan import walk_findings
from scanners.pickles import PickleWalker
from scanners.report import Finding, Outcome
from scanners.scan_context import ScanContext, Scanned, in_member, slice_of, stream_size
from scanners.zip_directory import ZipMember


@dataclass(frozen=True, slots=True)
class _Listing:
    """The members once listed, each name matched once against torch's member patterns."""

    members: list[ZipMember]
    names: list[str]
    is_torch: bool
    storage: frozenset[int]  # indices of torch storage records (raw data, not scanned)
    has_script: bool

    @classmethod
    def of(cls, members: list[ZipMember]) -> _Listing:
        names = [m.name for m in members]
        is_torch = torch.is_torch_zip(names)
        storage = frozenset(torch.storage_members(names)) if is_torch else frozenset()
        has_script = is_torch and torch.has_torchscript_member(names)
        return cls(members, names, is_torch, storage, has_script)


def scan_zip(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    """Every member a loader reads, scanned; the zip refined by what it holds.

    The cyclic garbage collector is paused meanwhile (`scanners.gc_pause`): a torch zip lists
    tens of thousands of members and its `data.pkl` walk makes an object per opcode."""
    with gc_paused():
        return _scan_zip(fh, size, name, ctx)


def _scan_zip(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    ctx.ran(archives.SCANNER, archives.SCANNER_VERSION)
    try:
        members, findings = zip_reader.read_zip_members(fh, size, ctx.budget)
    except ArchiveError as exc:
        return None, [exc.finding]
    findings.extend(_zip_hidden_pickles(fh, size, members, ctx))
    listing = _Listing.of(members)
    scanned = len(members) - len(listing.storage)
    if scanned > ctx.limits.archive.max_scanned_members:
        return None, [*findings, _too_many_scanned(scanned, ctx)]
    refined = _zip_kind(listing.names, name, listing.is_torch)
    if refined == FileFormat.KERAS:
        keras_limits = ctx.limits.keras
        fh.seek(0)
        findings.extend(
            ctx.run_foreign(
                keras.SCANNER,
                "1",
                lambda: keras.scan(fh, size, name, keras_limits, ctx.scan_embedded),
            )
        )
    script = None
    if listing.has_script:
        ctx.ran(torchscript.SCANNER, torchscript.SCANNER_VERSION)
        script, refined = torchscript.CodeCheck(ctx.limits.torchscript), FileFormat.TORCHSCRIPT
    for index, member in enumerate(members):
        if member.name.endswith("/") or index in listing.storage:
            continue
        if script is not None and _is_script_member(member.name):
            findings.extend(_read_script_member(fh, member, script, ctx))
            continue
        findings.extend(_scan_zip_member(fh, member, ctx))
    if refined == FileFormat.SKOPS:
        findings.extend(_scan_skops_schema(fh, members, name, ctx))
    if script is not None:
        findings = [f for f in findings if not _is_own_torch_class(f, script)]
        findings.extend(script.findings())
    return refined, findings


def _scan_skops_schema(
    fh: BinaryIO, members: list[ZipMember], name: str, ctx: ScanContext
) -> list[Finding]:
    """The types a skops file's `schema.json` makes `skops.io.load` import."""
    ctx.ran(skops.SCANNER, skops.SCANNER_VERSION)
    limits = ctx.limits.skops
    schema = [m for m in members if m.name == skops.SCHEMA_MEMBER]
    if not schema:
        return skops.scan_schema(None, name, limits)
    try:
        content, _ = zip_reader.open_zip_member(fh, schema[-1], ctx.budget)
    except ArchiveError as exc:
        return [exc.finding]
    with content:
        return skops.scan_schema(content.read(limits.max_schema_bytes + 1), name, limits)


def _zip_hidden_pickles(
    fh: BinaryIO, size: int, members: list[ZipMember], ctx: ScanContext
) -> list[Finding]:
    """A pickle in the bytes no member claims (the archive comment, what precedes the first
    member, what follows the end record): zip readers skip them, a loader told to read them
    unpickles them (a polyglot that scanners walking members only never see)."""
    findings: list[Finding] = []
    for where, offset, length in zip_reader.unclaimed_spans(fh, size, members):
        fh.seek(offset)
        data = fh.read(min(length, ctx.limits.max_pickle_bytes))
        if pickle_prefix(data, len(data), len(data), ctx.limits.pickle) == PicklePrefix.NOT_PICKLE:
            continue
        walker = PickleWalker(data, len(data), ctx.limits.pickle, joblib=True)
        walker.walk_all(0)
        found = walk_findings(walker.result, functools.partial(slice_of, data), len(data), ctx)
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
        findings.extend(in_member(f, f"zip {where}") for f in found)
    return findings


def _is_script_member(member: str) -> bool:
    return (torch.is_torchscript_member(member) and member.endswith(".py")) or (
        torchscript.is_bytecode_member(member)
    )


def _read_script_member(
    fh: BinaryIO, member: ZipMember, script: torchscript.CodeCheck, ctx: ScanContext
) -> list[Finding]:
    """A TorchScript code member (checked as code) or the mobile bytecode table (checked for
    file operators, then walked as the pickle it also is)."""
    try:
        content, findings = zip_reader.open_zip_member(fh, member, ctx.budget)
    except ArchiveError as exc:
        return [exc.finding]
    with content:
        data = content.read(script.limits.max_source_bytes + 1)
        if member.name.endswith(".py"):
            script.add_source(member.name, data)
            return findings
        script.add_bytecode(member.name, data)
        size = stream_size(content)
        return findings + ctx.scan_member(content, size, member.name)


def _is_own_torch_class(finding: Finding, script: torchscript.CodeCheck) -> bool:
    """A pickle of the archive importing a `__torch__` class its own code defines: resolved by
    TorchScript's C++ unpickler in that code, never imported from Python."""
    glob = finding.details.get("global")
    return (
        finding.code == "PICKLE_GLOBAL_UNKNOWN"
        and isinstance(glob, str)
        and torchscript.torch_class_allowed(glob, script)
    )


def _too_many_scanned(count: int, ctx: ScanContext) -> Finding:
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


def _scan_zip_member(fh: BinaryIO, member: ZipMember, ctx: ScanContext) -> list[Finding]:
    try:
        content, findings = zip_reader.open_zip_member(fh, member, ctx.budget)
    except ArchiveError as exc:
        return [exc.finding]
    with content:
        # the bytes the member inflated to, not what its header declares: a member whose size
        # lies (ZIP_CRC_MISMATCH) must not make a scanner index past its end (fuzzing)
        size = stream_size(content)
        findings.extend(ctx.scan_member(content, size, member.name))
    return findings


def zip_polyglot(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> list[Finding]:
    """A file that is something else at its start but ends with a zip directory (a polyglot)."""
    tail_len = min(size, ZIP_TAIL_BYTES)
    fh.seek(size - tail_len)
    if b"PK\x05\x06" not in fh.read(tail_len):
        return []
    try:
        zip_reader.read_zip_members(fh, size, ArchiveBudget(ctx.limits.archive))
    except ArchiveError:
        return []
    _, findings = scan_zip(fh, size, name, ctx)
    return [
        archives.finding(
            "POLYGLOT_ZIP",
            Outcome.REVIEW,
            "the file also reads as a zip archive from its end: readers may see different content",
        ),
        *findings,
    ]
