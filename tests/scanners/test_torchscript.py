"""TorchScript archives: the serialized code is parsed (never compiled or run) and checked
against what torch.jit.save writes; the archive's own `__torch__` classes in its pickles are
fine, anything else in them is judged as in any pickle."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanners import Outcome, scan_file
from scanners.limits import TorchScriptLimits
from scanners.torchscript import CodeCheck, code_module
from tests.scanners import corpus_torchscript as ts

MEMBER = "archive/code/__torch__/m.py"


def check(source: str, **limits: int) -> CodeCheck:
    found = CodeCheck(TorchScriptLimits(**limits))
    found.add_source(MEMBER, source.encode())
    return found


def method(body: str) -> str:
    return (
        f"class M(Module):\n  def forward(self: __torch__.m.M, x: Tensor) -> Tensor:\n    {body}\n"
    )


def test_code_module_maps_member_to_qualified_module() -> None:
    assert code_module("archive/code/__torch__/a/b.py") == "__torch__.a.b"


@pytest.mark.parametrize(
    "body",
    [
        "return torch.relu(x)",
        "return ops.aten.add(x, x, alpha=1)",
        "_0 = __torch__.torch.nn.functional.relu\n    return _0(x, False, )",
        "return torch.ops.torchvision.nms(x, x, 0.5)",
        '_1 = getattr(self, "0")\n    return (_1).forward(x, )',
        'ops.prim.RaiseException("bad", "builtins.ValueError")\n    return x',
        "return annotate(List[Tensor], [x])[0]",
    ],
)
def test_code_check_torch_code_is_clean(body: str) -> None:
    found = check(method(body))
    assert [f.code for f in found.findings()] == ["TORCHSCRIPT_CODE"]


@pytest.mark.parametrize(
    "body",
    [
        'torch.save(x, "/tmp/x")\n    return x',
        'return torch.from_file("/etc/passwd", False, 8)',
        'ops.aten.save(x, "/tmp/x")\n    return x',
        "import os\n    return x",
        'return __builtins__.eval("x")',
        "return x.__class__",
        'return getattr(x, "__globals__")',
        'return os.system("id")',
        'return (x).save("/tmp/x")',
    ],
)
def test_code_check_file_or_runtime_access_is_denied(body: str) -> None:
    findings = check(method(body)).findings()
    assert [(f.code, f.outcome) for f in findings] == [
        ("TORCHSCRIPT_CALL_DENIED", Outcome.MALICIOUS)
    ]


@pytest.mark.parametrize(
    "body",
    ["return ops.my_lib.fused(x)", "return torch.classes.my_ns.Thing(x)", "return helper(x)",
     "return getattr(x, name)"],
)  # fmt: skip
def test_code_check_reference_outside_the_allow_list_needs_review(body: str) -> None:
    (finding,) = check(method(body)).findings()
    assert (finding.code, finding.outcome) == ("TORCHSCRIPT_CALL_UNKNOWN", Outcome.REVIEW)


def test_code_check_unparseable_code_is_an_error() -> None:
    (finding,) = check("def f(:\n").findings()
    assert (finding.code, finding.outcome) == ("TORCHSCRIPT_CODE_UNPARSEABLE", Outcome.ERROR)


def test_code_check_code_over_the_size_limit_is_an_error() -> None:
    (finding,) = check(method("return x"), max_source_bytes=10).findings()
    assert finding.code == "TORCHSCRIPT_CODE_UNPARSEABLE"


def test_code_check_records_defined_classes() -> None:
    assert check(method("return x")).defined == {"__torch__.m.M"}


def test_code_check_denied_mobile_operator_in_bytecode() -> None:
    found = CodeCheck()
    found.add_bytecode("archive/bytecode.pkl", b"...('aten::save', '', 2)...")
    assert [f.code for f in found.findings()] == ["TORCHSCRIPT_CALL_DENIED"]


@pytest.mark.parametrize(
    "make", [ts.scripted, ts.traced, ts.lstm, ts.quantized, ts.lite], ids=lambda f: f.__name__
)
def test_scan_file_real_torchscript_archive_is_clean(make: object, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(make())  # type: ignore[operator]
    report = scan_file(path)
    assert (report.file_format, report.outcome) == ("torchscript", Outcome.CLEAN)


@pytest.mark.parametrize(
    "make", [ts.reads_file, ts.writes_file, ts.lite_writes_file], ids=lambda f: f.__name__
)
def test_scan_file_torchscript_touching_files_is_malicious(make: object, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(make())  # type: ignore[operator]
    assert scan_file(path).outcome == Outcome.MALICIOUS


def test_scan_file_torchscript_pickle_class_not_in_the_code_needs_review(tmp_path: Path) -> None:
    from tests.scanners.corpus import g, pkl

    path = tmp_path / "model.pt"
    path.write_bytes(ts.with_data_pkl(pkl(g("__torch__.other", "Thing") + b")\x81", 2)))
    codes = {f.code for f in scan_file(path).findings}
    assert codes == {"PICKLE_GLOBAL_UNKNOWN", "TORCHSCRIPT_CODE"}
