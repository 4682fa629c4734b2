"""A value read at most every few seconds however often it is asked for, one read at a time.

`/metrics` and `/readyz` are polled by scrapers and load balancers, and anyone who reaches the port
can poll them too: what they read (database counts, a probe file, the upstream) must cost the
same at a thousand requests per second as at one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Snapshot(Generic[T]):
    """`read()` gives the last value when it is younger than `max_age_s`; else one call of `load`
    runs, shared by every caller that asks meanwhile (a caller cancelled while waiting does not
    cancel it for the others)."""

    def __init__(
        self,
        load: Callable[[], Awaitable[T]],
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._max_age_s = max_age_s
        self._clock = clock
        self._value: T | None = None
        self._loaded = False
        self._loaded_at = float("-inf")
        self._loading: asyncio.Task[T] | None = None

    async def read(self) -> T:
        if self._loaded and self._clock() - self._loaded_at < self._max_age_s:
            return self._value  # type: ignore[return-value]  # T itself may include None
        if self._loading is None:
            self._loading = asyncio.create_task(self._reload())
        return await asyncio.shield(self._loading)

    async def close(self) -> None:
        """Cancel a read in progress (at shutdown) and wait for it to end."""
        loading, self._loading = self._loading, None
        if loading is not None:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading

    async def _reload(self) -> T:
        try:
            value = await self._load()
        finally:
            self._loading = None
        self._value, self._loaded, self._loaded_at = value, True, self._clock()
        return value
