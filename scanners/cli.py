"""`hubwarden scan PATH… [--json] [--recursive]`: scan files and say what they are.

Exit status: 0 clean, 1 needs review, 2 malicious, 3 could not scan (the worst file decides; a
path that does not exist counts as "could not scan").

`--json` prints one JSON object (stable; new keys may be added, none removed or renamed):

    {"version": 1, "outcome": "clean|review|malicious|error", "exit_code": 0-3,
     "reports": [ScanReport.to_dict(), ...], "errors": [{"path": ..., "error": ...}]}

where each report is `{"path", "format", "size", "outcome", "findings": [{"scanner", "code",
"severity", "outcome", "message", "details"}], "scanners": {name: version}, "elapsed_s"}`.
`format` is a `scanners.detect.FileFormat` value: `safetensors`, `gguf`, `pickle`, `pytorch-zip`,
`pytorch-legacy`, `pytorch-tar`, `joblib`, `numpy`, `npz`, `keras`, `hdf5`, `onnx`, `protobuf`,
`msgpack`, `zip`, `tar`, `gzip`, `bzip2`, `xz`, `7z`, `zstd`, `zlib`, `lzma`, `lz4`, `json`,
`text`, `python`, `jinja`, `data`, `empty`; `opaque` for binary no loader would execute (one
`DATA_OPAQUE` finding, severity info, outcome clean: `details.checked` lists what was ruled
out); `unknown` when the format could not be told: for binary a loader could open, a
`FORMAT_UNKNOWN` finding (outcome review) whose `details` name the `structure` found, its
`offset` and what it is.
Pickle findings' details carry `offset` (in the file or `member`), `global`, `call` (our
decompiled call) and, when the pickle has a finding, `fickling`: fickling's decompiled view of
that pickle, `{"decompiled": text, "cut": bool}` or `{"error": why}` (`scanners.second_opinion`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from scanners.dispatch import scan_file
from scanners.report import Outcome, ScanReport

JSON_VERSION = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubwarden scan",
        description="Scan model files (parsed, never loaded). Exit: 0 clean, 1 review, "
        "2 malicious, 3 could not scan.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    parser.add_argument("--json", action="store_true", help="print one JSON document (stable)")
    parser.add_argument(
        "--recursive", action="store_true", help="descend into subdirectories of a directory"
    )
    return parser


def _files(path: Path, recursive: bool) -> Iterator[tuple[Path, str]]:
    """(file, name hint) pairs; the hint is the path inside the directory given."""
    if not path.is_dir():
        yield path, path.name
        return
    pattern = "**/*" if recursive else "*"
    for child in sorted(path.glob(pattern)):
        if child.is_file() and not child.is_symlink():
            yield child, child.relative_to(path).as_posix()


def _print_report(report: ScanReport) -> None:
    print(f"{report.outcome.value:<9} {report.file_format:<15} {report.path}")
    for finding in report.findings:
        print(f"    [{finding.severity.value}] {finding.code}: {finding.message}")


def main(argv: list[str] | None = None) -> int:
    """Run `hubwarden scan`; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with _stdout_aside() if args.json else contextlib.nullcontext():
        reports, errors = _scan_paths(args.paths, args.recursive, args.json)
    worst = _worst([r.outcome for r in reports] + [Outcome.ERROR] * bool(errors))
    if args.json:
        document = {
            "version": JSON_VERSION,
            "outcome": worst.value,
            "exit_code": worst.exit_code,
            "reports": [r.to_dict() for r in reports],
            "errors": errors,
        }
        print(json.dumps(document, sort_keys=True))
    else:
        for error in errors:
            print(
                f"hubwarden scan: {error['path']}: {error['error']}; check the path",
                file=sys.stderr,
            )
    return worst.exit_code


def _scan_paths(
    paths: list[str], recursive: bool, quiet: bool
) -> tuple[list[ScanReport], list[dict[str, str]]]:
    reports: list[ScanReport] = []
    errors: list[dict[str, str]] = []
    for given in paths:
        root = Path(given)
        if not root.exists():
            errors.append({"path": given, "error": "no such file or directory"})
            continue
        for file, hint in _files(root, recursive):
            try:
                report = scan_file(file, name=hint)
            except OSError as exc:
                errors.append({"path": str(file), "error": exc.strerror or str(exc)})
                continue
            reports.append(report)
            if not quiet:
                _print_report(report)
    return reports, errors


@contextlib.contextmanager
def _stdout_aside() -> Iterator[None]:
    """File descriptor 1 points at stderr while files are scanned, so that what C code in a
    dependency writes there (HDF5, onnx, a stray printf) cannot come before the JSON document:
    `--json` prints exactly one document on stdout (issue 13)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no fd 1 or 2 to move: nothing could be written there either
        yield
        return
    try:
        yield
    finally:
        sys.stdout.flush()  # what Python buffered meanwhile goes to stderr too
        os.dup2(saved, 1)
        os.close(saved)


def _worst(outcomes: list[Outcome]) -> Outcome:
    """The exit decides by the worst file; "could not scan" with nothing scanned at all."""
    if not outcomes:
        return Outcome.ERROR
    return max(outcomes, key=lambda o: o.rank)
