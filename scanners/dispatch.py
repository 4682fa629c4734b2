"""`scan_file`: detect a file's format by content and run the scanner registered for it.

`scanners.registry` says which scanner takes each format `detect_format` names; containers
recurse through the scan context (`ScanContext.scan_member`) with a shared budget, so a zip
inside a tar inside a gzip is scanned member by member within the same bounds. `scan_file` and
`StreamScan.finish` both end in `scan_stream`, which is why they give the same report for the
same bytes.

Around every format's own scan, the dispatch adds the polyglot checks the registry asks for (a
file that is also a pickle, or that also ends with a zip directory), and turns a scanner bug into
a fail-closed finding. Binary `detect` cannot name is opaque data (format `opaque`, one INFO
`DATA_OPAQUE` finding, clean) when `scanners.opaque` finds nothing a loader could open in it and
the polyglot checks agree; otherwise it stays `unknown` with a `FORMAT_UNKNOWN` finding (held).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO

from scanners import opaque, pickles
from scanners.archives import ArchiveBudget
from scanners.data_scan import unknown_finding
from scanners.detect import FileFormat, detect_format
from scanners.foreign_output import capture
from scanners.limits import DEFAULT_LIMITS, ScanLimits
from scanners.pickle_scan import pickle_polyglot
from scanners.registry import scanner_for
from scanners.report import Finding, Outcome, ScanReport, Severity
from scanners.scan_context import ScanContext
from scanners.second_opinion import SecondOpinion, fickling_view
from scanners.zip_scan import zip_polyglot

logger = logging.getLogger(__name__)

SCANNER = "dispatch"
SCANNER_VERSION = "1.0"


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
    ctx = new_context(limits, walked=walked, second_opinion=second_opinion)
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


def new_context(
    limits: ScanLimits,
    *,
    walked: pickles.Walked | None = None,
    second_opinion: SecondOpinion | None = fickling_view,
) -> ScanContext:
    """A fresh scan's context: its own archive budget, members recursing into `scan_content`."""
    return ScanContext(
        limits,
        ArchiveBudget(limits.archive),
        scan_content,
        walked=walked,
        second_opinion=second_opinion,
    )


def scan_content(
    fh: BinaryIO, size: int, name: str, ctx: ScanContext
) -> tuple[FileFormat, list[Finding]]:
    """Detect and scan (a container's members too, through `ctx`); the one place a scanner
    bug becomes a fail-closed finding."""
    fh.seek(0)
    prefix = fh.read(min(size, ctx.limits.detect_prefix_bytes))
    file_format = FileFormat.UNKNOWN  # what a crash in detection reports
    try:
        file_format = detect_format(prefix, size, name)
        scanner = scanner_for(file_format)
        refined, findings = scanner.scan(fh, size, name, ctx)
        if scanner.also_zip:
            findings.extend(zip_polyglot(fh, size, name, ctx))
        if scanner.also_pickle:
            findings.extend(pickle_polyglot(fh, size, prefix, name, ctx))
        if refined == FileFormat.OPAQUE and any(f.code != opaque.CODE for f in findings):
            # a polyglot check saw what the opaque checks did not: fail closed, never "data"
            refined = None
            findings = [unknown_finding(None), *(f for f in findings if f.code != opaque.CODE)]
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


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[str] = set()
    out: list[Finding] = []
    for finding in findings:
        key = json.dumps(finding.to_dict(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(finding)
    return out
