"""The shape measure (depth, expansion, distinct containers) against a plain recursive reference,
and the walk it is allowed to skip: a small value no container of which is reached twice."""

from __future__ import annotations

import pickle
import random

import pytest

from scanners.allowlist import GlobalVerdict
from scanners.limits import PickleLimits
from scanners.pickle_shape import NODES, measure, within_limits
from scanners.pickle_values import DictV, Global, ListV, Made, Record, SetV
from scanners.pickles import PickleWalker, scan_pickle_bytes

SEED = 13
GRAPHS = 300
_OWN: dict[type, tuple[int, int]] = {Record: (4, 7)}  # every other one: 1 deep, 1 container


def _inside(value: object) -> list[object]:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Record):
        return list(value.kids or ())
    if isinstance(value, Made):
        return [value.origin, value.args, *(value.kids or ())]
    return list(value.kids or ())  # type: ignore[attr-defined]


def _reference(root: object) -> tuple[int, int, int]:
    """(depth, expanded, distinct) by recursion over an acyclic value."""
    known: dict[int, tuple[int, int]] = {}

    def visit(value: object) -> tuple[int, int]:
        if id(value) in known:
            return known[id(value)]
        own_depth, own_count = _OWN.get(type(value), (1, 1))
        depth, count = own_depth, own_count
        for kid in _inside(value):
            if kid.__class__ not in NODES or kid == ():
                continue
            kid_depth, kid_count = visit(kid)
            depth = max(depth, kid_depth + 1)
            count += kid_count
        known[id(value)] = (depth, count)
        return depth, count

    if root.__class__ not in NODES or root == ():
        return 0, 0, 0
    depth, count = visit(root)
    return depth, count, len(known)


def _random_graph(rng: random.Random) -> object:
    """An acyclic value of the walker's kinds, sharing some parts (as memo GETs make)."""
    made: list[object] = [1, "s", Global("torch", "Size", 0, GlobalVerdict.ALLOWED)]
    for _ in range(rng.randrange(1, 40)):
        parts = [rng.choice(made) for _ in range(rng.randrange(0, 4))]
        kind = rng.randrange(6)
        value: object
        if kind == 0:
            value = tuple(parts)
        elif kind == 1:
            value = Made(rng.choice(made), tuple(parts))
        elif kind == 2:
            value = Record(made[2], (1, 2))
        else:
            value = (ListV, SetV, DictV)[kind - 3]()
        if isinstance(value, Made | ListV | DictV) and parts:
            value.kids = [p for p in parts if p.__class__ in NODES] or None
        made.append(value)
    return made[-1]


def test_measure_agrees_with_a_recursive_reference() -> None:
    rng = random.Random(SEED)  # noqa: S311 - a seeded run, no secret
    for index in range(GRAPHS):
        root = _random_graph(rng)
        shape = measure(root, 10_000, 1 << 40)
        assert (shape.depth, shape.expanded, shape.distinct) == _reference(root), index


def test_measure_stops_past_the_depth_limit() -> None:
    root: object = ListV()
    for _ in range(50):
        outer = ListV()
        outer.kids = [root]
        root = outer
    assert measure(root, 10, 1 << 40).depth == 11
    assert measure(root, 100, 1 << 40).depth == 51


def test_measure_cycle_adds_nothing() -> None:
    first, second = ListV(), ListV()
    first.kids, second.kids = [second], [first]
    shape = measure(first, 100, 1 << 40)
    assert (shape.depth, shape.expanded, shape.distinct) == (2, 2, 2)


def _random_tree(rng: random.Random, depth: int = 0) -> object:
    if depth > 6 or rng.random() < 0.3:
        return rng.choice([1, 2.5, "x", b"y", None, True])
    items = [_random_tree(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    kind = rng.randrange(4)
    if kind == 0:
        return items
    if kind == 1:
        return tuple(items)
    if kind == 2:
        return dict(enumerate(items))
    return frozenset(i for i in items if isinstance(i, int | str | bytes | float))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_within_limits_holds_for_unshared_values(protocol: int) -> None:
    # the skip is sound: a tree is no deeper and no larger than the opcodes that built it
    rng = random.Random(SEED + protocol)  # noqa: S311 - a seeded run, no secret
    for _ in range(GRAPHS):
        data = pickle.dumps(_random_tree(rng), protocol=protocol)
        walker = PickleWalker(data, len(data), PickleLimits())
        walker.walk_one(0)
        shape = measure(walker.last_value, 10_000, 1 << 40)
        assert shape.depth <= walker.result.opcodes
        assert shape.expanded <= walker.result.opcodes


def test_within_limits_needs_no_sharing_and_few_opcodes() -> None:
    assert within_limits(False, 100, 10_000, 1 << 24)
    assert not within_limits(True, 100, 10_000, 1 << 24)
    assert not within_limits(False, 10_001, 10_000, 1 << 24)
    assert not within_limits(False, 100, 10_000, 99)


def _laughs(doublings: int) -> bytes:
    value: list[object] = [1]
    for _ in range(doublings):
        value = [value, value]
    return pickle.dumps(value, protocol=2)


def test_small_shared_pickle_is_still_measured() -> None:
    # a dozen doublings through memo GETs: small, but shared, so measured against the limits
    data = _laughs(12)
    limits = PickleLimits(max_expanded_nodes=100)  # more than the 66 opcodes: sharing decides
    codes = {f.code for f in scan_pickle_bytes(data, len(data), limits).findings}
    assert "PICKLE_EXPANSION_RESOURCE" in codes


def test_small_deep_pickle_over_a_small_depth_limit_is_still_measured() -> None:
    data = pickle.dumps([[[[[1]]]]], protocol=2)
    limits = PickleLimits(max_nesting_depth=3)
    codes = {f.code for f in scan_pickle_bytes(data, len(data), limits).findings}
    assert "PICKLE_NESTING_RESOURCE" in codes
