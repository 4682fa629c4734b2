"""Pickle-family streams walked as their bytes arrive: the resumable walker, the same report as
`scan_file`, what is cleared, what is kept.

The corpus's pickles are small (a streaming walk of them ends in `finish`); the files here are
larger than the walk's margin, so the walk really pauses and resumes mid-stream, at every kind of
opcode, between pickles, inside skipped strings and arrays.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from scanners import Outcome, ScanReport, StreamScan, scan_file
from scanners.limits import PickleLimits
from scanners.pickle_stream import MARGIN, MAX_PENDING
from scanners.pickles import Frame, PickleWalker
from tests.scanners.corpus import EVIL, g, pkl, technique_pickles, u, zip_bytes

BIG_LIST = pickle.dumps([list(range(40)) for _ in range(3000)], protocol=4)  # ~250 KB


def _legacy_torch() -> bytes:
    buf = io.BytesIO()
    tensors = {f"w{i}": torch.arange(3000, dtype=torch.float32) + i for i in range(40)}
    torch.save(tensors, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _joblib(obj: object) -> bytes:
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


def _dense_data_pkl() -> bytes:
    buf = io.BytesIO()
    torch.save({f"w{i}": torch.zeros(2, 2) for i in range(4000)}, buf)
    return zipfile.ZipFile(buf).read("archive/data.pkl")


def _legacy_dense() -> bytes:
    buf = io.BytesIO()
    tensors = {f"layers.{i}.weight": torch.zeros(2, 2) for i in range(4000)}
    torch.save(tensors, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _legacy_dense_object_pickle() -> bytes:
    """The fourth pickle of a legacy dense state dict: the tensor records."""
    walker = PickleWalker(data := _legacy_dense(), len(data), PickleLimits())
    pos = 0
    for _ in range(3):
        pos = walker.walk_one(pos) or 0
    end = walker.walk_one(pos)
    assert end is not None
    return data[pos:end]


def _long_global_line() -> bytes:
    """A GLOBAL whose module line is longer than the walk waits for: the walk suspends."""
    return b"c" + b"a" * (MAX_PENDING + 2 * MARGIN) + b"\nb\n)R."


# name -> bytes (built lazily: some take a moment)
STREAMS: dict[str, Callable[[], bytes]] = {
    "legacy_torch.bin": _legacy_torch,
    "joblib_arrays.joblib": lambda: _joblib({f"w{i}": np.arange(4000.0) for i in range(30)}),
    "joblib_object_array.joblib": lambda: _joblib(
        {"w": np.arange(40000.0), "o": np.array([1, "x", None] * 30000, dtype=object)}
    ),
    "numpy_proto5.pkl": lambda: pickle.dumps(
        {f"a{i}": np.arange(3000.0) for i in range(40)}, protocol=5
    ),
    "numpy_proto2.pkl": lambda: pickle.dumps(
        {f"a{i}": np.arange(3000.0) for i in range(20)}, protocol=2
    ),
    "pickled_tensors.pkl": lambda: pickle.dumps(
        {f"t{i}": torch.arange(3000.0) for i in range(30)}, protocol=4
    ),
    "big_list_proto2.pkl": lambda: pickle.dumps([list(range(40)) for _ in range(3000)], 2),
    "strings_proto0.pkl": lambda: pickle.dumps(
        {f"k{i}": ("x" * (i % 5000), i * 1.5) for i in range(400)}, protocol=0
    ),
    "long_strings_proto4.pkl": lambda: pickle.dumps(
        [("y" * 70000, b"z" * 90000, 10**400) for _ in range(4)], protocol=4
    ),
    "dense_data.pkl": _dense_data_pkl,
    "legacy_dense.bin": _legacy_dense,
    "many_pickles.pkl": lambda: b"".join(pickle.dumps([i] * 50) for i in range(3000)),
    "trailing_data.pkl": lambda: BIG_LIST + b"\x00not a pickle",
    "evil_far_away.pkl": lambda: BIG_LIST + EVIL,
    "evil_deep_in_one_pickle.pkl": lambda: pkl(
        b"(" + b"K\x01" * 150000 + b"l0" + g("os", "system") + b"(" + u("id") + b"tR", 4
    ),
    "truncated_far_away.pkl": lambda: BIG_LIST + b"\x80\x04(" + b"K\x01" * 1000,
    "zip_polyglot.pkl": lambda: (
        BIG_LIST + zip_bytes([("data.pkl", EVIL), ("pad.bin", bytes(200000))])
    ),
    "long_global_line.pkl": _long_global_line,
    **{
        f"technique_after_big_{name}.pkl": (lambda data=data: BIG_LIST + data)  # type: ignore[misc]
        for name, (data, _) in technique_pickles().items()
    },
}
CHUNKS = (7919, 1 << 20)


def _stream(data: bytes, name: str, chunk: int) -> tuple[StreamScan, ScanReport, list[int]]:
    scan = StreamScan(name=name, size=len(data))
    seen = []
    for start in range(0, len(data), chunk):
        scan.feed(data[start : start + chunk])
        seen.append(scan.cleared)
    return scan, scan.finish(), seen


def _key(report: ScanReport) -> tuple[object, ...]:
    return report.file_format, report.outcome, report.findings, report.scanners


@pytest.fixture(scope="module")
def stream_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pickle_streams")
    out = {}
    for name, build in STREAMS.items():
        out[name] = root / name
        out[name].write_bytes(build())
    return out


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_scan_large_pickle_matches_scan_file(
    name: str, chunk: int, stream_files: dict[str, Path]
) -> None:
    path = stream_files[name]
    _, report, seen = _stream(path.read_bytes(), name, chunk)
    assert _key(report) == _key(scan_file(path, name=name))
    assert seen == sorted(seen)


def _resumed_walk(data: bytes, step: int) -> PickleWalker:
    """Walk one pickle in pieces: each piece gives the walker only `end` + MARGIN bytes."""
    walker = PickleWalker(b"", 0, PickleLimits())
    frame: Frame | None = None
    end = step
    while end < len(data):
        walker.rebase(data[: end + MARGIN], 0, end, len(data), final=False)
        found = walker.step(0 if frame is None else frame.pos, frame)
        assert isinstance(found, Frame), found
        frame = found
        end += step
    walker.rebase(data, 0, len(data), len(data), final=True)
    assert walker.step(0 if frame is None else frame.pos, frame) == len(data)
    return walker


@pytest.mark.parametrize("step", [997, 4093, 65536])
@pytest.mark.parametrize(
    "build", [_dense_data_pkl, _legacy_dense_object_pickle], ids=["zip", "legacy"]
)
def test_walker_resumed_in_pieces_walks_as_in_one_go(step: int, build: Callable[[], bytes]) -> None:
    data = build()
    whole = PickleWalker(data, len(data), PickleLimits())
    whole.walk_one(0)
    pieces = _resumed_walk(data, step)
    assert (pieces.result.opcodes, pieces.result.fast_records, pieces.result.findings) == (
        whole.result.opcodes,
        whole.result.fast_records,
        whole.result.findings,
    )


def test_walker_resumed_in_pieces_reports_absolute_offsets() -> None:
    data = pkl(b"(" + b"K\x01" * 100000 + b"l0" + g("os", "system") + b"(" + u("id") + b"tR", 4)
    walker = PickleWalker(b"", 0, PickleLimits())
    frame: Frame | None = None
    base = 0
    for end in range(20000, len(data), 20000):  # a window sliding with the walk
        walker.rebase(data[base : end + MARGIN], base, end, len(data), final=False)
        found = walker.step(0 if frame is None else frame.pos, frame)
        assert isinstance(found, Frame)
        frame, base = found, found.pos
    walker.rebase(data[base:], base, len(data), len(data), final=True)
    walker.step(0 if frame is None else frame.pos, frame)
    assert walker.result.globals[0].offset == data.index(b"cos\nsystem")


def test_stream_scan_raw_pickle_is_cleared_before_its_end() -> None:
    _, report, seen = _stream(BIG_LIST, "x.pkl", 7919)
    assert report.outcome == Outcome.CLEAN
    assert 0 < seen[len(seen) // 2] < len(BIG_LIST)


def test_stream_scan_legacy_torch_storages_are_cleared_as_they_arrive(
    stream_files: dict[str, Path],
) -> None:
    data = stream_files["legacy_torch.bin"].read_bytes()
    _, _, seen = _stream(data, "legacy_torch.bin", 65536)
    assert seen[-2] >= len(data) - 2 * 65536


@pytest.mark.parametrize(
    "name", ["legacy_torch.bin", "joblib_arrays.joblib", "big_list_proto2.pkl"]
)
def test_stream_scan_common_pickle_streams_keep_nothing_for_finish(
    name: str, stream_files: dict[str, Path]
) -> None:
    data = stream_files[name].read_bytes()
    scan = StreamScan(name=name, size=len(data))
    for start in range(0, len(data), 65536):
        scan.feed(data[start : start + 65536])
    assert scan.kept_bytes == 0
    scan.close()


def test_stream_scan_joblib_arrays_are_cleared_before_the_end(
    stream_files: dict[str, Path],
) -> None:
    data = stream_files["joblib_arrays.joblib"].read_bytes()
    _, report, seen = _stream(data, "m.joblib", 65536)
    assert report.outcome == Outcome.CLEAN
    assert seen[len(seen) // 2] > len(data) // 3


def test_stream_scan_denied_global_far_away_is_alarmed_and_never_cleared() -> None:
    data = BIG_LIST + EVIL + BIG_LIST  # the walk reaches EVIL before the last bytes
    scan, report, seen = _stream(data, "x.pkl", 7919)
    assert (report.outcome, scan.alarmed) == (Outcome.MALICIOUS, True)
    assert max(seen) <= len(BIG_LIST)


def test_stream_scan_denied_global_deep_in_one_pickle_stops_clearance_before_it(
    stream_files: dict[str, Path],
) -> None:
    data = stream_files["evil_deep_in_one_pickle.pkl"].read_bytes()
    _, report, seen = _stream(data, "x.pkl", 7919)
    assert report.outcome == Outcome.MALICIOUS
    assert 0 < max(seen) <= data.index(b"cos\nsystem")


def test_stream_scan_nested_torch_load_freezes_clearance(stream_files: dict[str, Path]) -> None:
    data = stream_files["pickled_tensors.pkl"].read_bytes()
    _, report, seen = _stream(data, "t.pkl", 7919)
    first_load = data.index(b"_load_from_bytes")
    assert report.outcome == Outcome.CLEAN
    assert max(seen) < first_load + 4 * 65536


def test_stream_scan_zip_signature_caps_clearance_and_is_kept(
    stream_files: dict[str, Path],
) -> None:
    data = stream_files["zip_polyglot.pkl"].read_bytes()
    scan = StreamScan(name="z.pkl", size=len(data))
    seen = []
    for start in range(0, len(data), 7919):
        scan.feed(data[start : start + 7919])
        seen.append(scan.cleared)
    kept = scan.kept_bytes
    report = scan.finish()
    assert max(seen) <= data.index(b"PK\x03\x04")
    assert kept == len(data) - data.index(b"PK\x03\x04")
    assert "POLYGLOT_ZIP" in {f.code for f in report.findings}


def test_stream_scan_joblib_object_array_suspends_the_walk_and_keeps_the_rest(
    stream_files: dict[str, Path],
) -> None:
    data = stream_files["joblib_object_array.joblib"].read_bytes()
    scan = StreamScan(name="o.joblib", size=len(data))
    for start in range(0, len(data), 65536):
        scan.feed(data[start : start + 65536])
    cleared, kept = scan.cleared, scan.kept_bytes
    scan.close()
    assert 0 < kept < len(data)
    assert cleared <= len(data) - kept


def test_stream_scan_long_pending_line_suspends_with_bounded_window(
    stream_files: dict[str, Path],
) -> None:
    data = stream_files["long_global_line.pkl"].read_bytes()
    scan = StreamScan(name="l.pkl", size=len(data))
    for start in range(0, len(data), 65536):
        scan.feed(data[start : start + 65536])
    assert scan.kept_bytes == len(data)
    assert scan.finish().outcome != Outcome.CLEAN


def test_stream_scan_pickle_then_short_stream_is_error() -> None:
    scan = StreamScan(name="x.pkl", size=len(BIG_LIST) + 10)
    scan.feed(BIG_LIST)
    assert "STREAM_SIZE_MISMATCH" in {f.code for f in scan.finish().findings}


def test_stream_scan_skipped_string_longer_than_the_stream_is_malformed() -> None:
    data = b"\x80\x04\x8d" + struct.pack("<Q", 10**12) + b"x" * 300000
    scan, report, seen = _stream(data, "x.pkl", 65536)
    assert report.outcome == Outcome.ERROR
    assert (max(seen), scan.alarmed) == (0, True)
