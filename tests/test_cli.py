"""The `hubwarden` command: settings errors as one stderr line and exit 2, `db upgrade`/`current`,
`scan` handed to the scanners, and `serve` starting a real server (in a subprocess)."""

from __future__ import annotations

import asyncio
import json
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

import numpy as np
import pytest
from safetensors.numpy import save_file

from proxy.cli import main
from proxy.logs import configure_logging
from proxy.store import db
from tests.dbplugin import sqlite_url

SERVE_START_TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI reads the real environment: start every test without Hubwarden or HF variables,
    and give the root logger back as it was (the CLI configures logging)."""
    for variable in list(os.environ):
        if _is_setting_variable(variable):
            monkeypatch.delenv(variable)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _is_setting_variable(variable: str) -> bool:
    """HUBWARDEN_* settings and HF_TOKEN; not the test harness's HUBWARDEN_TEST_* variables."""
    if variable.startswith("HUBWARDEN_TEST_"):
        return False
    return variable.startswith("HUBWARDEN_") or variable == "HF_TOKEN"


def _settings_free_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not _is_setting_variable(k)}


def _revision(url: str) -> str | None:
    async def read() -> str | None:
        engine = db.create_engine(url)
        try:
            return await db.current_revision(engine)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# -- usage and settings errors --------------------------------------------------------------------


def test_main_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: hubwarden" in capsys.readouterr().err


def test_main_help_lists_commands_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("serve", "db", "scan"))


def test_main_unknown_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--prot", "1"]) == 2
    assert "unrecognized arguments: --prot" in capsys.readouterr().err


def test_main_serve_bad_port_flag_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--port", "0"]) == 2
    assert _error_line(capsys) == (
        "hubwarden: error: option --port is 0; expected a whole number from 1 to 65535, e.g. 8080"
    )


def test_main_serve_bad_config_file_exits_2_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hubwarden.toml"
    config.write_text("[scan]\nworkers = 0\n", encoding="utf-8")
    assert main(["serve", "--config", str(config)]) == 2
    assert _error_line(capsys).startswith(
        f'hubwarden: error: {config}: key "scan.workers" is 0; expected a whole number from 1'
    )


def test_main_config_file_from_environment_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "from-env.toml"
    config.write_text("prot = 1\n", encoding="utf-8")
    monkeypatch.setenv("HUBWARDEN_CONFIG", str(config))
    assert main(["db", "current"]) == 2
    assert 'from-env.toml: key "prot" is not a setting (did you mean "port"?)' in _error_line(
        capsys
    )


def test_main_unknown_environment_variable_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUBWARDEN_OFLINE", "1")
    assert main(["serve"]) == 2
    assert 'environment variable "HUBWARDEN_OFLINE" is not a setting' in _error_line(capsys)


def test_main_serve_data_dir_that_cannot_be_created_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a settings error (the value is fine, the machine is not): exit 1, like any start-up
    failure; it fails before anything listens, so it runs in-process."""
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    assert main(["serve", "--data-dir", str(blocker / "data")]) == 1
    assert "cannot be created" in _error_line(capsys)


def test_main_db_upgrade_missing_data_dir_exits_1_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    assert main(["db", "upgrade", "--data-dir", str(data_dir)]) == 1
    assert f"data directory {data_dir} does not exist" in _error_line(capsys)
    assert not data_dir.exists()


# -- db ------------------------------------------------------------------------------------------


def test_main_db_upgrade_brings_sqlite_schema_to_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--data-dir", str(tmp_path)]) == 0
    head = db.head_revision()
    assert capsys.readouterr().out == f"database schema at revision {head}\n"
    assert _revision(sqlite_url(tmp_path)) == head


def test_main_db_upgrade_uses_configured_postgres_database(
    fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HUBWARDEN_DATABASE_URL", fresh_postgres_url)
    assert main(["db", "upgrade", "--data-dir", str(tmp_path)]) == 0
    assert _revision(fresh_postgres_url) == db.head_revision()


def test_main_db_upgrade_unreachable_database_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUBWARDEN_DATABASE_URL", "postgresql://hw:pw-sekrit@127.0.0.1:1/hw")
    assert main(["db", "upgrade", "--data-dir", str(tmp_path)]) == 1
    line = _error_line(capsys)
    assert line.startswith("hubwarden: error: database postgresql+asyncpg://hw:***@127.0.0.1:1/hw")
    assert "sekrit" not in line


def test_main_db_current_empty_database_says_to_upgrade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "current", "--data-dir", str(tmp_path)]) == 0
    head = db.head_revision()
    assert capsys.readouterr().out == f"(empty) (behind {head}: run `hubwarden db upgrade`)\n"


def test_main_db_current_after_upgrade_says_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["db", "upgrade", "--data-dir", str(tmp_path)])
    capsys.readouterr()
    assert main(["db", "current", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"{db.head_revision()} (up to date)\n"


# -- scan ----------------------------------------------------------------------------------------


def test_main_scan_hands_arguments_to_scanners_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "model.safetensors"
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(weights))
    assert main(["scan", "--json", str(weights)]) == 0
    json.loads(capsys.readouterr().out)  # --json reached the scanners' own parser


# -- serve (a real process) ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _hubwarden(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "proxy", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _healthz_status(port: int, process: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            url = f"http://127.0.0.1:{port}/healthz"
            with urllib.request.urlopen(url, timeout=5) as answer:
                status: int = answer.status
                return status
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    return 0


def test_python_m_proxy_serve_no_config_answers_healthz(tmp_path: Path) -> None:
    port = _free_port()
    env = _settings_free_environment()
    env["HUBWARDEN_PORT"] = str(port)
    process = _hubwarden("serve", "--offline", "--data-dir", str(tmp_path / "data"), env=env)
    try:
        assert _healthz_status(port, process) == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert (tmp_path / "data" / "hubwarden.db").is_file()


def test_python_m_proxy_serve_outdated_schema_refuses_to_start(tmp_path: Path) -> None:
    env = _settings_free_environment()
    env["HUBWARDEN_UPGRADE_ON_START"] = "false"
    process = _hubwarden("serve", "--port", str(_free_port()), "--data-dir", str(tmp_path), env=env)
    _, err = process.communicate(timeout=SERVE_START_TIMEOUT_S)
    assert process.returncode == 1
    assert err.splitlines()[-1].startswith("hubwarden: error: the database schema")
    assert "run `hubwarden db upgrade`" in err


# -- logging set-up ------------------------------------------------------------------------------


def test_configure_logging_forged_line_break_is_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO")
    logging.getLogger("hubwarden.test").warning("refused %s", "x\r\nINFO forged: admin login")
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.rstrip("\n").endswith(r"refused x\r\nINFO forged: admin login")


def test_configure_logging_called_twice_keeps_one_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO")
    configure_logging("DEBUG")
    logging.getLogger("hubwarden.test").debug("once")
    assert capsys.readouterr().err.count("once") == 1
