"""TensorFlow graphs: told from other protobuf by their first bytes, walked for operators that run
Python or touch files, checkpoint operators allowed only where the saver puts them."""

from __future__ import annotations

import io

import pytest

from scanners import Outcome
from scanners.limits import TfGraphLimits
from scanners.report import Finding
from scanners.tf_graph import GraphKind, graph_kind, scan
from tests.scanners.corpus_formats import (
    _frozen,
    _saved,
    saved_model,
    tf_attr,
    tf_function,
    tf_graph,
    tf_node,
)
from tests.scanners.corpus_headers import onnx_graph, onnx_model, onnx_node, pb_field


def scan_bytes(data: bytes, kind: GraphKind = GraphKind.SAVED_MODEL, **kw: object) -> list[Finding]:
    return scan(io.BytesIO(data), len(data), "saved_model.pb", kind, **kw)  # type: ignore[arg-type]


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def sentencepiece() -> bytes:
    piece = pb_field(1, "<unk>") + b"\x15\x00\x00\x00\x00" + pb_field(3, 2)
    return pb_field(1, piece) + pb_field(1, pb_field(1, "a") + b"\x15\x00\x00\x80\xbf")


def test_graph_kind_saved_model_by_content() -> None:
    data = _saved()
    assert graph_kind(data, len(data), "model.bin") == GraphKind.SAVED_MODEL


def test_graph_kind_frozen_graph_by_content() -> None:
    data = _frozen()
    assert graph_kind(data, len(data), "graph.bin") == GraphKind.GRAPH_DEF


@pytest.mark.parametrize("name", ["tokenizer.model", "spiece.model"])
def test_graph_kind_sentencepiece_is_no_graph(name: str) -> None:
    data = sentencepiece()
    assert graph_kind(data, len(data), name) is None


def test_graph_kind_onnx_is_no_saved_model() -> None:
    data = onnx_model(onnx_graph([onnx_node("Relu")]))
    assert graph_kind(data, len(data), "model.bin") is None


def test_graph_kind_name_adds_a_candidate_never_removes_one() -> None:
    assert graph_kind(b"junk", 4, "dir/saved_model.pb") == GraphKind.SAVED_MODEL
    assert graph_kind(b"junk", 4, "model.ckpt.meta") == GraphKind.META_GRAPH


def test_scan_saved_model_with_saver_functions_is_clean() -> None:
    assert scan_bytes(_saved()) == []


@pytest.mark.parametrize("op", ["PyFunc", "PyFuncStateless", "EagerPyFunc"])
def test_scan_python_op_is_malicious(op: str) -> None:
    (finding,) = scan_bytes(_saved([tf_node("n", op)]))
    assert (finding.code, finding.outcome) == ("TF_PYTHON_OP", Outcome.MALICIOUS)


def test_scan_write_file_is_malicious() -> None:
    (finding,) = scan_bytes(_frozen([tf_node("w", "WriteFile")]), GraphKind.GRAPH_DEF)
    assert (finding.code, finding.outcome) == ("TF_FILE_WRITE_OP", Outcome.MALICIOUS)


def test_scan_print_to_file_is_malicious() -> None:
    node = tf_node("p", "PrintV2", attrs=[tf_attr("output_stream", pb_field(2, "file:///x"))])
    assert codes(scan_bytes(_frozen([node]), GraphKind.GRAPH_DEF)) == ["TF_FILE_WRITE_OP"]


def test_scan_print_to_stderr_is_clean() -> None:
    node = tf_node("p", "PrintV2", attrs=[tf_attr("output_stream", pb_field(2, "stderr"))])
    assert scan_bytes(_frozen([node]), GraphKind.GRAPH_DEF) == []


@pytest.mark.parametrize("op", ["ReadFile", "MatchingFiles", "TFRecordDataset", "ImmutableConst"])
def test_scan_file_op_needs_review(op: str) -> None:
    (finding,) = scan_bytes(_saved([tf_node("n", op)]))
    assert (finding.code, finding.outcome) == ("TF_FILE_OP", Outcome.REVIEW)


def test_scan_checkpoint_op_in_a_serving_function_needs_review() -> None:
    (finding,) = scan_bytes(_saved([tf_node("s", "SaveV2")]))
    assert finding.details["ops"] == {"SaveV2 @ __inference_serve_101": "s"}


def test_scan_checkpoint_op_in_a_frozen_graph_needs_review() -> None:
    assert codes(scan_bytes(_frozen([tf_node("r", "RestoreV2")]), GraphKind.GRAPH_DEF)) == [
        "TF_CHECKPOINT_OP"
    ]


def test_scan_checkpoint_op_in_the_saved_model_top_graph_is_clean() -> None:
    assert scan_bytes(_saved(top_extra=[tf_node("save/SaveV2", "SaveV2")])) == []


def test_scan_op_in_a_library_function_names_the_function() -> None:
    graph = tf_graph([tf_node("x", "Placeholder")], [tf_function("f_7", [tf_node("e", "PyFunc")])])
    (finding,) = scan_bytes(saved_model(graph))
    assert finding.details["ops"] == {"PyFunc @ f_7": "e"}


def test_scan_truncated_graph_is_an_error() -> None:
    data = _saved([tf_node("n", "PyFunc")])
    assert codes(scan_bytes(data[:-7])) == ["TF_GRAPH_MALFORMED"]


def test_scan_saved_model_without_a_graph_is_an_error() -> None:
    assert codes(scan_bytes(pb_field(1, 1))) == ["TF_GRAPH_MALFORMED"]


def test_scan_field_budget_is_a_malformed_finding() -> None:
    findings = scan_bytes(_saved(), limits=TfGraphLimits(max_fields=20))
    assert codes(findings) == ["TF_GRAPH_MALFORMED"]
