"""`TtlCache` (with an injected clock) and `Caller.key`."""

from __future__ import annotations

from proxy.caching import MAX_CACHE_ITEMS, TtlCache
from proxy.catalog import Caller


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ttl_cache_item_within_ttl_is_returned() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(10.0, clock)
    cache.put("k", 1)
    clock.now += 9.9
    assert cache.get("k") == 1


def test_ttl_cache_item_after_ttl_is_gone() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(10.0, clock)
    cache.put("k", 1)
    clock.now += 10.1
    assert cache.get("k") is None


def test_ttl_cache_zero_ttl_never_serves_a_stored_item() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(0.0, clock)
    cache.put("k", 1)
    assert cache.get("k") is None


def test_ttl_cache_unknown_key_is_none() -> None:
    assert TtlCache[str, int](10.0, FakeClock()).get("missing") is None


def test_ttl_cache_put_again_restarts_the_ttl() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(10.0, clock)
    cache.put("k", 1)
    clock.now += 8
    cache.put("k", 2)
    clock.now += 8
    assert cache.get("k") == 2


def test_ttl_cache_beyond_the_bound_drops_the_oldest_item() -> None:
    cache: TtlCache[int, int] = TtlCache(10.0, FakeClock())
    for key in range(MAX_CACHE_ITEMS + 1):
        cache.put(key, key)
    assert cache.get(0) is None
    assert cache.get(1) == 1
    assert cache.get(MAX_CACHE_ITEMS) == MAX_CACHE_ITEMS


def test_ttl_cache_refreshed_key_survives_eviction() -> None:
    cache: TtlCache[int, int] = TtlCache(10.0, FakeClock())
    for key in range(MAX_CACHE_ITEMS):
        cache.put(key, key)
    cache.put(0, 0)  # refreshed: now the newest
    cache.put(MAX_CACHE_ITEMS, MAX_CACHE_ITEMS)
    assert cache.get(0) == 0
    assert cache.get(1) is None


def test_caller_key_of_anonymous_is_fixed() -> None:
    assert Caller(None).key == "anonymous"


def test_caller_key_never_holds_the_token() -> None:
    key = Caller("hf_secret_token_value").key
    assert "hf_secret" not in key
    assert len(key) == 32


def test_caller_key_differs_per_token() -> None:
    assert Caller("hf_a").key != Caller("hf_b").key
