"""The walker's fast path for torch's tensor records builds exactly what the opcode loop builds,
and gives way to the loop whenever a record is anything but the plain torch layout: on the
whole generated corpus, on seeded mutations of state dicts, and on the memo tricks each of its
checks is there for."""

from __future__ import annotations

import io
import pickletools
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from scanners.allowlist import GlobalVerdict
from scanners.limits import PickleLimits
from scanners.pickle_records import TensorRecords
from scanners.pickle_values import DictV, ListV, SetV
from scanners.pickles import Global, LongText, Made, PickleWalker
from tests.scanners.corpus import BENIGN_NAMES, Sample, malicious_names
from tests.scanners.corpus_resource import RESOURCE_SAMPLES, resource_samples

LIMITS = PickleLimits()
MUTATIONS = 400
SEED = 13
_MAX_MEMBER_BYTES = 4 << 20
_MAX_MEMBERS = 200


def _data_pkl(obj: object, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)  # type: ignore[arg-type]
    with zipfile.ZipFile(buf) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        return archive.read(name)


def _ops(data: bytes) -> list[tuple[str, Any, int]]:
    """(opcode name, argument, offset) of each opcode of the pickle `data` starts with."""
    return [(op.name, arg, pos or 0) for op, arg, pos in pickletools.genops(data)]


def _legacy_object_pickle(obj: object) -> bytes:
    """The pickle a legacy `torch.save` writes the object with (its fourth)."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    data, pos = buf.getvalue(), 0
    for index in range(4):
        stop = pos + _ops(data[pos:])[-1][2] + 1
        if index == 3:
            return data[pos:stop]
        pos = stop
    raise AssertionError("unreachable")


class _Plain:
    """A comparable rendering of the walker's symbolic values: every container with what it
    keeps, a value met again rendered as a reference to its first rendering (shared parts and
    cycles show, a billion laughs stays linear)."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}

    def render(self, value: object, depth: int = 0) -> object:
        if isinstance(value, str | bytes | int | float | bool) or value is None:
            return value
        if isinstance(value, Global):
            return ("global", value.module, value.name, value.offset)
        if isinstance(value, LongText):
            return ("long", value.length, value.offset, value.text)
        if id(value) in self.seen:
            return ("ref", self.seen[id(value)])
        self.seen[id(value)] = len(self.seen)
        if depth > 50:
            return "..."
        inner = depth + 1
        if isinstance(value, tuple):
            return tuple(self.render(v, inner) for v in value)
        if isinstance(value, Made):  # a fast-path `Record` is the `Made` the loop builds
            return ("made", self.render(value.origin, inner),
                    self.render(value.args, inner), self._kids(value.kids, inner))  # fmt: skip
        if isinstance(value, DictV):
            items = [(self.render(k, inner), self.render(v, inner)) for k, v in value.items.items()]
            return ("dict", items, self._kids(value.kids, inner))
        if isinstance(value, ListV | SetV):
            return (type(value).__name__, self._kids(value.kids, inner))
        return type(value).__name__

    def _kids(self, kids: list[object] | None, depth: int) -> object:
        return None if kids is None else [self.render(k, depth) for k in kids]


def _plain(value: object) -> object:
    return _Plain().render(value)


def _summary(walker: PickleWalker) -> tuple[object, ...]:
    """Everything a walk reports, and what it loads to; not its opcode count, which counts a
    record as 30 opcodes whatever the loop would have counted."""
    result = walker.result
    return (
        result.findings,
        [(g.module, g.name, g.offset, g.verdict) for g in result.globals],
        result.calls,
        result.nested,
        result.starts,
        result.end,
        result.pickles,
        result.complete,
        walker.first_payload,
        _plain(walker.last_value),
    )


def _walk(data: bytes, fast: bool, limits: PickleLimits = LIMITS) -> PickleWalker:
    walker = PickleWalker(data, len(data), limits, fast_paths=fast)
    walker.walk_all(0)
    return walker


def _assert_walks_alike(data: bytes, limits: PickleLimits = LIMITS) -> PickleWalker:
    fast, slow = _walk(data, True, limits), _walk(data, False, limits)
    assert slow.result.fast_records == 0
    assert _summary(fast) == _summary(slow)
    return fast


def _state_dicts() -> dict[str, object]:
    torch.manual_seed(0)
    big = torch.zeros(70_000)  # numel and offsets past BININT2
    return {
        "small": {f"w{i}": torch.zeros(2, 2) for i in range(300)},
        "dtypes_and_ranks": {
            "scalar": torch.tensor(1.5),
            "vec": torch.ones(3, dtype=torch.int64),
            "r3": torch.zeros(2, 3, 4, dtype=torch.float16),
            "r5": torch.zeros(1, 2, 1, 2, 1, dtype=torch.bfloat16),
            "grad": torch.nn.Parameter(torch.ones(2)),
            "big": big,
            "view": big[10:20],
            "again": torch.zeros(2, 2),
        },
        "module": torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)).state_dict(),
    }


@pytest.mark.parametrize("case", sorted(_state_dicts()))
def test_fast_path_protocol_4_record_builds_what_the_loop_builds(case: str) -> None:
    # MEMOIZE instead of BINPUT (issue 13: these files took the loop's slow path)
    fast = _assert_walks_alike(_data_pkl(_state_dicts()[case], pickle_protocol=4))
    assert fast.result.complete
    assert fast.result.fast_records > 0
    assert fast.result.findings == []


def test_fast_path_runs_through_a_protocol_4_state_dict() -> None:
    # every record but the first and those a FRAME boundary cuts is built by the fast path
    data = _data_pkl({f"model.layers.{i}.weight": torch.zeros(2, 2) for i in range(300)},
                     pickle_protocol=4)  # fmt: skip
    assert _assert_walks_alike(data).result.fast_records >= 290


def test_fast_path_protocol_4_record_storing_into_a_filled_slot_is_left_to_the_loop() -> None:
    # a BINPUT into the slot the next MEMOIZE would fill: the memo's size stops growing there
    data = _data_pkl({f"w{i}": torch.zeros(2) for i in range(20)}, pickle_protocol=4)
    ops = _ops(data)
    memoize_at = [pos for name, _, pos in ops if name == "MEMOIZE"]
    filled = len([pos for pos in memoize_at if pos < memoize_at[100]])
    at = memoize_at[100]
    doctored = data[:at] + b"q" + bytes([filled + 1]) + data[at + 1 :]
    _assert_walks_alike(doctored)


@pytest.mark.parametrize("case", sorted(_state_dicts()))
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_fast_path_torch_record_builds_what_the_loop_builds(case: str, legacy: bool) -> None:
    obj = _state_dicts()[case]
    data = _legacy_object_pickle(obj) if legacy else _data_pkl(obj)
    fast = _assert_walks_alike(data)
    assert fast.result.complete
    assert fast.result.fast_records > 0
    assert fast.result.findings == []


def test_fast_path_runs_through_a_whole_state_dict() -> None:
    # after the first record (its globals are new), every record is built by the fast path
    data = _data_pkl({f"model.layers.{i}.weight": torch.zeros(2, 2) for i in range(300)})
    assert _assert_walks_alike(data).result.fast_records == 299


def test_fast_path_record_calling_a_checked_global_is_left_to_the_loop() -> None:
    # every record's OrderedDict() becomes _codecs.encode(): a call the loop must check
    data = _data_pkl({f"w{i}": torch.zeros(2) for i in range(50)})
    data = data.replace(b"ccollections\nOrderedDict\n", b"c_codecs\nencode\n")
    codes = {f.code for f in _walk(data, True).result.findings}
    assert codes == {f.code for f in _walk(data, False).result.findings}
    assert "PICKLE_CODECS_MISUSE" in codes


def test_fast_path_record_rebuilding_with_unknown_global_is_reported() -> None:
    data = _data_pkl({f"w{i}": torch.zeros(2) for i in range(50)})
    data = data.replace(b"ccollections\nOrderedDict\n", b"cmylib\nHook\n")
    findings = _walk(data, True).result.findings
    assert [f.code for f in findings] == ["PICKLE_GLOBAL_UNKNOWN"]
    assert _walk(data, True).result.calls == _walk(data, False).result.calls


# ---- the whole generated corpus -----------------------------------------------------------------
def _streams(path: Path) -> list[bytes]:
    """The file's bytes and, for a zip, its members (what the dispatcher walks as pickles)."""
    data = path.read_bytes()
    out = [data]
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()[:_MAX_MEMBERS]
            out += [archive.read(i) for i in infos if i.file_size <= _MAX_MEMBER_BYTES]
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError, OSError):
        pass  # not a zip, or one zipfile cannot read (encrypted...): the file is still walked
    return out


@pytest.fixture(scope="module")
def resource_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return resource_samples(tmp_path_factory.mktemp("resource_corpus"))


@pytest.mark.parametrize("name", BENIGN_NAMES)
def test_fast_path_benign_sample_walks_as_the_loop_walks(
    name: str, benign_corpus: dict[str, Sample]
) -> None:
    for data in _streams(benign_corpus[name].path):
        _assert_walks_alike(data)


@pytest.mark.parametrize("name", malicious_names())
def test_fast_path_malicious_sample_walks_as_the_loop_walks(
    name: str, malicious_corpus: dict[str, Sample]
) -> None:
    for data in _streams(malicious_corpus[name].path):
        _assert_walks_alike(data)


@pytest.mark.parametrize("name", sorted(RESOURCE_SAMPLES))
def test_fast_path_resource_sample_walks_as_the_loop_walks(
    name: str, resource_corpus: dict[str, Path]
) -> None:
    for data in _streams(resource_corpus[name]):
        _assert_walks_alike(data)


def test_fast_path_is_taken_on_the_corpus_state_dicts(benign_corpus: dict[str, Sample]) -> None:
    records = {
        name: sum(_walk(d, True).result.fast_records for d in _streams(benign_corpus[name].path))
        for name in ("dense_state_dict.pt", "legacy_state_dict.bin", "lightning.ckpt")
    }
    assert all(count > 0 for count in records.values()), records


# ---- mutations ----------------------------------------------------------------------------------
_INTERESTING = b"\x00\x01\x02\x03\x04\x06\x0a\xff()tqrhjKMJXQRN\x85\x86\x87\x88\x89\x8c\x94"


def _mutated(data: bytes, rng: random.Random) -> bytes:
    """One byte replaced, dropped or added, mostly inside the tensor records."""
    out = bytearray(data)
    at = rng.randrange(len(data) // 4, len(data))
    kind = rng.randrange(4)
    if kind == 0:
        out[at] = rng.choice(_INTERESTING)
    elif kind == 1:
        out[at] = rng.randrange(256)
    elif kind == 2:
        del out[at : at + rng.randrange(1, 5)]
    else:
        out.insert(at, rng.choice(_INTERESTING))
    return bytes(out)


def _mutation_bases() -> list[bytes]:
    small = {f"layers.{i}.weight": torch.zeros(2, 2) for i in range(40)}
    mixed = _state_dicts()["dtypes_and_ranks"]
    return [
        _data_pkl(small),
        _legacy_object_pickle(small),
        _data_pkl(mixed),
        _data_pkl(small, pickle_protocol=4),
    ]


def test_fast_path_mutated_state_dicts_walk_as_the_loop_walks() -> None:
    rng = random.Random(SEED)  # noqa: S311 - a seeded run, no secret
    bases = _mutation_bases()
    for index in range(MUTATIONS):
        data = _mutated(rng.choice(bases), rng)
        fast, slow = _walk(data, True), _walk(data, False)
        assert _summary(fast) == _summary(slow), f"mutation {index}: {data.hex()}"


def test_fast_path_state_dicts_with_memo_indices_rewritten_walk_as_the_loop_walks() -> None:
    # memo GETs and PUTs pointed at each other's slots: what the fast path's checks are for
    rng = random.Random(SEED)  # noqa: S311 - a seeded run, no secret
    bases = _mutation_bases()
    sites = [
        [at + 1 for name, _, at in _ops(base) if name in ("BINPUT", "BINGET")] for base in bases
    ]
    for index in range(MUTATIONS // 2):
        which = rng.randrange(len(bases))
        data = bytearray(bases[which])
        for _ in range(rng.randrange(1, 4)):
            data[rng.choice(sites[which])] = rng.choice([*range(12), rng.randrange(256)])
        fast, slow = _walk(bytes(data), True), _walk(bytes(data), False)
        assert _summary(fast) == _summary(slow), f"mutation {index}: {data.hex()}"


# ---- the memo tricks each check is for ----------------------------------------------------------
def _entry_ops(data: bytes, entry: int) -> dict[str, tuple[int, int]]:
    """Where the memo opcodes of state-dict entry `entry` (from 0) are: name -> (offset of the
    index byte, index). Names: key_put, rebuild_get, word_get, class_get, storage_key_put,
    location_get, storage_put, od_get."""
    ops = _ops(data)
    keys = [i for i, (name, arg, _) in enumerate(ops) if name == "BINUNICODE" and
            isinstance(arg, str) and arg.startswith("layers.")]  # fmt: skip
    start = keys[entry]
    memo = [(pos + 1, int(arg)) for name, arg, pos in ops[start:] if name in ("BINPUT", "BINGET")]
    names = ("key_put", "rebuild_get", "word_get", "class_get", "storage_key_put",
             "location_get", "storage_put")  # fmt: skip
    out = dict(zip(names, memo, strict=False))
    od = next(i for i, (name, _, _) in enumerate(ops[start:]) if name == "NEWFALSE")
    _, arg, pos = ops[start + od + 1]
    out["od_get"] = (pos + 1, int(arg))
    return out


def _with_index(data: bytes, at: int, index: int) -> bytes:
    return data[:at] + bytes([index]) + data[at + 1 :]


_SMALL = {f"layers.{i}.weight": torch.zeros(2, 2) for i in range(20)}


@pytest.mark.parametrize(
    ("put", "get"),
    [
        ("key_put", "rebuild_get"),
        ("key_put", "word_get"),
        ("key_put", "class_get"),
        ("key_put", "location_get"),
        ("key_put", "od_get"),
        ("storage_key_put", "location_get"),
        ("storage_key_put", "od_get"),
        ("storage_put", "od_get"),
    ],
)
def test_fast_path_store_read_back_by_the_same_entry_is_left_to_the_loop(
    put: str, get: str
) -> None:
    data = _data_pkl(_SMALL)
    ops = _entry_ops(data, 5)
    tricked = _with_index(data, ops[put][0], ops[get][1])
    assert tricked != data
    _assert_walks_alike(tricked)


def test_fast_path_store_over_the_rebuild_function_ends_the_run() -> None:
    # an earlier entry's key overwrites the memo slot later entries fetch the rebuild from
    data = _data_pkl(_SMALL)
    tricked = _with_index(
        data, _entry_ops(data, 3)["key_put"][0], _entry_ops(data, 5)["rebuild_get"][1]
    )
    codes = {f.code for f in _assert_walks_alike(tricked).result.findings}
    assert "PICKLE_INDIRECT_CALL" in codes


def test_fast_path_key_that_is_not_utf8_is_the_loop_finding() -> None:
    data = _data_pkl(_SMALL)
    at = data.index(b"layers.7.weight")
    tricked = data[:at] + b"\xff" + data[at + 1 :]
    codes = {f.code for f in _assert_walks_alike(tricked).result.findings}
    assert codes == {"PICKLE_MALFORMED"}


@pytest.mark.parametrize("key_chars", [5, 600])
def test_fast_path_long_keys_are_left_to_the_loop(key_chars: int) -> None:
    data = _data_pkl({"k" * key_chars + str(i): torch.zeros(2) for i in range(20)})
    _assert_walks_alike(data, PickleLimits(max_kept_string_chars=64))


def test_fast_path_memo_index_over_the_limit_is_the_loop_finding() -> None:
    data = _data_pkl({f"layers.{i}.weight": torch.zeros(2) for i in range(60)})
    assert re.search(rb"r....h", data, re.DOTALL)  # LONG_BINPUT indices past 255
    walker = _assert_walks_alike(data, PickleLimits(max_memo_index=300))
    assert {f.code for f in walker.result.findings} == {"PICKLE_MEMO_RESOURCE"}


def _steady_memo(data: bytes) -> dict[int, object]:
    """The memo entries the steady-state records of `data` fetch (as the loop stores them)."""
    ops = _entry_ops(data, 1)
    allowed = GlobalVerdict.ALLOWED
    return {
        ops["rebuild_get"][1]: Global("torch._utils", "_rebuild_tensor_v2", 0, allowed),
        ops["word_get"][1]: "storage",
        ops["class_get"][1]: Global("torch", "FloatStorage", 0, allowed),
        ops["location_get"][1]: "cpu",
        ops["od_get"][1]: Global("collections", "OrderedDict", 0, allowed),
    }


@pytest.mark.parametrize(("room", "built"), [(-3, 1), (0, 1), (2, 3), (100, 19)])
def test_fast_path_run_builds_no_more_entries_than_it_has_room_for(room: int, built: int) -> None:
    # the loop gives a run room for what the stack, memo and opcode limits can still take
    data = _data_pkl(_SMALL)
    memo = _steady_memo(data)
    rebuild = memo[_entry_ops(data, 1)["rebuild_get"][1]]
    assert isinstance(rebuild, Global)
    records = TensorRecords(data, memo, LIMITS)
    stack: list[object] = []
    end = records.run(_entry_ops(data, 1)["rebuild_get"][0] + 1, len(data), rebuild, stack, room)
    assert records.built == built
    assert len(stack) == 2 * built - 1  # the first record, then (key, record) per entry
    assert data[end : end + 1] == (b"u" if built == 19 else b"X")
