"""One access line per request, made cheaply: on the warm path the default aiohttp access
logger (a dozen format atoms per line) cost more than serving a 64 KiB range."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

ACCESS_LOGGER = logging.getLogger("proxy.access")


class AccessLogger(AbstractAccessLogger):
    """`<remote> "<method> <path>" <status> <bytes> <ms>ms`; the path as received (the
    formatter escapes control characters). Lines of answers >= 400 carry a `cause` (their
    status) for the rate limit of proxy.logs.RateLimitFilter."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        status = response.status
        self.logger.info(
            '%s "%s %s" %d %d %.1fms',
            request.remote,
            request.method,
            request.raw_path[:2000],
            status,
            response.body_length,
            time * 1000,
            # Error answers are rate-limited per status (a flood of bad requests must not flood
            # the log); the filter is installed by proxy.hub.server.
            extra={"cause": f"status {status}"} if status >= 400 else None,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
