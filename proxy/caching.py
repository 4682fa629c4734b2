"""A small bounded in-memory cache with expiry, for facts the database holds.

Nothing here is the truth: every cached value is in the database, and each cache's lifetime says
how stale a replica may be (a block placed by another replica is seen within `WARM_TTL_S`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
MAX_CACHE_ITEMS = 10_000
# How long the warm path trusts what it read about blocks, pins and released blobs.
WARM_TTL_S = 1.0
# Immutable facts (a commit's entries) may stay longer; the bound on items keeps memory flat.
IMMUTABLE_TTL_S = 3600.0


class TtlCache(Generic[K, V]):
    """A small bounded cache whose items expire `ttl_s` after they were stored."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            del self._items[key]
            return None
        return value

    def forget(self, key: K) -> None:
        self._items.pop(key, None)

    def put(self, key: K, value: V) -> None:
        self._items[key] = (self._clock() + self._ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > MAX_CACHE_ITEMS:
            self._items.popitem(last=False)
