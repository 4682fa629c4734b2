"""TensorFlow graphs: SavedModel (`saved_model.pb`), MetaGraph (`.meta`) and frozen GraphDef files.

TensorFlow runs a graph's operators when a model is served or called, and a few of them leave the
tensor world: `PyFunc`, `PyFuncStateless` and `EagerPyFunc` call Python; `WriteFile` (and
`PrintV2` with a `file://` stream) write attacker-chosen bytes to an attacker-chosen path (the
"TensorFlow models are programs" write-ups, modelscan's and ModelAudit's SavedModel checks);
`ReadFile`, `MatchingFiles`, the file readers and datasets, summary writers and `ImmutableConst`
read or write files. Checkpoint operators (`SaveV2`, `RestoreV2`, `MergeV2Checkpoints`...) are how
every SavedModel saves and restores its own variables: allowed where TensorFlow puts them (the
top-level graph of a SavedModel or MetaGraph, which holds the saver, and the `_traced_save` /
`_traced_restore` functions of TF2), a finding anywhere else (a serving function that writes a
checkpoint to a path of its choosing). Unknown operators are not findings: TensorFlow refuses an
operator that no loaded library registers, so its own registry is the allow-list.

Read as protobuf, no `tensorflow` import (field numbers from tensorflow/core/protobuf/
saved_model.proto, meta_graph.proto and framework/graph.proto, function.proto, node_def.proto,
attr_value.proto): SavedModel → meta_graphs (2); MetaGraphDef → graph_def (2); GraphDef → node
(1), library (2); FunctionDefLibrary → function (1); FunctionDef → signature (1, OpDef: name 1),
node_def (3); NodeDef → name (1), op (2), attr (5, map entries key 1 / AttrValue 2); AttrValue →
s (2). Tensor contents are skipped by seeking.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import BinaryIO

from scanners.limits import TfGraphLimits
from scanners.protowire import LEN, VARINT, WireMalformed, WireReader
from scanners.report import Finding, JsonValue, Outcome, Severity, cut_text

SCANNER = "tensorflow"
SCANNER_VERSION = "1.0"


DEFAULT_LIMITS = TfGraphLimits()


class GraphKind(enum.StrEnum):
    SAVED_MODEL = "saved-model"
    META_GRAPH = "meta-graph"
    GRAPH_DEF = "graph-def"


_PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
_WRITE_OPS = frozenset({"WriteFile"})
_FILE_OPS = frozenset(
    {
        "ReadFile", "MatchingFiles", "ImmutableConst", "WholeFileReader", "WholeFileReaderV2",
        "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReader",
        "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2", "LMDBReader",
        "TextLineDataset", "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset",
        "FixedLengthRecordDatasetV2", "LMDBDataset", "ExperimentalLMDBDataset", "SqlDataset",
        "ExperimentalSqlDataset", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset",
        "LoadDataset", "SaveDataset", "SaveDatasetV2", "ExperimentalSaveDataset",
        "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
        "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary",
        "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
        "WriteRawProtoSummary", "DebugIdentityV2", "DebugIdentityV3",
    }
)  # fmt: skip
_CHECKPOINT_OPS = frozenset(
    {"Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints"}
)
_SAVER_FUNCTION = re.compile(r"_traced_(?:save|restore)(?:_\d+)?$")
_NODE_NAME = re.compile(rb"[A-Za-z0-9.][A-Za-z0-9_./>-]{0,255}")
_OP_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_>]{0,127}")
_TOP = "the graph"


def _finding(
    code: str, outcome: Outcome, severity: Severity, message: str, **details: JsonValue
) -> Finding:
    return Finding(SCANNER, code, severity, outcome, message, dict(details))


# ---- telling a graph from other protobuf by its first bytes --------------------------------
def is_saved_model_name(name: str) -> bool:
    return name.rsplit("/", 1)[-1].lower() == "saved_model.pb"


def graph_kind(prefix: bytes, size: int, name: str = "") -> GraphKind | None:
    """Which TensorFlow graph file `prefix` starts (None: other protobuf, e.g. sentencepiece).

    The name only adds candidates (`saved_model.pb`, `*.meta`), never removes one."""
    base = name.rsplit("/", 1)[-1].lower()
    if _starts_saved_model(prefix, size) or is_saved_model_name(name):
        return GraphKind.SAVED_MODEL
    if _starts_graph_def(prefix, size):
        return GraphKind.GRAPH_DEF
    if base.endswith(".meta"):
        return GraphKind.META_GRAPH
    return None


def _varint_at(data: bytes, pos: int) -> tuple[int, int] | None:
    value = 0
    for step in range(10):
        if pos + step >= len(data):
            return None
        byte = data[pos + step]
        value |= (byte & 0x7F) << (7 * step)
        if byte < 0x80:
            return value, pos + step + 1
    return None


def _starts_saved_model(prefix: bytes, size: int) -> bool:
    """`08 <schema version> 12 <len> (0a|12)`: a MetaGraphDef opening with meta_info_def or
    graph_def. ONNX also opens with field 1 then field 2, but its field 2 is a producer name."""
    if prefix[:1] != b"\x08":
        return False
    version = _varint_at(prefix, 1)
    if version is None or version[0] > 16 or prefix[version[1] : version[1] + 1] != b"\x12":
        return False
    length = _varint_at(prefix, version[1] + 1)
    if length is None or length[0] < 2 or length[1] + length[0] > size:
        return False
    return prefix[length[1] : length[1] + 1] in (b"\x0a", b"\x12")


def _starts_graph_def(prefix: bytes, size: int) -> bool:
    """`0a <len> NodeDef`: a first node whose name and op read as TensorFlow names (a
    sentencepiece model opens with field 1 too, but its piece has a float score in field 2)."""
    if prefix[:1] != b"\x0a":
        return False
    length = _varint_at(prefix, 1)
    if length is None or length[1] + length[0] > size:
        return False
    node = prefix[length[1] : length[1] + length[0]]
    strings: dict[int, bytes] = {}
    pos = 0
    while pos < len(node) and len(strings) < 2:
        key = _varint_at(node, pos)
        if key is None or key[0] & 7 != LEN or (key[0] >> 3) not in (1, 2, 3, 4, 5):
            return False
        span = _varint_at(node, key[1])
        if span is None:
            return False
        strings.setdefault(key[0] >> 3, node[span[1] : span[1] + span[0]])
        pos = span[1] + span[0]
    return bool(_NODE_NAME.fullmatch(strings.get(1, b""))) and bool(
        _OP_NAME.fullmatch(strings.get(2, b""))
    )


# ---- the walk ------------------------------------------------------------------------------
@dataclass
class _Seen:
    """Operators met, each with where (`the graph` or a function name)."""

    python: dict[str, str] = field(default_factory=dict)  # "op @ where" -> node name
    writes: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    nodes: int = 0


@dataclass
class _Walk:
    reader: WireReader
    limits: TfGraphLimits
    kind: GraphKind
    seen: _Seen = field(default_factory=_Seen)
    graphs: int = 0

    def saved_model(self, start: int, end: int) -> None:
        for number, wire, a, b in self.reader.fields(start, end):
            if number == 1 and wire != VARINT:
                raise WireMalformed("the schema version is not a number")
            if number == 2:
                if wire != LEN:
                    raise WireMalformed("meta_graphs is not a message")
                self.meta_graph(a, b)

    def meta_graph(self, start: int, end: int) -> None:
        for _, a, b in self.reader.spans(start, end, {2: "graph_def"}):
            self.graph_def(a, b, saver_allowed=True)

    def graph_def(self, start: int, end: int, *, saver_allowed: bool) -> None:
        self.graphs += 1
        for kind, a, b in self.reader.spans(start, end, {1: "node", 2: "library"}):
            if kind == "node":
                self.node(a, b, _TOP, saver_allowed=saver_allowed)
            else:
                for _, fa, fb in self.reader.spans(a, b, {1: "function"}):
                    self.function(fa, fb)

    def function(self, start: int, end: int) -> None:
        function_name = "?"
        bodies: list[tuple[int, int]] = []
        for kind, a, b in self.reader.spans(start, end, {1: "signature", 3: "node_def"}):
            if kind == "signature":
                for _, na, nb in self.reader.spans(a, b, {1: "name"}):
                    function_name = self.reader.text(na, nb)
            else:
                bodies.append((a, b))
            if len(bodies) > 1_000_000:
                raise WireMalformed("a function has too many nodes")
        saver = bool(_SAVER_FUNCTION.search(function_name))
        for a, b in bodies:
            self.node(a, b, function_name, saver_allowed=saver)

    def node(self, start: int, end: int, where: str, *, saver_allowed: bool) -> None:
        self.seen.nodes += 1
        node_name, op, streams = "", "", []
        for kind, a, b in self.reader.spans(start, end, {1: "name", 2: "op", 5: "attr"}):
            if kind == "name":
                node_name = self.reader.text(a, b)
            elif kind == "op":
                op = self.reader.text(a, b)
            elif op in ("", "PrintV2"):  # only PrintV2's attributes matter (and op comes first)
                streams.extend(self._string_attr(a, b, "output_stream"))
        self._classify(op, node_name, where, saver_allowed, streams)

    def _string_attr(self, start: int, end: int, wanted: str) -> list[str]:
        """The `s` values of the attribute map entry `wanted` (key and value in any order)."""
        key, spans = "", []
        for kind, a, b in self.reader.spans(start, end, {1: "key", 2: "value"}):
            if kind == "key":
                key = self.reader.text(a, b)
            else:
                spans.append((a, b))
        if key != wanted:
            return []
        return [
            self.reader.text(sa, sb)
            for a, b in spans[:4]
            for _, sa, sb in self.reader.spans(a, b, {2: "s"})
        ]

    def _classify(
        self, op: str, node_name: str, where: str, saver_allowed: bool, streams: list[str]
    ) -> None:
        seen, cap = self.seen, self.limits.max_ops_listed
        key = f"{_cut(op, 80)} @ {_cut(where, 120)}"
        target: dict[str, str] | None = None
        if op in _PYTHON_OPS:
            target = seen.python
        elif op in _WRITE_OPS or (
            op == "PrintV2" and any(s.startswith("file://") for s in streams)
        ):
            target = seen.writes
            if op == "PrintV2":
                key = f"PrintV2 to {_cut(streams[0], 120)} @ {_cut(where, 120)}"
        elif op in _FILE_OPS:
            target = seen.files
        elif op in _CHECKPOINT_OPS and not saver_allowed:
            target = seen.checkpoints
        if target is not None and len(target) < cap:
            target.setdefault(key, _cut(node_name, 120))


def _to_file(streams: list[str]) -> bool:
    """PrintV2's `output_stream` "file://path" appends the printed tensors to that file."""
    return any(s.startswith("file://") for s in streams)


def _cut(text: str, limit: int = 160) -> str:
    return cut_text(text, limit)


def scan(
    fh: BinaryIO,
    size: int,
    name: str,
    kind: GraphKind = GraphKind.SAVED_MODEL,
    limits: TfGraphLimits = DEFAULT_LIMITS,
) -> list[Finding]:
    """Walk a TensorFlow graph file for operators that run Python or touch files. Never raises."""
    reader = WireReader(
        fh, size, max_fields=limits.max_fields, max_string_bytes=limits.max_string_bytes
    )
    walk = _Walk(reader, limits, kind)
    try:
        if kind == GraphKind.SAVED_MODEL:
            walk.saved_model(0, size)
        elif kind == GraphKind.META_GRAPH:
            walk.meta_graph(0, size)
        else:
            walk.graph_def(0, size, saver_allowed=False)
        if walk.graphs == 0:
            raise WireMalformed("no graph in it")
    except WireMalformed as exc:
        return [*_op_findings(walk.seen, name)[: limits.max_findings - 1], _malformed(name, exc)]
    return _op_findings(walk.seen, name)[: limits.max_findings]


def _malformed(name: str, exc: Exception) -> Finding:
    return _finding(
        "TF_GRAPH_MALFORMED",
        Outcome.ERROR,
        Severity.HIGH,
        f"{name}: not a well-formed TensorFlow graph ({_cut(str(exc), 120)}); TensorFlow may "
        "still read what it can, so it is held",
        file=name,
    )


_GROUPS: tuple[tuple[str, str, Outcome, Severity, str], ...] = (
    ("python", "TF_PYTHON_OP", Outcome.MALICIOUS, Severity.CRITICAL, "calls Python"),
    (
        "writes",
        "TF_FILE_WRITE_OP",
        Outcome.MALICIOUS,
        Severity.CRITICAL,
        "writes files at paths the graph chooses",
    ),
    ("files", "TF_FILE_OP", Outcome.REVIEW, Severity.HIGH, "reads or writes files"),
    (
        "checkpoints",
        "TF_CHECKPOINT_OP",
        Outcome.REVIEW,
        Severity.MEDIUM,
        "saves or restores checkpoints outside the saver TensorFlow uses for the model's own "
        "variables",
    ),
)


def _op_findings(seen: _Seen, name: str) -> list[Finding]:
    findings: list[Finding] = []
    for attribute, code, outcome, severity, what in _GROUPS:
        ops: dict[str, str] = getattr(seen, attribute)
        if not ops:
            continue
        shown = ", ".join(list(ops)[:5])
        findings.append(
            _finding(
                code,
                outcome,
                severity,
                f"{name}: the graph {what} when it runs ({shown})",
                file=name,
                ops=dict[str, JsonValue](ops),
            )
        )
    return findings
