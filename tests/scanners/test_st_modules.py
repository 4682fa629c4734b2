"""sentence-transformers `modules.json`: only the library's own module classes load without
review; system callables and module paths leaving the model folder are malicious."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scanners import Outcome, scan_file
from scanners.st_modules import scan_modules


def modules(*types: str, path: str = "") -> list[dict[str, object]]:
    return [{"idx": i, "name": str(i), "path": path, "type": t} for i, t in enumerate(types)]


@pytest.mark.parametrize(
    "kind",
    [
        "sentence_transformers.models.Transformer",
        "sentence_transformers.models.Pooling",
        "sentence_transformers.sparse_encoder.models.SpladePooling",
        "sentence_transformers.base.models.Router",
        "sentence_transformers.models.StaticEmbedding",
    ],
)
def test_scan_modules_library_class_is_clean(kind: str) -> None:
    assert scan_modules(modules(kind), "modules.json") == []


@pytest.mark.parametrize(
    "kind",
    ["custom_st.MyPooling", "sentence_transformers_evil.models.Pooling", "Pooling", None, 3],
)
def test_scan_modules_foreign_class_is_remote_code(kind: object) -> None:
    (finding,) = scan_modules([{"idx": 0, "path": "", "type": kind}], "modules.json")
    assert (finding.code, finding.outcome) == ("REMOTE_CODE_ST_MODULE", Outcome.REVIEW)


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "subprocess.Popen"])
def test_scan_modules_system_callable_is_malicious(kind: str) -> None:
    (finding,) = scan_modules(modules(kind), "modules.json")
    assert (finding.code, finding.outcome) == ("ST_MODULE_DENIED", Outcome.MALICIOUS)


@pytest.mark.parametrize("path", ["../other", "/etc", "a/../../b", "C:/models"])
def test_scan_modules_path_leaving_the_model_is_malicious(path: str) -> None:
    findings = scan_modules(modules("sentence_transformers.models.Pooling", path=path), "m.json")
    assert [(f.code, f.outcome) for f in findings] == [("ST_MODULE_PATH_ESCAPE", Outcome.MALICIOUS)]


@pytest.mark.parametrize("data", [{"a": 1}, [1, 2], "x"])
def test_scan_modules_wrong_shape_needs_review(data: object) -> None:
    (finding,) = scan_modules(data, "modules.json")
    assert finding.code == "REMOTE_CODE_ST_MODULES_INVALID"


def test_scan_file_modules_json_is_checked_by_name(tmp_path: Path) -> None:
    path = tmp_path / "modules.json"
    path.write_text(json.dumps(modules("my_module.Layer")))
    assert scan_file(path, name="org/model/modules.json").outcome == Outcome.REVIEW


def test_scan_file_other_json_list_is_not_a_module_list(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(modules("my_module.Layer")))
    assert scan_file(path).outcome == Outcome.CLEAN


def test_scan_file_unreadable_modules_json_needs_review(tmp_path: Path) -> None:
    path = tmp_path / "modules.json"
    path.write_text("[{not json")
    assert scan_file(path).outcome == Outcome.REVIEW
