"""What an operator sees: `hubwarden serve` start-up lines and its start-up failures (each one
stderr line saying what to do, exit 1, no traceback), `--version`, and `hubwarden db` never
creating a data directory where it happens to run."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.store import db

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
ERROR_PREFIX = "hubwarden: error: "


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No Hubwarden setting or HF_TOKEN from the outer environment; the root logger restored
    (the CLI configures logging)."""
    for variable in list(os.environ):
        if _is_setting_variable(variable):
            monkeypatch.delenv(variable)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _is_setting_variable(variable: str) -> bool:
    if variable.startswith("HUBWARDEN_TEST_"):
        return False
    return variable.startswith("HUBWARDEN_") or variable == "HF_TOKEN"


def _environment(**settings: str) -> dict[str, str]:
    """This process's environment without settings, plus `settings`; the code under test first
    on the path (the subprocess runs in a temporary directory)."""
    env = {k: v for k, v in os.environ.items() if not _is_setting_variable(k)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(settings)
    return env


def _hubwarden(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "proxy", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _failed_start(cwd: Path, *args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run `hubwarden serve ARGS` that must fail; its exit code and stderr."""
    process = _hubwarden(cwd, "serve", *args, env=env)
    try:
        _, err = process.communicate(timeout=START_TIMEOUT_S)
    finally:
        if process.poll() is None:  # it started after all: stop it, the asserts say the rest
            process.kill()
            process.communicate(timeout=STOP_TIMEOUT_S)
    return process.returncode, err


def _error_line(err: str) -> str:
    """The one error line; nothing like a traceback anywhere."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, err
    assert err.splitlines()[-1] == errors[0], err
    return errors[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_healthy(port: int, process: subprocess.Popen[str]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    return False


def _serve_then_stop(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    """Start `hubwarden serve`, wait until it answers, stop it with SIGTERM (it must exit 0):
    the port it listened on and its stderr."""
    port = _free_port()
    args = ["serve", "--offline", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    process = _hubwarden(tmp_path, *args, env=env)
    try:
        healthy = _wait_healthy(port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, err = process.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate(timeout=STOP_TIMEOUT_S)
    assert healthy, err
    assert process.returncode == 0, err
    return port, err


# -- start-up lines --------------------------------------------------------------------------------


def test_serve_start_logs_hf_endpoint_then_ready(tmp_path: Path) -> None:
    port, err = _serve_then_stop(tmp_path, _environment())
    lines = err.splitlines()
    endpoint = next(i for i, line in enumerate(lines) if "HF_ENDPOINT=" in line)
    ready = next(i for i, line in enumerate(lines) if "ready: listening on" in line)
    assert lines[endpoint].endswith(f"clients need only HF_ENDPOINT=http://127.0.0.1:{port}")
    assert lines[ready].endswith(f"ready: listening on 127.0.0.1:{port}")
    assert endpoint < ready


def test_serve_start_with_public_url_logs_it_as_hf_endpoint(tmp_path: Path) -> None:
    _, err = _serve_then_stop(tmp_path, _environment(HUBWARDEN_PUBLIC_URL="https://hub.example/"))
    assert "clients need only HF_ENDPOINT=https://hub.example\n" in err


# -- start-up failures -----------------------------------------------------------------------------


def test_serve_port_in_use_is_one_line_naming_port_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = _failed_start(
            tmp_path, "--port", str(port), "--data-dir", str(tmp_path / "data"), env=_environment()
        )
    assert code == 1
    assert _error_line(err) == (
        f"{ERROR_PREFIX}cannot listen on 127.0.0.1:{port}: the port is already in use (by another "
        "Hubwarden or another server); stop it or choose another port with --port or "
        "HUBWARDEN_PORT"
    )


def test_serve_data_dir_under_a_file_is_one_line_naming_path_exit_1(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("", encoding="utf-8")
    data_dir = tmp_path / "file" / "data"
    code, err = _failed_start(
        tmp_path, "--port", str(_free_port()), "--data-dir", str(data_dir), env=_environment()
    )
    assert code == 1
    assert err.splitlines() == [_error_line(err)]
    assert err.startswith(f"{ERROR_PREFIX}data directory {data_dir} cannot be created (")
    assert "--data-dir" in err


def test_serve_unreachable_database_is_one_line_naming_host_exit_1(tmp_path: Path) -> None:
    env = _environment(HUBWARDEN_DATABASE_URL="postgresql://nobody:pw-sekrit@127.0.0.1:1/x")
    code, err = _failed_start(
        tmp_path, "--port", str(_free_port()), "--data-dir", str(tmp_path / "data"), env=env
    )
    assert code == 1
    line = _error_line(err)
    assert "(connection refused by 127.0.0.1:1)" in line
    assert line.endswith(
        "check database_url (host 127.0.0.1) and that the database server there is running and "
        "accepts connections from this machine"
    )
    assert "sekrit" not in err


# -- version and db --------------------------------------------------------------------------------


def test_version_prints_name_and_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"hubwarden {importlib.metadata.version('hubwarden')}\n"


@pytest.mark.parametrize("action", ["current", "upgrade"])
def test_db_in_a_directory_without_data_dir_says_so_and_creates_nothing(
    action: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["db", action]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"{ERROR_PREFIX}data directory {tmp_path / 'hubwarden-data'} does not exist;"
    )
    assert "--data-dir" in err
    assert list(tmp_path.iterdir()) == []


def test_db_current_of_data_dir_without_database_creates_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "current", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == (
        f"(empty) (behind {db.head_revision()}: run `hubwarden db upgrade`)\n"
    )
    assert list(tmp_path.iterdir()) == []
