"""TorchScript archives (`torch.jit.save`): the serialized code, parsed with `ast`, never run.

A TorchScript archive carries its model as code (`code/__torch__/**.py`, a Python-syntax subset
that `torch.jit.load` compiles and runs) next to pickles of constants and attributes. Since
torch 2.6 `torch.load(weights_only=True)` still hands a TorchScript zip to `torch.jit.load`, so
that code runs on the "safe" path too (CVE-2025-32434, GHSA-53q9-r3pm-6pq6): the serialized code
can call `torch.save` / `aten::save` to write a file and `torch.from_file` to read one.

The code is checked against an allow-list of what `torch.jit.save` itself writes: operators of
the `torch`, `ops.aten`, `ops.prim` and a few other namespaces, the archive's own `__torch__`
classes and functions, TorchScript's builtins and type names, and locals. A call that reads or
writes files or reaches Python's runtime (`os`, `subprocess`, `builtins.eval`, an `import` of
anything but torch, introspection dunders) is MALICIOUS; a reference outside the allow-list (a
custom-op namespace, an unknown global) needs review. The pickles (`data.pkl`, `constants.pkl`,
`*.debug_pkl`) are walked as any pickle; the `__torch__.*` classes `data.pkl` imports are fine
when the archive's code defines them (the C++ unpickler resolves them there, never in Python).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from scanners.limits import TorchScriptLimits
from scanners.report import Finding, JsonValue, Outcome, Severity, cut_text

SCANNER = "torchscript"
SCANNER_VERSION = "1.0"

_CODE_MEMBER = re.compile(r"^(?:[^/]+/)?code/(__torch__(?:/[A-Za-z0-9_]+)*)\.py$")
_BYTECODE_MEMBER = re.compile(r"^(?:[^/]+/)?bytecode\.pkl$")


DEFAULT_LIMITS = TorchScriptLimits()

# Names TorchScript's serializer and compiler resolve without an import.
_BUILTIN_NAMES = frozenset(
    {
        "torch", "ops", "__torch__", "CONSTANTS", "annotate", "unchecked_cast", "uninitialized",
        "Tensor", "List", "Dict", "Optional", "Tuple", "Final", "NoneType", "Module", "Any",
        "Union", "Future", "Await", "Device", "Stream", "Storage", "Generator", "Enum",
        "NamedTuple", "Interface", "Layout", "MemoryFormat", "ScalarType", "QScheme",
        "int", "float", "bool", "str", "complex", "len", "range", "enumerate", "zip", "min",
        "max", "abs", "isinstance", "getattr", "hasattr", "print", "round", "divmod", "list",
        "tuple", "dict", "sum", "all", "any", "sorted", "reversed", "chr", "ord", "hex", "oct",
        "bin", "hash", "math", "fork", "wait", "inf", "nan", "Exception", "RuntimeError",
        "ValueError", "AssertionError", "NotImplementedError", "TypeError", "IndexError",
        "KeyError", "StopIteration", "ZeroDivisionError", "__annotations__", "__parameters__",
        "__buffers__", "__constants__", "self", "True", "False", "None",
    }
)  # fmt: skip
# `ops.<namespace>` TorchScript code may call: PyTorch's own, torchvision's and torchaudio's.
_OP_NAMESPACES = frozenset(
    {
        "aten", "prim", "quantized", "_quantized", "quantized_decomposed", "_caffe2",
        "torchvision", "torchaudio", "profiler", "_prims", "prims", "cuda", "mkldnn",
        "mkldnn_prepacked", "_nnapi", "xnnpack", "vulkan", "metal", "fbgemm",
    }
)  # fmt: skip
# Operators and methods that read or write files or load code: anywhere in a reference.
_DENIED_ATTRIBUTES = frozenset(
    {
        "save", "load", "from_file", "_load_for_mobile", "load_library", "_save_for_mobile",
        "_save_for_lite_interpreter", "_load_from_bytes", "system", "popen", "spawn", "exec",
        "eval", "compile", "__import__", "__globals__", "__builtins__", "__subclasses__",
        "__class__", "__bases__", "__mro__", "__dict__", "__getattribute__", "__reduce__",
        "__reduce_ex__", "__code__", "__closure__", "import_module",
    }
)  # fmt: skip
_DENIED_ROOTS = frozenset(
    {
        "os", "sys", "subprocess", "builtins", "__builtins__", "importlib", "socket", "shutil",
        "pickle", "marshal", "ctypes", "eval", "exec", "open", "compile", "__import__",
        "globals", "locals", "vars", "input", "breakpoint", "setattr", "delattr", "posix", "nt",
        "pty", "runpy", "io", "pathlib", "tempfile", "urllib", "requests",
    }
)  # fmt: skip
# aten/prim operator names in the mobile bytecode's operator table (`bytecode.pkl`).
_DENIED_OPERATOR_BYTES = (b"aten::save", b"aten::from_file", b"aten::_load_for_mobile")


def code_module(member: str) -> str | None:
    """`archive/code/__torch__/a/b.py` -> `__torch__.a.b` (None: not a code member)."""
    match = _CODE_MEMBER.match(member)
    return match.group(1).replace("/", ".") if match else None


def is_bytecode_member(member: str) -> bool:
    return bool(_BYTECODE_MEMBER.match(member))


@dataclass
class CodeCheck:
    """What the archive's code was found to do, gathered member by member."""

    limits: TorchScriptLimits = DEFAULT_LIMITS
    members: list[str] = field(default_factory=list)
    defined: set[str] = field(default_factory=set)  # __torch__.module.Name defined in code
    denied: dict[str, str] = field(default_factory=dict)  # reference -> "member:line"
    unknown: dict[str, str] = field(default_factory=dict)
    unparseable: dict[str, str] = field(default_factory=dict)  # member -> why
    source_bytes: int = 0
    nodes: int = 0

    def add_source(self, member: str, source: bytes) -> None:
        """Check one `code/**.py` member; never raises."""
        module = code_module(member) or "__torch__"
        self.members.append(member)
        self.source_bytes += len(source)
        if self.source_bytes > self.limits.max_source_bytes:
            self.unparseable[member] = "the archive's code is over the size limit"
            return
        try:
            tree = ast.parse(source.decode("utf-8"), filename=member)
        except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError) as exc:
            self.unparseable[member] = f"does not parse ({type(exc).__name__})"
            return
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                self.defined.add(f"{module}.{node.name}")
        _References(self, member).run(tree)

    def add_bytecode(self, member: str, data: bytes) -> None:
        """Mobile bytecode (`_save_for_lite_interpreter`): its operator table names ops."""
        for name in _DENIED_OPERATOR_BYTES:
            if name in data:
                self._note(self.denied, name.decode(), member)

    def _note(self, where: dict[str, str], reference: str, at: str) -> None:
        if len(where) < self.limits.max_listed:
            where.setdefault(cut_text(reference, 160), cut_text(at, 200))

    def findings(self) -> list[Finding]:
        """The archive's code findings: INFO (clean) when nothing is wrong."""
        out: list[Finding] = []
        if self.denied:
            out.append(_denied(self.denied))
        if self.unknown:
            out.append(_unknown(self.unknown))
        if self.unparseable:
            out.append(_unparseable(self.unparseable))
        if not out:
            out.append(_checked(self.members))
        return out


class _References(ast.NodeVisitor):
    """Collects every reference rooted at a global name, and imports, of one code member."""

    def __init__(self, check: CodeCheck, member: str) -> None:
        self.check = check
        self.member = member
        self.locals: set[str] = set()

    def run(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            self.check.nodes += 1
            if self.check.nodes > self.check.limits.max_nodes:
                self.check.unparseable[self.member] = "the archive's code is over the size limit"
                return
            self._bind(node)
        self.visit(tree)

    def _bind(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            self.locals.add(node.id)
        elif isinstance(node, ast.arg):
            self.locals.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            self.locals.add(node.name)

    def _at(self, node: ast.AST) -> str:
        return f"{self.member}:{getattr(node, 'lineno', 0)}"

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._import(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._import(node.module or ".", node)

    def _import(self, module: str, node: ast.AST) -> None:
        if module.split(".")[0] not in ("__torch__", "torch"):
            self.check._note(self.check.denied, f"import {module}", self._at(node))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _chain(node)
        if chain is None:
            if node.attr in _DENIED_ATTRIBUTES:  # a method on a value: `x.save(...)`
                self.check._note(self.check.denied, f"….{node.attr}", self._at(node))
            self.generic_visit(node)
            return
        self._reference(chain, node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._reference([node.id], node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            self._getattr(node)
        self.generic_visit(node)

    def _getattr(self, node: ast.Call) -> None:
        name = node.args[1] if len(node.args) > 1 else None
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            self.check._note(self.check.unknown, "getattr(…, <computed>)", self._at(node))
        elif name.value in _DENIED_ATTRIBUTES:
            self.check._note(self.check.denied, f"getattr(…, {name.value!r})", self._at(node))

    def _reference(self, chain: list[str], node: ast.AST) -> None:
        dotted = ".".join(chain)
        verdict = _judge(chain, self.locals)
        if verdict == "denied":
            self.check._note(self.check.denied, dotted, self._at(node))
        elif verdict == "unknown":
            self.check._note(self.check.unknown, dotted, self._at(node))


def _chain(node: ast.Attribute) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"] when rooted at a name; None for `f().x`, `x[0].y`..."""
    parts = [node.attr]
    value: ast.expr = node.value
    while isinstance(value, ast.Attribute):
        parts.append(value.attr)
        value = value.value
    if not isinstance(value, ast.Name):
        return None
    parts.append(value.id)
    return parts[::-1]


def _judge(chain: list[str], local_names: set[str]) -> str:
    """ "allowed", "denied" or "unknown" for a reference `chain[0].chain[1]...`."""
    root = chain[0]
    if any(part in _DENIED_ATTRIBUTES for part in chain[1:]):
        return "denied"
    if root in local_names:
        return "allowed"  # a local, a parameter, a class or function of this member (no
        # import can bind a module in TorchScript: a local named `os` is just a value)
    if root in _DENIED_ROOTS:
        return "denied"
    if root not in _BUILTIN_NAMES:
        return "unknown"
    namespace = _op_namespace(chain)
    if namespace is not None and namespace not in _OP_NAMESPACES:
        return "unknown"  # a custom-op library's namespace (native code loaded by the user)
    if chain[:2] == ["torch", "classes"] and len(chain) > 2:
        return "unknown"  # a custom class bound from C++
    return "allowed"


def _op_namespace(chain: list[str]) -> str | None:
    if chain[0] == "ops" and len(chain) > 1:
        return chain[1]
    if chain[:2] == ["torch", "ops"] and len(chain) > 2:
        return chain[2]
    return None


# C++ classes torch itself binds (`torch.classes.<namespace>`), which its pickles name.
_TORCHBIND_NAMESPACES = frozenset({"quantized", "xnnpack", "_nnapi", "mkldnn", "onednn", "rnn"})


def torch_class_allowed(dotted: str, check: CodeCheck) -> bool:
    """A `__torch__.*` global a TorchScript pickle imports: defined by the archive's code, or a
    class torch binds from C++ itself (`__torch__.torch.classes.quantized.*`)."""
    if dotted in check.defined:
        return dotted.startswith("__torch__.")
    parts = dotted.split(".")
    return (
        parts[:3] == ["__torch__", "torch", "classes"]
        and len(parts) == 5
        and (parts[3] in _TORCHBIND_NAMESPACES)
    )


def _listed(where: dict[str, str]) -> dict[str, JsonValue]:
    return dict[str, JsonValue](where)


def _denied(where: dict[str, str]) -> Finding:
    shown = ", ".join(list(where)[:5])
    return Finding(
        SCANNER,
        "TORCHSCRIPT_CALL_DENIED",
        Severity.CRITICAL,
        Outcome.MALICIOUS,
        f"TorchScript code reads or writes files or reaches Python's runtime ({shown}); it runs "
        "when the archive is loaded, with torch.load(weights_only=True) too (CVE-2025-32434)",
        {"references": _listed(where)},
    )


def _unknown(where: dict[str, str]) -> Finding:
    shown = ", ".join(list(where)[:5])
    return Finding(
        SCANNER,
        "TORCHSCRIPT_CALL_UNKNOWN",
        Severity.HIGH,
        Outcome.REVIEW,
        f"TorchScript code refers to {shown}, outside what torch.jit.save writes (torch and "
        "aten/prim operators, the archive's own classes): a custom operator library or "
        "hand-written code",
        {"references": _listed(where)},
    )


def _unparseable(where: dict[str, str]) -> Finding:
    shown = ", ".join(f"{m[:80]} {why}" for m, why in list(where.items())[:3])
    return Finding(
        SCANNER,
        "TORCHSCRIPT_CODE_UNPARSEABLE",
        Severity.HIGH,
        Outcome.ERROR,
        f"TorchScript code could not be checked ({shown}); it is held",
        {"members": _listed(where)},
    )


def _checked(members: list[str]) -> Finding:
    return Finding(
        SCANNER,
        "TORCHSCRIPT_CODE",
        Severity.INFO,
        Outcome.CLEAN,
        f"TorchScript archive: its code ({len(members)} files) calls only torch operators and "
        "its own classes, and runs when the archive is loaded",
        {"members": [m[:200] for m in members[:50]]},
    )
