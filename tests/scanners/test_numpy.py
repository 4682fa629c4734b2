"""NumPy `.npy`/`.npz` and joblib dumps."""

from __future__ import annotations

import io
from pathlib import Path

import joblib
import numpy as np

from scanners import Outcome, scan_file
from scanners.numpy import parse_npy_header
from tests.scanners.corpus import EVIL


def test_numpy_plain_array_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((3, 3)))
    assert scan_file(path).outcome == Outcome.CLEAN


def test_numpy_object_array_payload_is_walked(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([1, 2], dtype=object), allow_pickle=True)
    data = buf.getvalue()
    start = data.index(b"\n") + 1
    path = tmp_path / "o.npy"
    path.write_bytes(data[:start] + EVIL)
    assert scan_file(path).outcome == Outcome.MALICIOUS


def test_numpy_header_that_is_code_is_refused() -> None:
    header = b"__import__('os').system('id')".ljust(118) + b"\n"
    found = parse_npy_header(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    assert getattr(found, "code", None) == "NUMPY_MALFORMED"


def test_numpy_joblib_arrays_interleaved_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump({"a": np.arange(5000.0), "b": np.arange(9, dtype=np.uint8)}, path)
    report = scan_file(path)
    assert (report.file_format, report.outcome) == ("joblib", Outcome.CLEAN)


def test_numpy_npz_with_object_member_payload_is_malicious(tmp_path: Path) -> None:
    import zipfile

    buf = io.BytesIO()
    np.save(buf, np.array([None], dtype=object), allow_pickle=True)
    data = buf.getvalue()
    start = data.index(b"\n") + 1
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ok.npy", data)
        archive.writestr("bad.npy", data[:start] + EVIL)
    assert scan_file(path).outcome == Outcome.MALICIOUS
