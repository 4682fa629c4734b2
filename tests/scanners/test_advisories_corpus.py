"""The advisory corpus (`corpus_advisories`, issue 13 item 6): every malicious sample is held and
every benign neighbour clean, whole and streamed; every sample cites its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanners import ScanReport, StreamScan, scan_file
from tests.scanners.corpus import Sample
from tests.scanners.corpus_advisories import (
    advisory_sample_names,
    advisory_samples,
    advisory_sources,
)

NAMES = advisory_sample_names()
CHUNK = 4099


@pytest.fixture(scope="module")
def advisory_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sample]:
    root = tmp_path_factory.mktemp("advisory_corpus")
    return {s.name: s for s in advisory_samples(root)}


def _streamed(path: Path, name: str) -> ScanReport:
    data = path.read_bytes()
    scan = StreamScan(name=name, size=len(data), second_opinion=None)
    for start in range(0, len(data), CHUNK):
        scan.feed(data[start : start + CHUNK])
    return scan.finish()


@pytest.mark.parametrize("name", NAMES)
def test_scan_file_advisory_sample_gets_its_verdict(
    name: str, advisory_corpus: dict[str, Sample]
) -> None:
    sample = advisory_corpus[name]
    report = scan_file(sample.path, name=name, second_opinion=None)
    assert report.outcome in sample.expect, [f.to_dict() for f in report.findings]


@pytest.mark.parametrize("name", NAMES)
def test_stream_scan_advisory_sample_gets_its_verdict(
    name: str, advisory_corpus: dict[str, Sample]
) -> None:
    sample = advisory_corpus[name]
    report = _streamed(sample.path, name)
    assert report.outcome in sample.expect, [f.to_dict() for f in report.findings]


def test_advisory_corpus_every_sample_cites_a_source() -> None:
    assert [name for name, source in advisory_sources().items() if len(source) < 6] == []
