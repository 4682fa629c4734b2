"""A chat template's static checks: the Jinja AST walked for sandbox escapes, names folded.

Attribute access, subscripts, the `attr` filter and `attribute=` arguments whose name is private
or a known escape hop (`__globals__`, `mro`, `gi_frame`, `popen`…), including names built at
render time from pieces (`"__cla" ~ "ss__"`, `"__ssalc__"|reverse`, `"%c%c"|format(95, 95)`,
`[...]|join`, `.replace`, `.format`), which are folded statically.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from jinja2 import nodes

from scanners.limits import TemplateLimits
from scanners.report import Finding, JsonValue, Outcome, Severity
from scanners.template_findings import cut, finding

# Attribute names that reach interpreter internals from any object (Python 2 and 3 spellings).
ESCAPE_ATTRIBUTES = frozenset(
    {
        "mro",
        "func_globals",
        "func_code",
        "func_closure",
        "func_defaults",
        "im_func",
        "im_self",
        "im_class",
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "ag_frame",
        "ag_code",
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "tb_frame",
        "tb_next",
        "co_code",
        "globals",
        "builtins",
        "modules",
    }
)


# Names of code-running functions: as an attribute or key they mean the template reaches for them.
EXEC_NAMES = frozenset(
    {
        "popen",
        "system",
        "subprocess",
        "check_output",
        "check_call",
        "getoutput",
        "getstatusoutput",
        "import_module",
        "load_module",
        "exec",
        "eval",
        "execv",
        "execve",
        "execl",
        "spawnv",
        "spawnl",
        "posix_spawn",
        "startfile",
        "run_path",
        "run_module",
        "compile",
    }
)


# Free variables a chat template has no business naming.
SUSPICIOUS_NAMES = frozenset(
    {"os", "sys", "subprocess", "builtins", "importlib", "posix", "nt", "eval", "exec", "config"}
)


_DUNDER = re.compile(r"__[A-Za-z0-9_]+__")


# "{0.attr}" / "{0[key]}" make str.format look things up: never evaluate those while folding.
_FORMAT_FIELD_LOOKUP = re.compile(r"\{[^{}]*[.\[]")


# A %-format or str.format width of six digits or more allocates megabytes from a few bytes.
HUGE_WIDTH = re.compile(r"%[-#0 +]*\*|%[-#0 +]*\d{6,}|\{[^{}]*:[^{}]*\d{6,}")


# Filters whose result is a string we can compute from constant inputs.
_STRING_FILTERS: dict[str, Callable[[str], str]] = {
    "reverse": lambda s: s[::-1],
    "lower": str.lower,
    "upper": str.upper,
    "title": str.title,
    "capitalize": str.capitalize,
    "trim": str.strip,
    "string": str,
    "e": str,
    "escape": str,
    "safe": str,
}


def _escape_reason(name: str) -> str | None:
    """Why an attribute/key name is an escape hop; None when it is ordinary."""
    if name.startswith("_"):
        return "a private or dunder attribute"
    if name in ESCAPE_ATTRIBUTES:
        return "an interpreter-internals attribute"
    if name in EXEC_NAMES:
        return "a code-running function"
    return None


@dataclass
class StaticCheck:
    where: str
    limits: TemplateLimits
    findings: list[Finding] = field(default_factory=list)

    def run(self, tree: nodes.Template) -> list[Finding]:
        for node in tree.find_all(nodes.Node):
            self._visit(node)
        return self.findings

    def _visit(self, node: nodes.Node) -> None:
        if isinstance(node, nodes.Getattr):
            self._attribute(node.attr, "attribute", node.lineno)
        elif isinstance(node, nodes.Getitem):
            self._computed_name(node.arg, "subscript", node.lineno)
        elif isinstance(node, nodes.Filter | nodes.Test):
            self._filter(node)
        elif isinstance(node, nodes.Call):
            for keyword in node.kwargs:
                if keyword.key == "attribute":
                    self._computed_name(keyword.value, "attribute= argument", node.lineno)
        elif isinstance(node, nodes.Keyword) and _DUNDER.fullmatch(node.key):
            self._attribute(node.key, "keyword argument name", node.lineno)
        elif isinstance(node, nodes.Name | nodes.NSRef):
            self._name(node)
        elif isinstance(node, nodes.Const) and isinstance(node.value, str):
            self._constant(node.value, node.lineno)
        elif isinstance(node, nodes.Import | nodes.FromImport | nodes.Include | nodes.Extends):
            self._add(
                "TEMPLATE_LOADER_STATEMENT",
                Outcome.REVIEW,
                f"uses {type(node).__name__.lower()}, which loads other templates; chat "
                "templates are self-contained",
                node.lineno,
            )

    def _name(self, node: nodes.Name | nodes.NSRef) -> None:
        name = node.name
        if name.startswith("__"):
            self._attribute(name, "variable", node.lineno)
        elif name in SUSPICIOUS_NAMES:
            self._add(
                "TEMPLATE_SUSPICIOUS_NAME",
                Outcome.REVIEW,
                f"names the variable {name!r}, which a chat template has no use for",
                node.lineno,
                severity=Severity.HIGH,
                name=name,
            )

    def _filter(self, node: nodes.Filter | nodes.Test) -> None:
        if node.name == "attr" and node.args:
            self._computed_name(node.args[0], "attr filter", node.lineno, dynamic_is_suspect=True)
        elif node.name in {"selectattr", "rejectattr", "groupby"} and node.args:
            self._computed_name(node.args[0], f"{node.name} filter", node.lineno)
        elif node.name == "map" and node.args:
            # map("attr", "__class__") applies the attr filter to every item
            first = _fold(node.args[0], self.limits)
            if first == "attr" and len(node.args) > 1:
                self._computed_name(node.args[1], "map(attr)", node.lineno, dynamic_is_suspect=True)
        for keyword in node.kwargs:
            if keyword.key == "attribute":
                self._computed_name(keyword.value, "attribute= argument", node.lineno)

    def _constant(self, value: str, lineno: int) -> None:
        match = _DUNDER.search(value)
        if match is not None:
            self._add(
                "TEMPLATE_SANDBOX_ESCAPE",
                Outcome.MALICIOUS,
                f"a string constant names {match.group(0)!r}, the raw material of a sandbox escape",
                lineno,
                name=match.group(0),
            )

    def _computed_name(
        self, node: nodes.Expr, how: str, lineno: int, *, dynamic_is_suspect: bool = False
    ) -> None:
        folded = _fold(node, self.limits)
        if folded is not None:
            self._attribute(folded, how, lineno)
            return
        if dynamic_is_suspect or _builds_string(node):
            self._add(
                "TEMPLATE_COMPUTED_ATTRIBUTE",
                Outcome.REVIEW,
                f"looks up an attribute through a {how} whose name is computed at render time",
                lineno,
                severity=Severity.HIGH,
            )

    def _attribute(self, name: str, how: str, lineno: int) -> None:
        # jinja's attribute getters follow dotted paths ("a.b"): every segment counts
        reason = next(filter(None, map(_escape_reason, name.split("."))), None)
        if reason is None and _DUNDER.search(name):
            reason = "a dunder name"
        if reason is not None:
            self._add(
                "TEMPLATE_SANDBOX_ESCAPE",
                Outcome.MALICIOUS,
                f"reaches {name!r} through a {how}: {reason}, the path of a sandbox escape",
                lineno,
                name=cut(name),
            )

    def _add(
        self,
        code: str,
        outcome: Outcome,
        what: str,
        lineno: int,
        severity: Severity | None = None,
        **details: JsonValue,
    ) -> None:
        self.findings.append(
            finding(
                code,
                outcome,
                f"{self.where}: chat template line {lineno} {what}",
                severity,
                where=cut(self.where),
                line=lineno,
                **details,
            )
        )


def _builds_string(node: nodes.Expr) -> bool:
    """Whether an expression assembles a string (so a computed attribute name is suspect)."""
    if isinstance(node, nodes.Concat):
        return True
    if isinstance(node, nodes.Add | nodes.Mul | nodes.Mod):
        # `messages[loop.index0 + 1]` is arithmetic; `x["__cl" + y]` builds a name
        return any(isinstance(c.value, str) for c in node.find_all(nodes.Const))
    if isinstance(node, nodes.Filter):
        return node.name in {
            "join",
            "format",
            "replace",
            "reverse",
            "string",
            "list",
            "first",
            "last",
        }
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        return node.node.attr in {"join", "format", "replace", "lower", "upper", "strip"}
    return False


def _fold(node: nodes.Expr, limits: TemplateLimits, depth: int = 0) -> str | None:
    """The string an expression always evaluates to, when it is built from constants only."""
    if depth > 50:
        return None
    value = _fold_value(node, limits, depth)
    if isinstance(value, str) and len(value) <= limits.max_fold_chars:
        return value
    return None


def _fold_value(node: nodes.Expr, limits: TemplateLimits, depth: int) -> object:
    fold: Callable[[nodes.Expr], object] = functools.partial(
        _fold_value, limits=limits, depth=depth + 1
    )
    if depth > 50:
        return None
    if isinstance(node, nodes.Const):
        return node.value if isinstance(node.value, str | int) else None
    if isinstance(node, nodes.List | nodes.Tuple):
        items = [fold(item) for item in node.items]
        return items if all(isinstance(i, str | int) for i in items) else None
    if isinstance(node, nodes.Concat):
        parts = [fold(n) for n in node.nodes]
        return "".join(map(str, parts)) if all(isinstance(p, str | int) for p in parts) else None
    if isinstance(node, nodes.Add | nodes.Mul | nodes.Mod):
        return _fold_binop(node, fold(node.left), fold(node.right), limits)
    if isinstance(node, nodes.Filter) and node.node is not None:
        return _fold_call(node.name, fold(node.node), [fold(a) for a in node.args])
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        return _fold_call(node.node.attr, fold(node.node.node), [fold(a) for a in node.args])
    return None


def _fold_binop(node: nodes.Expr, left: object, right: object, limits: TemplateLimits) -> object:
    if isinstance(node, nodes.Add) and isinstance(left, str) and isinstance(right, str):
        return left + right
    if isinstance(node, nodes.Mul) and isinstance(left, str) and isinstance(right, int):
        return left * right if len(left) * right <= limits.max_fold_chars else None
    if isinstance(node, nodes.Mod) and isinstance(left, str):
        return _safe_format(left, tuple(right) if isinstance(right, list) else (right,))
    return None


def _fold_call(name: str, subject: object, args: list[object]) -> object:
    if name == "join":
        if isinstance(subject, list) and len(args) <= 1 and all(isinstance(a, str) for a in args):
            return str(args[0] if args else "").join(map(str, subject))
        if isinstance(subject, str) and len(args) == 1 and isinstance(args[0], list | str):
            return subject.join(map(str, args[0]))
        return None
    if not isinstance(subject, str) or not all(isinstance(a, str | int) for a in args):
        return None
    if name in _STRING_FILTERS and not args:
        return _STRING_FILTERS[name](subject)
    if name == "replace" and len(args) >= 2:
        return subject.replace(str(args[0]), str(args[1]))
    if name == "format" and "{" not in subject:
        return _safe_format(subject, tuple(args))
    if name == "format" and not _FORMAT_FIELD_LOOKUP.search(subject):
        if HUGE_WIDTH.search(subject):
            return None
        try:
            return subject.format(*args)
        except (ValueError, IndexError, KeyError):
            return None
    if name in {"first", "last"} and subject:
        return subject[0] if name == "first" else subject[-1]
    return None


def _safe_format(pattern: str, args: tuple[object, ...]) -> str | None:
    if "*" in pattern or re.search(r"%[-#0 +]*\d{4,}", pattern):  # no giant widths when folding
        return None
    try:
        return pattern % args
    except (TypeError, ValueError, OverflowError):
        return None
