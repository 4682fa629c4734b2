"""`ScannerPool`: real scans in a worker process; failures of the worker become ERROR findings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from proxy.scanning import ScanLimits, ScannerPool
from proxy.trust.verdicts import Verdict, decide
from scanners.report import Outcome

LIMITS = ScanLimits(timeout_s=60.0, max_memory_mb=1024, max_cpu_s=30, workers=2)
EVIL_PICKLE = b"\x80\x02cos\nsystem\n(S'id'\ntR."  # written, scanned, never loaded


def _safetensors(path: Path) -> Path:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    return path


async def test_scanner_pool_clean_file_gives_a_clean_report(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "x.part")
    report = await ScannerPool(LIMITS).scan(path, "model.safetensors")
    assert (report.outcome, report.file_format, report.size) == (
        Outcome.CLEAN,
        "safetensors",
        path.stat().st_size,
    )


async def test_scanner_pool_malicious_pickle_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.part"
    path.write_bytes(EVIL_PICKLE)
    report = await ScannerPool(LIMITS).scan(path, "model.pkl")
    assert decide(report, []).verdict is Verdict.REJECT


async def test_scanner_pool_timeout_is_an_error_finding(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "x.part")
    pool = ScannerPool(ScanLimits(timeout_s=0.001, max_memory_mb=1024, max_cpu_s=30, workers=1))
    report = await pool.scan(path, "model.safetensors")
    assert [(f.code, f.outcome) for f in report.findings] == [("SCAN_TIMEOUT", Outcome.ERROR)]
    assert decide(report, []).verdict is Verdict.QUARANTINE


async def test_scanner_pool_cancelled_scan_raises_cancelled(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "x.part")
    task = asyncio.create_task(ScannerPool(LIMITS).scan(path, "model.safetensors"))
    await asyncio.sleep(0.05)  # the worker is running (Python start-up takes longer than this)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_scanner_pool_name_is_a_hint_not_the_format(tmp_path: Path) -> None:
    path = tmp_path / "x.part"
    path.write_bytes(EVIL_PICKLE)
    report = await ScannerPool(LIMITS).scan(path, "model.safetensors")
    assert report.outcome is Outcome.MALICIOUS


async def test_scanner_pool_shell_characters_in_the_name_stay_one_argument(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "x.part")
    report = await ScannerPool(LIMITS).scan(path, "a b; rm -rf / $(id) `x`.safetensors")
    assert report.outcome is Outcome.CLEAN


async def test_scanner_pool_name_starting_with_a_dash_is_scanned(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "x.part")
    report = await ScannerPool(LIMITS).scan(path, "-weights.safetensors")
    assert report.outcome is Outcome.CLEAN
