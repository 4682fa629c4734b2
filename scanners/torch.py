"""PyTorch checkpoints: the legacy stream of pickles, the legacy tar, and zip archive rules.

Legacy `torch.save` (before 1.6, or `_use_new_zipfile_serialization=False`) writes five pickles
(magic number, protocol version, system info, the object, the storage keys) and then raw storage
bytes that `torch.load` never unpickles: exactly those five are walked. The legacy tar format
holds `sys_info`, `pickle`, `storages` and `tensors` members. In zip checkpoints every member that
is a pickle is walked whatever its name; `*/data/<n>` members are raw storages; a `code/` folder
means TorchScript (code runs on load).
"""

from __future__ import annotations

import re
import struct

from scanners.pickles import Global, PickleWalker
from scanners.report import Outcome, Severity

SCANNER = "torch"
SCANNER_VERSION = "1.0"
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PICKLES = 5
# `data/<n>`; TorchScript also keeps tensors in `constants/<n>` and a traced module's example
# inputs in `traced_inputs/<n>` (`.storage` in lite-interpreter archives): all raw bytes.
_STORAGE_MEMBER = re.compile(r"^(?:[^/]+/)?(?:data|constants|traced_inputs)/\d+(?:\.storage)?$")
_TORCHSCRIPT_MEMBER = re.compile(r"^(?:[^/]+/)?code/")
_ELEMENT_SIZE = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "LongStorage": 8, "IntStorage": 4,
    "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "BFloat16Storage": 2, "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8,
}  # fmt: skip


def is_storage_member(name: str) -> bool:
    """`archive/data/0` (or a TorchScript `constants/0`): raw tensor bytes torch never
    unpickles."""
    return bool(_STORAGE_MEMBER.match(name))


def storage_members(names: list[str]) -> list[int]:
    """The indices of `names` that are storage records (`is_storage_member`), matched once."""
    return [i for i, hit in enumerate(map(_STORAGE_MEMBER.match, names)) if hit is not None]


def is_torchscript_member(name: str) -> bool:
    return bool(_TORCHSCRIPT_MEMBER.match(name))


def has_torchscript_member(names: list[str]) -> bool:
    """Whether any name `is_torchscript_member` (only names holding "code/" are matched)."""
    return any(is_torchscript_member(n) for n in names if "code/" in n)


def is_torch_zip(names: list[str]) -> bool:
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


def walk_legacy_rest(walker: PickleWalker, pos: int) -> None:
    """After the magic-number pickle: the four other pickles, then raw storages (not walked)."""
    for _ in range(LEGACY_PICKLES - 1):
        next_pos = walker.walk_one(pos)
        if next_pos is None:
            return
        pos = next_pos
    walker.result.complete = True


def walk_tar_storages(walker: PickleWalker) -> None:
    """The legacy tar's `storages` member: a count, then (pickle, int64 count, raw bytes) each."""
    data = walker.data
    pos = walker.walk_one(0)
    count = walker.last_value
    if pos is None or not isinstance(count, int) or count < 0:
        return
    for _ in range(min(count, 1_000_000)):
        pos = walker.walk_one(pos)
        if pos is None:
            return
        size = _element_size(walker.last_value)
        if size is None or pos + 8 > walker.end:
            walker.flag(
                "TORCH_TAR_MALFORMED",
                Severity.HIGH,
                Outcome.ERROR,
                "a legacy tar storage record cannot be read",
            )
            return
        (numel,) = struct.unpack_from("<q", data, pos)
        pos += 8 + max(numel, 0) * size
        if numel < 0 or pos > walker.end:
            walker.flag(
                "TORCH_TAR_MALFORMED",
                Severity.HIGH,
                Outcome.ERROR,
                "a legacy tar storage runs past its member",
            )
            return
    walker.result.complete = True


def walk_tar_tensors(walker: PickleWalker) -> None:
    """The legacy tar's `tensors` member: a count, then (pickle, ndim, sizes, strides, offset)."""
    data = walker.data
    pos = walker.walk_one(0)
    count = walker.last_value
    if pos is None or not isinstance(count, int) or count < 0:
        return
    for _ in range(min(count, 1_000_000)):
        pos = walker.walk_one(pos)
        if pos is None or pos + 8 > walker.end:
            return
        (ndim,) = struct.unpack_from("<i", data, pos)
        pos += 8 + 16 * max(ndim, 0) + 8
        if ndim < 0 or pos > walker.end:
            walker.flag(
                "TORCH_TAR_MALFORMED",
                Severity.HIGH,
                Outcome.ERROR,
                "a legacy tar tensor record cannot be read",
            )
            return
    walker.result.complete = True


def _element_size(record: object) -> int | None:
    if isinstance(record, tuple) and len(record) == 3 and isinstance(record[2], Global):
        return _ELEMENT_SIZE.get(record[2].name)
    return None
