"""`hubwarden scan --json` prints exactly one JSON document for every sample of the generated
corpus, whatever the scanners' dependencies print meanwhile (issue 13: fickling wrote
`Warning: malformed pickle file.` on stdout before the document)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scanners import corpus_opaque
from tests.scanners.corpus import benign_samples, malicious_samples
from tests.scanners.corpus_formats import format_samples
from tests.scanners.corpus_repo_files import repo_file_samples
from tests.scanners.corpus_resource import resource_samples

BATCH = 60  # paths per invocation: the interpreter's start-up is paid once per batch


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("cli_corpus")
    files = [s.path for s in benign_samples(root / "benign")]
    files += [s.path for s in malicious_samples(root / "malicious")]
    files += corpus_opaque.write_samples(root / "opaque", corpus_opaque.opaque_samples()).values()
    files += corpus_opaque.write_samples(root / "held", corpus_opaque.held_samples()).values()
    files += repo_file_samples(root / "repo").values()
    files += resource_samples(root / "resource").values()
    files += [s.path for s in format_samples(root / "formats")]
    return sorted(files)


def _run(paths: list[Path]) -> tuple[str, int]:
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed argv
        [sys.executable, "-m", "scanners", "--json", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    return done.stdout, done.returncode


def test_cli_json_is_one_document_for_every_corpus_sample(corpus_files: list[Path]) -> None:
    wrong: list[str] = []
    for start in range(0, len(corpus_files), BATCH):
        batch = corpus_files[start : start + BATCH]
        stdout, code = _run(batch)
        try:
            document = json.loads(stdout)  # raises on anything before or after the document
        except ValueError as exc:
            wrong.append(f"batch {start}: {exc}: {stdout[:300]!r}")
            continue
        scanned = [r["path"] for r in document["reports"]]
        if scanned != [str(p) for p in batch] or document["exit_code"] != code:
            wrong.append(f"batch {start}: reports {len(scanned)} of {len(batch)}, exit {code}")
        if stdout.count("\n") != 1:
            wrong.append(f"batch {start}: {stdout.count(chr(10))} lines on stdout")
    assert wrong == []
    assert len(corpus_files) > 300
