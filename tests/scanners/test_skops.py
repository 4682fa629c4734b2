"""skops files: every node's type is judged against our own allow-list (skops' defaults), the
published bypass shapes are malicious, and a missing or hostile schema is never clean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scanners import Outcome, scan_file
from scanners.limits import SkopsLimits
from scanners.report import Finding
from scanners.skops import scan_schema
from tests.scanners.corpus_formats import (
    _logistic_regression,
    _pipeline,
    _with_attr,
    skops_file,
)


def scan(root: dict[str, Any], **kwargs: object) -> list[Finding]:
    raw = json.dumps({**root, "protocol": 2}).encode()
    return scan_schema(raw, "model.skops", **kwargs)  # type: ignore[arg-type]


def node(loader: str, module: str, cls: str, **extra: object) -> dict[str, Any]:
    return {"__class__": cls, "__module__": module, "__loader__": loader, "__id__": 7, **extra}


def with_node(value: dict[str, Any]) -> dict[str, Any]:
    return _with_attr(_logistic_regression(), "extra", value)


def test_scan_schema_logistic_regression_is_clean() -> None:
    assert scan(_logistic_regression()) == []


def test_scan_schema_pipeline_with_numpy_ufunc_and_random_state_is_clean() -> None:
    assert scan(_pipeline()) == []


@pytest.mark.parametrize(
    ("loader", "module", "cls"),
    [
        ("FunctionNode", "os", "system"),
        ("FunctionNode", "builtins", "eval"),
        ("TypeNode", "subprocess", "getoutput"),
        ("ObjectNode", "builtins", "exec"),
        ("ConstructorFromReduceNode", "os", "popen"),
        ("LossNode", "builtins", "exec"),
        ("ReduceNode", "runpy", "run_path"),
    ],
)
def test_scan_schema_denied_type_is_malicious(loader: str, module: str, cls: str) -> None:
    (finding,) = scan(with_node(node(loader, module, cls)))
    assert (finding.code, finding.outcome) == ("SKOPS_TYPE_DENIED", Outcome.MALICIOUS)


@pytest.mark.parametrize(
    ("loader", "module", "cls"),
    [
        ("ObjectNode", "xgboost.sklearn", "XGBClassifier"),
        ("FunctionNode", "numpy", "sort"),  # a numpy function that is no ufunc
        ("FunctionNode", "sklearn.metrics", "accuracy_score"),
        ("TypeNode", "polars", "DataFrame"),
        ("ObjectNode", "sklearn.utils._testing", "TempMemmap"),
        ("NoSuchNode", "builtins", "int"),
    ],
)
def test_scan_schema_untrusted_type_needs_review(loader: str, module: str, cls: str) -> None:
    (finding,) = scan(with_node(node(loader, module, cls)))
    assert (finding.code, finding.outcome) == ("SKOPS_TYPE_UNTRUSTED", Outcome.REVIEW)


@pytest.mark.parametrize(
    ("loader", "module", "cls"),
    [
        ("FunctionNode", "numpy", "log1p"),
        ("FunctionNode", "scipy.special", "expit"),
        ("TypeNode", "builtins", "float"),
        ("TypeNode", "numpy", "float64"),
        ("SparseMatrixNode", "scipy.sparse._csr", "csr_matrix"),
        ("ObjectNode", "sklearn.ensemble._hist_gradient_boosting.binning", "_BinMapper"),
        ("TreeNode", "sklearn.tree._tree", "Tree"),
        ("NdArrayNode", "numpy", "int64"),
        ("DTypeNode", "numpy", "dtype"),
    ],
)
def test_scan_schema_trusted_type_is_clean(loader: str, module: str, cls: str) -> None:
    assert scan(with_node(node(loader, module, cls))) == []


def test_scan_schema_operator_node_outside_operator_is_malicious() -> None:
    (finding,) = scan(with_node(node("OperatorFuncNode", "sklearn", "call", attrs=[])))
    assert "CVE-2025-54412" in str(finding.details)


def test_scan_schema_itemgetter_is_clean() -> None:
    assert scan(with_node(node("OperatorFuncNode", "operator", "itemgetter", attrs=[]))) == []


def test_scan_schema_methodcaller_is_malicious() -> None:
    (finding,) = scan(with_node(node("OperatorFuncNode", "operator", "methodcaller", attrs=[])))
    assert finding.outcome == Outcome.MALICIOUS


def test_scan_schema_method_bound_to_another_type_is_malicious() -> None:
    owner = node("ObjectNode", "os", "module")
    method = node(
        "MethodNode", "sklearn.linear_model", "Ridge", content={"obj": owner, "func": "x"}
    )
    (finding,) = scan(with_node(method))
    assert "CVE-2025-54413" in str(finding.details)


def test_scan_schema_public_method_of_an_estimator_needs_review() -> None:
    owner = node("ObjectNode", "sklearn.linear_model", "Ridge")
    method = node(
        "MethodNode", "sklearn.linear_model", "Ridge", content={"obj": owner, "func": "predict"}
    )
    (finding,) = scan(with_node(method))
    assert finding.code == "SKOPS_TYPE_UNTRUSTED"


def test_scan_schema_fixed_type_loader_naming_another_class_is_malicious() -> None:
    (finding,) = scan(with_node(node("ListNode", "collections", "UserList", content=[])))
    assert finding.code == "SKOPS_TYPE_DENIED"


@pytest.mark.parametrize(
    ("raw", "why"),
    [(None, "no schema.json"), (b"{not json", "not JSON"), (b"[1, 2]", "without a root node")],
)
def test_scan_schema_unreadable_schema_is_an_error(raw: bytes | None, why: str) -> None:
    (finding,) = scan_schema(raw, "model.skops")
    assert (finding.code, finding.outcome) == ("SKOPS_SCHEMA_INVALID", Outcome.ERROR)
    assert why in finding.message


def test_scan_schema_too_many_values_is_a_resource_finding() -> None:
    (finding,) = scan(_pipeline(), limits=SkopsLimits(max_nodes=50))
    assert finding.code == "SKOPS_SCHEMA_RESOURCE"


def test_scan_schema_deep_nesting_is_a_resource_finding() -> None:
    deep: dict[str, Any] = node("ListNode", "builtins", "list", content=[])
    for _ in range(30):
        deep = node("ListNode", "builtins", "list", content=[deep])
    (finding,) = scan(deep, limits=SkopsLimits(max_depth=40))
    assert finding.code == "SKOPS_SCHEMA_RESOURCE"


def test_scan_file_skops_zip_is_skops_format(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(skops_file(_logistic_regression(), arrays=("140001.npy", "140002.npy")))
    report = scan_file(path)
    assert (report.file_format, report.outcome) == ("skops", Outcome.CLEAN)
