"""The fuzz targets (issue 13): every seed reaches the parser its target fuzzes, the harness
fails on what it must catch, and a short, seeded atheris run over every target finds no crash.

The short run is bounded by `-runs` and `-max_total_time` and fixed by `-seed`; the long one is
`bench/fuzz_bench.py`. A crash fails the test with the crashing input's hex and the scanner's
traceback; libFuzzer saves the input under the test's `tmp_path` (`crash-<sha1>`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scanners import Finding, Outcome, ScanReport, Severity
from tests.fuzz import targets
from tests.fuzz.seeds import all_seeds, write_seeds

ROOT = Path(__file__).resolve().parents[2]
SHORT_RUNS = 3000  # the seeds (168), then mutations of them until 3000 inputs have run
SHORT_SECONDS = 15  # an upper bound on a loaded machine; the runs bound is what ends it here
FORMAT_TARGETS = sorted(n for n, t in targets.TARGETS.items() if t.seed_formats)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[bytes]]:
    return all_seeds(tmp_path_factory.mktemp("fuzz_seeds"))


@pytest.mark.parametrize("target", FORMAT_TARGETS)
def test_fuzz_seed_is_detected_as_its_targets_format(
    target: str, seeds: dict[str, list[bytes]]
) -> None:
    name = targets.FORMAT_FILES[target]
    formats = [targets.scan_whole(seed, name).file_format for seed in seeds[target]]
    assert [f for f in formats if f not in targets.TARGETS[target].seed_formats] == []


@pytest.mark.parametrize("target", ["detect", "stream", "all"])
def test_fuzz_mixed_target_runs_every_seed_without_error(
    target: str, seeds: dict[str, list[bytes]]
) -> None:
    for seed in seeds[target]:
        targets.TARGETS[target].one_input(seed)  # raises on a crash or a report that is not JSON
    assert len(seeds[target]) >= len(FORMAT_TARGETS)


def _report(finding: Finding) -> ScanReport:
    return ScanReport("x", "pickle", 1, (finding,), {}, 0.0)


def test_fuzz_harness_raises_on_a_crashed_scanner() -> None:
    crashed = Finding("dispatch", targets.CRASH_CODE, Severity.HIGH, Outcome.ERROR, "boom")
    with pytest.raises(targets.ScannerCrashed, match="boom"):
        targets.check_report(_report(crashed), "x")


def test_fuzz_harness_raises_on_a_report_that_is_not_json() -> None:
    odd = Finding("gguf", "X", Severity.LOW, Outcome.REVIEW, "m", {"v": float("nan")})
    with pytest.raises(targets.ReportNotJson, match="NaN"):
        targets.check_report(_report(odd), "x")


def _crash_summary(artifacts: list[Path], stderr: str) -> str:
    # the whole input (seeds cap them near 10 KiB): pytest's tmp_path does not outlive 3 runs
    shown = [f"{p.name} ({p}): {p.read_bytes().hex()}" for p in artifacts]
    return "\n".join([*shown, stderr[-6000:]])


def test_fuzz_short_run_over_every_target_finds_no_crash(
    tmp_path: Path, seeds: dict[str, list[bytes]]
) -> None:
    corpus = write_seeds(seeds["all"], tmp_path / "corpus")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    flags = [
        f"-runs={SHORT_RUNS}",
        "-seed=13",
        f"-max_total_time={SHORT_SECONDS}",
        "-timeout=20",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={artifacts}/",
    ]
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed argv
        [sys.executable, "-m", "tests.fuzz.run", "all", *flags, str(corpus)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SHORT_SECONDS + 60,
        check=False,
    )
    crashes = sorted(artifacts.iterdir())
    assert (done.returncode, crashes) == (0, []), _crash_summary(crashes, done.stderr)
    assert "Done " in done.stderr  # libFuzzer's last line: the run happened and ended
