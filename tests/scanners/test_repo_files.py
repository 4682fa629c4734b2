"""False alarms: the benign non-model files of real Hugging Face repos all scan clean, whole or
streamed, and none of them is taken for "unknown format"."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanners import Outcome, StreamScan, scan_file
from tests.scanners.corpus_repo_files import REPO_FILES, repo_file_samples


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return repo_file_samples(tmp_path_factory.mktemp("repo_files"))


@pytest.mark.parametrize("name", sorted(REPO_FILES))
def test_scan_file_benign_repo_file_is_clean(name: str, repo_files: dict[str, Path]) -> None:
    report = scan_file(repo_files[name], name=name)
    assert report.outcome == Outcome.CLEAN, [f.to_dict() for f in report.findings]
    assert report.file_format != "unknown"


@pytest.mark.parametrize("name", sorted(REPO_FILES))
def test_stream_scan_benign_repo_file_is_clean(name: str, repo_files: dict[str, Path]) -> None:
    data = repo_files[name].read_bytes()
    scan = StreamScan(name=name, size=len(data))
    for start in range(0, len(data), 4099):
        scan.feed(data[start : start + 4099])
    assert scan.finish().outcome == Outcome.CLEAN
