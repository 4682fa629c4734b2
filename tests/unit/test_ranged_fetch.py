"""How a large file is cut into ranges, and how far it is written without a gap."""

from __future__ import annotations

import itertools

import pytest

from proxy.ranged_fetch import (
    PLAIN_HTTP_CAP_BYTES,
    RangedLimits,
    Span,
    contiguous_prefix,
    split_spans,
)

MiB = 1024 * 1024


def limits(threshold_bytes: int = 64 * MiB, connections: int = 4) -> RangedLimits:
    return RangedLimits(connections, threshold_bytes, 8 * MiB, MiB, retries=3)


@pytest.mark.parametrize(("size", "count"), [(10, 4), (1, 4), (4, 4), (7 * MiB + 3, 3), (5, 1)])
def test_split_spans_cover_the_file_once_in_order(size: int, count: int) -> None:
    spans = split_spans(size, count)
    assert spans[0].start == 0
    assert spans[-1].end == size
    assert all(a.end == b.start for a, b in itertools.pairwise(spans))
    assert len(spans) == min(count, size)
    assert max(s.end - s.start for s in spans) - min(s.end - s.start for s in spans) <= 1


def test_contiguous_prefix_stops_at_the_first_gap() -> None:
    spans = [Span(0, 10, written=10), Span(10, 20, written=4), Span(20, 30, written=10)]
    assert contiguous_prefix(spans) == 14


def test_contiguous_prefix_of_a_complete_file_is_its_size() -> None:
    assert contiguous_prefix([Span(0, 10, written=10), Span(10, 20, written=10)]) == 20


def test_contiguous_prefix_of_an_unstarted_first_range_is_zero() -> None:
    assert contiguous_prefix([Span(0, 10), Span(10, 20, written=10)]) == 0


@pytest.mark.parametrize(
    ("size", "ranged"),
    [(0, False), (64 * MiB - 1, False), (64 * MiB, True), (PLAIN_HTTP_CAP_BYTES + 1, True)],
)
def test_ranged_limits_apply_from_the_threshold(size: int, ranged: bool) -> None:
    assert limits().applies_to(size) is ranged


def test_ranged_limits_files_past_the_client_cap_are_ranged_whatever_the_threshold() -> None:
    high = limits(threshold_bytes=2 * PLAIN_HTTP_CAP_BYTES)
    assert high.applies_to(PLAIN_HTTP_CAP_BYTES + 1)
    assert not high.applies_to(PLAIN_HTTP_CAP_BYTES)
