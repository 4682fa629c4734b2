"""GGUF header scanner: files gguf-py writes pass and our reading agrees with GGUFReader; hostile
headers (huge counts and lengths, truncation, nesting, bad types, lying tensors) are refused
quickly with bounded memory; chat templates inside are inspected."""

from __future__ import annotations

import io
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from scanners import gguf as gg
from scanners.report import Finding, Outcome
from tests.scanners.corpus_headers import (
    CVE_2024_34359,
    REAL_TEMPLATES,
    encode_gguf,
    find_after,
    gguf_kv_string,
    gguf_kv_u32,
    gguf_string,
    gguf_tensor_info,
    make_gguf,
)


def scan_path(path: Path, **kwargs: Any) -> list[Finding]:
    with path.open("rb") as fh:
        return gg.scan(fh, path.stat().st_size, path.name, **kwargs)


def scan_bytes(blob: bytes, **kwargs: Any) -> list[Finding]:
    return gg.scan(io.BytesIO(blob), len(blob), "m.gguf", **kwargs)


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def parse(path: Path) -> gg.GGUFHeader:
    with path.open("rb") as fh:
        return gg.parse_header(fh, path.stat().st_size)


# ---- files gguf-py writes -----------------------------------------------------------------------


def test_scan_writer_file_with_chatml_is_clean(tmp_path: Path) -> None:
    assert scan_path(make_gguf(tmp_path / "m.gguf")) == []


@pytest.mark.parametrize("template", sorted(REAL_TEMPLATES))
def test_scan_writer_file_with_real_template_is_clean(tmp_path: Path, template: str) -> None:
    path = make_gguf(tmp_path / "m.gguf", templates={"": REAL_TEMPLATES[template]})
    assert scan_path(path) == []


def test_scan_writer_file_with_named_templates_is_clean(tmp_path: Path) -> None:
    templates = {"": REAL_TEMPLATES["llama31_tools"], "tool_use": REAL_TEMPLATES["qwen25_tools"]}
    extra = lambda w: w.add_array("tokenizer.chat_templates", ["tool_use"])  # noqa: E731
    assert scan_path(make_gguf(tmp_path / "m.gguf", templates=templates, extra=extra)) == []


def test_scan_big_endian_writer_file_is_clean(tmp_path: Path) -> None:
    path = make_gguf(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG)
    assert scan_path(path) == []


def test_scan_custom_alignment_file_is_clean(tmp_path: Path) -> None:
    assert scan_path(make_gguf(tmp_path / "a.gguf", alignment=64)) == []


def test_scan_quantized_and_odd_sized_tensors_are_clean(tmp_path: Path) -> None:
    path = tmp_path / "q.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    q4 = gguf.GGMLQuantizationType.Q4_0
    writer.add_tensor("q", np.zeros((2, 18), dtype=np.uint8), raw_dtype=q4)
    writer.add_tensor("odd", np.ones(7, dtype=np.float16))
    writer.add_tensor("i8", np.ones((3, 5), dtype=np.int8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert scan_path(path) == []


def test_scan_file_without_tensors_is_clean(tmp_path: Path) -> None:
    assert scan_path(make_gguf(tmp_path / "v.gguf", tensors={})) == []


def test_parse_agrees_with_gguf_reader(tmp_path: Path) -> None:
    def extra(writer: gguf.GGUFWriter) -> None:
        writer.add_array("test.nested", [[1, 2], [3, 4, 5]])
        writer.add_float64("test.f64", 1.5)
        writer.add_bool("test.flag", True)
        writer.add_int64("test.i64", -3)

    path = make_gguf(tmp_path / "r.gguf", vocab_size=300, extra=extra, alignment=64)
    ours = parse(path)
    reader = gguf.GGUFReader(str(path))
    theirs = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(ours.fields) == list(theirs)
    for key, field in theirs.items():
        assert ours.fields[key].value_type == field.types[0].name, key
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            assert ours.fields[key].element_type == field.types[1].name, key
            if field.types[1] != gguf.GGUFValueType.ARRAY:  # the reader flattens nested ones
                assert ours.fields[key].count == len(field.data), key
    assert ours.data_offset == reader.data_offset
    assert [
        (t.name, t.dims, t.ggml_type, ours.data_offset + t.offset, t.n_bytes) for t in ours.tensors
    ] == [
        (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), t.data_offset, t.n_bytes)
        for t in reader.tensors
    ]


def test_parse_keeps_the_chat_template_text(tmp_path: Path) -> None:
    template = REAL_TEMPLATES["gemma"]
    path = make_gguf(tmp_path / "t.gguf", templates={"rag": template})
    assert parse(path).fields["tokenizer.chat_template.rag"].value == template


def test_ggml_type_table_matches_gguf_package() -> None:
    reference = {
        int(t): (t.name, *gguf.GGML_QUANT_SIZES[t])
        for t in gguf.GGMLQuantizationType
        if t in gguf.GGML_QUANT_SIZES
    }
    assert reference == gg.GGML_TYPES


# ---- header_size and streaming ------------------------------------------------------------------


def test_header_size_equals_reader_data_offset(tmp_path: Path) -> None:
    path = make_gguf(tmp_path / "h.gguf", vocab_size=2000)
    raw = path.read_bytes()
    assert gg.header_size(raw, len(raw)) == gguf.GGUFReader(str(path)).data_offset


def test_header_size_of_short_prefix_is_unknown(tmp_path: Path) -> None:
    raw = make_gguf(tmp_path / "h.gguf", vocab_size=2000).read_bytes()
    assert gg.header_size(raw[:1000], len(raw)) is None


def test_header_probe_fed_in_chunks_finds_the_same_end(tmp_path: Path) -> None:
    raw = make_gguf(tmp_path / "h.gguf", vocab_size=5000).read_bytes()
    probe = gg.HeaderProbe(len(raw))
    answers = [probe.feed(raw[:n]) for n in range(0, len(raw) + 4096, 4096)]
    found = [a for a in answers if a is not None]
    assert found and found[0] == gg.header_size(raw, len(raw))


def test_header_size_of_malformed_prefix_is_what_was_seen() -> None:
    blob = encode_gguf([], [], kv_count=2**40)
    assert gg.header_size(blob, len(blob)) == len(blob)


def test_header_size_past_cap_is_the_cap(tmp_path: Path) -> None:
    raw = make_gguf(tmp_path / "c.gguf", vocab_size=5000).read_bytes()
    limits = gg.GGUFLimits(max_header_bytes=4096)
    assert gg.header_size(raw, len(raw), limits) == 4096


def test_scan_prefix_covering_the_header_is_clean(tmp_path: Path) -> None:
    raw = make_gguf(tmp_path / "p.gguf", vocab_size=3000).read_bytes()
    end = gg.header_size(raw, len(raw))
    assert end is not None
    assert gg.scan(io.BytesIO(raw[:end]), len(raw), "p.gguf") == []


def test_scan_prefix_shorter_than_header_is_unreadable(tmp_path: Path) -> None:
    raw = make_gguf(tmp_path / "p.gguf", vocab_size=3000).read_bytes()
    findings = gg.scan(io.BytesIO(raw[:5000]), len(raw), "p.gguf")
    assert codes(findings) == ["GGUF_HEADER_UNREADABLE"]


# ---- versions 1 and 2 ---------------------------------------------------------------------------


def test_scan_version_2_file_is_clean(tmp_path: Path) -> None:
    raw = bytearray(make_gguf(tmp_path / "v3.gguf").read_bytes())
    raw[4:8] = struct.pack("<I", 2)  # v2 and v3 share the little-endian layout
    assert scan_bytes(bytes(raw)) == []


def test_scan_version_1_file_with_32_bit_counts_is_clean() -> None:
    kvs = [
        gguf_kv_string("general.architecture", "llama", "I"),
        gguf_kv_string("tokenizer.chat_template", REAL_TEMPLATES["chatml"], "I"),
    ]
    infos = [gguf_tensor_info("w", [32, 2], 0, 0, "I"), gguf_tensor_info("b", [4], 0, 256, "I")]
    blob = encode_gguf(kvs, infos, version=1, data=b"\0" * 272)
    assert scan_bytes(blob) == []


def test_scan_version_1_template_is_inspected() -> None:
    kvs = [gguf_kv_string("tokenizer.chat_template", CVE_2024_34359, "I")]
    blob = encode_gguf(kvs, [], version=1)
    assert "GGUF_TEMPLATE_SANDBOX_ESCAPE" in codes(scan_bytes(blob))


# ---- chat templates -----------------------------------------------------------------------------


def test_scan_cve_2024_34359_template_is_malicious(tmp_path: Path) -> None:
    path = make_gguf(tmp_path / "rce.gguf", templates={"": CVE_2024_34359})
    findings = scan_path(path)
    assert "GGUF_TEMPLATE_SANDBOX_ESCAPE" in codes(findings)
    assert all(f.outcome is Outcome.MALICIOUS for f in findings)
    assert findings[0].details["key"] == "tokenizer.chat_template"


def test_scan_malicious_named_template_variant_is_malicious(tmp_path: Path) -> None:
    evil = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
    path = make_gguf(tmp_path / "v.gguf", templates={"": REAL_TEMPLATES["chatml"], "rag": evil})
    findings = scan_path(path)
    assert {f.details["key"] for f in findings} == {"tokenizer.chat_template.rag"}
    assert all(f.outcome is Outcome.MALICIOUS for f in findings)


def test_scan_template_that_is_not_a_string_is_flagged(tmp_path: Path) -> None:
    extra = lambda w: w.add_uint32("tokenizer.chat_template.default", 7)  # noqa: E731
    path = make_gguf(tmp_path / "n.gguf", extra=extra)
    assert codes(scan_path(path)) == ["GGUF_TEMPLATE_NOT_STRING"]


# ---- hostile headers ----------------------------------------------------------------------------


def _kv_array_header(elem_type: int, count: int) -> bytes:
    return gguf_string("x.arr") + struct.pack("<IIQ", 9, elem_type, count)


HOSTILE: list[tuple[str, bytes, str]] = [
    ("bad_magic", b"GGUL" + struct.pack("<IQQ", 3, 0, 0), "GGUF_BAD_MAGIC"),
    ("version_0", b"GGUF" + struct.pack("<IQQ", 0, 0, 0), "GGUF_VERSION_UNSUPPORTED"),
    ("version_4", b"GGUF" + struct.pack("<IQQ", 4, 0, 0), "GGUF_VERSION_UNSUPPORTED"),
    ("truncated_fixed_header", b"GGUF" + struct.pack("<I", 3) + b"\0\0", "GGUF_TRUNCATED"),
    ("huge_tensor_count", encode_gguf([], [], tensor_count=2**63), "GGUF_COUNT_INVALID"),
    ("huge_kv_count", encode_gguf([], [], kv_count=2**64 - 1), "GGUF_COUNT_INVALID"),
    (
        "key_length_2_pow_63",
        encode_gguf([struct.pack("<Q", 2**63) + b"abc" + b"\0" * 8], []),
        "GGUF_STRING_LENGTH_INVALID",
    ),
    (
        "value_length_past_file",
        encode_gguf([gguf_string("k") + struct.pack("<IQ", 8, 2**40) + b"x"], []),
        "GGUF_STRING_LENGTH_INVALID",
    ),
    ("empty_key", encode_gguf([gguf_kv_u32("", 1)], []), "GGUF_KEY_INVALID"),
    (
        "key_not_utf8",
        encode_gguf([gguf_string(b"\xff\xfe") + struct.pack("<II", 4, 1)], []),
        "GGUF_STRING_NOT_UTF8",
    ),
    (
        "unknown_value_type",
        encode_gguf([gguf_string("k") + struct.pack("<II", 13, 0)], []),
        "GGUF_VALUE_TYPE_UNKNOWN",
    ),
    (
        "unknown_array_type",
        encode_gguf([_kv_array_header(99, 1) + b"\0" * 8], []),
        "GGUF_VALUE_TYPE_UNKNOWN",
    ),
    (
        "huge_array_count",
        encode_gguf([_kv_array_header(8, 2**62)], []),
        "GGUF_ARRAY_LENGTH_INVALID",
    ),
    (
        "array_count_past_file",
        encode_gguf([_kv_array_header(6, 1000) + b"\0" * 16], []),
        "GGUF_ARRAY_LENGTH_INVALID",
    ),
    (
        "nested_arrays_too_deep",
        encode_gguf(
            [
                _kv_array_header(9, 1)
                + struct.pack("<IQ", 9, 1)
                + struct.pack("<IQ", 9, 1)
                + struct.pack("<IQ", 4, 0)
            ],
            [],
        ),
        "GGUF_ARRAY_TOO_DEEP",
    ),
    (
        "truncated_in_kv",
        encode_gguf([gguf_kv_string("general.name", "x" * 100)], [])[:-50],
        "GGUF_STRING_LENGTH_INVALID",
    ),
    (
        "duplicate_key",
        encode_gguf([gguf_kv_u32("a.b", 1), gguf_kv_u32("a.b", 2)], []),
        "GGUF_DUPLICATE_KEY",
    ),
    (
        "alignment_zero",
        encode_gguf([gguf_kv_u32("general.alignment", 0)], []),
        "GGUF_ALIGNMENT_INVALID",
    ),
    (
        "alignment_not_power_of_two",
        encode_gguf([gguf_kv_u32("general.alignment", 48)], []),
        "GGUF_ALIGNMENT_INVALID",
    ),
    (
        "alignment_wrong_type",
        encode_gguf([gguf_kv_string("general.alignment", "32")], []),
        "GGUF_ALIGNMENT_INVALID",
    ),
    (
        "five_dims",
        encode_gguf([], [gguf_tensor_info("w", [1, 1, 1, 1, 1], 0, 0)], data=b"\0" * 4),
        "GGUF_TENSOR_INVALID",
    ),
    (
        "unknown_ggml_type",
        encode_gguf([], [gguf_tensor_info("w", [4], 4, 0)], data=b"\0" * 32),
        "GGUF_TENSOR_INVALID",
    ),
    (
        "ggml_type_out_of_range",
        encode_gguf([], [gguf_tensor_info("w", [4], 2**31, 0)], data=b"\0" * 32),
        "GGUF_TENSOR_INVALID",
    ),
    (
        "dim_negative_as_int64",
        encode_gguf([], [gguf_tensor_info("w", [2**63], 0, 0)]),
        "GGUF_TENSOR_INVALID",
    ),
    (
        "dims_overflow_int64",
        encode_gguf([], [gguf_tensor_info("w", [2**40, 2**40], 0, 0)]),
        "GGUF_TENSOR_INVALID",
    ),
    (
        "row_not_whole_blocks",
        encode_gguf([], [gguf_tensor_info("w", [33], 2, 0)], data=b"\0" * 64),
        "GGUF_TENSOR_INVALID",
    ),
    (
        "duplicate_tensor",
        encode_gguf(
            [],
            [gguf_tensor_info("w", [8], 0, 0), gguf_tensor_info("w", [8], 0, 32)],
            data=b"\0" * 64,
        ),
        "GGUF_DUPLICATE_TENSOR",
    ),
    (
        "tensor_out_of_file",
        encode_gguf([], [gguf_tensor_info("w", [1024], 0, 0)], data=b"\0" * 64),
        "GGUF_TENSOR_OUT_OF_FILE",
    ),
    (
        "tensor_offset_huge",
        encode_gguf([], [gguf_tensor_info("w", [8], 0, 2**64 - 32)], data=b"\0" * 64),
        "GGUF_TENSOR_OUT_OF_FILE",
    ),
    (
        "misaligned_offset",
        encode_gguf([], [gguf_tensor_info("w", [8], 0, 4)], data=b"\0" * 64),
        "GGUF_TENSOR_MISALIGNED",
    ),
    (
        "overlapping_tensors",
        encode_gguf(
            [],
            [gguf_tensor_info("a", [16], 0, 0), gguf_tensor_info("b", [16], 0, 32)],
            data=b"\0" * 96,
        ),
        "GGUF_TENSOR_OVERLAP",
    ),
    (
        "gap_between_tensors",
        encode_gguf(
            [],
            [gguf_tensor_info("a", [8], 0, 0), gguf_tensor_info("b", [8], 0, 64)],
            data=b"\0" * 96,
        ),
        "GGUF_TENSOR_OFFSET_UNEXPECTED",
    ),
    (
        "tensor_infos_past_file",
        encode_gguf([], [gguf_tensor_info("w", [8], 0, 0)])[:-10],
        "GGUF_TRUNCATED",
    ),
]


@pytest.mark.parametrize(("blob", "code"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_scan_hostile_header_is_refused(blob: bytes, code: str) -> None:
    findings = scan_bytes(blob)
    assert codes(findings) == [code]
    assert findings[0].outcome in (Outcome.ERROR, Outcome.MALICIOUS)


@pytest.mark.parametrize(
    "code", ["GGUF_DUPLICATE_KEY", "GGUF_DUPLICATE_TENSOR", "GGUF_TENSOR_OVERLAP"]
)
def test_scan_parser_differential_tricks_are_malicious(code: str) -> None:
    blob = next(h[1] for h in HOSTILE if h[2] == code)
    assert [f.outcome for f in scan_bytes(blob)] == [Outcome.MALICIOUS]


@pytest.mark.parametrize("blob", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_header_size_of_hostile_header_is_within_the_file(blob: bytes) -> None:
    end = gg.header_size(blob, len(blob))
    assert end is not None and end <= len(blob)


def test_scan_huge_counts_use_bounded_memory() -> None:
    blob = encode_gguf([_kv_array_header(8, 2**30)], [], tensor_count=2**32)
    tracemalloc.start()
    findings = scan_bytes(blob)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert codes(findings) == ["GGUF_COUNT_INVALID"]
    assert peak < 4_000_000


def test_scan_string_array_elements_past_file_use_bounded_memory() -> None:
    elements = b"".join(gguf_string("tok") for _ in range(10)) + struct.pack("<Q", 2**62)
    blob = encode_gguf([_kv_array_header(8, 11) + elements], [])
    tracemalloc.start()
    findings = scan_bytes(blob)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert codes(findings) == ["GGUF_STRING_LENGTH_INVALID"]
    assert peak < 4_000_000


def test_scan_metadata_past_cap_is_refused(tmp_path: Path) -> None:
    path = make_gguf(tmp_path / "big.gguf", vocab_size=5000)
    findings = scan_path(path, limits=gg.GGUFLimits(max_header_bytes=4096))
    assert codes(findings) == ["GGUF_HEADER_TOO_LARGE"]


def test_scan_writer_file_with_second_tensor_moved_onto_first_is_malicious(
    tmp_path: Path,
) -> None:
    tensors = {"a": np.ones(64, dtype=np.float32), "b": np.ones(64, dtype=np.float32)}
    raw = bytearray(make_gguf(tmp_path / "o.gguf", tensors=tensors).read_bytes())
    # tensor info of "b": name, n_dims=1, dim=64, type=F32, then the u64 offset to patch
    at = find_after(bytes(raw), gguf_string("b") + struct.pack("<IQI", 1, 64, 0))
    raw[at : at + 8] = struct.pack("<Q", 0)
    assert codes(scan_bytes(bytes(raw))) == ["GGUF_TENSOR_OVERLAP"]


def test_scan_writer_file_cut_in_the_vocabulary_is_truncated(tmp_path: Path) -> None:
    raw = make_gguf(tmp_path / "t.gguf", vocab_size=3000).read_bytes()
    assert codes(scan_bytes(raw[:20_000])) == ["GGUF_ARRAY_LENGTH_INVALID"]
    assert codes(scan_bytes(raw[:40_001]))[0] in {"GGUF_TRUNCATED", "GGUF_STRING_LENGTH_INVALID"}


def test_scan_writer_file_with_template_key_repeated_is_malicious(tmp_path: Path) -> None:
    # two templates under one key: the scanner could check one while the loader uses the other
    templates = {"aaaaaa": REAL_TEMPLATES["chatml"], "bbbbbb": CVE_2024_34359}
    raw = make_gguf(tmp_path / "d.gguf", templates=templates).read_bytes()
    renamed = raw.replace(b"tokenizer.chat_template.bbbbbb", b"tokenizer.chat_template.aaaaaa")
    findings = scan_bytes(renamed)
    assert [(f.code, f.outcome) for f in findings] == [("GGUF_DUPLICATE_KEY", Outcome.MALICIOUS)]
