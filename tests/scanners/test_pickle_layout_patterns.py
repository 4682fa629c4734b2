"""The fast path's per-layout patterns (`pickle_records._special_pattern`): once a record with
eight LONG_BINPUT stores has been matched, the next records of the same layout are matched by a
pattern of their own. Those walks must stay exactly the loop's walks: the same state dicts,
mutated, re-indexed, with layouts that change from record to record, and a pickle that tries to
make the walker compile a pattern per record."""

from __future__ import annotations

import random

import torch

from scanners import pickle_records
from scanners.limits import PickleLimits
from scanners.pickles import PickleWalker
from tests.scanners.test_pickle_fast_path import (
    SEED,
    _assert_walks_alike,
    _data_pkl,
    _mutated,
    _ops,
    _summary,
    _walk,
)

MUTATIONS = 300
# past ~32 entries a state dict's memo indices pass 255: its stores are LONG_BINPUTs
_LONG = {f"model.layers.{i}.weight": torch.zeros(2, 2) for i in range(120)}


def _reading_the_memo(data: bytes) -> bytes:
    """`data` whose last value is a tuple of every slot its LONG_BINPUTs (or MEMOIZEs) filled,
    fetched back (the dict dropped): what the walks stored there becomes part of what they
    report."""
    ops = _ops(data)
    indices = [int(arg) for name, arg, _ in ops if name == "LONG_BINPUT"]
    if not indices:  # protocol 4: MEMOIZE fills slot 0, 1, 2...
        indices = list(range(sum(1 for name, _, _ in ops if name == "MEMOIZE")))
    assert data.endswith(b".") and indices
    gets = b"".join(b"j" + index.to_bytes(4, "little") for index in indices)
    return data[:-1] + b"0(" + gets + b"t."


def _long_records_start(data: bytes) -> int:
    """The offset of the first LONG_BINPUT: the layout patterns apply after it."""
    return next(pos for name, _, pos in _ops(data) if name == "LONG_BINPUT")


def test_layout_pattern_builds_the_records_the_loop_builds() -> None:
    data = _reading_the_memo(_data_pkl(_LONG))
    pickle_records._specials.clear()
    fast = _assert_walks_alike(data)
    assert fast.result.findings == []
    assert isinstance(fast.last_value, tuple) and len(fast.last_value) > 700
    assert fast.result.fast_records == len(_LONG) - 1
    assert len(pickle_records._specials) == 1  # one layout: one pattern


def test_layout_pattern_legacy_and_parameters_build_what_the_loop_builds() -> None:
    params = {f"p{i}": torch.nn.Parameter(torch.ones(3)) for i in range(100)}
    _assert_walks_alike(_reading_the_memo(_data_pkl(params)))
    _assert_walks_alike(_reading_the_memo(_data_pkl({**_LONG, **params})))


def test_layout_changing_every_record_walks_as_the_loop_and_compiles_a_bounded_number() -> None:
    # 40 shapes in turn: a layout per record, each tried once by its own pattern
    shapes = [(n,) for n in range(1, 21)] + [(n, 2) for n in range(1, 21)]
    state = {f"w{i}": torch.zeros(shapes[i % len(shapes)]) for i in range(400)}
    data = _reading_the_memo(_data_pkl(state))
    pickle_records._specials.clear()
    walker = PickleWalker(data, len(data), PickleLimits(), fast_paths=True)
    walker.walk_all(0)
    assert _summary(walker) == _summary(_walk(data, False))
    assert walker.result.fast_records == len(state) - 1
    assert len(pickle_records._specials) <= pickle_records.SPECIALS_PER_WALK


def test_layout_patterns_kept_across_walks_are_bounded() -> None:
    pickle_records._specials.clear()
    for width in range(1, 100):
        _walk(_data_pkl({f"w{i}": torch.zeros(width) for i in range(40)}), True)
    assert 0 < len(pickle_records._specials) <= pickle_records._SPECIALS_KEPT


def test_layout_pattern_mutated_state_dicts_walk_as_the_loop_walks() -> None:
    rng = random.Random(SEED)  # noqa: S311 - a seeded run, no secret
    base = _reading_the_memo(_data_pkl(_LONG))
    start = _long_records_start(base)
    for index in range(MUTATIONS):
        data = bytearray(_mutated(base, rng))
        if rng.random() < 0.5:  # a second change past the first long store
            data[rng.randrange(start, len(data))] = rng.randrange(256)
        fast, slow = _walk(bytes(data), True), _walk(bytes(data), False)
        assert _summary(fast) == _summary(slow), f"mutation {index}: {bytes(data).hex()}"


def test_layout_pattern_stores_pointed_at_fetched_slots_walk_as_the_loop_walks() -> None:
    # a LONG_BINPUT of a record in mid-run rewritten to a slot later records fetch from
    base = _reading_the_memo(_data_pkl(_LONG))
    ops = _ops(base)
    gets = sorted({int(arg) for name, arg, _ in ops if name == "BINGET"})
    puts = [pos for name, _, pos in ops if name == "LONG_BINPUT"]
    assert gets
    rng = random.Random(SEED)  # noqa: S311 - a seeded run, no secret
    for index in range(60):
        at = rng.choice(puts[len(puts) // 3 :])
        target = rng.choice([*gets, rng.randrange(300, 1000)])
        data = base[: at + 1] + target.to_bytes(4, "little") + base[at + 5 :]
        fast, slow = _walk(data, True), _walk(data, False)
        assert _summary(fast) == _summary(slow), f"rewrite {index}: store at {at} -> {target}"


def test_layout_pattern_respects_the_memo_index_limit() -> None:
    walker = _assert_walks_alike(_data_pkl(_LONG), PickleLimits(max_memo_index=600))
    assert {f.code for f in walker.result.findings} == {"PICKLE_MEMO_RESOURCE"}


# ---- protocol 4: the stores are MEMOIZEs ------------------------------------------------------
_LONG_4 = _data_pkl(_LONG, pickle_protocol=4)


def test_layout_pattern_memoize_records_build_what_the_loop_builds() -> None:
    pickle_records._specials.clear()
    fast = _assert_walks_alike(_reading_the_memo(_LONG_4))
    assert fast.result.findings == []
    assert fast.result.fast_records >= len(_LONG) - 5  # all but those a FRAME boundary cuts
    assert any(layout[-1] == b"\x94" for layout in pickle_records._specials)


def test_layout_pattern_memoize_mutations_walk_as_the_loop_walks() -> None:
    rng = random.Random(SEED + 1)  # noqa: S311 - a seeded run, no secret
    base = _reading_the_memo(_LONG_4)
    for index in range(MUTATIONS):
        data = _mutated(base, rng)
        fast, slow = _walk(data, True), _walk(data, False)
        assert _summary(fast) == _summary(slow), f"mutation {index}: {data.hex()}"


def test_layout_pattern_memoize_slot_filled_ahead_is_left_to_the_loop() -> None:
    # a BINPUT (as LONG_BINPUT) into a slot a later record's MEMOIZE would fill: the memo's size
    # stops telling the next index, so those records are the loop's
    ops = _ops(_LONG_4)
    memoize_at = [pos for name, _, pos in ops if name == "MEMOIZE"]
    at = memoize_at[400]  # mid-run
    ahead = 400 + 100  # a slot a dozen records further on: mid-run for the layout pattern
    doctored = _LONG_4[:at] + b"r" + ahead.to_bytes(4, "little") + _LONG_4[at + 1 :]
    _assert_walks_alike(_reading_the_memo(doctored))
