"""skops files (`.skops`): a zip whose `schema.json` says which types and functions to rebuild.

`skops.io.load` walks `schema.json`, a tree of nodes, each with a `__loader__` (how to rebuild
it), a `__module__` and a `__class__` (what to import). Loaders import and call what a node
names: `ObjectNode` builds an instance, `ReduceNode`/`LossNode`/`TreeNode` and
`ConstructorFromReduceNode` call a constructor with arguments, `TypeNode` and `FunctionNode`
hand back a type or function that estimators later call (`FunctionTransformer(func=...)`, or a
dict's key types, called on each key), `MethodNode` binds a method by name, `OperatorFuncNode`
builds an `operator` getter. skops refuses types outside its trusted list unless the user passes
them in `trusted=`, which users are told to fill from `get_untrusted_types()`: the file decides.

Here the file decides nothing: every node's type is checked against our own allow-list, learnt
from skops' defaults (`_trusted_types.py` and each node's `_get_trusted`): builtin primitives
and containers, scikit-learn estimators and internals, numpy arrays, dtypes, scalar types and
ufuncs, `scipy.sparse` matrices, `scipy.special` functions, numpy random states. A type the
pickle deny-list knows (`os.system`, `builtins.eval`...) is malicious, and so are the shapes of
the published bypasses: an `OperatorFuncNode` whose module is not `operator` (its audit named
one function, its load called another: CVE-2025-54412), a `MethodNode` whose type differs from
the object it binds to (CVE-2025-54413), an operator or method reaching a dunder. Anything else
outside the allow-list needs review.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from scanners.allowlist import GlobalVerdict, judge_global
from scanners.limits import SkopsLimits
from scanners.report import Finding, JsonValue, Outcome, Severity, cut_text

SCANNER = "skops"
SCANNER_VERSION = "1.0"
SCHEMA_MEMBER = "schema.json"


DEFAULT_LIMITS = SkopsLimits()

# Loaders whose node type is fixed: the only (module, class) skops' own dump writes for them.
_FIXED_TYPES: dict[str, frozenset[tuple[str, str]]] = {
    "DictNode": frozenset({("builtins", "dict"), ("collections", "OrderedDict")}),
    "DefaultDictNode": frozenset({("collections", "defaultdict")}),
    "ListNode": frozenset({("builtins", "list")}),
    "SetNode": frozenset({("builtins", "set")}),
    "TupleNode": frozenset({("builtins", "tuple")}),
    "SliceNode": frozenset({("builtins", "slice")}),
    "BytesNode": frozenset({("builtins", "bytes")}),
    "BytearrayNode": frozenset({("builtins", "bytearray")}),
    "PartialNode": frozenset({("functools", "partial")}),
    "MaskedArrayNode": frozenset({("numpy.ma.core", "MaskedArray"), ("numpy.ma", "MaskedArray")}),
    "RandomStateNode": frozenset({("numpy.random.mtrand", "RandomState")}),
    "RandomGeneratorNode": frozenset({("numpy.random._generator", "Generator")}),
    "DTypeNode": frozenset({("numpy", "dtype")}),
}
# Loaders whose node names a class that loading instantiates or calls.
_CLASS_LOADERS = frozenset(
    {
        "ObjectNode", "ReduceNode", "TreeNode", "LossNode", "ConstructorFromReduceNode",
        "QuantileForestNode", "_DictWithDeprecatedKeysNode", "SparseMatrixNode", "NdArrayNode",
    }
)  # fmt: skip
_OTHER_LOADERS = frozenset(
    {"JsonNode", "CachedNode", "FunctionNode", "TypeNode", "MethodNode", "OperatorFuncNode"}
)
KNOWN_LOADERS = frozenset(_FIXED_TYPES) | _CLASS_LOADERS | _OTHER_LOADERS
_PRIMITIVE_TYPES = frozenset(
    {"int", "float", "str", "bool", "list", "set", "tuple", "dict", "map", "complex", "bytes"}
)
_CLASS = re.compile(r"_?[A-Z][A-Za-z0-9_]*")
_FUNCTION = re.compile(r"[a-z_][a-z0-9_]*")
_SKLEARN_EXCLUDED = frozenset({"externals", "_testing", "tests", "datasets"})
_NUMPY_SCALAR = re.compile(
    r"(?:u?int(?:8|16|32|64)?|u?int_|float(?:16|32|64|96|128)?|complex(?:64|128|192|256)?|"
    r"bool_?|str_|bytes_|object_|void|datetime64|timedelta64|u?byte|u?short|u?intc|u?intp|"
    r"u?longlong|u?long|half|single|double|longdouble|c?longdouble|csingle|cdouble|clongdouble|"
    r"generic|number|integer|floating|complexfloating|inexact|signedinteger|unsignedinteger)"
)


def _finding(
    code: str, outcome: Outcome, severity: Severity, message: str, **details: JsonValue
) -> Finding:
    return Finding(SCANNER, code, severity, outcome, message, dict(details))


def _cut(text: str, limit: int = 160) -> str:
    return cut_text(text, limit)


def is_skops(names: list[str], name: str) -> bool:
    """A zip skops wrote: `schema.json` at its top (or a `.skops` name, which must have one)."""
    return SCHEMA_MEMBER in names or name.lower().endswith(".skops")


def scan_schema(
    raw: bytes | None, name: str, limits: SkopsLimits = DEFAULT_LIMITS
) -> list[Finding]:
    """Check a skops file's `schema.json` (None: the zip has none). Never raises."""
    if raw is None:
        return [_invalid(name, "has no schema.json")]
    if len(raw) > limits.max_schema_bytes:
        return [_invalid(name, f"has a schema.json over {limits.max_schema_bytes} bytes")]
    try:
        schema = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return [_invalid(name, f"has a schema.json that is not JSON ({type(exc).__name__})")]
    if not isinstance(schema, dict) or not isinstance(schema.get("__loader__"), str):
        return [_invalid(name, "has a schema.json without a root node")]
    walk = _SchemaWalk(limits)
    problem = walk.run(schema)
    if problem is not None:
        return [
            _finding(
                "SKOPS_SCHEMA_RESOURCE",
                Outcome.ERROR,
                Severity.HIGH,
                f"{name}: schema.json {problem}: not checked",
                file=name,
            )
        ]
    return walk.findings(name)


def _invalid(name: str, why: str) -> Finding:
    return _finding(
        "SKOPS_SCHEMA_INVALID",
        Outcome.ERROR,
        Severity.HIGH,
        f"{name}: the skops file {why}; its types could not be checked",
        file=name,
    )


@dataclass
class _SchemaWalk:
    limits: SkopsLimits
    denied: dict[str, str] = field(default_factory=dict)  # type -> why
    untrusted: dict[str, str] = field(default_factory=dict)  # type -> loader

    def run(self, schema: dict[str, object]) -> str | None:
        """Walk every node; a problem that makes the schema a resource attack, or None."""
        walked = 0
        stack: list[tuple[object, int]] = [(schema, 0)]
        while stack:
            value, depth = stack.pop()
            walked += 1
            if walked > self.limits.max_nodes:
                return f"has more than {self.limits.max_nodes} values"
            if depth > self.limits.max_depth:
                return f"nests deeper than {self.limits.max_depth}"
            if isinstance(value, dict):
                if isinstance(value.get("__loader__"), str):
                    self._node(value)
                stack.extend((v, depth + 1) for v in value.values())
            elif isinstance(value, list):
                stack.extend((v, depth + 1) for v in value)
        return None

    def _note(self, where: dict[str, str], key: str, why: str) -> None:
        if len(where) < self.limits.max_listed:
            where.setdefault(_cut(key, 200), _cut(why, 200))

    def _node(self, node: dict[str, object]) -> None:
        loader = str(node["__loader__"])
        module, cls = node.get("__module__"), node.get("__class__")
        if loader in ("JsonNode", "CachedNode"):
            return  # json.loads of a string / a reference to a node checked where it is
        if loader not in KNOWN_LOADERS:
            self._note(self.untrusted, f"loader {loader}", "a loader skops does not have")
            return
        if not isinstance(module, str) or not isinstance(cls, str):
            self._note(self.denied, f"{loader} without a type", "a node must name its type")
            return
        for verdict, key, why in _judge_node(loader, module, cls, node):
            self._note(self.denied if verdict == "denied" else self.untrusted, key, why)

    def findings(self, name: str) -> list[Finding]:
        out: list[Finding] = []
        if self.denied:
            out.append(
                _finding(
                    "SKOPS_TYPE_DENIED",
                    Outcome.MALICIOUS,
                    Severity.CRITICAL,
                    f"{name}: loading imports or calls {', '.join(list(self.denied)[:5])}, which "
                    "runs code or touches the system, or takes the shape of a published skops "
                    "bypass (CVE-2025-54412, CVE-2025-54413)",
                    types=dict[str, JsonValue](self.denied),
                )
            )
        if self.untrusted:
            out.append(
                _finding(
                    "SKOPS_TYPE_UNTRUSTED",
                    Outcome.REVIEW,
                    Severity.HIGH,
                    f"{name}: loading imports {', '.join(list(self.untrusted)[:5])}, outside "
                    "scikit-learn, numpy and scipy's own types (what skops trusts by default)",
                    types=dict[str, JsonValue](self.untrusted),
                )
            )
        return out


def _judge_node(
    loader: str, module: str, cls: str, node: dict[str, object]
) -> Iterator[tuple[str, str, str]]:
    """(verdict "denied" or "untrusted", the type, why) for what a node makes skops import."""
    dotted = f"{module}.{cls}"
    if loader == "OperatorFuncNode":
        yield from _operator_node(module, cls, node)
        return
    if loader in _FIXED_TYPES:
        if (module, cls) not in _FIXED_TYPES[loader]:
            why = _denial(module, cls) or "it always rebuilds its own type, not this one"
            yield "denied", dotted, f"{loader}: {why}"
        return
    denial = _denial(module, cls)
    if denial is not None:
        yield "denied", dotted, f"{loader}: {denial}"
    elif loader == "MethodNode":
        yield from _method_node(module, cls, node)
    elif loader == "FunctionNode":
        if not _is_trusted_function(module, cls):
            yield "untrusted", dotted, "a function estimators call"
    elif loader == "TypeNode":
        if not (_is_trusted_type(module, cls) or _is_trusted_class(module, cls)):
            yield "untrusted", dotted, "a type estimators call"
    elif not _is_trusted_class(module, cls):
        yield "untrusted", dotted, f"{loader}: a class loading instantiates"


def _denial(module: str, cls: str) -> str | None:
    if not module or not all(p.isidentifier() for p in module.split(".")):
        return "the module is not a Python module name"
    judgement = judge_global(module, cls)
    return judgement.reason if judgement.verdict == GlobalVerdict.DENIED else None


def _operator_node(
    module: str, cls: str, node: dict[str, object]
) -> Iterator[tuple[str, str, str]]:
    dotted = f"{module}.{cls}"
    if module != "operator":
        yield "denied", dotted, "OperatorFuncNode outside the operator module (CVE-2025-54412)"
    elif cls not in ("itemgetter", "attrgetter"):
        yield "denied", dotted, "an operator function that calls what it is given"
    elif cls == "attrgetter":
        names = _strings(node.get("attrs"))
        if any(n.startswith("_") or not n.replace(".", "").isidentifier() for n in names):
            yield "denied", f"{dotted}({', '.join(names[:3])})", "a getter of private attributes"
        else:
            yield "untrusted", f"{dotted}({', '.join(names[:3])})", "an attribute getter"


def _method_node(module: str, cls: str, node: dict[str, object]) -> Iterator[tuple[str, str, str]]:
    content = node.get("content")
    owner = content.get("obj") if isinstance(content, dict) else None
    func = content.get("func") if isinstance(content, dict) else None
    owner_type = (
        (owner.get("__module__"), owner.get("__class__")) if isinstance(owner, dict) else None
    )
    dotted = f"{module}.{cls}.{func}"
    if owner_type != (module, cls):
        yield "denied", dotted, "MethodNode bound to another type than it names (CVE-2025-54413)"
    elif not isinstance(func, str) or not func.isidentifier() or func.startswith("_"):
        yield "denied", dotted, "a method that is not a public name"
    else:
        yield "untrusted", dotted, "a bound method estimators call"


def _strings(value: object) -> list[str]:
    """The strings inside a node's state (an attrgetter's attribute names, say)."""
    found: list[str] = []
    stack = [value]
    while stack and len(found) < 32:
        item = stack.pop()
        if isinstance(item, dict):
            content = item.get("content")
            if item.get("__loader__") == "JsonNode" and isinstance(content, str):
                try:
                    loaded = json.loads(content)
                except ValueError:
                    loaded = content
                found.append(str(loaded))
            else:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _is_trusted_class(module: str, cls: str) -> bool:
    """scikit-learn's classes (estimators, losses, trees, binners) and the numpy and scipy types
    skops rebuilds arrays and sparse matrices as."""
    parts = module.split(".")
    if parts[0] == "sklearn":
        return not _SKLEARN_EXCLUDED & set(parts) and bool(_CLASS.fullmatch(cls))
    if module == "numpy" and (cls in ("ndarray", "matrix") or _NUMPY_SCALAR.fullmatch(cls)):
        return True
    if parts[:2] == ["scipy", "sparse"]:
        return bool(re.fullmatch(r"[a-z]{3}_(?:matrix|array)|spmatrix", cls))
    return judge_global(module, cls).verdict == GlobalVerdict.ALLOWED


def _is_trusted_type(module: str, cls: str) -> bool:
    if module == "builtins":
        return cls in _PRIMITIVE_TYPES
    return module == "numpy" and bool(_NUMPY_SCALAR.fullmatch(cls))


def _is_trusted_function(module: str, name: str) -> bool:
    """numpy's ufuncs (looked up in the installed numpy, as skops does) and scipy.special's
    functions, the defaults skops trusts for FunctionNode."""
    if module in ("numpy", "numpy.core.umath", "numpy._core.umath"):
        import numpy  # late: 50 ms at import, for the few skops files that name a function

        return isinstance(getattr(numpy, name, None), numpy.ufunc)
    return module == "scipy.special" and bool(_FUNCTION.fullmatch(name))
