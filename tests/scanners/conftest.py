"""Fixtures for the scanner tests: the generated corpus, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scanners.corpus import Sample, benign_samples, malicious_samples
from tests.scanners.corpus_formats import format_samples


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pickle_corpus")


@pytest.fixture(scope="session")
def benign_corpus(corpus_root: Path) -> dict[str, Sample]:
    return {s.name: s for s in benign_samples(corpus_root / "benign")}


@pytest.fixture(scope="session")
def malicious_corpus(corpus_root: Path) -> dict[str, Sample]:
    return {s.name: s for s in malicious_samples(corpus_root / "malicious")}


@pytest.fixture(scope="session")
def format_corpus(corpus_root: Path) -> dict[str, Sample]:
    return {s.name: s for s in format_samples(corpus_root / "formats")}
