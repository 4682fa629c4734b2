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
