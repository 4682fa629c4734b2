"""Text formats as format scanners: JSON configs, Python, Jinja templates, YAML.

`config.json` / `tokenizer_config.json` name the code `trust_remote_code` imports and carry chat
templates (`scanners.remote_code`); sentence-transformers' `modules.json` names module classes
(`scanners.st_modules`); `.py` files are graded by what they call; Jinja templates are checked and
rendered in a sandbox (`scanners.templates`); YAML is checked as a NeMo/Hydra config.
"""

from __future__ import annotations

import json
from typing import BinaryIO

from scanners import nemo, remote_code, st_modules, templates
from scanners.detect import FileFormat
from scanners.report import Finding, Outcome, Severity
from scanners.scan_context import ScanContext, Scanned

SCANNER = "dispatch"  # CONFIG_UNREADABLE has always been the dispatch's finding
_REMOTE_CONFIG_NAMES = ("config.json", "tokenizer_config.json", st_modules.MODULES_NAME)


def scan_json(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    """A JSON file: the configs that make loaders import code are checked, others are data."""
    base = name.rsplit("/", 1)[-1]
    if size > ctx.limits.max_text_bytes:
        return None, _unchecked_config(base, "too large to parse")
    fh.seek(0)
    try:
        data = json.loads(fh.read(size).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, _unchecked_config(base, "not valid JSON")
    if st_modules.is_modules_json(name):
        ctx.ran(st_modules.SCANNER, "1")
        return None, st_modules.scan_modules(data, name)
    ctx.ran(remote_code.SCANNER, "1")
    return None, remote_code.scan_config(data, name, ctx.limits.remote_code, ctx.limits.templates)


def _unchecked_config(base: str, why: str) -> list[Finding]:
    if base not in _REMOTE_CONFIG_NAMES:
        return []
    return [
        Finding(
            SCANNER,
            "CONFIG_UNREADABLE",
            Severity.MEDIUM,
            Outcome.REVIEW,
            f"{base} is {why}: the code it makes loaders import (auto_map, module classes) "
            "and its chat template could not be checked",
        )
    ]


def scan_text(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> Scanned:
    """Text, told apart by its name (content cannot): Python, Jinja, YAML, a broken config."""
    lowered = name.lower()
    if lowered.endswith(".py"):
        ctx.ran(remote_code.SCANNER, "1")
        fh.seek(0)
        found = remote_code.scan_python(fh, size, name, ctx.limits.remote_code)
        return FileFormat.PYTHON, list(found)
    if lowered.endswith(".jinja") or lowered.endswith(".j2"):
        return FileFormat.JINJA, _scan_jinja(fh, size, name, ctx)
    if lowered.endswith((".yaml", ".yml")):
        ctx.ran(nemo.SCANNER, nemo.SCANNER_VERSION)
        fh.seek(0)
        limits = ctx.limits.nemo
        return None, nemo.scan_yaml(fh.read(min(size, limits.max_config_bytes + 1)), name, limits)
    if lowered.rsplit("/", 1)[-1] in _REMOTE_CONFIG_NAMES:
        return None, _unchecked_config(lowered.rsplit("/", 1)[-1], "not valid JSON")
    return None, []


def _scan_jinja(fh: BinaryIO, size: int, name: str, ctx: ScanContext) -> list[Finding]:
    ctx.ran(templates.SCANNER, "1")
    fh.seek(0)
    source = fh.read(min(size, ctx.limits.max_text_bytes)).decode("utf-8", "replace")
    return templates.scan_template(source, name, ctx.limits.templates)
