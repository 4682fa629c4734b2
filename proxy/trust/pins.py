"""Pins: `(repo, path)` → the newest approved hash along a branch's history, with its commit.

Documentation-only paths (`unpinned_paths`, by default `*.md` and `.gitattributes`) are never
pinned. Reads go through a cache of at most `WARM_TTL_S`: this runs on every GET.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable

from proxy.caching import WARM_TTL_S, TtlCache
from proxy.store.repository import PinRecord, Repository

SYSTEM_ACTOR = "hubwarden"


class Pins:
    def __init__(
        self,
        repository: Repository,
        unpinned_paths: tuple[str, ...] | Callable[[], tuple[str, ...]],
    ) -> None:
        """`unpinned_paths`: the globs, or where to read them (the policy in force)."""
        self._db = repository
        self._cache: TtlCache[tuple[int, str], tuple[PinRecord | None]] = TtlCache(WARM_TTL_S)
        self._lists: TtlCache[int, list[PinRecord]] = TtlCache(WARM_TTL_S)
        self._patterns: Callable[[], tuple[str, ...]] = (
            unpinned_paths if callable(unpinned_paths) else _constant(unpinned_paths)
        )
        self._compiled: tuple[tuple[str, ...], re.Pattern[str]] | None = None

    def _unpinned(self) -> re.Pattern[str]:
        """One compiled regex for all unpinned globs, compiled again when they change."""
        patterns = self._patterns()
        if self._compiled is None or self._compiled[0] != patterns:
            regex = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)"
            self._compiled = (patterns, re.compile(regex))
        return self._compiled[1]

    def is_pinned_path(self, path: str) -> bool:
        unpinned = self._unpinned()
        name = path.rsplit("/", 1)[-1]
        return unpinned.match(path) is None and unpinned.match(name) is None

    async def pin_of(self, repo_pk: int, path: str) -> PinRecord | None:
        cached = self._cache.get((repo_pk, path))
        if cached is not None:
            return cached[0]
        pin = await self._db.get_pin(repo_pk, path)
        self._cache.put((repo_pk, path), (pin,))
        return pin

    async def all_of(self, repo_pk: int) -> list[PinRecord]:
        cached = self._lists.get(repo_pk)
        if cached is None:
            cached = await self._db.list_pins(repo_pk)
            self._lists.put(repo_pk, cached)
        return cached

    async def set(self, repo_pk: int, pin: PinRecord, by: str = SYSTEM_ACTOR) -> None:
        await self._db.set_pin(repo_pk, pin.path, pin.etag, pin.commit, by)
        self._cache.put((repo_pk, pin.path), (pin,))
        self._lists.forget(repo_pk)


def _constant(patterns: tuple[str, ...]) -> Callable[[], tuple[str, ...]]:
    def read() -> tuple[str, ...]:
        return patterns

    return read
