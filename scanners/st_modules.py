"""sentence-transformers `modules.json`: the module classes a model is assembled from.

`SentenceTransformer(repo)` reads `modules.json`, a list of `{idx, name, path, type}`, and
imports each `type`. A type under `sentence_transformers.` is imported from the library; any
other is loaded with transformers' dynamic-module machinery from the repo's own `.py` files
(whenever the model folder exists locally, which a downloaded snapshot does, or with
`trust_remote_code`), or imported by name from the installed packages: remote code by another
name, with no `auto_map` in `config.json` to say so. `path` is the module's folder inside the
model; one that leaves it makes the module load configs and weights (`torch.load`) from files
no scan saw.

Allow-list: the library's own module classes (`sentence_transformers.models.*` and the
`models` packages of its sentence-transformer, sparse-encoder and cross-encoder parts). Any
other type is REMOTE_CODE_ST_MODULE (review, the `remote_code` policy rule); a type the pickle
deny-list knows (`os.system`...) is malicious.
"""

from __future__ import annotations

import re

from scanners.allowlist import GlobalVerdict, judge_global
from scanners.archives import unsafe_member_name
from scanners.report import Finding, JsonValue, Outcome, Severity, cut_text

SCANNER = "remote_code"
MODULES_NAME = "modules.json"
MAX_ENTRIES = 256
MAX_LISTED = 50  # entries kept in one finding's details
_OWN_TYPE = re.compile(r"sentence_transformers(?:\.[a-z_][a-z0-9_]*)*\.models(?:\.[A-Za-z0-9_]+)*")
_CLASS = re.compile(r"[A-Z][A-Za-z0-9_]*")


def is_modules_json(name: str) -> bool:
    return name.rsplit("/", 1)[-1] == MODULES_NAME


def scan_modules(data: object, name: str) -> list[Finding]:
    """Check a parsed `modules.json`; never raises."""
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data[:MAX_ENTRIES]):
        return [
            Finding(
                SCANNER,
                "REMOTE_CODE_ST_MODULES_INVALID",
                Severity.MEDIUM,
                Outcome.REVIEW,
                f"{name}: is not a list of {{idx, name, path, type}} entries; the module classes "
                "it names could not be checked",
                {"file": name},
            )
        ]
    denied: dict[str, JsonValue] = {}
    foreign: dict[str, JsonValue] = {}
    escapes: dict[str, JsonValue] = {}
    for entry in data[:MAX_ENTRIES]:
        module_type, path = entry.get("type"), entry.get("path", "")
        shown = cut_text(str(module_type), 200)
        verdict = _judge(module_type)
        label = cut_text(str(entry.get("name", "")), 100)
        if verdict == "denied" and len(denied) < MAX_LISTED:
            denied[shown] = label
        elif verdict == "foreign" and len(foreign) < MAX_LISTED:
            foreign[shown] = label
        why = unsafe_member_name(path) if isinstance(path, str) else "is not a string"
        if why is not None and len(escapes) < MAX_LISTED:
            escapes[cut_text(str(path), 200)] = why
    return _findings(name, denied, foreign, escapes)


def _judge(module_type: object) -> str:
    if not isinstance(module_type, str) or "." not in module_type:
        return "foreign"
    module, _, cls = module_type.rpartition(".")
    if judge_global(module, cls).verdict == GlobalVerdict.DENIED:
        return "denied"
    if _OWN_TYPE.fullmatch(module) and _CLASS.fullmatch(cls):
        return "own"
    return "foreign"


def _findings(
    name: str,
    denied: dict[str, JsonValue],
    foreign: dict[str, JsonValue],
    escapes: dict[str, JsonValue],
) -> list[Finding]:
    out: list[Finding] = []
    if denied:
        out.append(
            Finding(
                SCANNER,
                "ST_MODULE_DENIED",
                Severity.CRITICAL,
                Outcome.MALICIOUS,
                f"{name}: makes sentence-transformers import {', '.join(list(denied)[:5])}, which "
                "runs code or touches the system",
                {"file": name, "types": denied},
            )
        )
    if foreign:
        out.append(
            Finding(
                SCANNER,
                "REMOTE_CODE_ST_MODULE",
                Severity.HIGH,
                Outcome.REVIEW,
                f"{name}: makes sentence-transformers load the module class "
                f"{', '.join(list(foreign)[:5])}, which is not one of its own: code from the repo "
                "(or another package) runs when the model loads",
                {"file": name, "types": foreign},
            )
        )
    if escapes:
        out.append(
            Finding(
                SCANNER,
                "ST_MODULE_PATH_ESCAPE",
                Severity.CRITICAL,
                Outcome.MALICIOUS,
                f"{name}: places a module at {', '.join(list(escapes)[:3])}, outside the model's "
                "folder: its config and weights are read from files no scan saw",
                {"file": name, "paths": escapes},
            )
        )
    return out
