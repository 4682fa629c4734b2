"""ONNX: a bounded protobuf wire-format walk for external-data paths and custom-op domains.

An ONNX tensor may keep its bytes in another file (`external_data` entries, key `location`),
which the runtime opens relative to the model's folder. A location that is absolute, climbs with
`..`, or uses a drive letter or backslash reads (or, when saving, writes) files outside it: the
path traversal of CVE-2022-25882 / CVE-2024-27318 in onnx's external-data loader. Nodes in an
operator domain that is neither ONNX's nor ONNX Runtime's own, nor a function defined in the model,
need a custom-op library (native code) to run: REVIEW. Two families run more than native code:
onnxruntime's language-interop `PyOp` node (any domain) imports the Python module its `module`
attribute names and runs `class_name`'s `compute` (ONNX_PYTHON_OP: malicious when the module is a
system one); operators of onnxruntime-extensions' domains may be Python functions registered with
`onnx_op` (ONNX_PYTHON_OP_DOMAIN), and its Azure/OpenAI invoker operators send their inputs to the
`model_uri` attribute's service (ONNX_NETWORK_OP).

We read only the message structure: ModelProto → graph (7), opset_import (8), training_info
(20), functions (25); GraphProto → node (1), initializer (5), sparse_initializer (15); NodeProto →
op_type (4), domain (7), attribute (5); AttributeProto → name (1), s (4), t (5), g (6), tensors
(10), graphs (11), sparse_tensor (22), sparse_tensors (23); TensorProto → name (8),
external_data (13). Tensor bytes are skipped by seeking, so a 2 GB model costs its structure,
not its size.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from scanners.allowlist import GlobalVerdict, judge_global
from scanners.limits import OnnxLimits
from scanners.protowire import WireMalformed as _Malformed
from scanners.protowire import WireReader
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
# onnxruntime-extensions registers its operators, and the Python functions declared with its
# `onnx_op` decorator, in these domains (`c_OpDomain`, `c_ComMsExtOpDomain` in its sources).
PYTHON_DOMAINS = frozenset({"ai.onnx.contrib", "com.microsoft.extensions"})
_DRIVE = re.compile(r"^[A-Za-z]:")


DEFAULT_LIMITS = OnnxLimits()


def _finding(
    code: str, outcome: Outcome, severity: Severity, message: str, **details: JsonValue
) -> Finding:
    return Finding(SCANNER, code, severity, outcome, message, dict(details))


def _cut(text: str, limit: int = 160) -> str:
    return cut_text(text, limit)


@dataclass
class _Node:
    """What the checks need of one NodeProto: its op, domain and string attributes."""

    op_type: str = ""
    domain: str = ""
    strings: dict[str, str] = field(default_factory=dict)  # attribute name -> `s` value


@dataclass
class _Walk:
    reader: WireReader
    limits: OnnxLimits
    name: str
    findings: list[Finding] = field(default_factory=list)
    node_domains: dict[str, str] = field(default_factory=dict)  # domain -> an op_type
    function_domains: set[str] = field(default_factory=set)
    has_graph: bool = False

    def _spans(
        self, start: int, end: int, wanted: dict[int, str]
    ) -> Iterator[tuple[str, int, int]]:
        return self.reader.spans(start, end, wanted)

    def _text(self, start: int, end: int) -> str:
        return self.reader.text(start, end)

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
        if depth > self.limits.max_depth:
            raise _Malformed(f"subgraphs nest deeper than {self.limits.max_depth}")
        wanted = {1: "node", 5: "tensor", 15: "sparse"}
        for kind, a, b in self._spans(start, end, wanted):
            if kind == "node":
                self.node(a, b, depth)
            elif kind == "tensor":
                self.tensor(a, b)
            else:
                self.sparse(a, b)

    def node(self, start: int, end: int, depth: int) -> None:
        node = _Node()
        for kind, a, b in self._spans(start, end, {4: "op", 7: "domain", 5: "attr"}):
            if kind == "op":
                node.op_type = self._text(a, b)
            elif kind == "domain":
                node.domain = self._text(a, b)
            else:
                self.attribute(a, b, depth, node)
        self.node_domains.setdefault(node.domain, node.op_type)
        found = _node_finding(node, self.name)
        if found is not None and len(self.findings) < self.limits.max_findings:
            self.findings.append(found)

    def attribute(self, start: int, end: int, depth: int, node: _Node) -> None:
        wanted = {1: "name", 4: "s", 5: "tensor", 10: "tensor", 6: "graph", 11: "graph"}
        wanted.update({22: "sparse", 23: "sparse"})
        attr_name, value = "", ""
        for kind, a, b in self._spans(start, end, wanted):
            if kind == "name":
                attr_name = self._text(a, b)
            elif kind == "s":
                value = self._text(a, b)
            elif kind == "tensor":
                self.tensor(a, b)
            elif kind == "graph":
                self.graph(a, b, depth + 1)
            else:
                self.sparse(a, b)
        if value and len(node.strings) < 64:
            node.strings[attr_name] = value

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
        if key not in _EXTERNAL_DATA_KEYS:
            self.findings.append(_unknown_key(self.name, tensor_name, key))
        if key == b"location":
            problem = _location_problem(value, self.limits.max_string_bytes)
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


# The keys ONNX defines; onnx's ExternalDataInfo setattr()s every key it reads (CVE-2026-34445).
_EXTERNAL_DATA_KEYS = frozenset({b"location", b"offset", b"length", b"checksum", b"basepath"})


def _unknown_key(name: str, tensor_name: str, key: bytes) -> Finding:
    shown = _cut(key.decode("utf-8", "replace"), 80)
    return _finding(
        "ONNX_EXTERNAL_DATA_KEY",
        Outcome.MALICIOUS,
        Severity.CRITICAL,
        f"{name}: tensor {_cut(tensor_name, 80)!r} has the external-data key {shown!r}, which "
        "ONNX does not define: onnx sets it as an attribute of its loader object",
        tensor=_cut(tensor_name, 80),
        key=shown,
    )


def _node_finding(node: _Node, name: str) -> Finding | None:
    """A node that runs Python (onnxruntime's PyOp) or calls a remote service (the Azure and
    OpenAI invoker ops of onnxruntime-extensions' `com.microsoft.extensions` domain)."""
    if node.op_type == "PyOp" or (
        node.op_type == "PythonOp" and node.domain == "com.microsoft"
    ):  # PythonOp: onnxruntime training's torch.autograd.Function bridge, also runs Python
        return _python_op(node, name)
    uri = node.strings.get("model_uri")
    if uri is not None:
        return _finding(
            "ONNX_NETWORK_OP",
            Outcome.REVIEW,
            Severity.HIGH,
            f"{name}: the operator {_cut(node.op_type, 80)} sends its inputs to "
            f"{_cut(uri, 120)!r} when the model runs",
            op_type=_cut(node.op_type, 100),
            domain=_cut(node.domain, 100),
            uri=_cut(uri, 200),
        )
    return None


def _python_op(node: _Node, name: str) -> Finding:
    """onnxruntime's language-interop PyOp (any domain): imports `module` and runs its
    `class_name`'s `compute` with the node's inputs (docs/PyOp.md in microsoft/onnxruntime)."""
    module = node.strings.get("module", "")
    class_name = node.strings.get("class_name", "")
    target = f"{module}.{class_name}" if module else class_name
    denied = bool(module) and judge_global(module, class_name or "x").verdict == (
        GlobalVerdict.DENIED
    )
    return _finding(
        "ONNX_PYTHON_OP",
        Outcome.MALICIOUS if denied else Outcome.REVIEW,
        Severity.CRITICAL if denied else Severity.HIGH,
        f"{name}: a PyOp node imports and runs the Python code {_cut(target or '?', 120)!r} "
        "when the model runs",
        op_type=_cut(node.op_type, 100),
        domain=_cut(node.domain, 100),
        module=_cut(module, 200),
        class_name=_cut(class_name, 200),
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
    """Walk an ONNX model for escaping external-data paths, Python and network operators and
    custom-op domains. Never raises."""
    reader = WireReader(
        fh,
        size,
        max_fields=limits.max_fields,
        max_string_bytes=limits.max_string_bytes,
        block_bytes=limits.block_bytes,
    )
    walk = _Walk(reader, limits, name)
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
    return walk.findings[: limits.max_findings] + _domain_findings(walk, name)


def _domain_findings(walk: _Walk, name: str) -> list[Finding]:
    custom = {
        d: op
        for d, op in walk.node_domains.items()
        if d not in STANDARD_DOMAINS and d not in walk.function_domains
    }
    python = {d: op for d, op in custom.items() if d in PYTHON_DOMAINS}
    native = {d: op for d, op in custom.items() if d not in PYTHON_DOMAINS}
    findings: list[Finding] = []
    if python:
        findings.append(
            _finding(
                "ONNX_PYTHON_OP_DOMAIN",
                Outcome.REVIEW,
                Severity.HIGH,
                f"{name}: uses operators from {', '.join(sorted(python))}, onnxruntime-extensions' "
                "domains, where an operator may be a Python function (onnx_op / PyCustomOpDef) "
                "registered by whatever code loads the model",
                file=name,
                domains={_cut(d, 100): _cut(op, 100) for d, op in sorted(python.items())},
            )
        )
    if native:
        findings.append(
            _finding(
                "ONNX_CUSTOM_OP_DOMAIN",
                Outcome.REVIEW,
                Severity.MEDIUM,
                f"{name}: uses operators from {', '.join(sorted(_cut(d, 60) for d in native)[:10])}"
                ", which need a custom-op library (native code) to run",
                file=name,
                domains={_cut(d, 100): _cut(op, 100) for d, op in sorted(native.items())[:20]},
            )
        )
    return findings
