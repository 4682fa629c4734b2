"""The operators' edge: `/metrics` (Prometheus), `/readyz`, and the request middleware that
counts every request and gives it an id.

`/healthz` (alive: no I/O) stays with the Hub routes (`proxy.hub.api.healthz`). None of these
paths is a Hub route (hub-protocol.md): a repo page would be `/{namespace}/{name}`, and a
one-segment repo's files live under `/{name}/resolve/...`.

Request ids: a sane `X-Request-Id` from the client is kept, anything else replaced
(`proxy.logs.RequestIds`); the id goes back in the answer's `X-Request-Id` and, through a context
variable, onto every log line written while the request is handled, its access line included.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.config import MetricsSettings
from proxy.hub.context import SERVICES
from proxy.logs import REQUEST_ID, RequestIds
from proxy.ops.health import ReadinessProbe
from proxy.ops.metrics import UNMATCHED_ROUTE, Metrics
from proxy.ops.tallies import TallyReader


@dataclass(frozen=True, slots=True)
class Monitoring:
    """What the scrape and the readiness answer read, built once the services exist."""

    tallies: TallyReader
    readiness: ReadinessProbe


METRICS = web.AppKey("metrics", Metrics)
MONITORING = web.AppKey("monitoring", Monitoring)
# Set by the resolve route on a file body answer: "warm" (released blob) or "cold" (in flight).
SERVED_FROM = web.ResponseKey("served_from", str)
REQUEST_ID_KEY = web.RequestKey("request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"
_NO_STORE = {"Cache-Control": "no-store"}


def observe_requests(metrics: Metrics) -> Middleware:
    """The outermost middleware: request id in, counts and duration out."""
    ids = RequestIds()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = ids.accept(request.headers.get(REQUEST_ID_HEADER))
        request[REQUEST_ID_KEY] = request_id
        # Not reset on the way out: aiohttp runs each request in a task of its own (a copy of
        # the context), and the access line is written after this returns, in that same task.
        REQUEST_ID.set(request_id)
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.request_done(
                _route_of(request), request.method, status, time.monotonic() - started
            )

    return middleware


def _route_of(request: web.Request) -> str:
    """The matched route's pattern (`/{namespace}/{name}/resolve/{rev}/{path}`), never the path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


def on_answer(metrics: Metrics) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """For `app.on_response_prepare`: the request id header on every answer, and the body bytes
    of file answers, counted from the length the answer declares (no per-byte work)."""

    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        request_id = request.get(REQUEST_ID_KEY)
        if request_id is not None:
            response.headers[REQUEST_ID_HEADER] = request_id
        source = response.get(SERVED_FROM)
        if source is not None and request.method == "GET" and response.content_length:
            metrics.served(source, response.content_length)

    return prepare


def add_monitoring_routes(app: web.Application, settings: MetricsSettings) -> None:
    """`/readyz` always; `/metrics` when `[metrics] enabled` (else it is the Hub's 404)."""
    app.router.add_get("/readyz", readyz)
    if settings.enabled:
        app.router.add_get("/metrics", metrics_page)


async def readyz(request: web.Request) -> web.Response:
    readiness = await request.app[MONITORING].readiness.readiness()
    status = 200 if readiness.ready else 503
    return web.json_response(readiness.to_json(), status=status, headers=_NO_STORE)


async def metrics_page(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    token = services.settings.metrics.token
    if token is not None and not _bearer_matches(request, token.reveal()):
        return web.json_response(
            {"error": "/metrics needs the token of [metrics] token: Authorization: Bearer <token>"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"', **_NO_STORE},
        )
    tallies = await request.app[MONITORING].tallies.read()
    body = request.app[METRICS].render(services.ingestor.in_flight, tallies)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, **_NO_STORE})


def _bearer_matches(request: web.Request, token: str) -> bool:
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        offered.strip().encode(), token.encode()
    )
