"""Every generated pickle-family sample gets the right verdict through `scan_file`."""

from __future__ import annotations

import pytest

from scanners import Outcome, scan_file
from tests.scanners.corpus import BENIGN_NAMES, Sample, malicious_names


@pytest.mark.parametrize("name", BENIGN_NAMES)
def test_scan_file_benign_sample_is_clean(name: str, benign_corpus: dict[str, Sample]) -> None:
    sample = benign_corpus[name]
    report = scan_file(sample.path, name=name)
    assert report.outcome == Outcome.CLEAN, [f.to_dict() for f in report.findings]


@pytest.mark.parametrize("name", malicious_names())
def test_scan_file_malicious_sample_is_held(name: str, malicious_corpus: dict[str, Sample]) -> None:
    sample = malicious_corpus[name]
    report = scan_file(sample.path, name=name)
    assert report.outcome in sample.expect, [f.to_dict() for f in report.findings]
