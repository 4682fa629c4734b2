"""Per-blob backoff after a failed fetch, so that a failing upstream (or a full disk) is not
hammered by every client's retry.

A blob whose ingest was abandoned is `absent` again, but for a while each request for it gets the
failure's message instead of a new fetch: `first_s` after the first failure, doubled after each
further one, at most `max_s`, and at least what an upstream 429 asked for. A success clears it.
Kept in memory: a restart (or another replica) may fetch once sooner, nothing worse.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.errors import (
    AccessDenied,
    HubwardenError,
    UpstreamRateLimited,
    UpstreamUnavailable,
    shown,
)

MAX_REMEMBERED = 10_000
BACKOFF_STATUS = 503
MAX_RESUME_DELAY_S = 3.0


def resume_delay_s(attempt: int) -> float:
    """Seconds before resuming a body that broke off mid-ingest (whole file or one range):
    1 s after the first failure, growing to MAX_RESUME_DELAY_S."""
    return float(min(max(attempt, 1), MAX_RESUME_DELAY_S))


class FetchBackoff(UpstreamUnavailable):
    """A file's last fetch failed (`cause`) moments ago; it is fetched again after
    `retry_after_s`. Answered with the cause's status (502, 504, 507…) or 503."""

    def __init__(self, path: str, cause: HubwardenError, retry_after_s: int) -> None:
        self.path = path
        self.cause = cause
        self.retry_after_s = retry_after_s
        status = cause.status if isinstance(cause, UpstreamUnavailable) else BACKOFF_STATUS
        super().__init__(
            f"fetching {shown(path)} failed moments ago ({cause.message}); the mirror fetches it "
            f"again in {retry_after_s} s: retry then",
            status=status,
        )


@dataclass(slots=True)
class _Failures:
    count: int
    until_s: float
    cause: HubwardenError


class Backoffs:
    """Which blobs (by etag) may not be fetched again yet, and why."""

    def __init__(
        self, first_s: float, max_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._first_s = first_s
        self._max_s = max(max_s, first_s)
        self._clock = clock
        self._failures: dict[str, _Failures] = {}

    def check(self, etag: str, path: str) -> None:
        """Raises FetchBackoff (or UpstreamRateLimited, with the wait the upstream asked for)
        while the blob's last fetch failed too recently."""
        failures = self._failures.get(etag)
        if failures is None:
            return
        remaining_s = failures.until_s - self._clock()
        if remaining_s <= 0:
            return
        wait_s = max(1, math.ceil(remaining_s))
        if isinstance(failures.cause, UpstreamRateLimited):
            raise UpstreamRateLimited(wait_s)
        if isinstance(failures.cause, AccessDenied):  # a refusal (an upstream Hubwarden holding
            raise failures.cause  # the file) is told as it was, not as a temporary failure
        raise FetchBackoff(path, failures.cause, wait_s)

    def failed(self, etag: str, cause: HubwardenError) -> float:
        """Record a failed fetch; returns the seconds until the next one may start."""
        previous = self._failures.pop(etag, None)
        count = 1 if previous is None else previous.count + 1
        wait_s = min(self._first_s * 2.0 ** min(count - 1, 30), self._max_s)
        if isinstance(cause, UpstreamRateLimited):
            wait_s = max(wait_s, float(cause.retry_after_s))
        if wait_s <= 0:
            return 0.0
        self._make_room()
        self._failures[etag] = _Failures(count, self._clock() + wait_s, cause)
        return wait_s

    def succeeded(self, etag: str) -> None:
        self._failures.pop(etag, None)

    def _make_room(self) -> None:
        if len(self._failures) < MAX_REMEMBERED:
            return
        now = self._clock()
        for etag in [e for e, f in self._failures.items() if f.until_s <= now]:
            del self._failures[etag]
        while len(self._failures) >= MAX_REMEMBERED:  # all still waiting: forget the oldest
            del self._failures[next(iter(self._failures))]
