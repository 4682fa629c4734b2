"""The tree keeps its shape: scanners stand alone, the core knows nothing of aiohttp.web."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import proxy
import scanners

PROXY_DIR = Path(proxy.__file__).parent
# The edges (STYLE.md §1): aiohttp.web lives in proxy/hub/, proxy/admin/, the factory and the CLI.
# services.py is the factory's record of what it built (edges included), read only by the edges.
EDGE_MODULES = {"app.py", "cli.py", "services.py"}
CORE_MODULES = sorted(
    [p for p in PROXY_DIR.glob("*.py") if p.name not in EDGE_MODULES]
    + list((PROXY_DIR / "store").glob("*.py"))
    + list((PROXY_DIR / "trust").glob("*.py"))
    + list((PROXY_DIR / "ops").glob("*.py")),
    key=str,
)


def _imported_names(path: Path) -> list[str]:
    """Every module an import statement of `path` names, with `from X import y` as X.y too."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed argv
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )


def test_architecture_importing_scanners_loads_no_aiohttp() -> None:
    done = _run_python(
        "import sys, scanners\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'proxy')))"
    )
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_architecture_core_modules_exist() -> None:
    names = {p.name for p in CORE_MODULES}
    assert {"ingest.py", "lifecycle.py", "upstream.py", "catalog.py", "blobs.py"} <= names
    assert {"gate.py", "pins.py", "blocks.py", "lineage.py", "rules.py", "verdicts.py"} <= names


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_architecture_core_module_does_not_import_aiohttp_web(path: Path) -> None:
    offending = [
        n
        for n in _imported_names(path)
        if n == "aiohttp.web" or n.startswith(("aiohttp.web", "proxy.hub", "proxy.admin"))
    ]
    assert offending == []


def test_architecture_importing_the_core_loads_no_aiohttp_web() -> None:
    modules = ", ".join(
        f"proxy.{p.stem}" if p.parent == PROXY_DIR else f"proxy.{p.parent.name}.{p.stem}"
        for p in CORE_MODULES
        if p.stem not in ("__init__", "__main__")
    )
    done = _run_python(
        f"import sys, {modules}\n"
        "print(sorted(m for m in sys.modules if m.startswith(('aiohttp.web', 'proxy.hub'))))"
    )
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_architecture_scanners_all_equals_its_public_names() -> None:
    public = {
        name
        for name, value in vars(scanners).items()
        if not name.startswith("_") and not isinstance(value, type(scanners))
    }
    assert sorted(scanners.__all__) == sorted(public)


def test_architecture_scanners_all_has_no_duplicates() -> None:
    assert len(scanners.__all__) == len(set(scanners.__all__))


def test_architecture_scanners_import_nothing_from_proxy_or_aiohttp() -> None:
    offenders = [
        f"{path.name}: {name}"
        for path in Path(scanners.__file__).parent.glob("*.py")
        for name in _imported_names(path)
        if name.split(".")[0] in ("aiohttp", "proxy")
    ]
    assert offenders == []


def test_architecture_no_asyncio_wait_for_in_the_server() -> None:
    """Python 3.11's `asyncio.wait_for` returns the awaited result and drops a cancellation that
    lands as that result arrives: a task then outlives its cancel, and a shutdown waits for it
    for ever (a stream worker pool's close did, in CI). `asyncio.timeout` has no such race."""
    offenders = [
        f"{path.relative_to(PROXY_DIR.parent)}:{node.lineno}"
        for path in sorted(PROXY_DIR.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute | ast.alias)
        and (node.attr if isinstance(node, ast.Attribute) else node.name) == "wait_for"
    ]
    assert offenders == []
