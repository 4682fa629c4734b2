"""What dependencies print, warn or log during a scan is caught and kept in the details, never
written to our stdout (issue 13)."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import pytest

from scanners import scan_file
from scanners.foreign_output import capture
from tests.scanners.corpus import technique_pickles


def test_capture_collects_prints_warnings_and_foreign_logs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with capture() as caught:
        sys.stdout.write("to stdout\n")  # as a dependency's print() would
        sys.stderr.write("to stderr\n")
        warnings.warn("a dependency warns", UserWarning, stacklevel=1)
        logging.getLogger("somelib").warning("a dependency logs")
        logging.getLogger("scanners.x").warning("ours")
    assert caught.details() == {
        "stdout": "to stdout\n",
        "stderr": "to stderr\n",
        "warnings": ["UserWarning: a dependency warns"],
        "logs": ["WARNING somelib: a dependency logs"],
    }
    assert "to stdout" not in capsys.readouterr().out


def test_capture_of_nothing_has_no_details() -> None:
    with capture() as caught:
        pass
    assert caught.details() == {}


def test_fickling_warning_goes_to_the_finding_not_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.pkl"
    path.write_bytes(technique_pickles()["type_confused_stack_global"][0])
    report = scan_file(path)
    views = [f.details.get("fickling") for f in report.findings]
    said = [v["output"] for v in views if isinstance(v, dict) and isinstance(v.get("output"), dict)]
    assert "malformed pickle file" in str(said[0]["stdout"] if said else "")  # type: ignore[index,call-overload]
    assert capsys.readouterr().out == ""
