"""`log_format = "json"`: one JSON object per line, carrying the request id the client gave (when
sane) on every line written while its request is handled; hostile ids replaced; no secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from proxy.app import create_app
from proxy.hub.server import HubServer
from proxy.logs import MAX_REQUEST_ID_CHARS, JsonFormatter, configure_logging, mask_secrets
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import proxy_settings

SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
CLIENT_ID = "client-42.trace:7"


async def _closed_port_url() -> str:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return f"http://127.0.0.1:{port}"


async def _serve(fake_hub: FakeHub, data_dir: Path, upstream: str | None) -> AsyncIterator[str]:
    overrides: dict[str, object] = {"log_format": "json"}
    if upstream is not None:
        overrides["upstream"] = upstream
    settings = proxy_settings(fake_hub, data_dir, **overrides)
    configure_logging("INFO", settings.log_format)
    server = HubServer(create_app(settings), settings)  # the real access logger
    await server.setup()
    try:
        yield f"http://127.0.0.1:{await server.listen('127.0.0.1', 0)}"
    finally:
        await server.close()


@pytest.fixture
async def served(fake_hub: FakeHub, tmp_path: Path) -> AsyncIterator[str]:
    async for url in _serve(fake_hub, tmp_path / "data", None):
        yield url


@pytest.fixture
async def served_without_upstream(fake_hub: FakeHub, tmp_path: Path) -> AsyncIterator[str]:
    async for url in _serve(fake_hub, tmp_path / "data", await _closed_port_url()):
        yield url


def _records(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    """Every stderr line so far, each parsed as one JSON object (fails on any other line)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    records = [json.loads(line) for line in lines]
    assert all(isinstance(record, dict) for record in records)
    return records


async def _get(url: str, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        await response.read()
        return response


async def test_json_logs_access_line_carries_the_client_request_id(
    served: str, capsys: pytest.CaptureFixture[str]
) -> None:
    response = await _get(f"{served}/healthz", {"X-Request-Id": CLIENT_ID})
    assert response.headers["X-Request-Id"] == CLIENT_ID
    access = [r for r in _records(capsys) if r["logger"] == "proxy.access"]
    assert len(access) == 1
    assert access[0]["request_id"] == CLIENT_ID
    assert "GET /healthz" in str(access[0]["message"])
    assert {"time", "level", "logger", "message"} <= set(access[0])


async def test_json_logs_line_written_inside_the_handler_carries_the_request_id(
    served_without_upstream: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{served_without_upstream}/api/models/org/some-model"
    response = await _get(url, {"X-Request-Id": CLIENT_ID})
    assert response.status >= 500
    warnings = [r for r in _records(capsys) if r["level"] == "WARNING"]
    mine = [r for r in warnings if "/api/models/org/some-model" in str(r["message"])]
    assert mine, warnings
    assert {r.get("request_id") for r in mine} == {CLIENT_ID}


async def test_request_id_absent_is_generated_and_differs_per_request(served: str) -> None:
    ids = [(await _get(f"{served}/healthz")).headers["X-Request-Id"] for _ in range(2)]
    assert all(SANE_ID.fullmatch(i) for i in ids)
    assert ids[0] != ids[1]


@pytest.mark.parametrize(
    "offered",
    ["a" * (MAX_REQUEST_ID_CHARS + 1), "two words", "<script>", "tab\there", "-leading", "é"],
    ids=["too-long", "space", "markup", "tab", "leading-dash", "non-ascii"],
)
async def test_request_id_hostile_value_is_replaced(
    served: str, capsys: pytest.CaptureFixture[str], offered: str
) -> None:
    response = await _get(f"{served}/healthz", {"X-Request-Id": offered})
    given = response.headers["X-Request-Id"]
    assert given != offered
    assert SANE_ID.fullmatch(given)
    access = [r for r in _records(capsys) if r["logger"] == "proxy.access"]
    assert [r["request_id"] for r in access] == [given]


@pytest.mark.parametrize("raw", [b"abc\x01def", b"abc\rdef", b"abc\x7fdef", b"abc\x00def"])
async def test_request_id_with_control_characters_never_comes_back(
    served: str, capsys: pytest.CaptureFixture[str], raw: bytes
) -> None:
    """aiohttp's parser refuses most of these outright (400); whatever answers, no header and no
    log line carries the value, and every log line is still one JSON object."""
    port = int(served.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + raw + b"\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    finally:
        writer.close()
    assert raw not in head
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"x-request-id:"):
            assert SANE_ID.fullmatch(line.split(b":", 1)[1].strip().decode())
    assert "abc" not in json.dumps([r.get("request_id") for r in _records(capsys)])


async def test_json_logs_never_carry_tokens_or_cookies(
    served: str, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "hf_SeCrEtVaLuE123456"
    headers = {"Authorization": f"Bearer {secret}", "Cookie": f"session={secret}"}
    await _get(f"{served}/api/models/org/x/tree/main?token={secret}", headers)
    await _get(f"{served}/healthz?access_token={secret}", headers)
    err = capsys.readouterr().err
    assert "proxy.access" in err  # the lines were written...
    assert "SeCrEtVaLuE" not in err  # ...without the secret


def test_json_formatter_keeps_a_record_with_newlines_and_traceback_on_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord(
            "proxy.x", logging.ERROR, __file__, 1, "forged\nline %s", ("\x1b[31m",), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "forged\nline \x1b[31m"
    assert "ValueError: bad" in parsed["exception"]
    assert "request_id" not in parsed  # emitted outside any request


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Authorization: Bearer abc.def-ghi_123", "Authorization: Bearer ***"),
        ("GET /x?token=hf_abcdefghijkl&a=1", "GET /x?token=***&a=1"),
        ("cookie=abcdef; path=/", "cookie=***; path=/"),
        ("password = hunter22", "password = ***"),
        ("used hf_abcdefghijkl here", "used hf_*** here"),
        ("no token: nothing to hide", "no token: nothing to hide"),
    ],
)
def test_mask_secrets_masks_token_shapes_only(text: str, kept: str) -> None:
    assert mask_secrets(text) == kept
