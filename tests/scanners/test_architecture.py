"""The scanners package stands alone: no aiohttp, no proxy, a checked public surface."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import scanners

SCANNERS_DIR = Path(scanners.__file__).parent


def test_architecture_importing_scanners_loads_no_aiohttp() -> None:
    code = (
        "import sys, scanners; "
        "sys.exit(any(m.split('.')[0] in ('aiohttp', 'proxy') for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)  # noqa: S603 - our own interpreter, fixed argv
    assert done.returncode == 0


def test_architecture_no_scanner_module_imports_proxy_or_aiohttp() -> None:
    offenders = []
    for path in SCANNERS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in ("aiohttp", "proxy")
            ]
    assert offenders == []


def test_architecture_public_names_match_all() -> None:
    public = {
        n
        for n in dir(scanners)
        if not n.startswith("_") and not isinstance(getattr(scanners, n), type(scanners))
    }
    assert public == set(scanners.__all__)


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def test_architecture_scanners_never_call_a_loader() -> None:
    forbidden = {
        "pickle.load",
        "pickle.loads",
        "pickle.Unpickler",
        "torch.load",
        "joblib.load",
        "np.load",
        "numpy.load",
    }
    hits = [
        f"{path.name}: {_dotted(node.func)}"
        for path in SCANNERS_DIR.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and _dotted(node.func) in forbidden
    ]
    assert hits == []


# ---- the registry of format scanners (issue 13) ------------------------------------------------
def test_architecture_every_detected_format_has_exactly_one_scanner() -> None:
    from scanners.detect import REFINED_FORMATS, FileFormat
    from scanners.registry import SCANNERS

    claimed = [f for scanner in SCANNERS for f in scanner.formats]
    detected = set(FileFormat) - REFINED_FORMATS
    assert sorted(claimed) == sorted(detected)  # each once: no gap, no second claimant


def test_architecture_registered_scanner_names_are_unique() -> None:
    from scanners.registry import SCANNERS

    names = [scanner.name for scanner in SCANNERS]
    assert len(names) == len(set(names))


def test_architecture_scanner_for_every_detected_format_is_the_registered_one() -> None:
    from scanners.detect import REFINED_FORMATS, FileFormat
    from scanners.registry import SCANNERS, scanner_for

    for file_format in set(FileFormat) - REFINED_FORMATS:
        assert file_format in scanner_for(file_format).formats
    for refined in REFINED_FORMATS:
        assert all(refined not in scanner.formats for scanner in SCANNERS)


# the smallest headers each header format accepts: a safetensors `{}`, a GGUF v3 with nothing
_HEADERS = (
    b"\x02\x00\x00\x00\x00\x00\x00\x00{}",
    b"GGUF" + (3).to_bytes(4, "little") + bytes(16),
)


def test_architecture_only_header_formats_size_a_header() -> None:
    from scanners.limits import ScanLimits
    from scanners.registry import SCANNERS, StreamMode

    for scanner in SCANNERS:
        sized = [scanner.header_size(h, len(h) + 64, ScanLimits()) for h in _HEADERS]
        is_header = scanner.stream == StreamMode.HEADER
        assert any(n is not None for n in sized) == is_header, (scanner.name, sized)


def _imports_and_calls(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call):
            found.append(_dotted(node.func))
    return found


def test_architecture_no_scanner_is_dispatched_by_module_name() -> None:
    # the registry names every scanner; importlib.metadata (versions) is fine
    forbidden = ("importlib", "importlib.import_module", "import_module", "__import__")
    hits = [
        f"{path.name}: {name}"
        for path in SCANNERS_DIR.glob("*.py")
        for name in _imports_and_calls(path)
        if name in forbidden or name.endswith(".import_module")
    ]
    assert hits == []


def _format_collections(path: Path) -> list[int]:
    """Lines where a set, tuple, list or dict display, or a call's arguments, name two or more
    FileFormat members."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        elements: list[ast.expr | None] = []
        if isinstance(node, ast.Set | ast.Tuple | ast.List):
            elements = list(node.elts)
        elif isinstance(node, ast.Dict):
            elements = list(node.keys)
        elif isinstance(node, ast.Call):
            elements = list(node.args)
        members = [e for e in elements if isinstance(e, ast.Attribute) and _dotted(e.value) in (
            "FileFormat", "_F")]  # fmt: skip
        if len(members) >= 2 and isinstance(node, ast.expr):
            lines.append(node.lineno)
    return lines


def test_architecture_formats_are_listed_only_by_detection_and_the_registry() -> None:
    # no module kept "in step" with the registry: which scanner takes a format, and how a stream
    # of it is cleared, is said once (scanners/registry.py); detection lists what it names
    allowed = {"registry.py", "detect.py"}
    offenders = {
        path.name: lines
        for path in SCANNERS_DIR.glob("*.py")
        if path.name not in allowed and (lines := _format_collections(path))
    }
    assert offenders == {}


def test_architecture_no_scanner_module_is_over_600_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in SCANNERS_DIR.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 600} == {}


def test_architecture_every_format_scanner_reads_its_limits_from_the_tree() -> None:
    # one limits tree: each per-format bound class is a field of ScanLimits
    import dataclasses

    from scanners import limits

    children = {f.type for f in dataclasses.fields(limits.ScanLimits)}
    bound_classes = {
        name
        for name, value in vars(limits).items()
        if isinstance(value, type) and name.endswith("Limits") and name != "ScanLimits"
    }
    assert bound_classes <= children
