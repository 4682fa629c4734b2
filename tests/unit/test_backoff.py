"""`Backoffs`: a blob whose fetch failed is not fetched again until its backoff ends."""

from __future__ import annotations

import pytest

from proxy.backoff import Backoffs, FetchBackoff
from proxy.errors import UpstreamRateLimited, UpstreamUnavailable
from proxy.store.blobs import StoreFull

ETAG = "a" * 64


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_backoff_refuses_until_the_wait_ends_with_the_cause_in_the_message() -> None:
    clock = Clock()
    backoffs = Backoffs(10.0, 300.0, clock)
    backoffs.failed(ETAG, UpstreamUnavailable("upstream answered 500", status=502))
    with pytest.raises(FetchBackoff, match=r"answered 500\); the mirror fetches it again in 10 s"):
        backoffs.check(ETAG, "model.bin")
    clock.now_s += 10.0
    backoffs.check(ETAG, "model.bin")


def test_backoff_doubles_per_failure_up_to_the_maximum() -> None:
    backoffs = Backoffs(10.0, 25.0, Clock())
    cause = UpstreamUnavailable("down")
    assert [backoffs.failed(ETAG, cause) for _ in range(3)] == [10.0, 20.0, 25.0]


def test_backoff_keeps_the_status_of_its_cause() -> None:
    backoffs = Backoffs(10.0, 10.0, Clock())
    backoffs.failed(ETAG, StoreFull("model.bin", 5, 0, 0, reason="No space left on device"))
    with pytest.raises(FetchBackoff) as caught:
        backoffs.check(ETAG, "model.bin")
    assert caught.value.status == 507


def test_backoff_after_a_429_waits_what_the_upstream_asked_and_says_429() -> None:
    backoffs = Backoffs(1.0, 5.0, Clock())
    assert backoffs.failed(ETAG, UpstreamRateLimited(60)) == 60.0
    with pytest.raises(UpstreamRateLimited) as caught:
        backoffs.check(ETAG, "model.bin")
    assert caught.value.retry_after_s == 60


def test_backoff_success_forgets_the_failures() -> None:
    backoffs = Backoffs(10.0, 300.0, Clock())
    backoffs.failed(ETAG, UpstreamUnavailable("down"))
    backoffs.succeeded(ETAG)
    backoffs.check(ETAG, "model.bin")
    assert backoffs.failed(ETAG, UpstreamUnavailable("down")) == 10.0


def test_backoff_of_zero_never_refuses() -> None:
    backoffs = Backoffs(0.0, 0.0, Clock())
    assert backoffs.failed(ETAG, UpstreamUnavailable("down")) == 0.0
    backoffs.check(ETAG, "model.bin")
