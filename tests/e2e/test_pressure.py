"""Connection pressure: header and idle timeouts, connection limits, keep-alive limits and the
rate-limited log, on real loopback sockets against Hubwarden served as `hubwarden serve` does
(`HubServer`). Timeouts are short (fractions of a second) and every wait is bounded."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest

from proxy.app import create_app
from proxy.config import load_settings
from proxy.hub.server import HubServer

WAIT_S = 5.0  # bound on any single read; far above every timeout configured here

Serve = Callable[..., Awaitable[int]]


@asynccontextmanager
async def _served(data_dir: Path, **values: object) -> AsyncIterator[int]:
    settings = load_settings(None, {}, {"data_dir": str(data_dir), "offline": True, **values})
    server = HubServer(create_app(settings), settings)
    await server.setup()
    try:
        yield await server.listen("127.0.0.1", 0)
    finally:
        await server.close()


class Connection:
    """One raw HTTP/1.1 connection: what a client (or an attacker) sends, byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def get(self, path: str = "/healthz") -> tuple[int, dict[str, str], bytes]:
        await self.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return await self.response()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), WAIT_S)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), WAIT_S)
        return int(status_line.split()[1]), headers, body

    async def closed_by_server(self) -> bool:
        """True when the server closes the connection (EOF or reset) within WAIT_S."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), WAIT_S)
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionResetError, BrokenPipeError):
            await self.writer.wait_closed()


@pytest.fixture
async def connections() -> AsyncIterator[list[Connection]]:
    opened: list[Connection] = []
    yield opened
    for connection in opened:
        await connection.close()


async def _open(port: int, opened: list[Connection]) -> Connection:
    connection = await Connection.open(port)
    opened.append(connection)
    return connection


async def test_pressure_slow_headers_are_cut_at_the_header_timeout(
    tmp_path: Path, connections: list[Connection]
) -> None:
    async with _served(tmp_path, header_timeout_s=0.3, idle_timeout_s=30) as port:
        slow = await _open(port, connections)
        started = time.monotonic()
        await slow.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        assert await slow.closed_by_server()
        assert 0.25 <= time.monotonic() - started < 3


async def test_pressure_silent_connection_is_cut_at_the_header_timeout(
    tmp_path: Path, connections: list[Connection]
) -> None:
    async with _served(tmp_path, header_timeout_s=0.3, idle_timeout_s=30) as port:
        silent = await _open(port, connections)
        assert await silent.closed_by_server()


async def test_pressure_idle_keepalive_connection_is_closed_after_the_idle_timeout(
    tmp_path: Path, connections: list[Connection]
) -> None:
    async with _served(tmp_path, header_timeout_s=0.2, idle_timeout_s=0.6) as port:
        client = await _open(port, connections)
        assert (await client.get())[0] == 200
        await asyncio.sleep(0.3)  # past the header timeout: that one no longer applies
        assert (await client.get())[0] == 200
        started = time.monotonic()
        assert await client.closed_by_server()
        assert 0.5 <= time.monotonic() - started < 3


async def test_pressure_keepalive_connection_stays_open_within_the_idle_timeout(
    tmp_path: Path, connections: list[Connection]
) -> None:
    async with _served(tmp_path, header_timeout_s=5, idle_timeout_s=5) as port:
        client = await _open(port, connections)
        for _ in range(3):
            status, headers, _ = await client.get()
            assert (status, headers.get("connection", "keep-alive").lower()) == (200, "keep-alive")


async def test_pressure_connection_beyond_the_per_client_limit_gets_503_retry_after(
    tmp_path: Path, connections: list[Connection]
) -> None:
    limits = {"max_connections_per_client": 2, "busy_retry_after_s": 7}
    async with _served(tmp_path, **limits) as port:
        for _ in range(2):
            assert (await (await _open(port, connections)).get())[0] == 200
        extra = await _open(port, connections)
        status, headers, body = await extra.get()
        assert (status, headers["retry-after"]) == (503, "7")
        assert b"too many connections" in body
        assert await extra.closed_by_server()


async def test_pressure_connection_beyond_the_total_limit_gets_503(
    tmp_path: Path, connections: list[Connection]
) -> None:
    limits = {"max_connections": 3, "max_connections_per_client": 100}
    async with _served(tmp_path, **limits) as port:
        for _ in range(3):
            assert (await (await _open(port, connections)).get())[0] == 200
        status, headers, _ = await (await _open(port, connections)).get()
        assert status == 503
        assert headers["retry-after"] == "2"


async def test_pressure_closed_connection_frees_its_place(
    tmp_path: Path, connections: list[Connection]
) -> None:
    async with _served(tmp_path, max_connections_per_client=1) as port:
        first = await _open(port, connections)
        assert (await first.get())[0] == 200
        await first.close()
        statuses = []
        for _ in range(50):  # the server sees the close a moment later
            statuses.append((await (await _open(port, connections)).get())[0])
            if statuses[-1] == 200:
                break
            await asyncio.sleep(0.05)
        assert statuses[-1] == 200


async def test_pressure_keepalive_limit_closes_after_the_last_request(
    tmp_path: Path, connections: list[Connection]
) -> None:
    async with _served(tmp_path, max_requests_per_connection=3) as port:
        client = await _open(port, connections)
        answers = [await client.get() for _ in range(3)]
        assert [status for status, _, _ in answers] == [200, 200, 200]
        assert [h.get("connection", "").lower() for _, h, _ in answers][-1] == "close"
        assert "close" not in answers[0][1].get("connection", "").lower()
        assert await client.closed_by_server()


async def test_pressure_malformed_requests_log_rate_limited_lines_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with _served(tmp_path) as port:
        for _ in range(40):
            bad = await Connection.open(port)
            try:
                await bad.send(b"GET /healthz HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n")
                assert (await bad.response())[0] == 400
            finally:
                await bad.close()
    errors = [r for r in caplog.records if r.name == "proxy.hub.connections"]
    access_400 = [r for r in caplog.records if r.name == "proxy.access" and " 400 " in r.message]
    assert errors
    assert all(r.exc_info is None and r.levelno == logging.WARNING for r in errors)
    assert "Traceback" not in caplog.text
    assert len(errors) <= 10
    assert len(access_400) <= 10
