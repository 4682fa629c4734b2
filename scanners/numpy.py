"""NumPy `.npy` files: the header is a Python literal; an object dtype means a pickle payload.

`numpy.load(allow_pickle=True)` unpickles the data area of an object array, so that area is walked
like any pickle. Plain arrays are data. The header is parsed with `ast.literal_eval` (literals
only, never evaluated code) and bounded.
"""

from __future__ import annotations

import ast
import math
import struct

from scanners.limits import NumpyLimits
from scanners.report import Finding, Outcome, Severity

SCANNER = "numpy"
SCANNER_VERSION = "1.0"
NPY_MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 1024 * 1024


class NpyHeader:
    """What the header says: dtype descriptor, order, shape, and where the data starts."""

    __slots__ = ("data_offset", "descr", "shape")

    def __init__(self, descr: object, shape: tuple[int, ...], data_offset: int) -> None:
        self.descr = descr
        self.shape = shape
        self.data_offset = data_offset

    @property
    def has_object(self) -> bool:
        """True when any field of the dtype is an object: the data is then a pickle.

        Asked of numpy's own header reader (it only parses the descriptor), since it accepts
        spellings a character test misses (`'object'`, `[('a', 'object_')]`). A descriptor it
        refuses cannot be loaded; it still counts as an object array when it looks like one."""
        try:
            from numpy.lib.format import descr_to_dtype
        except ImportError:
            return _looks_like_object(self.descr)
        try:
            return bool(descr_to_dtype(self.descr).hasobject)  # type: ignore[arg-type]
        except (TypeError, ValueError, KeyError, IndexError, RecursionError, MemoryError):
            return _looks_like_object(self.descr)


def _looks_like_object(descr: object) -> bool:
    return "O" in _descr_kinds(descr) or "object" in repr(descr)[:100_000].lower()


def _descr_kinds(descr: object) -> str:
    if isinstance(descr, str):
        return descr.lstrip("<>|=")[:1]
    if isinstance(descr, list | tuple):
        return "".join(_descr_kinds(part) for part in descr[:4096])
    return "?"


def _problem(code: str, message: str, **details: str | int) -> Finding:
    return Finding(SCANNER, code, Severity.HIGH, Outcome.ERROR, message, dict(details))


def parse_npy_header(head: bytes) -> NpyHeader | Finding:
    """Parse the start of a `.npy` file; a finding when it is not a valid header."""
    if not head.startswith(NPY_MAGIC) or len(head) < 10:
        return _problem("NUMPY_MALFORMED", "the .npy magic or version is missing")
    major = head[6]
    if major == 1:
        (length,) = struct.unpack_from("<H", head, 8)
        start = 10
    elif major in (2, 3) and len(head) >= 12:
        (length,) = struct.unpack_from("<I", head, 8)
        start = 12
    else:
        return _problem("NUMPY_MALFORMED", f"unknown .npy version {major}")
    if length > MAX_HEADER_BYTES or start + length > len(head):
        return _problem("NUMPY_MALFORMED", f"the .npy header claims {length} bytes, past the file")
    try:
        text = head[start : start + length].decode("utf-8" if major == 3 else "latin-1")
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        return _problem("NUMPY_MALFORMED", "the .npy header is not a Python literal")
    if not isinstance(value, dict) or not {"descr", "shape"} <= value.keys():
        return _problem("NUMPY_MALFORMED", "the .npy header lacks descr or shape")
    shape = value["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return _problem("NUMPY_MALFORMED", "the .npy shape is not a tuple of sizes")
    return NpyHeader(value["descr"], shape, start + length)


def declared_size_finding(header: NpyHeader, size: int, limits: NumpyLimits) -> Finding | None:
    """A finding when the header declares more than the file holds or the limits allow.

    `numpy.load` sizes its array (or reads `count` items) from the header before reading the
    data, so a header claiming a trillion elements, or an element of gigabytes, makes the loader
    allocate what the file never held (issue 13). Object arrays hold a pickle, walked instead."""
    if len(header.shape) > limits.max_dimensions:
        return _problem("NUMPY_MALFORMED", f"the .npy shape has {len(header.shape)} dimensions")
    dtype = _dtype(header.descr)
    if dtype is None:
        return (
            None
            if header.has_object
            else _problem(
                "NUMPY_MALFORMED", "numpy does not understand the .npy dtype: it cannot be loaded"
            )
        )
    itemsize, has_object = dtype
    if itemsize > limits.max_itemsize_bytes:
        return _resource(
            "NUMPY_ITEMSIZE_RESOURCE",
            f"one element of the .npy dtype is {itemsize} bytes, over the limit of "
            f"{limits.max_itemsize_bytes}",
            itemsize=itemsize,
        )
    if has_object:
        return None
    count = math.prod(header.shape)
    present = max(size - header.data_offset, 0)
    if count > present or count * itemsize > present:
        return _resource(
            "NUMPY_SIZE_RESOURCE",
            f"the .npy header declares {count} elements of {itemsize} bytes but only {present} "
            "bytes of data follow: the loader would allocate what the file does not hold",
            elements=str(count) if count > 2**53 else count,
            itemsize=itemsize,
            present=present,
        )
    return None


def _dtype(descr: object) -> tuple[int, bool] | None:
    """(itemsize, has object fields) as numpy reads the descriptor; None when it refuses it."""
    try:
        from numpy.lib.format import descr_to_dtype
    except ImportError:
        return None
    try:
        dtype = descr_to_dtype(descr)  # type: ignore[arg-type]
    except (TypeError, ValueError, KeyError, IndexError, RecursionError, MemoryError):
        return None
    return int(dtype.itemsize), bool(dtype.hasobject)


def _resource(code: str, message: str, **details: str | int) -> Finding:
    return Finding(SCANNER, code, Severity.HIGH, Outcome.ERROR, message, dict(details))
