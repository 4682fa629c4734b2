"""Fuzz targets: one per format parser, one for `StreamScan.feed` in random chunk splits, one for
detection by content alone (issue 13).

A target takes the fuzzer's bytes, scans them and raises when a scanner is wrong about hostile
bytes rather than about a model:
- an exception escaping `scan_file`, `StreamScan.feed` or `StreamScan.finish`;
- a `SCANNER_CRASHED` finding: the dispatcher's last-resort catch turned an exception into a
  held verdict, which is fail-closed but still a bug (malformed input deserves its own code).
  `ScannerCrashed` is raised *from* the exception that caused it, caught from the scanners' log
  record, so the fuzzer prints the scanner's own traceback;
- a report that is not one JSON document (`hubwarden scan --json`).

This module imports nothing but `scanners` and the standard library: the fuzzing child process
(`tests.fuzz.run`) instruments `scanners` as this module imports it. The seeds, made with the
real libraries, are in `tests.fuzz.seeds`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scanners import ScanReport, StreamScan, scan_file

CRASH_CODE = "SCANNER_CRASHED"


class ScannerCrashed(Exception):
    """A scan ended with a SCANNER_CRASHED finding; `__cause__` is the scanner's exception."""


class ReportNotJson(Exception):
    """A report did not survive `to_json` and back."""


class _CrashRecorder(logging.Handler):
    """Keeps the exceptions the scanners log as they turn them into SCANNER_CRASHED."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.caught: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None and record.exc_info[1] is not None:
            self.caught.append(record.exc_info[1])


_RECORDER = _CrashRecorder()


def install_crash_recorder() -> None:
    """Route the scanners' crash log records to the recorder (and off stderr: the fuzzer's
    output would otherwise drown in one log line per crashing input)."""
    log = logging.getLogger("scanners")
    if _RECORDER not in log.handlers:
        log.addHandler(_RECORDER)
        log.propagate = False


def check_report(report: ScanReport, label: str) -> ScanReport:
    """`report`, unless a scanner crashed making it or it is not JSON (then raises
    `ScannerCrashed` or `ReportNotJson`)."""
    crashed = [f for f in report.findings if f.code == CRASH_CODE]
    cause = _RECORDER.caught[-1] if _RECORDER.caught else None
    _RECORDER.caught.clear()
    if crashed:
        raise ScannerCrashed(f"{label}: {crashed[0].message} {crashed[0].details}") from cause
    text = report.to_json()  # a detail json cannot encode raises here
    json.loads(text, parse_constant=_refuse_constant)
    return report


def _refuse_constant(name: str) -> None:
    """NaN and Infinity: Python writes and reads them, JSON parsers elsewhere refuse them."""
    raise ReportNotJson(f"the report holds {name}, which is not JSON")


def _scratch_file() -> Path:
    """One file per process, rewritten for every input (`scan_file` scans paths)."""
    folder = Path(tempfile.gettempdir()) / f"hubwarden-fuzz-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    return folder / "input"


def scan_whole(data: bytes, name: str) -> ScanReport:
    """`scan_file` on `data` as the repo file `name` (the second opinion off: fickling is not
    what is fuzzed, and decompiling every mutated pickle would halve the rate)."""
    path = _scratch_file()
    path.write_bytes(data)
    return check_report(scan_file(path, name=name, second_opinion=None), f"scan_file {name}")


def split_points(data: bytes, rng: random.Random) -> list[int]:
    """Chunk boundaries: single bytes, mid-header cuts and large runs all get their turn."""
    points: list[int] = []
    at = 0
    while at < len(data):
        at += rng.choice((1, 2, 7, 64, 511, 4096, 65_536)) * rng.randint(1, 3)
        points.append(min(at, len(data)))
    return points


def scan_streamed(data: bytes, name: str, rng: random.Random) -> ScanReport:
    """`StreamScan.feed` in the chunks `rng` chooses, then `finish`."""
    scan = StreamScan(name=name, size=len(data), second_opinion=None)
    try:
        start = 0
        for end in split_points(data, rng):
            scan.feed(data[start:end])
            start = end
        return check_report(scan.finish(), f"StreamScan {name}")
    finally:
        scan.close()


# The repo file name each format target scans its input as (detection may follow the hint).
FORMAT_FILES: dict[str, str] = {
    "safetensors": "model.safetensors",
    "gguf": "model.gguf",
    "archive": "pytorch_model.bin",
    "pickle": "data.pkl",
    "numpy": "array.npy",
    "keras": "model.keras",
    "onnx": "model.onnx",
    "template": "chat_template.jinja",
}
# The names the stream target scans as: each format target's, and one that hints nothing.
STREAM_NAMES: tuple[str, ...] = (*FORMAT_FILES.values(), "blob")


def stream_input(data: bytes) -> tuple[str, random.Random, bytes]:
    """The stream target's input: byte 0 picks the name, bytes 1-4 seed the chunk splits."""
    if len(data) < 5:
        return STREAM_NAMES[-1], random.Random(0), data  # noqa: S311 - chunk sizes, not secrets
    name = STREAM_NAMES[data[0] % len(STREAM_NAMES)]
    return name, random.Random(data[1:5]), data[5:]  # noqa: S311 - chunk sizes, not secrets


def stream_seed(name: str, payload: bytes, split_seed: int = 0) -> bytes:
    """A stream-target input scanning `payload` as `name` (the inverse of `stream_input`)."""
    return bytes([STREAM_NAMES.index(name)]) + split_seed.to_bytes(4, "little") + payload


def _stream_one(data: bytes) -> None:
    name, rng, payload = stream_input(data)
    scan_streamed(payload, name, rng)


@dataclass(frozen=True, slots=True)
class Target:
    """One fuzz target: what it scans its input as, and the formats its seeds are detected as
    (a seed detected as something else would fuzz the wrong parser)."""

    name: str
    one_input: Callable[[bytes], None]
    seed_formats: frozenset[str]


def _whole(name: str) -> Callable[[bytes], None]:
    def one_input(data: bytes) -> None:
        scan_whole(data, name)

    return one_input


_SEED_FORMATS: dict[str, frozenset[str]] = {
    "safetensors": frozenset({"safetensors"}),
    "gguf": frozenset({"gguf"}),
    "archive": frozenset(
        {"pytorch-zip", "pytorch-legacy", "npz", "tar", "gzip", "torchscript", "joblib"}
    ),
    "pickle": frozenset({"pickle"}),
    "numpy": frozenset({"numpy"}),
    "keras": frozenset({"keras", "hdf5"}),
    "onnx": frozenset({"onnx"}),
    "template": frozenset({"jinja"}),
}
TARGETS: dict[str, Target] = {
    name: Target(name, _whole(FORMAT_FILES[name]), formats)
    for name, formats in _SEED_FORMATS.items()
}
TARGETS["detect"] = Target("detect", _whole("blob"), frozenset())  # detection by content alone
TARGETS["stream"] = Target("stream", _stream_one, frozenset())
# The test suite's short run: every target in one process (one start-up instead of ten), byte 0
# of the input picking the target.
_ALL = tuple(TARGETS.values())


def all_input(data: bytes) -> tuple[Target, bytes]:
    """The `all` target's input: byte 0 picks a target, the rest is that target's input."""
    if not data:
        return TARGETS["detect"], data
    return _ALL[data[0] % len(_ALL)], data[1:]


def all_seed(target: str, seed: bytes) -> bytes:
    """An `all`-target input running `seed` through `target` (the inverse of `all_input`)."""
    return bytes([_ALL.index(TARGETS[target])]) + seed


def _all_one(data: bytes) -> None:
    target, rest = all_input(data)
    target.one_input(rest)


TARGETS["all"] = Target("all", _all_one, frozenset())
