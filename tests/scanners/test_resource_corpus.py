"""Hostile-resource samples are refused with their `…_RESOURCE` finding, whole or streamed, and
their benign neighbours (a little under each limit) stay clean."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from scanners import Outcome, PickleLimits, ScanReport, StreamScan, scan_file
from scanners.pickles import scan_pickle_bytes
from tests.scanners.corpus_resource import (
    RESOURCE_SAMPLES,
    pickle_billion_laughs_dup,
    pickle_billion_laughs_lists,
    resource_samples,
)

CHUNK = 65_521


@pytest.fixture(scope="module")
def resource_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return resource_samples(tmp_path_factory.mktemp("resource_corpus"))


def _streamed(path: Path, name: str) -> ScanReport:
    data = path.read_bytes()
    scan = StreamScan(name=name, size=len(data))
    for start in range(0, len(data), CHUNK):
        scan.feed(data[start : start + CHUNK])
    return scan.finish()


def _codes(report: ScanReport) -> set[str]:
    return {f.code for f in report.findings}


@pytest.mark.parametrize("name", sorted(RESOURCE_SAMPLES))
def test_scan_file_refuses_resource_sample(name: str, resource_corpus: dict[str, Path]) -> None:
    report = scan_file(resource_corpus[name], name=name)
    assert (report.outcome, RESOURCE_SAMPLES[name].code in _codes(report)) == (
        Outcome.ERROR,
        True,
    ), [f.to_dict() for f in report.findings]


@pytest.mark.parametrize("name", sorted(RESOURCE_SAMPLES))
def test_stream_scan_refuses_resource_sample(name: str, resource_corpus: dict[str, Path]) -> None:
    report = _streamed(resource_corpus[name], name)
    assert (report.outcome, RESOURCE_SAMPLES[name].code in _codes(report)) == (
        Outcome.ERROR,
        True,
    )


def test_every_resource_sample_cites_a_source() -> None:
    assert [n for n, s in RESOURCE_SAMPLES.items() if len(s.source) < 8] == []


def test_resource_findings_are_not_decompiled_by_fickling(
    resource_corpus: dict[str, Path],
) -> None:
    report = scan_file(resource_corpus["billion_laughs_lists.pkl"])
    views = [f.details.get("fickling") for f in report.findings]
    assert views == [{"error": "not decompiled: the pickle is built to exhaust a decompiler too"}]


# ---- benign neighbours ---------------------------------------------------------------------------
def _scan_bytes(tmp_path: Path, name: str, data: bytes) -> ScanReport:
    path = tmp_path / name
    path.write_bytes(data)
    return scan_file(path, name=name)


def test_pickle_nested_a_hundred_deep_is_clean(tmp_path: Path) -> None:
    value: list[object] = []
    for _ in range(100):
        value = [value, {"k": (1, "x")}]
    assert _scan_bytes(tmp_path, "n.pkl", pickle.dumps(value)).outcome == Outcome.CLEAN


def test_pickle_sharing_a_value_ten_times_over_is_clean(tmp_path: Path) -> None:
    assert _scan_bytes(tmp_path, "l.pkl", pickle_billion_laughs_lists(10)).outcome == (
        Outcome.CLEAN
    )


def test_pickle_self_reference_is_clean(tmp_path: Path) -> None:
    value: list[object] = [1]
    value.append(value)
    assert _scan_bytes(tmp_path, "c.pkl", pickle.dumps({"a": value})).outcome == Outcome.CLEAN


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        (PickleLimits(max_nesting_depth=50), "PICKLE_NESTING_RESOURCE"),
        (PickleLimits(max_expanded_nodes=1000), "PICKLE_EXPANSION_RESOURCE"),
        (PickleLimits(max_memo_index=260), "PICKLE_MEMO_RESOURCE"),
    ],
)
def test_pickle_shape_limits_are_the_configured_ones(limits: PickleLimits, code: str) -> None:
    data = pickle_billion_laughs_lists(60) if "EXPANSION" in code else b""
    if "NESTING" in code:
        value: list[object] = []
        for _ in range(60):
            value = [value]
        data = pickle.dumps(value)
    if "MEMO" in code:
        data = pickle.dumps([str(i) for i in range(300)], protocol=2)  # LONG_BINPUT from 256
    found = scan_pickle_bytes(data, len(data), limits).findings
    assert [f.code for f in found] == [code]


def test_pickle_dup_doubling_is_flagged_under_the_default_limits() -> None:
    data = pickle_billion_laughs_dup(30)
    found = scan_pickle_bytes(data, len(data), PickleLimits()).findings
    assert [f.code for f in found] == ["PICKLE_EXPANSION_RESOURCE"]


def test_npy_holding_exactly_its_declared_data_is_clean(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 5), dtype=np.complex128))
    assert _scan_bytes(tmp_path, "a.npy", buf.getvalue()).outcome == Outcome.CLEAN


def test_npy_short_by_one_byte_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros(16, dtype=np.float32))
    report = _scan_bytes(tmp_path, "a.npy", buf.getvalue()[:-1])
    assert _codes(report) == {"NUMPY_SIZE_RESOURCE"}


@pytest.mark.parametrize("name", ["__init__.py", "README.md", "docs/notes.txt", ".gitattributes"])
def test_empty_file_where_empty_is_normal_is_clean(tmp_path: Path, name: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    assert scan_file(path, name=name).outcome == Outcome.CLEAN


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin", "config.json"])
def test_empty_model_file_could_not_be_scanned(tmp_path: Path, name: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    assert _codes(scan_file(path, name=name)) == {"FILE_EMPTY"}
