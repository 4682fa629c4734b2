"""Malformed input is a finding, never an exception (issue 13): the crashes atheris found, and a
bounded, seeded run of byte mutations of small real samples through `scan_file` and `StreamScan`.

The mutation run is deterministic (fixed seed, fixed count) and takes a few seconds; the long
atheris run is documented in bench/. "No exception" means none escapes, and none is turned into
SCANNER_CRASHED by the dispatcher's last-resort catch either: that finding marks a scanner bug.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import random
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from scanners import Outcome, ScanReport, StreamScan, scan_file, scan_stream
from tests.scanners import corpus_headers as headers
from tests.scanners.corpus import EVIL, _tar_bytes, legacy_torch_with, torch_zip_with, zip_bytes
from tests.scanners.corpus_formats import format_samples
from tests.scanners.corpus_fuzz_crashes import FUZZ_CRASHES, write_fuzz_crashes

MUTATIONS = 400
SEED = 13
CHUNK = 997

# Crashes found by ~411k atheris executions (issue 13).
ADTS_SYNC_CUT = bytes.fromhex("ffe0e142")  # IndexError in format detection


def _zip_extract_version(version: int) -> bytes:
    """A zip whose central directory asks for reader `version`: zipfile raises
    NotImplementedError ("zip file version ...")."""
    data = bytearray(zip_bytes([("archive/data.pkl", pickle.dumps(1))]))
    at = data.find(b"PK\x01\x02")
    data[at + 6] = version
    return bytes(data)


def _zip_directory_offset_past_itself() -> bytes:
    """The end record places the directory further than it is: zipfile then computes member
    offsets below zero ("negative seek value")."""
    data = bytearray(zip_bytes([("archive/data.pkl", pickle.dumps(1))]))
    at = data.rfind(b"PK\x05\x06")
    (offset,) = struct.unpack_from("<L", data, at + 16)
    struct.pack_into("<L", data, at + 16, offset + 0x10000000)
    return bytes(data)


def _seeds(root: Path) -> dict[str, bytes]:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2, 2), "b": torch.ones(3)}, buf)
    npy = io.BytesIO()
    np.save(npy, np.arange(6, dtype=np.float32))
    return {
        "model.pt": buf.getvalue(),
        "values.pkl": pickle.dumps({"a": [1, 2.5, "x", (3, None)], "b": b"y"}, protocol=4),
        "values_proto0.pkl": pickle.dumps([1, "two", (3,)], protocol=0),
        "evil.pkl": EVIL,
        "evil.pt": torch_zip_with(EVIL),
        "legacy.bin": legacy_torch_with(pickle.dumps({"w": 1}, protocol=2)),
        "array.npy": npy.getvalue(),
        "arrays.npz": zip_bytes([("a.npy", npy.getvalue())], zipfile.ZIP_DEFLATED),
        "values.pkl.gz": gzip.compress(pickle.dumps([1, 2, 3])),
        "bundle.tar": _tar_bytes([("pickle", pickle.dumps(1)), ("a.txt", b"hi\n")]),
        "model.safetensors": headers.make_safetensors_torch(root / "s.safetensors").read_bytes(),
        "model.gguf": headers.make_gguf(root / "m.gguf").read_bytes(),
    }


_WORDS = (0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """A few byte edits: flips, cuts, insertions, and boundary words written over sizes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        at = rng.randrange(len(out) + 1)
        if kind < 0.4 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif kind < 0.55:
            del out[at : at + rng.randint(1, 64)]
        elif kind < 0.7:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind < 0.8:
            del out[at:]  # truncation
        else:
            out[at : at + 4] = struct.pack("<I", rng.choice(_WORDS))
    return bytes(out)


def _inputs(root: Path) -> list[tuple[str, bytes]]:
    rng = random.Random(SEED)  # noqa: S311 - reproducible mutations, not secrets
    seeds = sorted(_seeds(root).items())
    inputs = [
        ("adts.bin", ADTS_SYNC_CUT),
        ("version.pt", _zip_extract_version(100)),
        ("offset.pt", _zip_directory_offset_past_itself()),
        *seeds,
    ]
    for i in range(MUTATIONS):
        name, data = seeds[i % len(seeds)]
        inputs.append((name, _mutate(data, rng)))
    return inputs


def _crashes(report: ScanReport) -> list[str]:
    return [str(f.details.get("error")) for f in report.findings if f.code == "SCANNER_CRASHED"]


def _streamed(name: str, data: bytes) -> ScanReport:
    scan = StreamScan(name=name, size=len(data))
    for start in range(0, len(data), CHUNK):
        scan.feed(data[start : start + CHUNK])
    return scan.finish()


@pytest.fixture(scope="module")
def fuzz_inputs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes]]:
    return _inputs(tmp_path_factory.mktemp("fuzz_seeds"))


@pytest.mark.parametrize(
    "scan",
    [
        pytest.param(lambda path, name, data: scan_file(path, name=name), id="scan_file"),
        pytest.param(lambda path, name, data: _streamed(name, data), id="StreamScan"),
    ],
)
def test_fuzzed_input_never_raises_nor_crashes_a_scanner(
    tmp_path: Path,
    fuzz_inputs: list[tuple[str, bytes]],
    scan: Callable[[Path, str, bytes], ScanReport],
) -> None:
    crashed: list[tuple[int, str, list[str]]] = []
    for index, (name, data) in enumerate(fuzz_inputs):
        path = tmp_path / f"{index}-{name}"
        path.write_bytes(data)
        report = scan(path, name, data)  # an exception fails the test with its input's name
        if _crashes(report):
            crashed.append((index, name, _crashes(report)))
    assert crashed == []
    assert len(fuzz_inputs) > MUTATIONS


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("version.pt", _zip_extract_version(100), "ZIP_UNSUPPORTED_VERSION"),
        ("offset.pt", _zip_directory_offset_past_itself(), "ZIP_MALFORMED"),
    ],
)
def test_zip_crash_found_by_fuzzing_is_its_own_finding(
    tmp_path: Path, name: str, data: bytes, code: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    for report in (scan_file(path, name=name), _streamed(name, data)):
        assert (code in {f.code for f in report.findings}, report.outcome) == (
            True,
            Outcome.ERROR,
        )


def test_adts_sync_cut_short_is_detected_without_error(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(ADTS_SYNC_CUT)
    report = scan_file(path)
    assert (report.file_format, _crashes(report)) == ("opaque", [])


def _zip_member_shorter_than_declared() -> bytes:
    """A deflated binary member whose directory entry declares 5000 bytes more than it inflates
    to (a mutation of a `.keras` seed): the member was scanned with the declared size, and the
    opaque check indexed past the end of its mapped bytes (IndexError)."""
    data = bytearray(zip_bytes([("blob.bin", bytes(range(1, 200)) * 3)], zipfile.ZIP_DEFLATED))
    at = data.find(b"PK\x01\x02")
    (size,) = struct.unpack_from("<L", data, at + 24)
    struct.pack_into("<L", data, at + 24, size + 5000)
    return bytes(data)


def test_zip_member_shorter_than_declared_is_scanned_at_its_real_size(tmp_path: Path) -> None:
    data = _zip_member_shorter_than_declared()
    path = tmp_path / "model.zip"
    path.write_bytes(data)
    for report in (scan_file(path), _streamed("model.zip", data)):
        assert (_crashes(report), "ZIP_CRC_MISMATCH" in {f.code for f in report.findings}) == (
            [],
            True,
        )


def _format_seeds(root: Path) -> list[tuple[str, bytes]]:
    """Benign samples of issue 13's second-round formats (NeMo, skops, TensorFlow, ONNX,
    sentence-transformers, TorchScript, Keras lookup layers, zip comments)."""
    wanted = {
        "asr_model.nemo", "pipeline.skops", "saved_model.pb", "frozen_graph.pb", "model.onnx",
        "st_default/modules.json", "torchscript_scripted.pt", "torchscript_lite.ptl",
        "lookup_inline_vocabulary.keras", "model_config.yaml", "zip_comment_text.pt",
        "onnx_azure_invoker.onnx", "skops_method_type_mismatch.skops", "tf_printv2_to_file.pb",
    }  # fmt: skip
    return [(s.name, s.path.read_bytes()) for s in format_samples(root) if s.name in wanted]


def test_fuzzed_new_format_never_raises_nor_crashes_a_scanner(tmp_path: Path) -> None:
    rng = random.Random(SEED)  # noqa: S311 - reproducible mutations, not secrets
    seeds = _format_seeds(tmp_path / "seeds")
    crashed: list[tuple[int, str, list[str]]] = []
    for index in range(MUTATIONS):
        name, seed = seeds[index % len(seeds)]
        data = _mutate(seed, rng)
        report = scan_stream_bytes(name, data)
        if _crashes(report):
            crashed.append((index, name, _crashes(report)))
    assert (crashed, len(seeds)) == ([], 14)


def scan_stream_bytes(name: str, data: bytes) -> ScanReport:
    return scan_stream(io.BytesIO(data), len(data), name.rsplit("/", 1)[-1], second_opinion=None)


# ---- inputs the atheris runs found (tests/scanners/corpus_fuzz_crashes.py) -----------------------
# The child's limits: about what a stream scan worker gets. A hang ends by SIGXCPU. The HDF5
# reader's own CPU limit (10 s by default) is cut to 2 s: the hang it bounds is the same.
CHILD_MEMORY_BYTES = 1 << 30
CHILD_CPU_S = 20
_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]), int(sys.argv[3])))
resource.setrlimit(resource.RLIMIT_CPU, (int(sys.argv[4]), int(sys.argv[4])))
from scanners import scan_file
from scanners.limits import KerasLimits, ScanLimits
limits = ScanLimits(keras=KerasLimits(h5_cpu_s=2, h5_wall_s=10.0))
report = scan_file(sys.argv[1], name=sys.argv[2], limits=limits, second_opinion=None)
print(json.dumps([report.outcome.value, sorted({f.code for f in report.findings})]))
"""


@pytest.mark.parametrize("name", sorted(FUZZ_CRASHES))
def test_fuzz_crash_input_is_refused_within_limits(tmp_path: Path, name: str) -> None:
    path = write_fuzz_crashes(tmp_path)[name]
    limits = [str(CHILD_MEMORY_BYTES), str(CHILD_CPU_S)]
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed argv
        [sys.executable, "-c", _CHILD, str(path), FUZZ_CRASHES[name].name, *limits],
        capture_output=True,
        text=True,
        timeout=CHILD_CPU_S * 3,
        check=False,
    )
    assert done.returncode == 0, (FUZZ_CRASHES[name].found, done.stderr[-2000:])
    outcome, codes = json.loads(done.stdout.splitlines()[-1])
    assert (outcome != "clean", "SCANNER_CRASHED" in codes) == (True, False), codes
