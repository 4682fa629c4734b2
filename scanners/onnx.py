"""ONNX: a bounded protobuf wire-format walk for external-data paths and custom-op domains.

An ONNX tensor may keep its bytes in another file (`external_data` entries, key `location`),
which the runtime opens relative to the model's folder. A location that is absolute, climbs with
`..`, or uses a drive letter or backslash reads (or, when saving, writes) files outside it: the
path traversal of CVE-2022-25882 / CVE-2024-27318 in onnx's external-data loader. Nodes in an
operator domain that is neither ONNX's nor ONNX Runtime's own, nor a function defined in the model,
need a custom-op library (native code) to run: REVIEW.

We read only the message structure: ModelProto → graph (7), opset_import (8), training_info
(20), functions (25); GraphProto → node (1), initializer (5), sparse_initializer (15); NodeProto →
op_type (4), domain (7), attribute (5); AttributeProto → t (5), g (6), tensors (10), graphs (11),
sparse_tensor (22), sparse_tensors (23); TensorProto → name (8), external_data (13). Tensor bytes
are skipped by seeking, so a 2 GB model costs its structure, not its size.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from scanners.report import Finding, JsonValue, Outcome, Severity, cut_text

SCANNER = "onnx"

STANDARD_DOMAINS = frozenset(
    {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "ai.onnx.training",
        "ai.onnx.preview.training",
        "com.microsoft",
        "com.microsoft.nchwc",
        "com.microsoft.experimental",
        "com.ms.internal.nhwc",
    }
)
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True, slots=True)
class OnnxLimits:
    """Bounds on walking one ONNX file."""

    max_fields: int = 5_000_000
    max_depth: int = 64  # nested subgraphs (If/Loop/Scan bodies)
    max_string_bytes: int = 4_096
    block_bytes: int = 1024 * 1024
    max_findings: int = 40

    def __post_init__(self) -> None:
        if self.max_fields <= 0 or self.max_depth <= 0 or self.block_bytes < 16:
            raise ValueError("ONNX limits are too small")


DEFAULT_LIMITS = OnnxLimits()


class _Malformed(Exception):
    """The bytes are not the protobuf structure an ONNX model has."""


def _finding(
    code: str, outcome: Outcome, severity: Severity, message: str, **details: JsonValue
) -> Finding:
    return Finding(SCANNER, code, severity, outcome, message, dict(details))


def _cut(text: str, limit: int = 160) -> str:
    return cut_text(text, limit)


class _Reader:
    """Random access to the file through one cached block; counts the fields it decodes."""

    def __init__(self, fh: BinaryIO, size: int, limits: OnnxLimits) -> None:
        self.fh = fh
        self.size = size
        self.limits = limits
        self.block_start = 0
        self.block = b""
        self.fields_left = limits.max_fields

    def _window(self, pos: int, n: int) -> tuple[bytes, int]:
        end = self.block_start + len(self.block)
        if not (self.block_start <= pos and pos + n <= end):
            self.fh.seek(pos)
            self.block = self.fh.read(max(self.limits.block_bytes, n))
            self.block_start = pos
        return self.block, pos - self.block_start

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        block, i = self._window(pos, min(10, end - pos))
        value = shift = 0
        for step in range(10):
            if pos + step >= end or i + step >= len(block):
                raise _Malformed(f"varint at {pos} runs past its message")
            byte = block[i + step]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos + step + 1
            shift += 7
        raise _Malformed(f"varint at {pos} is longer than 10 bytes")

    def read(self, start: int, end: int) -> bytes:
        n = min(end - start, self.limits.max_string_bytes + 1)
        block, i = self._window(start, n)
        return block[i : i + n]

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(field number, wire type, value or span start, span end) for each field of a message."""
        pos = start
        while pos < end:
            self.fields_left -= 1
            if self.fields_left < 0:
                raise _Malformed("too many protobuf fields to walk")
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise _Malformed(f"field number 0 at {pos}")
            if wire == _VARINT:
                value, pos = self.varint(pos, end)
                yield number, wire, value, pos
            elif wire == _LEN:
                length, pos = self.varint(pos, end)
                if length > end - pos:
                    raise _Malformed(f"field {number} declares {length} bytes past its message")
                yield number, wire, pos, pos + length
                pos += length
            elif wire in (_FIXED64, _FIXED32):
                pos += 8 if wire == _FIXED64 else 4
                if pos > end:
                    raise _Malformed(f"field {number} runs past its message")
            else:
                raise _Malformed(f"wire type {wire} (groups) in field {number}")


@dataclass
class _Walk:
    reader: _Reader
    name: str
    findings: list[Finding] = field(default_factory=list)
    node_domains: dict[str, str] = field(default_factory=dict)  # domain -> an op_type
    function_domains: set[str] = field(default_factory=set)
    has_graph: bool = False

    def _spans(
        self, start: int, end: int, wanted: dict[int, str]
    ) -> Iterator[tuple[str, int, int]]:
        for number, wire, a, b in self.reader.fields(start, end):
            kind = wanted.get(number)
            if kind is None:
                continue
            if wire != _LEN:
                raise _Malformed(f"field {number} ({kind}) is not length-delimited")
            yield kind, a, b

    def _text(self, start: int, end: int) -> str:
        return self.reader.read(start, end).decode("utf-8", "replace")

    def model(self, start: int, end: int) -> None:
        wanted = {7: "graph", 20: "training", 25: "function"}
        for kind, a, b in self._spans(start, end, wanted):
            if kind == "graph":
                self.has_graph = True
                self.graph(a, b, 1)
            elif kind == "training":
                for _, ga, gb in self._spans(a, b, {1: "graph", 2: "graph"}):
                    self.graph(ga, gb, 1)
            else:
                self.function(a, b)

    def function(self, start: int, end: int) -> None:
        for kind, a, b in self._spans(start, end, {10: "domain", 7: "node"}):
            if kind == "domain":
                self.function_domains.add(self._text(a, b))
            else:
                self.node(a, b, 1)

    def graph(self, start: int, end: int, depth: int) -> None:
        if depth > self.reader.limits.max_depth:
            raise _Malformed(f"subgraphs nest deeper than {self.reader.limits.max_depth}")
        wanted = {1: "node", 5: "tensor", 15: "sparse"}
        for kind, a, b in self._spans(start, end, wanted):
            if kind == "node":
                self.node(a, b, depth)
            elif kind == "tensor":
                self.tensor(a, b)
            else:
                self.sparse(a, b)

    def node(self, start: int, end: int, depth: int) -> None:
        op_type, domain = "", ""
        for kind, a, b in self._spans(start, end, {4: "op", 7: "domain", 5: "attr"}):
            if kind == "op":
                op_type = self._text(a, b)
            elif kind == "domain":
                domain = self._text(a, b)
            else:
                self.attribute(a, b, depth)
        self.node_domains.setdefault(domain, op_type)

    def attribute(self, start: int, end: int, depth: int) -> None:
        wanted = {5: "tensor", 10: "tensor", 6: "graph", 11: "graph", 22: "sparse", 23: "sparse"}
        for kind, a, b in self._spans(start, end, wanted):
            if kind == "tensor":
                self.tensor(a, b)
            elif kind == "graph":
                self.graph(a, b, depth + 1)
            else:
                self.sparse(a, b)

    def sparse(self, start: int, end: int) -> None:
        for _, a, b in self._spans(start, end, {1: "tensor", 2: "tensor"}):
            self.tensor(a, b)

    def tensor(self, start: int, end: int) -> None:
        tensor_name = ""
        for kind, a, b in self._spans(start, end, {8: "name", 13: "external"}):
            if kind == "name":
                tensor_name = self._text(a, b)
            else:
                self.external_entry(a, b, tensor_name)

    def external_entry(self, start: int, end: int, tensor_name: str) -> None:
        key, value = b"", b""
        for kind, a, b in self._spans(start, end, {1: "key", 2: "value"}):
            if kind == "key":
                key = self.reader.read(a, b)
            else:
                value = self.reader.read(a, b)
        if key == b"location":
            problem = _location_problem(value, self.reader.limits.max_string_bytes)
            if problem is not None:
                self.findings.append(
                    _finding(
                        "ONNX_EXTERNAL_DATA_TRAVERSAL",
                        Outcome.MALICIOUS,
                        Severity.CRITICAL,
                        f"{self.name}: tensor {_cut(tensor_name, 80)!r} keeps its data at "
                        f"{_cut(value.decode('utf-8', 'replace'), 120)!r}, {problem}: "
                        "outside the model's folder",
                        tensor=_cut(tensor_name, 80),
                        location=_cut(value.decode("utf-8", "replace"), 200),
                    )
                )


def _location_problem(raw: bytes, max_bytes: int) -> str | None:
    """Why an external-data location escapes the model's folder; None when it stays inside."""
    if len(raw) > max_bytes:
        return "a path too long to check"
    if b"\x00" in raw:
        return "a path with a NUL byte"
    try:
        location = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "a path that is not UTF-8"
    if not location:
        return "an empty path"
    if "\\" in location:
        return "a path with backslashes"
    if location.startswith("/"):
        return "an absolute path"
    if _DRIVE.match(location):
        return "a drive-letter path"
    if ".." in location.split("/"):
        return "a path climbing with '..'"
    if location.startswith("~"):
        return "a home-directory path"
    return None


def scan(fh: BinaryIO, size: int, name: str, limits: OnnxLimits = DEFAULT_LIMITS) -> list[Finding]:
    """Walk an ONNX model for escaping external-data paths and custom-op domains. Never raises."""
    walk = _Walk(_Reader(fh, size, limits), name)
    try:
        walk.model(0, size)
        if not walk.has_graph:
            raise _Malformed("no graph")
    except _Malformed as exc:
        return [
            *walk.findings[: limits.max_findings - 1],
            _finding(
                "ONNX_MALFORMED",
                Outcome.ERROR,
                Severity.HIGH,
                f"{name}: not a well-formed ONNX model ({_cut(str(exc), 120)})",
                file=name,
            ),
        ]
    findings = walk.findings[: limits.max_findings]
    custom = {
        d: op
        for d, op in walk.node_domains.items()
        if d not in STANDARD_DOMAINS and d not in walk.function_domains
    }
    if custom:
        findings.append(
            _finding(
                "ONNX_CUSTOM_OP_DOMAIN",
                Outcome.REVIEW,
                Severity.MEDIUM,
                f"{name}: uses operators from {', '.join(sorted(_cut(d, 60) for d in custom)[:10])}"
                ", which need a custom-op library (native code) to run",
                file=name,
                domains={_cut(d, 100): _cut(op, 100) for d, op in sorted(custom.items())[:20]},
            )
        )
    return findings
