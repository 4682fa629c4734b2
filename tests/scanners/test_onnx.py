"""ONNX scanner: external-data locations that leave the model's folder are malicious wherever the
tensor sits (graph, subgraph, sparse initializer, function); custom-op domains need review; the
walk is bounded and skips tensor bytes."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest

from scanners import onnx
from scanners.limits import OnnxLimits
from scanners.report import Finding, Outcome
from tests.scanners.corpus_headers import (
    onnx_attribute_graph,
    onnx_function,
    onnx_graph,
    onnx_model,
    onnx_node,
    onnx_tensor,
    pb_field,
    pb_varint,
)


def scan_bytes(blob: bytes, **kwargs: object) -> list[Finding]:
    return onnx.scan(io.BytesIO(blob), len(blob), "model.onnx", **kwargs)  # type: ignore[arg-type]


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def model_with_initializer(location: str) -> bytes:
    graph = onnx_graph([onnx_node("Relu")], [onnx_tensor("w", location=location)])
    return onnx_model(graph)


def test_scan_model_with_inline_weights_is_clean() -> None:
    graph = onnx_graph([onnx_node("MatMul"), onnx_node("Relu")], [onnx_tensor("w")])
    assert scan_bytes(onnx_model(graph)) == []


@pytest.mark.parametrize("location", ["weights.bin", "data/model.onnx_data", "a..b/c", "w.bin"])
def test_scan_external_data_inside_the_folder_is_clean(location: str) -> None:
    assert scan_bytes(model_with_initializer(location)) == []


ESCAPING = {
    "absolute": "/etc/passwd",
    "parent": "../../../../etc/passwd",
    "parent_inside": "data/../../secret",
    "backslash": "..\\..\\windows\\win.ini",
    "drive_letter": "C:/Windows/win.ini",
    "unc": "\\\\attacker\\share\\x",
    "home": "~/.ssh/id_rsa",
    "nul_byte": "weights.bin\0/../../etc/passwd",
    "empty": "",
}


@pytest.mark.parametrize("location", ESCAPING.values(), ids=list(ESCAPING))
def test_scan_external_data_escaping_the_folder_is_malicious(location: str) -> None:
    findings = scan_bytes(model_with_initializer(location))
    assert codes(findings) == ["ONNX_EXTERNAL_DATA_TRAVERSAL"]
    assert findings[0].outcome is Outcome.MALICIOUS
    assert findings[0].details["tensor"] == "w"


def test_scan_traversal_in_subgraph_attribute_is_malicious() -> None:
    body = onnx_graph([onnx_node("Identity")], [onnx_tensor("t", location="../../x")])
    node = onnx_node("If", attributes=[onnx_attribute_graph("then_branch", body)])
    assert codes(scan_bytes(onnx_model(onnx_graph([node])))) == ["ONNX_EXTERNAL_DATA_TRAVERSAL"]


def test_scan_traversal_in_constant_attribute_tensor_is_malicious() -> None:
    attribute = pb_field(1, "value") + pb_field(5, onnx_tensor("c", location="/etc/shadow"))
    node = onnx_node("Constant", attributes=[attribute])
    assert codes(scan_bytes(onnx_model(onnx_graph([node])))) == ["ONNX_EXTERNAL_DATA_TRAVERSAL"]


def test_scan_traversal_in_sparse_initializer_is_malicious() -> None:
    sparse = pb_field(1, onnx_tensor("values", location="../v")) + pb_field(2, onnx_tensor("i"))
    graph = onnx_graph([onnx_node("Relu")]) + pb_field(15, sparse)
    assert codes(scan_bytes(onnx_model(graph))) == ["ONNX_EXTERNAL_DATA_TRAVERSAL"]


def test_scan_traversal_in_model_function_is_malicious() -> None:
    attribute = pb_field(1, "value") + pb_field(5, onnx_tensor("c", location="../../f"))
    function = onnx_function("F", "local.fn", [onnx_node("Constant", attributes=[attribute])])
    model = onnx_model(onnx_graph([onnx_node("F", domain="local.fn")]), functions=[function])
    assert codes(scan_bytes(model)) == ["ONNX_EXTERNAL_DATA_TRAVERSAL"]


def test_scan_traversal_in_training_info_is_malicious() -> None:
    init = onnx_graph([onnx_node("Relu")], [onnx_tensor("t", location="/abs")])
    model = onnx_model(onnx_graph([onnx_node("Relu")])) + pb_field(20, pb_field(1, init))
    assert codes(scan_bytes(model)) == ["ONNX_EXTERNAL_DATA_TRAVERSAL"]


def test_scan_custom_op_domain_needs_review() -> None:
    graph = onnx_graph([onnx_node("Relu"), onnx_node("MyFusedOp", domain="com.example.ops")])
    findings = scan_bytes(onnx_model(graph, opsets=[("", 17), ("com.example.ops", 1)]))
    assert codes(findings) == ["ONNX_CUSTOM_OP_DOMAIN"]
    assert findings[0].outcome is Outcome.REVIEW
    assert findings[0].details["domains"] == {"com.example.ops": "MyFusedOp"}


@pytest.mark.parametrize("domain", ["ai.onnx.ml", "com.microsoft", "ai.onnx"])
def test_scan_standard_and_runtime_domains_are_clean(domain: str) -> None:
    graph = onnx_graph([onnx_node("Attention", domain=domain)])
    assert scan_bytes(onnx_model(graph)) == []


def test_scan_domain_of_model_local_function_is_clean() -> None:
    function = onnx_function("Gelu2", "my.functions", [onnx_node("Erf")])
    graph = onnx_graph([onnx_node("Gelu2", domain="my.functions")])
    assert scan_bytes(onnx_model(graph, functions=[function])) == []


def test_scan_large_tensor_bytes_are_skipped_not_read(tmp_path: Path) -> None:
    # a 256 MiB raw_data field on a sparse file: the walk seeks past it
    head = onnx_model(onnx_graph([onnx_node("Relu")]))
    tensor_head = pb_field(8, "big") + pb_varint(9 << 3 | 2) + pb_varint(256 * 2**20)
    graph_field = pb_varint(5 << 3 | 2) + pb_varint(len(tensor_head) + 256 * 2**20)
    path = tmp_path / "big.onnx"
    with path.open("wb") as fh:
        fh.write(pb_varint(7 << 3 | 2) + pb_varint(len(graph_field) + len(tensor_head) + 2**28))
        fh.write(graph_field + tensor_head)
        fh.seek(2**28, 1)
        fh.write(head)
    tracemalloc.start()
    with path.open("rb") as fh:
        findings = onnx.scan(fh, path.stat().st_size, "big.onnx")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert findings == []
    assert peak < 8 * 2**20


MALFORMED = {
    "text": b"this is not a protobuf at all, just text",
    "truncated": model_with_initializer("w.bin")[:-7],
    "length_past_end": pb_varint(7 << 3 | 2) + pb_varint(2**40) + b"x",
    "group_wire_type": pb_varint(7 << 3 | 3) + b"\0",
    "graph_not_length_delimited": pb_field(7, 5),
    "overlong_varint": pb_varint(1 << 3) + b"\xff" * 11,
    "no_graph": pb_field(1, 8) + pb_field(2, "x"),
    "empty": b"",
}


@pytest.mark.parametrize("blob", MALFORMED.values(), ids=list(MALFORMED))
def test_scan_malformed_model_fails_closed(blob: bytes) -> None:
    findings = scan_bytes(blob)
    assert codes(findings) == ["ONNX_MALFORMED"]
    assert findings[0].outcome is Outcome.ERROR


def test_scan_subgraphs_nested_too_deep_fail_closed() -> None:
    graph = onnx_graph([onnx_node("Relu")])
    for _ in range(80):
        graph = onnx_graph([onnx_node("If", attributes=[onnx_attribute_graph("g", graph)])])
    assert codes(scan_bytes(onnx_model(graph))) == ["ONNX_MALFORMED"]


def test_scan_field_count_over_limit_fails_closed() -> None:
    graph = onnx_graph([onnx_node("Relu") for _ in range(200)])
    findings = scan_bytes(onnx_model(graph), limits=OnnxLimits(max_fields=500))
    assert codes(findings) == ["ONNX_MALFORMED"]


def test_scan_traversal_found_before_breakage_is_still_reported() -> None:
    blob = model_with_initializer("../../x") + pb_varint(7 << 3 | 3)
    assert codes(scan_bytes(blob)) == ["ONNX_EXTERNAL_DATA_TRAVERSAL", "ONNX_MALFORMED"]


def string_attr(name: str, value: str) -> bytes:
    return pb_field(1, name) + pb_field(4, value) + pb_field(20, 3)


def pyop(module: str, class_name: str, domain: str = "pyop") -> bytes:
    attributes = [string_attr("module", module), string_attr("class_name", class_name)]
    return onnx_model(onnx_graph([onnx_node("PyOp", domain=domain, attributes=attributes)]))


def test_scan_pyop_importing_a_system_module_is_malicious() -> None:
    found = [f for f in scan_bytes(pyop("os", "system")) if f.code == "ONNX_PYTHON_OP"]
    assert [(f.outcome, f.details["module"]) for f in found] == [(Outcome.MALICIOUS, "os")]


def test_scan_pyop_importing_any_module_needs_review() -> None:
    found = [f for f in scan_bytes(pyop("mymodule", "Multi_1")) if f.code == "ONNX_PYTHON_OP"]
    assert [f.outcome for f in found] == [Outcome.REVIEW]


def test_scan_pyop_in_a_standard_domain_is_still_python() -> None:
    assert "ONNX_PYTHON_OP" in codes(scan_bytes(pyop("m", "C", domain="")))


@pytest.mark.parametrize("domain", ["ai.onnx.contrib", "com.microsoft.extensions"])
def test_scan_extensions_domain_may_run_python(domain: str) -> None:
    model = onnx_model(onnx_graph([onnx_node("CustomOpOne", domain=domain)]))
    assert codes(scan_bytes(model)) == ["ONNX_PYTHON_OP_DOMAIN"]


def test_scan_invoker_op_with_model_uri_is_a_network_op() -> None:
    node = onnx_node(
        "AzureTritonInvoker",
        domain="com.microsoft.extensions",
        attributes=[string_attr("model_uri", "https://example.invalid/v2")],
    )
    findings = scan_bytes(onnx_model(onnx_graph([node])))
    network = [f for f in findings if f.code == "ONNX_NETWORK_OP"]
    assert [f.details["uri"] for f in network] == ["https://example.invalid/v2"]
