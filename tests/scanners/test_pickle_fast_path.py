"""The walker's fast path for torch's tensor records builds exactly what the opcode loop builds,
and gives way to the loop whenever a record is anything but the plain torch layout."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from scanners.limits import PickleLimits
from scanners.pickles import Global, LongText, Made, PickleWalker

LIMITS = PickleLimits()


def _data_pkl(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(buf) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        return archive.read(name)


def _plain(value: object, depth: int = 0) -> object:
    """A comparable rendering of the walker's symbolic values."""
    if depth > 20:
        return "..."
    if isinstance(value, Global):
        return ("global", value.module, value.name)
    if isinstance(value, Made):
        return ("made", _plain(value.origin, depth + 1), _plain(value.args, depth + 1))
    if isinstance(value, LongText):
        return ("long", value.length)
    if isinstance(value, tuple):
        return tuple(_plain(v, depth + 1) for v in value)
    if isinstance(value, str | bytes | int | float | bool) or value is None:
        return value
    return type(value).__name__


def _walk(data: bytes, fast: bool) -> PickleWalker:
    walker = PickleWalker(data, len(data), LIMITS, fast_paths=fast)
    walker.walk_all(0)
    return walker


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
def test_fast_path_torch_record_builds_what_the_loop_builds(case: str) -> None:
    data = _data_pkl(_state_dicts()[case])
    fast, slow = _walk(data, True), _walk(data, False)
    assert fast.result.complete and slow.result.complete
    assert fast.result.fast_records > 0 and slow.result.fast_records == 0
    assert _plain(fast.last_value) == _plain(slow.last_value)
    assert fast.result.end == slow.result.end
    assert fast.result.findings == slow.result.findings == []


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
