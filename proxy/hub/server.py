"""Serving the app on a socket, under pressure: header and idle timeouts, connection limits.

Each accepted connection is wrapped by a `GuardedConnection` (an asyncio protocol that passes
every event on to aiohttp's own handler), which

- counts it, in total and per client address; beyond `max_connections` or
  `max_connections_per_client` the connection is handed to a tiny server that answers every
  request `503` + `Retry-After` and closes (huggingface_hub retries those), and beyond twice the
  total it is closed at once, unanswered;
- closes it when its first request's headers are not complete within `header_timeout_s` (slow
  senders hold a connection, a file descriptor and a buffer each; aiohttp alone waits an hour).
  Later requests on a kept-alive connection are bounded by aiohttp's keep-alive timer
  (`idle_timeout_s`), which runs from the previous answer until the next headers are complete;
- counts its requests: after `max_requests_per_connection` the answer says `Connection: close`
  (`keepalive_limit`, a middleware, reads the count through the transport).

aiohttp's "Error handling request" tracebacks for malformed requests become one line each,
rate-limited per cause (`proxy.logs.RateLimitFilter`), as do access lines of error answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.config import Settings
from proxy.hub.access import ACCESS_LOGGER, AccessLogger
from proxy.logs import install_rate_limits

logger = logging.getLogger(__name__)
# aiohttp's per-connection messages (malformed requests, handler errors) go to this logger.
CONNECTION_LOGGER = logging.getLogger("proxy.hub.connections")
HEADERS_END = b"\r\n\r\n"
REFUSED_KEEPALIVE_S = 1.0
FILE_DESCRIPTORS_SPARE = 256  # beyond the connections: database, blobs, upstream, scanners


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float
    idle_timeout_s: float
    max_connections: int
    max_connections_per_client: int
    max_requests_per_connection: int
    busy_retry_after_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout_s=settings.header_timeout_s,
            idle_timeout_s=settings.idle_timeout_s,
            max_connections=settings.max_connections,
            max_connections_per_client=settings.max_connections_per_client,
            max_requests_per_connection=settings.max_requests_per_connection,
            busy_retry_after_s=settings.busy_retry_after_s,
        )


class ConnectionGuard:
    """The protocol factory of the listening socket: counts connections and picks who serves
    each one (the app, or the 503 answerer)."""

    def __init__(
        self,
        limits: ConnectionLimits,
        serve: Callable[[], asyncio.Protocol],
        refuse: Callable[[], asyncio.Protocol],
    ) -> None:
        self.limits = limits
        self._serve = serve
        self._refuse = refuse
        self.open = 0
        self.refused_open = 0
        self._per_client: dict[str, int] = {}

    def __call__(self) -> GuardedConnection:
        return GuardedConnection(self)

    def admit(self, client: str) -> bool | None:
        """True: serve; False: answer 503; None: close at once (too many even to refuse)."""
        limits = self.limits
        if (
            self.open < limits.max_connections
            and self._per_client.get(client, 0) < limits.max_connections_per_client
        ):
            self.open += 1
            self._per_client[client] = self._per_client.get(client, 0) + 1
            return True
        if self.refused_open < limits.max_connections:
            self.refused_open += 1
            return False
        return None

    def release(self, client: str, *, admitted: bool) -> None:
        if not admitted:
            self.refused_open -= 1
            return
        self.open -= 1
        left = self._per_client[client] - 1
        if left:
            self._per_client[client] = left
        else:
            del self._per_client[client]

    def make_inner(self, admitted: bool) -> asyncio.Protocol:
        return self._serve() if admitted else self._refuse()


class GuardedConnection(asyncio.Protocol):
    """One client connection: aiohttp's handler inside, the limits around it."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._client = ""
        self._admitted = False
        self._headers_seen = False
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        admitted = self._guard.admit(self._client)
        if admitted is None:
            _log_limited("too many connections: closed unanswered", "connections refused")
            transport.abort()
            return
        self._admitted = admitted
        if not admitted:
            _log_limited(
                "too many connections (from %s or in total): answering 503",
                "connections busy",
                self._client,
            )
        self._inner = self._guard.make_inner(admitted)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.header_timeout_s, self._headers_late)
        self._inner.connection_made(transport)

    def _headers_late(self) -> None:
        self._timer = None
        if not self._headers_seen and self._transport is not None:
            _log_limited(
                "connection from %s closed: no complete request headers within %ss",
                "header timeout",
                self._client,
                self._guard.limits.header_timeout_s,
            )
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self._headers_seen:
            window = self._tail + data
            if HEADERS_END in window:
                self._headers_seen = True
                self._tail = b""
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            else:
                self._tail = window[-(len(HEADERS_END) - 1) :]
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        if self._inner is None:
            return
        self._guard.release(self._client, admitted=self._admitted)
        inner, self._inner = self._inner, None
        inner.connection_lost(exc)

    def count_request(self) -> bool:
        """Count one more request; True when it is the last this connection may carry."""
        self.requests += 1
        return self.requests >= self._guard.limits.max_requests_per_connection


def _log_limited(message: str, cause: str, *args: object) -> None:
    logger.warning(message, *args, extra={"cause": cause})


@web.middleware
async def keepalive_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`Connection: close` on the last request a connection may carry (no-op unless served by
    `HubServer`)."""
    transport = request.transport
    connection = transport.get_protocol() if transport is not None else None
    last = isinstance(connection, GuardedConnection) and connection.count_request()
    response = await handler(request)
    if last:
        response.force_close()
    return response


class HubServer:
    """The app served on one TCP socket with the limits above; `cli.py` and the tests use it."""

    def __init__(self, app: web.Application, settings: Settings) -> None:
        self.limits = ConnectionLimits.from_settings(settings)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=ACCESS_LOGGER,
            access_log_class=AccessLogger,
            logger=CONNECTION_LOGGER,
            keepalive_timeout=self.limits.idle_timeout_s,
        )
        self._refusals: web.Server | None = None
        self._site: _GuardedSite | None = None
        self.guard: ConnectionGuard | None = None

    async def setup(self) -> None:
        """Start the app (its cleanup contexts: database, services). Raises what they raise."""
        install_rate_limits(ACCESS_LOGGER, CONNECTION_LOGGER, logger)
        _raise_file_limit(self.limits.max_connections * 2 + FILE_DESCRIPTORS_SPARE)
        await self._runner.setup()
        self._refusals = web.Server(
            _busy_handler(self.limits.busy_retry_after_s),
            access_log=ACCESS_LOGGER,
            access_log_class=AccessLogger,
            logger=CONNECTION_LOGGER,
            keepalive_timeout=REFUSED_KEEPALIVE_S,
        )

    async def listen(self, host: str, port: int, sock: socket.socket | None = None) -> int:
        """Listen on host:port (0: any free port), or on `sock`, bound already (a worker of
        `serve --workers`); returns the port. Raises OSError."""
        server, refusals = self._runner.server, self._refusals
        assert server is not None and refusals is not None, "setup() first"
        self.guard = ConnectionGuard(self.limits, server, refusals)
        self._site = _GuardedSite(self._runner, self.guard, host, port, sock)
        await self._site.start()
        return self._site.port

    async def close(self) -> None:
        """Stop listening, let requests in flight finish (bounded), stop the app."""
        if self._refusals is not None:
            await self._refusals.shutdown(REFUSED_KEEPALIVE_S)
        await self._runner.cleanup()


def _busy_handler(retry_after_s: int) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    async def busy(request: web.BaseRequest) -> web.StreamResponse:
        message = "the mirror is busy (too many connections); retry shortly"
        response = web.json_response(
            {"error": message},
            status=503,
            headers={"Retry-After": str(retry_after_s), "X-Error-Message": message},
        )
        response.force_close()
        return response

    return busy


class _GuardedSite(web.BaseSite):
    """aiohttp's TCPSite, with the guard as the protocol factory."""

    __slots__ = ("_guard", "_host", "_port", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str,
        port: int,
        sock: socket.socket | None = None,
    ):
        super().__init__(runner, backlog=1024)
        self._guard = guard
        self._host = host
        self._port = port
        self._sock = sock

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        sockets = getattr(self._server, "sockets", ())
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(
                self._guard, sock=self._sock, backlog=self._backlog
            )
            return
        self._server = await loop.create_server(
            self._guard, self._host, self._port, backlog=self._backlog, reuse_address=True
        )


def _raise_file_limit(wanted: int) -> None:
    """Let the process hold `wanted` descriptors, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        logger.warning(
            "only %d file descriptors allowed (ulimit -n); max_connections=%d may not be reached",
            soft,
            wanted,
        )
