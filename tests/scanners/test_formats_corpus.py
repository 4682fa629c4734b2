"""Issue 13's second-round corpus (`corpus_formats`): every sample gets its verdict, whole and
streamed, and cites the advisory or write-up it comes from."""

from __future__ import annotations

import pytest

from scanners import Outcome, StreamScan, scan_file
from tests.scanners.corpus import Sample
from tests.scanners.corpus_formats import format_sample_names, sources

NAMES = format_sample_names()


@pytest.mark.parametrize("name", NAMES)
def test_scan_file_format_sample_gets_its_verdict(
    name: str, format_corpus: dict[str, Sample]
) -> None:
    sample = format_corpus[name]
    report = scan_file(sample.path, name=name)
    assert report.outcome in sample.expect, [f.to_dict() for f in report.findings]


@pytest.mark.parametrize("name", NAMES)
def test_stream_scan_format_sample_matches_scan_file(
    name: str, format_corpus: dict[str, Sample]
) -> None:
    sample = format_corpus[name]
    data = sample.path.read_bytes()
    scan = StreamScan(name=name, size=len(data), second_opinion=None)
    for start in range(0, len(data), 4099):
        scan.feed(data[start : start + 4099])
    streamed = scan.finish()
    whole = scan_file(sample.path, name=name, second_opinion=None)
    assert [f.to_dict() for f in streamed.findings] == [f.to_dict() for f in whole.findings]


def test_format_corpus_every_sample_cites_a_source() -> None:
    missing = [name for name, source in sources().items() if not source.strip()]
    assert missing == []


GROUPS = {
    "nemo and hydra": lambda n: n.endswith((".nemo", ".yaml", ".yml")),
    "skops": lambda n: n.endswith(".skops"),
    "tensorflow": lambda n: n.endswith(".pb"),
    "onnx": lambda n: n.endswith(".onnx"),
    "sentence-transformers": lambda n: n.endswith("modules.json"),
    "zip unclaimed bytes": lambda n: n.startswith("zip_"),
    "torchscript": lambda n: n.startswith("torchscript"),
    "keras": lambda n: n.endswith(".keras"),
    "gguf templates": lambda n: n.endswith(".gguf"),
}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_format_corpus_group_has_benign_and_malicious_samples(
    group: str, format_corpus: dict[str, Sample]
) -> None:
    members = [s for n, s in format_corpus.items() if GROUPS[group](n)]
    assert any(s.expect == {Outcome.CLEAN} for s in members)
    assert any(Outcome.CLEAN not in s.expect for s in members)
