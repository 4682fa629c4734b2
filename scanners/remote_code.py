"""Remote code: Python files a repo ships and configs that make `trust_remote_code` import them.

With `trust_remote_code=True`, transformers imports the modules that `config.json` /
`tokenizer_config.json` name in `auto_map` (or `custom_pipelines`), so any `*.py` in a repo is code
that runs on the user's machine. Every such file is a REVIEW finding naming it; what it calls is
graded by parsing it with `ast` (never importing or executing it): process spawning, dynamic
execution, native code, network and unsafe deserialisation raise the severity, and `exec`/`eval`
of decoded or decompressed data (the usual obfuscated dropper) is MALICIOUS.

Chat templates in configs (`chat_template`, a string or a list of `{name, template}`) go to
`scanners.templates`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from scanners.limits import RemoteCodeLimits, TemplateLimits
from scanners.report import Finding, JsonValue, Outcome, Severity, cut_text
from scanners.templates import DEFAULT_LIMITS as TEMPLATE_LIMITS
from scanners.templates import scan_template

SCANNER = "remote_code"


DEFAULT_LIMITS = RemoteCodeLimits()

# Fully-qualified callables and the category they fall in. A name ending in "." matches the
# whole module.
_CATEGORIES: dict[str, tuple[str, ...]] = {
    "process": (
        "os.system",
        "os.popen",
        "os.exec",
        "os.spawn",
        "os.posix_spawn",
        "os.fork",
        "os.startfile",
        "subprocess.",
        "pty.spawn",
        "commands.",
        "multiprocessing.Process",
        "asyncio.create_subprocess_exec",
        "asyncio.create_subprocess_shell",
    ),
    "dynamic_exec": (
        "builtins.eval",
        "builtins.exec",
        "builtins.compile",
        "builtins.__import__",
        "importlib.import_module",
        "importlib.__import__",
        "importlib.util.spec_from_file_location",
        "importlib.machinery.",
        "runpy.",
        "code.InteractiveInterpreter",
        "types.FunctionType",
        "types.CodeType",
    ),
    "native_code": ("ctypes.", "cffi.", "_ctypes."),
    "network": (
        "socket.",
        "urllib.request.",
        "urllib.urlopen",
        "urllib2.",
        "http.client.",
        "requests.",
        "httpx.",
        "urllib3.",
        "aiohttp.",
        "ftplib.",
        "smtplib.",
        "telnetlib.",
        "paramiko.",
    ),
    "deserialization": (
        "pickle.load",
        "pickle.loads",
        "pickle.Unpickler",
        "cPickle.",
        "_pickle.",
        "dill.",
        "marshal.load",
        "marshal.loads",
        "shelve.open",
        "joblib.load",
        "yaml.unsafe_load",
        "yaml.full_load",
    ),
}
_SEVERITY = {
    "process": Severity.HIGH,
    "dynamic_exec": Severity.HIGH,
    "native_code": Severity.HIGH,
    "network": Severity.MEDIUM,
    "deserialization": Severity.MEDIUM,
}
_BUILTINS = frozenset(
    {"eval", "exec", "compile", "__import__", "getattr", "globals", "vars", "chr", "bytes"}
    | {"bytearray"}
)
# Calls whose result, fed to exec/eval, means the executed code was hidden in data.
_DECODERS = (
    "base64.",
    "binascii.",
    "codecs.decode",
    "zlib.decompress",
    "gzip.decompress",
    "bz2.decompress",
    "lzma.decompress",
    "marshal.loads",
    "bytes.fromhex",
    "builtins.bytes.fromhex",
    "builtins.chr",
    "builtins.bytes",
    "builtins.bytearray",
)
_EXECUTORS = frozenset({"builtins.eval", "builtins.exec", "builtins.compile"})


def _finding(
    code: str, outcome: Outcome, severity: Severity, message: str, **details: JsonValue
) -> Finding:
    return Finding(SCANNER, code, severity, outcome, message, dict(details))


def _cut(text: str, limit: int = 160) -> str:
    return cut_text(text, limit)


def scan_python(
    fh: BinaryIO, size: int, name: str, limits: RemoteCodeLimits = DEFAULT_LIMITS
) -> list[Finding]:
    """Report a Python file shipped in a repo and grade what it calls. Never raises."""
    fh.seek(0)
    source = fh.read(limits.max_source_bytes + 1)
    calls: list[_Call] = []
    problem: Finding | None = None
    if size > limits.max_source_bytes or len(source) > limits.max_source_bytes:
        problem = _finding(
            "REMOTE_CODE_UNPARSEABLE",
            Outcome.ERROR,
            Severity.HIGH,
            f"{name}: Python file of {size} bytes is too large to inspect",
            file=name,
        )
    else:
        try:
            calls = _CallCollector.collect(ast.parse(source, filename=name))
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            problem = _finding(
                "REMOTE_CODE_UNPARSEABLE",
                Outcome.REVIEW,
                Severity.HIGH,
                f"{name}: Python file does not parse ({type(exc).__name__}); it cannot be graded",
                file=name,
            )
    categories = sorted({c.category for c in calls if c.category})
    findings = [
        _finding(
            "REMOTE_CODE_PYTHON",
            Outcome.REVIEW,
            Severity.HIGH if categories else Severity.MEDIUM,
            f"{name}: Python code in the repo runs with trust_remote_code"
            + (f"; it uses {', '.join(categories)}" if categories else ""),
            file=name,
            categories=list(categories),
        )
    ]
    if problem is not None:
        findings.append(problem)
    findings.extend(_call_findings(calls, name))
    return findings[: limits.max_findings]


def _call_findings(calls: list[_Call], name: str) -> Iterator[Finding]:
    for call in calls:
        if call.obfuscated:
            yield _finding(
                "REMOTE_CODE_OBFUSCATED_EXEC",
                Outcome.MALICIOUS,
                Severity.CRITICAL,
                f"{name}:{call.line}: {call.target}() runs code decoded from data "
                f"({', '.join(call.decoders)}), the shape of a hidden payload",
                file=name,
                line=call.line,
                call=call.target,
                decoders=list(call.decoders),
            )
        elif call.category:
            yield _finding(
                "REMOTE_CODE_DANGEROUS_CALL",
                Outcome.REVIEW,
                _SEVERITY[call.category],
                f"{name}:{call.line}: calls {call.target} ({call.category.replace('_', ' ')})",
                file=name,
                line=call.line,
                call=call.target,
                category=call.category,
            )


@dataclass(frozen=True, slots=True)
class _Call:
    target: str
    line: int
    category: str | None
    obfuscated: bool = False
    decoders: tuple[str, ...] = ()


# Patterns that name a family of functions (os.execv, os.execve, os.spawnlp…).
_FAMILIES = frozenset({"os.exec", "os.spawn", "os.posix_spawn"})


def _category(target: str) -> str | None:
    for category, names in _CATEGORIES.items():
        for pattern in names:
            is_prefix = pattern.endswith(".") or pattern in _FAMILIES
            if target == pattern or (is_prefix and target.startswith(pattern)):
                return category
    return None


@dataclass
class _CallCollector(ast.NodeVisitor):
    """Resolves import aliases and collects graded calls (and dangerous references)."""

    aliases: dict[str, str] = field(default_factory=dict)
    calls: list[_Call] = field(default_factory=list)

    @classmethod
    def collect(cls, tree: ast.AST) -> list[_Call]:
        collector = cls()
        # aliases first, wherever the import sits (functions often import lazily)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                collector._alias(node)
        collector.visit(tree)
        return collector.calls

    def _alias(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    self.aliases[top] = top
            return
        module = node.module or ""
        for alias in node.names:
            if alias.name != "*":
                self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}"

    def resolve(self, node: ast.expr) -> str | None:
        """The dotted name an expression refers to, through import aliases."""
        if isinstance(node, ast.Name):
            if node.id == "__builtins__":
                return "builtins"
            if node.id in self.aliases:
                return self.aliases[node.id]
            return f"builtins.{node.id}" if node.id in _BUILTINS else node.id
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base is not None else None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            # __builtins__["eval"], globals()["__builtins__"]…
            base = self.resolve(node.value)
            key = node.slice.value
            if base is not None and isinstance(key, str):
                if base in {"builtins.globals()", "builtins.vars()"}:
                    return "builtins" if key == "__builtins__" else key
                if base == "builtins":
                    return f"builtins.{key}"
                return f"{base}.{key}"
        if isinstance(node, ast.Call):
            inner = self.resolve(node.func)
            if inner in {"builtins.globals", "builtins.vars"}:
                return f"{inner}()"
            if inner == "builtins.getattr" and len(node.args) >= 2:
                return self._getattr_target(node)
        return None

    def _getattr_target(self, node: ast.Call) -> str | None:
        base = self.resolve(node.args[0])
        attr = node.args[1]
        if base is None:
            return None
        if isinstance(attr, ast.Constant) and isinstance(attr.value, str):
            return f"{base}.{attr.value}"
        return f"{base}.<computed>"

    def visit_Call(self, node: ast.Call) -> None:
        target = self.resolve(node.func)
        if target is not None:
            self._record(node, target)
        self.generic_visit(node)

    def _record(self, node: ast.Call, target: str) -> None:
        if target.endswith(".<computed>") and target.split(".")[0] in {
            "os",
            "subprocess",
            "builtins",
            "__builtins__",
            "importlib",
            "sys",
        }:
            self.calls.append(_Call(target, node.lineno, "dynamic_exec"))
            return
        category = _category(target)
        if target in _EXECUTORS:
            decoders = self._decoders(node)
            if decoders:
                self.calls.append(_Call(target, node.lineno, category, True, decoders))
                return
        if category is not None:
            self.calls.append(_Call(target, node.lineno, category))

    def _decoders(self, node: ast.Call) -> tuple[str, ...]:
        found: list[str] = []
        for arg in (*node.args, *(k.value for k in node.keywords)):
            for inner in ast.walk(arg):
                if isinstance(inner, ast.Call):
                    name = self.resolve(inner.func) or ""
                    if any(
                        name == d or (d.endswith(".") and name.startswith(d)) for d in _DECODERS
                    ):
                        found.append(name)
                    elif isinstance(inner.func, ast.Attribute) and inner.func.attr in {
                        "decode",
                        "fromhex",
                        "decompress",
                        "b64decode",
                    }:
                        found.append(f"….{inner.func.attr}")
        return tuple(dict.fromkeys(found))[:8]


# ---- configs ---------------------------------------------------------------------------------


def scan_config(
    data: object,
    name: str,
    limits: RemoteCodeLimits = DEFAULT_LIMITS,
    templates: TemplateLimits = TEMPLATE_LIMITS,
) -> list[Finding]:
    """Inspect a parsed config.json or tokenizer_config.json; never raises.

    auto_map and custom_pipelines name the modules trust_remote_code imports; chat templates go to
    `scanners.templates`."""
    if not isinstance(data, dict):
        return []
    findings: list[Finding] = []
    if "auto_map" in data:
        findings.append(_auto_map_finding(data["auto_map"], name, limits))
    if "custom_pipelines" in data:
        findings.append(_custom_pipelines_finding(data["custom_pipelines"], name, limits))
    if "chat_template" in data:
        findings.extend(_template_findings(data["chat_template"], name, limits, templates))
    return findings[: limits.max_findings]


def _references(value: object, limit: int) -> list[str]:
    """Class references ("module.Class" or "repo--module.Class") found in an auto_map value."""
    refs: list[str] = []
    stack = [value]
    while stack and len(refs) < limit:
        item = stack.pop()
        if isinstance(item, str):
            refs.append(item)
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item[:limit]))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())[:limit]))
    return refs


def _module_files(refs: list[str]) -> tuple[list[str], list[str]]:
    """(local module files, references into other repos) for class references."""
    files: list[str] = []
    other_repos: list[str] = []
    for ref in refs:
        repo, _, local = ref.rpartition("--")
        module = local.rpartition(".")[0] or local
        path = module.replace(".", "/") + ".py"
        if repo:
            other_repos.append(f"{repo}:{path}")
        elif path not in files:
            files.append(path)
    return files, other_repos


def _auto_map_finding(auto_map: object, name: str, limits: RemoteCodeLimits) -> Finding:
    refs = _references(auto_map, limits.max_auto_map_entries)
    files, other_repos = _module_files(refs)
    named = ", ".join(_cut(f, 80) for f in (*files, *other_repos)[:20]) or "no readable module"
    return _finding(
        "REMOTE_CODE_AUTO_MAP",
        Outcome.REVIEW,
        Severity.HIGH if other_repos else Severity.MEDIUM,
        f"{name}: auto_map makes trust_remote_code import {named}"
        + (" (code from other repos)" if other_repos else ""),
        file=name,
        modules=[_cut(f, 200) for f in files[:50]],
        other_repos=[_cut(r, 200) for r in other_repos[:50]],
        classes=[_cut(r, 200) for r in refs[:50]],
    )


def _custom_pipelines_finding(pipelines: object, name: str, limits: RemoteCodeLimits) -> Finding:
    impls: list[object] = []
    if isinstance(pipelines, dict):
        specs = list(pipelines.values())[: limits.max_auto_map_entries]
        impls = [spec.get("impl") for spec in specs if isinstance(spec, dict)]
    files, other_repos = _module_files(_references(impls, limits.max_auto_map_entries))
    named = ", ".join(_cut(f, 80) for f in (*files, *other_repos)[:20]) or "no readable module"
    return _finding(
        "REMOTE_CODE_CUSTOM_PIPELINE",
        Outcome.REVIEW,
        Severity.MEDIUM,
        f"{name}: custom_pipelines makes trust_remote_code import {named}",
        file=name,
        modules=[_cut(f, 200) for f in files[:50]],
        other_repos=[_cut(r, 200) for r in other_repos[:50]],
    )


def _template_findings(
    value: object, name: str, limits: RemoteCodeLimits, templates: TemplateLimits
) -> list[Finding]:
    if isinstance(value, str):
        return scan_template(value, f"{name}: chat_template", templates)
    if isinstance(value, list) and len(value) <= limits.max_templates:
        findings: list[Finding] = []
        for index, entry in enumerate(value):
            template = entry.get("template") if isinstance(entry, dict) else None
            label = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(template, str):
                return [_bad_template(name, f"entry {index} has no string template")]
            where = f"{name}: chat_template[{_cut(str(label), 60) if label else index}]"
            findings.extend(scan_template(template, where, templates))
        return findings
    return [_bad_template(name, f"chat_template is a {type(value).__name__}")]


def _bad_template(name: str, why: str) -> Finding:
    return _finding(
        "REMOTE_CODE_TEMPLATE_INVALID",
        Outcome.REVIEW,
        Severity.MEDIUM,
        f"{name}: {why}; expected a string or a list of {{name, template}}",
        file=name,
    )
