"""`StreamScan`: the same report as `scan_file` for the same bytes, and the clearance rules."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save as save_safetensors

from scanners import Outcome, ScanLimits, ScanReport, StreamScan, scan_file
from scanners.archives import ZIP_TAIL_BYTES
from tests.scanners import corpus_headers as headers
from tests.scanners import corpus_opaque as opaque
from tests.scanners.corpus import BENIGN_NAMES, EVIL, Sample, malicious_names, torch_zip_with
from tests.scanners.corpus_resource import torch_zip_storage_bomb

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


def test_stream_scan_torch_zip_storage_bomb_is_alarmed_before_it_is_cleared() -> None:
    data = torch_zip_storage_bomb()
    scan = StreamScan(name="m.pt", size=len(data))
    scan.feed(data)
    scan.close()
    assert (scan.alarmed, scan.cleared < data.index(b"archive/data/0")) == (True, True)


def test_stream_scan_clean_header_clears_the_rest_and_is_decided() -> None:
    data = save_safetensors({"w": np.zeros(100_000, dtype=np.float32)})
    scan = StreamScan(name="model.safetensors", size=len(data))
    scan.feed(data[: len(data) // 2])
    scan.close()
    assert (scan.clears_rest, scan.undecided, scan.cleared) == (True, False, len(data) // 2)


def _decided(path: Path, name: str) -> tuple[int, bool]:
    """Clearance when feeding stops as soon as the scan is decided (what the stream worker
    does), counting a scan that clears the rest as clearing everything."""
    data = path.read_bytes()
    scan = StreamScan(name=name, size=len(data))
    for start in range(0, len(data), CHUNK):
        if not scan.undecided:
            break
        scan.feed(data[start : start + CHUNK])
    scan.close()
    return (len(data) if scan.clears_rest else scan.cleared), scan.alarmed


@pytest.mark.parametrize(
    "name",
    [
        "model.safetensors",
        "lying.safetensors",
        "model.gguf",
        "evil_template.gguf",
        "model.keras",
        "model.onnx",
        "config.json",
        "modeling_x.py",
        "state.pt",
        "state.pkl",
        "bomb.pt",
        "evil.pt",
    ],
)
def test_stream_scan_stopping_once_decided_gives_the_whole_feed_clearance(
    name: str, header_corpus: dict[str, Path], tmp_path: Path
) -> None:
    files: dict[str, Callable[[Path], object]] = {
        "state.pt": lambda p: torch.save({"w": torch.zeros(20000)}, p),
        "state.pkl": lambda p: p.write_bytes(pickle.dumps(list(range(50000)), protocol=4)),
        "bomb.pt": lambda p: p.write_bytes(torch_zip_storage_bomb()),
        "evil.pt": lambda p: p.write_bytes(torch_zip_with(EVIL)),
    }
    path = header_corpus.get(name) or tmp_path / name
    if name in files:
        files[name](path)
    scan, _ = _stream(path, name)
    assert _decided(path, name) == (scan.cleared, scan.alarmed)


def test_stream_scan_spills_to_disk_with_the_same_report(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.pkl", pickle.dumps(list(range(20000)), protocol=2) + EVIL)
    _, report = _stream(path, "x.pkl", ScanLimits(stream_memory_bytes=4096))
    assert report.outcome == Outcome.MALICIOUS


def test_stream_scan_short_stream_is_error(tmp_path: Path) -> None:
    scan = StreamScan(name="x.txt", size=100)
    scan.feed(b"hello")
    assert "STREAM_SIZE_MISMATCH" in {f.code for f in scan.finish().findings}


# ---- opaque data and its look-alikes (DESIGN.md rule 10) ----------------------------------------
@pytest.fixture(scope="module")
def opaque_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("opaque_corpus")
    return {
        **opaque.write_samples(root / "opaque", opaque.opaque_samples()),
        **opaque.write_samples(root / "held", opaque.held_samples()),
    }


@pytest.mark.parametrize("name", sorted({*opaque.opaque_samples(), *opaque.held_samples()}))
def test_stream_scan_opaque_or_look_alike_sample_matches_scan_file(
    name: str, opaque_corpus: dict[str, Path]
) -> None:
    path = opaque_corpus[name]
    _, report = _stream(path, name)
    expected, got = _same(scan_file(path, name=name), report)
    assert got == expected


def _clearance(data: bytes, name: str = "x.bin") -> tuple[list[int], ScanReport]:
    """StreamScan's clearance after each chunk, and its report."""
    scan = StreamScan(name=name, size=len(data))
    seen = []
    for start in range(0, len(data), CHUNK):
        scan.feed(data[start : start + CHUNK])
        seen.append(scan.cleared)
    return seen, scan.finish()


def test_stream_scan_opaque_data_is_cleared_as_it_arrives_but_never_its_tail() -> None:
    data = opaque.random_bytes(30, 1 << 20, first=0x01)
    seen, report = _clearance(data)
    assert (0 < seen[len(seen) // 2] < len(data) // 2 + CHUNK, seen[-1], report.file_format) == (
        True,
        len(data) - ZIP_TAIL_BYTES,
        "opaque",
    )


def test_stream_scan_opaque_data_starting_with_an_opcode_is_held_whole_until_finish() -> None:
    seen, report = _clearance(opaque.random_bytes(5, 200_000, first=0x80))
    assert (max(seen), report.outcome, report.file_format) == (0, Outcome.CLEAN, "opaque")


def test_stream_scan_small_opaque_file_is_held_whole_until_finish() -> None:
    seen, report = _clearance(opaque.random_bytes(31, ZIP_TAIL_BYTES, first=0x01))
    assert (max(seen), report.file_format) == (0, "opaque")


def test_stream_scan_hdf5_signature_stops_clearance_before_it() -> None:
    data = opaque.with_hdf5_signature(opaque.random_bytes(32, 1 << 20, first=0x01), 1 << 18)
    seen, report = _clearance(data)
    assert (0 < seen[-1] <= 1 << 18, report.outcome) == (True, Outcome.REVIEW)


def test_stream_scan_zip_eocd_at_the_end_is_never_cleared() -> None:
    data = opaque.with_zip_eocd(opaque.random_bytes(33, 1 << 20, first=0x01))
    seen, report = _clearance(data)
    assert (seen[-1], report.outcome) == (len(data) - ZIP_TAIL_BYTES, Outcome.REVIEW)


def test_stream_scan_tensorflow_graph_is_held_whole_until_finish() -> None:
    data = opaque.saved_model_pb()
    seen, report = _clearance(data, "saved_model.pb")
    # its operators (none here) are walked by `finish`, over the whole file
    assert (max(seen), report.outcome, report.file_format) == (0, Outcome.CLEAN, "tensorflow")
