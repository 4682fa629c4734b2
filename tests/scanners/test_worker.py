"""`python -m scanners.worker`: one JSON line, exit 0, limits applied, failures fail closed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scanners import Outcome, ScanReport
from tests.scanners.corpus import EVIL


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed argv
        [sys.executable, "-m", "scanners.worker", *args],
        capture_output=True,
        check=False,
        timeout=60,
    )


def test_worker_prints_one_report_line_and_exits_zero(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(EVIL)
    done = _run("--name", "pytorch_model.bin", str(path))
    lines = done.stdout.decode().splitlines()
    assert (
        done.returncode,
        len(lines),
        ScanReport.from_dict(__import__("json").loads(lines[0])).outcome,
    ) == (
        0,
        1,
        Outcome.MALICIOUS,
    )


def test_worker_missing_file_is_a_crash_finding(tmp_path: Path) -> None:
    done = _run(str(tmp_path / "missing.bin"))
    report = ScanReport.from_dict(__import__("json").loads(done.stdout))
    assert [f.code for f in report.findings] == ["SCANNER_CRASHED"]


def test_worker_memory_limit_turns_into_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(b"\x80\x04" + b"N" * (8 * 1024 * 1024) + b".")  # pushes 8M items
    done = _run("--max-memory-mb", "200", str(path))
    report = ScanReport.from_dict(__import__("json").loads(done.stdout))
    assert report.outcome == Outcome.ERROR
