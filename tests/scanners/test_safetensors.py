"""safetensors header scanner: files the safetensors package writes pass; headers it refuses (and
the attacks of huggingface/safetensors `attacks/`) are refused too, without reading the data."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import SafetensorError, safe_open

from scanners import safetensors as st
from scanners.limits import SafetensorsLimits
from scanners.report import Finding, Outcome
from tests.scanners.corpus_headers import (
    make_safetensors_numpy,
    make_safetensors_torch,
    safetensors_header,
    tensor_entry,
    write_safetensors_raw,
)


def scan_path(path: Path, **kwargs: Any) -> list[Finding]:
    with path.open("rb") as fh:
        return st.scan(fh, path.stat().st_size, path.name, **kwargs)


def reference_refuses(path: Path) -> bool:
    """Whether the safetensors package itself refuses to open the file (parsing, not loading)."""
    try:
        with safe_open(str(path), "np") as handle:
            list(handle.keys())
    except SafetensorError:
        return True
    return False


TORCH_DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.bool,
    torch.complex64,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e8m0fnu,
    torch.float8_e4m3fnuz,
]


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
def test_scan_torch_file_of_each_dtype_is_clean(tmp_path: Path, dtype: torch.dtype) -> None:
    tensors = {"a": torch.zeros((3, 5), dtype=dtype), "b": torch.zeros(7, dtype=dtype)}
    path = make_safetensors_torch(tmp_path / "m.safetensors", tensors)
    assert scan_path(path) == []


def test_scan_torch_float4_packed_file_is_clean(tmp_path: Path) -> None:
    tensors = {"w": torch.zeros((4, 8), dtype=torch.uint8).view(torch.float4_e2m1fn_x2)}
    path = make_safetensors_torch(tmp_path / "fp4.safetensors", tensors)
    assert safetensors_header(path)["w"]["dtype"] == "F4"
    assert scan_path(path) == []


def test_scan_numpy_file_with_metadata_is_clean(tmp_path: Path) -> None:
    arrays: dict[str, np.ndarray[Any, Any]] = {
        "embed": np.ones((16, 8), dtype=np.float32),
        "ids": np.arange(5, dtype=np.int64),
        "flags": np.array([True, False]),
    }
    path = make_safetensors_numpy(tmp_path / "n.safetensors", arrays, {"format": "np", "x": "1"})
    assert scan_path(path) == []


def test_scan_empty_and_scalar_tensors_are_clean(tmp_path: Path) -> None:
    tensors = {"empty": torch.zeros((0, 4)), "scalar": torch.tensor(3.0), "x": torch.ones(2)}
    path = make_safetensors_torch(tmp_path / "e.safetensors", tensors)
    assert scan_path(path) == []


def test_scan_file_without_tensors_is_clean(tmp_path: Path) -> None:
    path = make_safetensors_torch(tmp_path / "none.safetensors", {}, {"format": "pt"})
    assert scan_path(path) == []


def test_scan_reads_only_the_header_prefix(tmp_path: Path) -> None:
    path = make_safetensors_torch(tmp_path / "big.safetensors", {"w": torch.ones(256, 256)})
    raw = path.read_bytes()
    end = st.header_size(raw[:8], len(raw))
    assert end is not None
    prefix_only = io.BytesIO(raw[:end])
    assert st.scan(prefix_only, len(raw), "big.safetensors") == []


def test_header_size_of_short_prefix_is_unknown() -> None:
    assert st.header_size(b"\x10\0\0", 1000) is None


def test_header_size_is_length_prefix_plus_json(tmp_path: Path) -> None:
    path = make_safetensors_torch(tmp_path / "h.safetensors")
    raw = path.read_bytes()
    (length,) = struct.unpack_from("<Q", raw)
    assert st.header_size(raw[:8], len(raw)) == 8 + length


def test_header_size_of_lying_length_is_the_length_prefix() -> None:
    assert st.header_size(struct.pack("<Q", 2**63), 4096) == 8


def _valid_pair() -> dict[str, Any]:
    return {"a": tensor_entry("F32", [2], 0, 8), "b": tensor_entry("F32", [2], 8, 16)}


# (id, header bytes or JSON, data, expected code) -- every one refused by safetensors too
HOSTILE: list[tuple[str, bytes | object, bytes, str]] = [
    ("not_utf8", b'{"a\xff":{}}', b"", "SAFETENSORS_HEADER_NOT_UTF8"),
    ("trailing_garbage", b"{} x", b"", "SAFETENSORS_HEADER_INVALID_JSON"),
    ("trailing_nul", b"{}\0\0", b"", "SAFETENSORS_HEADER_INVALID_JSON"),
    ("nan_constant", b'{"__metadata__": {"a": NaN}}', b"", "SAFETENSORS_HEADER_INVALID_JSON"),
    ("top_level_array", b"[]", b"", "SAFETENSORS_HEADER_NOT_OBJECT"),
    (
        "unknown_dtype",
        {"a": tensor_entry("F128", [1], 0, 16)},
        b"\0" * 16,
        "SAFETENSORS_DTYPE_UNKNOWN",
    ),
    ("negative_dim", {"a": tensor_entry("U8", [-1], 0, 0)}, b"", "SAFETENSORS_TENSOR_INVALID"),
    (
        "float_dim",
        {"a": {"dtype": "U8", "shape": [1.0], "data_offsets": [0, 1]}},
        b"\0",
        "SAFETENSORS_TENSOR_INVALID",
    ),
    (
        "bool_dim",
        {"a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}},
        b"\0",
        "SAFETENSORS_TENSOR_INVALID",
    ),
    (
        "three_offsets",
        {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}},
        b"\0",
        "SAFETENSORS_TENSOR_INVALID",
    ),
    ("missing_offsets", {"a": {"dtype": "U8", "shape": [1]}}, b"\0", "SAFETENSORS_TENSOR_INVALID"),
    ("entry_not_object", {"a": [1, 2]}, b"", "SAFETENSORS_TENSOR_INVALID"),
    (
        "lone_surrogate_name",
        b'{"\\ud800": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}',
        b"\0",
        "SAFETENSORS_TENSOR_INVALID",
    ),
    ("metadata_not_strings", {"__metadata__": {"a": 1}}, b"", "SAFETENSORS_METADATA_INVALID"),
    ("metadata_list", {"__metadata__": ["a"]}, b"", "SAFETENSORS_METADATA_INVALID"),
    # attacks/README.md proposal 4: tensors overlapping the same bytes
    (
        "overlap",
        {"a": tensor_entry("F32", [2], 0, 8), "b": tensor_entry("F32", [2], 4, 12)},
        b"\0" * 12,
        "SAFETENSORS_OFFSETS_OVERLAP",
    ),
    (
        "same_region_twice",
        {"a": tensor_entry("F32", [2], 0, 8), "b": tensor_entry("F32", [2], 0, 8)},
        b"\0" * 8,
        "SAFETENSORS_OFFSETS_OVERLAP",
    ),
    (
        "gap",
        {"a": tensor_entry("F32", [2], 0, 8), "b": tensor_entry("F32", [2], 16, 24)},
        b"\0" * 24,
        "SAFETENSORS_OFFSETS_GAP",
    ),
    (
        "end_before_begin",
        {"a": tensor_entry("U8", [0], 0, 0), "b": tensor_entry("U8", [0], 4, 2)},
        b"\0" * 4,
        "SAFETENSORS_OFFSETS_INVALID",
    ),
    (
        "size_mismatch",
        {"a": tensor_entry("F32", [3], 0, 8)},
        b"\0" * 8,
        "SAFETENSORS_TENSOR_SIZE_MISMATCH",
    ),
    (
        "shape_overflow",
        {"a": tensor_entry("F32", [2**32, 2**32], 0, 0)},
        b"",
        "SAFETENSORS_SHAPE_OVERFLOW",
    ),
    ("subbyte_odd_f4", {"a": tensor_entry("F4", [3], 0, 2)}, b"\0\0", "SAFETENSORS_TENSOR_INVALID"),
    (
        "subbyte_f6_partial",
        {"a": tensor_entry("F6_E2M3", [2], 0, 2)},
        b"\0\0",
        "SAFETENSORS_TENSOR_INVALID",
    ),
    (
        "hidden_trailing_bytes",
        _valid_pair(),
        b"\0" * 16 + b"import os",
        "SAFETENSORS_DATA_SIZE_MISMATCH",
    ),
    ("data_truncated", _valid_pair(), b"\0" * 12, "SAFETENSORS_DATA_SIZE_MISMATCH"),
    (
        "offset_beyond_file",
        {"a": tensor_entry("U8", [2**40], 0, 2**40)},
        b"\0",
        "SAFETENSORS_DATA_SIZE_MISMATCH",
    ),
    (
        "duplicate_tensor_key",
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},'
        b' "a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}',
        b"\0\0",
        "SAFETENSORS_DUPLICATE_KEY",
    ),
    (
        "duplicate_field",
        b'{"a": {"dtype": "U8", "dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}',
        b"\0",
        "SAFETENSORS_DUPLICATE_KEY",
    ),
]


@pytest.mark.parametrize(
    ("header", "data", "code"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_scan_hostile_header_is_refused_like_the_reference(
    tmp_path: Path, header: bytes | object, data: bytes, code: str
) -> None:
    path = write_safetensors_raw(tmp_path / "h.safetensors", header, data)
    findings = scan_path(path)
    assert code in [f.code for f in findings]
    assert all(f.outcome in (Outcome.ERROR, Outcome.MALICIOUS) for f in findings)
    assert reference_refuses(path)


def test_scan_overlap_is_reported_as_malicious(tmp_path: Path) -> None:
    header = {"a": tensor_entry("F32", [2], 0, 8), "b": tensor_entry("F32", [2], 0, 8)}
    path = write_safetensors_raw(tmp_path / "o.safetensors", header, b"\0" * 8)
    assert [f.outcome for f in scan_path(path)] == [Outcome.MALICIOUS]


def test_scan_duplicate_key_is_reported_as_malicious(tmp_path: Path) -> None:
    raw = b'{"__metadata__": {"a": "1"}, "__metadata__": {"a": "2"}}'
    path = write_safetensors_raw(tmp_path / "d.safetensors", raw)
    findings = scan_path(path)
    assert [(f.code, f.outcome) for f in findings] == [
        ("SAFETENSORS_DUPLICATE_KEY", Outcome.MALICIOUS)
    ]


def test_scan_header_length_past_file_is_refused(tmp_path: Path) -> None:
    # attacks/safetensors_abuse_attempt_1.py: the 8-byte length claims more than the file holds
    path = make_safetensors_torch(tmp_path / "a1.safetensors", {"weight": torch.zeros(2, 2)})
    with path.open("r+b") as fh:
        fh.write((1000).to_bytes(8, "little"))
    assert [f.code for f in scan_path(path)] == ["SAFETENSORS_HEADER_LENGTH_INVALID"]
    assert reference_refuses(path)


def test_scan_header_length_over_cap_is_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "cap.safetensors"
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", 100_000_001) + b"{")
        fh.truncate(200_000_000)  # sparse: the header bytes are never read
    tracemalloc.start()
    findings = scan_path(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [f.code for f in findings] == ["SAFETENSORS_HEADER_TOO_LARGE"]
    assert peak < 1_000_000
    assert reference_refuses(path)


def test_scan_header_length_of_2_pow_64_minus_1_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "max.safetensors"
    path.write_bytes(struct.pack("<Q", 2**64 - 1) + b"{}")
    assert [f.code for f in scan_path(path)] == ["SAFETENSORS_HEADER_TOO_LARGE"]


def test_scan_file_shorter_than_length_prefix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x02\0\0")
    assert [f.code for f in scan_path(path)] == ["SAFETENSORS_TRUNCATED"]


def test_scan_prefix_shorter_than_header_is_unreadable(tmp_path: Path) -> None:
    path = make_safetensors_torch(tmp_path / "p.safetensors")
    raw = path.read_bytes()
    findings = st.scan(io.BytesIO(raw[:20]), len(raw), "p.safetensors")
    assert [f.code for f in findings] == ["SAFETENSORS_HEADER_UNREADABLE"]


def test_scan_many_overlapping_tensors_is_refused(tmp_path: Path) -> None:
    # attacks/safetensors_abuse_attempt_3.py, scaled down: many tensors on the same bytes
    entry = tensor_entry("F32", [20, 20], 0, 1600)
    header = {f"weight_{i}": entry for i in range(20_000)}
    path = write_safetensors_raw(tmp_path / "a3.safetensors", header, b"\0" * 1600)
    assert [f.code for f in scan_path(path)] == ["SAFETENSORS_OFFSETS_OVERLAP"]


def test_scan_entry_count_over_limit_is_refused(tmp_path: Path) -> None:
    # attacks/safetensors_abuse_attempt_2.py: millions of entries; refused before parsing
    header = {f"w{i}": tensor_entry("U8", [0], 0, 0) for i in range(50)}
    path = write_safetensors_raw(tmp_path / "a2.safetensors", header)
    findings = scan_path(path, limits=SafetensorsLimits(max_entries=20))
    assert [f.code for f in findings] == ["SAFETENSORS_TOO_MANY_ENTRIES"]


def test_scan_deeply_nested_json_is_refused(tmp_path: Path) -> None:
    path = write_safetensors_raw(tmp_path / "deep.safetensors", b"[" * 100_000 + b"]" * 100_000)
    assert [f.code for f in scan_path(path)] == ["SAFETENSORS_HEADER_INVALID_JSON"]


def test_scan_unordered_offsets_are_accepted_like_the_reference(tmp_path: Path) -> None:
    header = {"b": tensor_entry("U8", [2], 2, 4), "a": tensor_entry("U8", [2], 0, 2)}
    path = write_safetensors_raw(tmp_path / "u.safetensors", header, b"\0" * 4)
    assert scan_path(path) == []
    assert not reference_refuses(path)


def test_scan_unknown_tensor_fields_are_ignored_like_the_reference(tmp_path: Path) -> None:
    header = {"a": tensor_entry("U8", [1], 0, 1) | {"note": "x"}, "__metadata__": None}
    path = write_safetensors_raw(tmp_path / "x.safetensors", json.dumps(header).encode(), b"\0")
    assert scan_path(path) == []
    assert not reference_refuses(path)


def test_dtype_table_matches_every_reference_dtype(tmp_path: Path) -> None:
    for dtype, bits in st.DTYPE_BITS.items():
        count = 8  # a whole number of bytes for every width
        header = {"t": tensor_entry(dtype, [count], 0, count * bits // 8)}
        path = write_safetensors_raw(tmp_path / f"{dtype}.st", header, b"\0" * (count * bits // 8))
        assert not reference_refuses(path), dtype
        assert scan_path(path) == [], dtype
