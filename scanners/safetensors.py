"""safetensors: check that the header tells the truth, reading nothing but the header.

The reference is the Rust crate (`safetensors/src/tensor.rs`): an 8-byte little-endian header
length, at most `MAX_HEADER_SIZE` (100 MB), then a JSON object mapping tensor names to
`{dtype, shape, data_offsets}` plus an optional `__metadata__` str→str map. `Metadata::validate`
demands that the offsets, sorted, are contiguous from 0 and cover the data area exactly, and that
each tensor's byte length is product(shape) * dtype size with checked arithmetic. We refuse what it
refuses, and more: duplicate JSON keys (a parser differential: Python keeps the last, other readers
the first or refuse), and overlapping tensors are reported as attacks (the "many tensors on one
region" denial of service of huggingface/safetensors `attacks/README.md`, proposal 4).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import BinaryIO

from scanners.limits import SafetensorsLimits
from scanners.report import Finding, JsonValue, Outcome, cut_text

SCANNER = "safetensors"

# Every dtype the safetensors 0.8 crate deserialises, with its size in bits (sub-byte float
# formats F4/F6 pack several elements per byte; the total bit count must be a whole byte count).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

_USIZE_MAX = 2**64 - 1
_LENGTH_PREFIX = 8
METADATA_KEY = "__metadata__"


DEFAULT_LIMITS = SafetensorsLimits()


class _HeaderRefused(Exception):
    """The header is refused as a whole; carries the finding that says why."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


def _finding(code: str, outcome: Outcome, message: str, **details: JsonValue) -> Finding:
    severity = outcome.default_severity
    return Finding(SCANNER, code, severity, outcome, message, dict(details))


def _cut(text: str, limit: int = 120) -> str:
    return cut_text(text, limit)


def header_size(prefix: bytes, size: int, limits: SafetensorsLimits = DEFAULT_LIMITS) -> int | None:
    """Bytes from the start of the file that the header occupies (length prefix included).

    None while `prefix` is shorter than the 8-byte length. A length the scan will refuse
    (beyond the cap or the file) gives 8: those bytes alone prove the header lies.
    """
    if size < _LENGTH_PREFIX:
        return size
    if len(prefix) < _LENGTH_PREFIX:
        return None
    (declared,) = struct.unpack_from("<Q", prefix, 0)
    if declared > limits.max_header_bytes or declared > size - _LENGTH_PREFIX:
        return _LENGTH_PREFIX
    return _LENGTH_PREFIX + int(declared)


def scan(
    fh: BinaryIO, size: int, name: str, limits: SafetensorsLimits = DEFAULT_LIMITS
) -> list[Finding]:
    """Check a safetensors header; `[]` when it is valid. Never raises on bad input."""
    try:
        text = _read_header_text(fh, size, limits)
        header, duplicates = _parse_json(text, limits)
    except _HeaderRefused as refused:
        return [refused.finding]
    findings = [
        _finding(
            "SAFETENSORS_DUPLICATE_KEY",
            Outcome.MALICIOUS,
            f"{name}: the header repeats the JSON key {_cut(key)!r}; readers disagree on which "
            "one counts, a known way to show a scanner one tensor and a loader another",
            key=_cut(key),
        )
        for key in duplicates[: limits.max_findings]
    ]
    findings.extend(_check_header(header, size - _LENGTH_PREFIX - len(text), name, limits))
    return findings[: limits.max_findings]


def _read_header_text(fh: BinaryIO, size: int, limits: SafetensorsLimits) -> bytes:
    if size < _LENGTH_PREFIX:
        raise _HeaderRefused(
            _finding(
                "SAFETENSORS_TRUNCATED",
                Outcome.ERROR,
                f"file is {size} bytes, shorter than the 8-byte header length",
                size=size,
            )
        )
    fh.seek(0)
    prefix = fh.read(_LENGTH_PREFIX)
    if len(prefix) < _LENGTH_PREFIX:
        raise _HeaderRefused(_unreadable(len(prefix), _LENGTH_PREFIX))
    (declared,) = struct.unpack("<Q", prefix)
    if declared > limits.max_header_bytes:
        raise _HeaderRefused(
            _finding(
                "SAFETENSORS_HEADER_TOO_LARGE",
                Outcome.ERROR,
                f"header length {declared} exceeds the {limits.max_header_bytes}-byte cap",
                declared=declared,
                cap=limits.max_header_bytes,
            )
        )
    if declared > size - _LENGTH_PREFIX:
        raise _HeaderRefused(
            _finding(
                "SAFETENSORS_HEADER_LENGTH_INVALID",
                Outcome.ERROR,
                f"header length {declared} runs past the end of the {size}-byte file",
                declared=declared,
                size=size,
            )
        )
    text = fh.read(declared)
    if len(text) < declared:
        raise _HeaderRefused(_unreadable(_LENGTH_PREFIX + len(text), _LENGTH_PREFIX + declared))
    return text


def _unreadable(got: int, wanted: int) -> Finding:
    return _finding(
        "SAFETENSORS_HEADER_UNREADABLE",
        Outcome.ERROR,
        f"could read only {got} of the {wanted} header bytes",
        got=got,
        wanted=wanted,
    )


def _parse_json(text: bytes, limits: SafetensorsLimits) -> tuple[object, list[str]]:
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _HeaderRefused(
            _finding(
                "SAFETENSORS_HEADER_NOT_UTF8",
                Outcome.ERROR,
                f"header is not UTF-8 (byte {exc.start})",
                offset=_LENGTH_PREFIX + exc.start,
            )
        ) from exc
    # Count objects before building any: a 100 MB header of tiny objects would otherwise
    # cost gigabytes (attacks/safetensors_abuse_attempt_2.py declares ten million tensors).
    objects = text.count(b"{")
    if objects > limits.max_entries:
        raise _HeaderRefused(
            _finding(
                "SAFETENSORS_TOO_MANY_ENTRIES",
                Outcome.ERROR,
                f"header holds up to {objects} JSON objects, more than the {limits.max_entries}"
                " allowed",
                objects=objects,
                cap=limits.max_entries,
            )
        )
    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
        result: dict[str, object] = {}
        for key, value in pairs:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    try:
        header = json.loads(decoded, object_pairs_hook=pairs_hook, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise _HeaderRefused(
            _finding(
                "SAFETENSORS_HEADER_INVALID_JSON",
                Outcome.ERROR,
                f"header is not strict JSON: {_cut(str(exc))}",
            )
        ) from exc
    return header, duplicates


def _refuse_constant(token: str) -> object:
    raise ValueError(f"{token} is not JSON")


@dataclass(frozen=True, slots=True)
class _TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _check_header(
    header: object, data_bytes: int, name: str, limits: SafetensorsLimits
) -> list[Finding]:
    if not isinstance(header, dict):
        return [
            _finding(
                "SAFETENSORS_HEADER_NOT_OBJECT",
                Outcome.ERROR,
                f"{name}: header is a JSON {type(header).__name__}, not an object",
            )
        ]
    findings: list[Finding] = []
    entries: list[_TensorEntry] = []
    for key, value in header.items():
        if len(findings) >= limits.max_findings:
            return findings
        if not _is_utf8(key):
            findings.append(_invalid_tensor(key, "its name is not valid UTF-8"))
        elif key == METADATA_KEY:
            findings.extend(_check_metadata(value))
        else:
            entry_or_problem = _tensor_entry(key, value, limits)
            if isinstance(entry_or_problem, Finding):
                findings.append(entry_or_problem)
            else:
                entries.append(entry_or_problem)
    if findings:
        return findings
    return _check_layout(entries, data_bytes)


def _is_utf8(text: str) -> bool:
    # Python's json accepts lone surrogates ("\ud800"); serde_json refuses them.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_metadata(value: object) -> list[Finding]:
    if value is None:
        return []
    if isinstance(value, dict) and all(
        isinstance(v, str) and _is_utf8(k) and _is_utf8(v) for k, v in value.items()
    ):
        return []
    return [
        _finding(
            "SAFETENSORS_METADATA_INVALID",
            Outcome.ERROR,
            "__metadata__ must map strings to strings",
        )
    ]


def _invalid_tensor(tensor: str, why: str) -> Finding:
    return _finding(
        "SAFETENSORS_TENSOR_INVALID",
        Outcome.ERROR,
        f"tensor {_cut(tensor)!r}: {why}",
        tensor=_cut(tensor),
    )


def _is_usize(value: object) -> bool:
    return type(value) is int and 0 <= value <= _USIZE_MAX


def _tensor_entry(tensor: str, value: object, limits: SafetensorsLimits) -> _TensorEntry | Finding:
    if not isinstance(value, dict):
        return _invalid_tensor(tensor, "its entry is not an object")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        return _finding(
            "SAFETENSORS_DTYPE_UNKNOWN",
            Outcome.ERROR,
            f"tensor {_cut(tensor)!r}: dtype {_cut(repr(dtype))} is not a safetensors dtype",
            tensor=_cut(tensor),
            dtype=_cut(repr(dtype)),
        )
    if not isinstance(shape, list) or not all(_is_usize(d) for d in shape):
        return _invalid_tensor(tensor, "shape must be a list of non-negative integers")
    if len(shape) > limits.max_dims:
        return _invalid_tensor(tensor, f"shape has {len(shape)} dimensions")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_usize, offsets)):
        return _invalid_tensor(tensor, "data_offsets must be two non-negative integers")
    return _TensorEntry(tensor, dtype, tuple(shape), offsets[0], offsets[1])


def _byte_length(entry: _TensorEntry) -> int | Finding:
    elements = 1
    for dim in entry.shape:
        elements *= dim
        if elements > _USIZE_MAX:
            return _overflow(entry)
    bits = elements * DTYPE_BITS[entry.dtype]
    if bits > _USIZE_MAX:
        return _overflow(entry)
    if bits % 8:
        return _invalid_tensor(
            entry.name, f"{elements} elements of {entry.dtype} do not fill whole bytes"
        )
    return bits // 8


def _overflow(entry: _TensorEntry) -> Finding:
    return _finding(
        "SAFETENSORS_SHAPE_OVERFLOW",
        Outcome.ERROR,
        f"tensor {_cut(entry.name)!r}: shape {list(entry.shape)[:8]} overflows 64 bits",
        tensor=_cut(entry.name),
    )


def _check_layout(entries: list[_TensorEntry], data_bytes: int) -> list[Finding]:
    """The crate's `validate`: sorted by offsets, contiguous from 0, sizes matching."""
    entries.sort(key=lambda e: (e.begin, e.end))
    position = 0
    for entry in entries:
        problem = _offset_problem(entry, position)
        if problem is not None:
            return [problem]
        length = _byte_length(entry)
        if isinstance(length, Finding):
            return [length]
        if entry.end - entry.begin != length:
            return [
                _finding(
                    "SAFETENSORS_TENSOR_SIZE_MISMATCH",
                    Outcome.ERROR,
                    f"tensor {_cut(entry.name)!r}: offsets span {entry.end - entry.begin} bytes"
                    f" but {entry.dtype}{list(entry.shape)[:8]} needs {length}",
                    tensor=_cut(entry.name),
                    span=entry.end - entry.begin,
                    expected=length,
                )
            ]
        position = entry.end
    if position != data_bytes:
        return [
            _finding(
                "SAFETENSORS_DATA_SIZE_MISMATCH",
                Outcome.ERROR,
                f"tensors cover {position} bytes but the data area is {data_bytes} bytes"
                + (" (bytes hidden after the last tensor)" if data_bytes > position else ""),
                covered=position,
                data_bytes=data_bytes,
            )
        ]
    return []


def _offset_problem(entry: _TensorEntry, position: int) -> Finding | None:
    if entry.end < entry.begin:
        return _finding(
            "SAFETENSORS_OFFSETS_INVALID",
            Outcome.ERROR,
            f"tensor {_cut(entry.name)!r}: data_offsets end {entry.end} before begin {entry.begin}",
            tensor=_cut(entry.name),
        )
    if entry.begin < position:
        return _finding(
            "SAFETENSORS_OFFSETS_OVERLAP",
            Outcome.MALICIOUS,
            f"tensor {_cut(entry.name)!r} starts at {entry.begin}, inside the previous tensor "
            f"(which ends at {position}): overlapping tensors are a denial-of-service trick",
            tensor=_cut(entry.name),
            begin=entry.begin,
            previous_end=position,
        )
    if entry.begin > position:
        return _finding(
            "SAFETENSORS_OFFSETS_GAP",
            Outcome.ERROR,
            f"tensor {_cut(entry.name)!r} starts at {entry.begin}, leaving bytes "
            f"{position}..{entry.begin} unaccounted for",
            tensor=_cut(entry.name),
            begin=entry.begin,
            expected=position,
        )
    return None
