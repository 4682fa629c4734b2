"""`StreamScan`: the same report as `scan_file` for the same bytes, and the clearance rules."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from scanners import Outcome, ScanLimits, ScanReport, StreamScan, scan_file
from tests.scanners import corpus_headers as headers
from tests.scanners.corpus import BENIGN_NAMES, EVIL, Sample, malicious_names, torch_zip_with

CHUNK = 7919  # odd on purpose: headers and members straddle chunks


def _stream(
    path: Path, name: str, limits: ScanLimits | None = None
) -> tuple[StreamScan, ScanReport]:
    data = path.read_bytes()
    scan = (
        StreamScan(name=name, size=len(data))
        if limits is None
        else StreamScan(name=name, size=len(data), limits=limits)
    )
    cleared = 0
    for start in range(0, len(data), CHUNK):
        scan.feed(data[start : start + CHUNK])
        assert scan.cleared >= cleared
        cleared = scan.cleared
    return scan, scan.finish()


def _same(a: ScanReport, b: ScanReport) -> tuple[object, object]:
    return (a.file_format, a.outcome, a.findings), (b.file_format, b.outcome, b.findings)


@pytest.fixture(scope="session")
def header_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """S2's formats, made with S2's factories, for the parity test."""
    root = tmp_path_factory.mktemp("header_corpus")
    return {
        "model.safetensors": headers.make_safetensors_torch(root / "model.safetensors"),
        "lying.safetensors": headers.write_safetensors_raw(
            root / "lying.safetensors", {"w": headers.tensor_entry("F32", [4], 0, 64)}, b"\0" * 16
        ),
        "model.gguf": headers.make_gguf(root / "model.gguf"),
        "evil_template.gguf": headers.make_gguf(
            root / "evil_template.gguf", templates={"": headers.CVE_2024_34359}
        ),
        "model.keras": headers.make_keras_zip(
            root / "model.keras", headers.keras_config([headers.dense()])
        ),
        "model.onnx": _write(
            root / "model.onnx",
            headers.onnx_model(
                headers.onnx_graph(
                    initializers=[headers.onnx_tensor("w", location="../../etc/passwd")]
                )
            ),
        ),
        "config.json": _write(
            root / "config.json", json.dumps({"auto_map": {"AutoModel": "m.M"}}).encode()
        ),
        "tokenizer_config.json": _write(
            root / "tokenizer_config.json", json.dumps({"chat_template": headers.CHATML}).encode()
        ),
        "modeling_x.py": _write(root / "modeling_x.py", b"import os\nos.system('id')\n"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", BENIGN_NAMES)
def test_stream_scan_benign_sample_matches_scan_file(
    name: str, benign_corpus: dict[str, Sample]
) -> None:
    path = benign_corpus[name].path
    _, report = _stream(path, name)
    assert (
        _same(report, scan_file(path, name=name))[0] == _same(report, scan_file(path, name=name))[1]
    )


@pytest.mark.parametrize("name", malicious_names())
def test_stream_scan_malicious_sample_matches_scan_file(
    name: str, malicious_corpus: dict[str, Sample]
) -> None:
    path = malicious_corpus[name].path
    _, report = _stream(path, name)
    expected, got = _same(scan_file(path, name=name), report)
    assert got == expected


@pytest.mark.parametrize(
    "name",
    ["model.safetensors", "lying.safetensors", "model.gguf", "evil_template.gguf", "model.keras",
     "model.onnx", "config.json", "tokenizer_config.json", "modeling_x.py"],
)  # fmt: skip
def test_stream_scan_header_sample_matches_scan_file(
    name: str, header_corpus: dict[str, Path]
) -> None:
    path = header_corpus[name]
    _, report = _stream(path, name)
    expected, got = _same(scan_file(path, name=name), report)
    assert got == expected


def test_stream_scan_clean_safetensors_is_cleared_whole(header_corpus: dict[str, Path]) -> None:
    scan, _ = _stream(header_corpus["model.safetensors"], "model.safetensors")
    assert (scan.cleared, scan.alarmed) == (
        header_corpus["model.safetensors"].stat().st_size,
        False,
    )


def test_stream_scan_lying_safetensors_is_alarmed_and_never_cleared(
    header_corpus: dict[str, Path],
) -> None:
    scan, _ = _stream(header_corpus["lying.safetensors"], "lying.safetensors")
    assert (scan.cleared, scan.alarmed) == (0, True)


def test_stream_scan_numpy_object_array_is_held_whole(tmp_path: Path) -> None:
    path = tmp_path / "o.npy"
    np.save(path, np.array([1, "x", None] * 20000, dtype=object), allow_pickle=True)
    scan, report = _stream(path, "o.npy")
    assert (scan.cleared, report.outcome) == (0, Outcome.CLEAN)


def test_stream_scan_torch_zip_clears_members_before_the_end(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(20000)}, path)
    scan, _ = _stream(path, "m.pt")
    assert 0 < scan.cleared < path.stat().st_size


def test_stream_scan_torch_zip_with_payload_is_alarmed(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.pt", torch_zip_with(EVIL))
    scan, _ = _stream(path, "m.pt")
    assert (scan.cleared, scan.alarmed) == (0, True)


def test_stream_scan_spills_to_disk_with_the_same_report(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.pkl", pickle.dumps(list(range(20000)), protocol=2) + EVIL)
    _, report = _stream(path, "x.pkl", ScanLimits(stream_memory_bytes=4096))
    assert report.outcome == Outcome.MALICIOUS


def test_stream_scan_short_stream_is_error(tmp_path: Path) -> None:
    scan = StreamScan(name="x.txt", size=100)
    scan.feed(b"hello")
    assert "STREAM_SIZE_MISMATCH" in {f.code for f in scan.finish().findings}
