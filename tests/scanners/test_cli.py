"""`hubwarden scan` / `python -m scanners`: exit codes, directories, stable JSON."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from scanners.cli import main
from tests.scanners.corpus import EVIL, reduce_global


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (pickle.dumps([1, 2]), 0),
        (pickle.dumps([1], protocol=2)[:-1] + b"\x80\x02" + reduce_global("mylib", "Thing"), 1),
        (EVIL, 2),
        (pickle.dumps(list(range(100)))[:-3], 3),
    ],
)
def test_cli_exit_code_follows_outcome(
    tmp_path: Path, data: bytes, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(_write(tmp_path / "f.pkl", data))]) == code


def test_cli_directory_worst_file_decides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "ok.pkl", pickle.dumps(1))
    _write(tmp_path / "bad.pkl", EVIL)
    assert main([str(tmp_path)]) == 2


def test_cli_recursive_descends_into_subdirectories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "sub" / "bad.pkl", EVIL)
    assert (main([str(tmp_path)]), main([str(tmp_path), "--recursive"])) == (3, 2)


def test_cli_json_document_is_stable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(_write(tmp_path / "bad.pkl", EVIL)), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert (
        sorted(document),
        document["exit_code"],
        document["reports"][0]["findings"][0]["code"],
    ) == (
        ["errors", "exit_code", "outcome", "reports", "version"],
        2,
        "PICKLE_GLOBAL_DENIED",
    )


def test_cli_missing_path_is_could_not_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "nope.bin")]) == 3


def test_cli_python_dash_m_scanners_runs(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.pkl", EVIL)
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed argv
        [sys.executable, "-m", "scanners", str(path)], capture_output=True, check=False, timeout=60
    )
    assert done.returncode == 2
