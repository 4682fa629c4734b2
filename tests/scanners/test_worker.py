"""`python -m scanners.worker`: one JSON line, exit 0, limits applied, failures fail closed; and
`python -m scanners.stream_worker`: its line protocol, its limits, a reply pipe no noise reaches."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save

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


# -- python -m scanners.stream_worker ------------------------------------------------------------


def _stream_worker(scan_dir: Path, *commands: dict[str, object]) -> list[dict[str, object]]:
    """The replies of a stream worker given `commands`, then the end of its stdin."""
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed argv
        [sys.executable, "-m", "scanners.stream_worker", "--scan-dir", f"{scan_dir}/"],
        input=b"".join(json.dumps(c).encode() + b"\n" for c in commands),
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def _scan(path: Path, end: int | None = None) -> dict[str, object]:
    size = path.stat().st_size
    return {
        "op": "scan",
        "job": 1,
        "end": size if end is None else end,
        "cpu_s": 60,
        "path": str(path),
        "name": path.name,
        "size": size,
    }


def test_stream_worker_says_ready_then_clears_a_clean_header_for_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(save({"w": np.zeros(1000, dtype=np.float32)}))
    ready, reply = _stream_worker(tmp_path, _scan(path))
    assert ready["ready"] is True
    assert {k: reply[k] for k in ("job", "rest", "done", "alarmed", "error")} == {
        "job": 1,
        "rest": True,
        "done": True,
        "alarmed": False,
        "error": None,
    }


def test_stream_worker_alarms_on_a_malicious_pickle(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(EVIL + bytes(200_000))  # the walk clears only what it is sure of
    _, reply = _stream_worker(tmp_path, _scan(path))
    assert (reply["alarmed"], reply["cleared"], reply["recycle"]) == (True, 0, False)


def test_stream_worker_reads_only_what_it_is_told_is_written(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(save({"w": np.zeros(100_000, dtype=np.float32)}))
    _, first = _stream_worker(tmp_path, _scan(path, end=4))
    assert (first["position"], first["cleared"], first["done"]) == (4, 0, False)


def test_stream_worker_refuses_a_file_outside_its_scan_directory(tmp_path: Path) -> None:
    scan_dir = tmp_path / "tmp"
    scan_dir.mkdir()
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"x" * 100)
    _, reply = _stream_worker(scan_dir, _scan(outside))
    assert reply["error"] is not None and "scan directory" in str(reply["error"])
    assert (reply["recycle"], reply["done"]) == (True, True)


def test_stream_worker_garbled_command_is_an_error_reply(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x00" * 100)
    _, reply = _stream_worker(tmp_path, _scan(path) | {"end": "far"})
    assert (reply["job"], reply["recycle"]) == (1, True)
    assert "end must be a non-negative integer" in str(reply["error"])


def test_stream_worker_file_shorter_than_told_is_an_error_reply(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x00" * 100)
    command = _scan(path) | {"end": 200, "size": 200}
    _, reply = _stream_worker(tmp_path, command)
    assert "the file ends at 100" in str(reply["error"])


def test_stream_worker_drop_forgets_the_job(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(list(range(100_000))))
    _, scanned, dropped = _stream_worker(tmp_path, _scan(path, end=1000), {"op": "drop", "job": 1})
    assert (scanned["done"], dropped) == (False, {"job": 1, "done": True})


def test_stream_worker_output_of_dependencies_never_reaches_the_reply_pipe() -> None:
    code = (
        "import os, sys\n"
        "from scanners.stream_worker import private_pipes\n"
        "commands, replies = private_pipes()\n"
        "print('noise from a dependency')\n"
        "sys.stdout.flush()\n"
        "os.write(1, b'noise on fd 1\\n')\n"
        "replies.write(b'reply\\n')\n"
        "replies.flush()\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed argv
        [sys.executable, "-c", code], capture_output=True, check=True, timeout=60
    )
    assert done.stdout == b"reply\n"
    assert b"noise from a dependency" in done.stderr and b"noise on fd 1" in done.stderr


def test_stream_worker_cpu_budget_moves_only_the_soft_limit() -> None:
    code = (
        "import resource, time\n"
        "from scanners.stream_worker import set_cpu_budget\n"
        "set_cpu_budget(5.0)\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_CPU)\n"
        "print(soft - time.process_time(), hard == resource.RLIM_INFINITY)\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed argv
        [sys.executable, "-c", code], capture_output=True, check=True, timeout=60
    )
    left, unlimited = done.stdout.split()
    assert 5.0 <= float(left) <= 6.0 and unlimited == b"True"
