"""Chat templates (Jinja2): find sandbox escapes statically, then render in a guarded sandbox.

A chat template ships inside a GGUF (`tokenizer.chat_template`), a `tokenizer_config.json` or a
`chat_template.jinja`, and is rendered by whatever serves the model. CVE-2024-34359
(llama-cpp-python) rendered GGUF templates with a plain `jinja2.Environment`, so
`{{ ''.__class__.__mro__[1].__subclasses__() }}` or `cycler.__init__.__globals__.os.popen(...)`
ran code. We look for that in two ways:

1. Walk the AST: attribute access, subscripts, the `attr` filter and `attribute=` arguments whose
   name is private or a known escape hop (`__globals__`, `mro`, `gi_frame`, `popen`…), including
   names built at render time from pieces (`"__cla" ~ "ss__"`, `"__ssalc__"|reverse`,
   `"%c%c"|format(95, 95)`, `[...]|join`, `.replace`, `.format`), which we fold statically.
2. Render in `ImmutableSandboxedEnvironment` (as transformers does) with harmless messages,
   recording every unsafe attribute the sandbox blocked, with a line budget, a deadline, bounded
   operators and filters, and a bounded output. A `SecurityError` is an attack; other errors are
   fine (templates legitimately call `raise_exception`).
"""

from __future__ import annotations

import functools
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from scanners.report import Finding, JsonValue, Outcome, Severity, cut_text

SCANNER = "templates"


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    """Bounds on inspecting and rendering one template."""

    max_source_chars: int = 1_000_000
    max_render_s: float = 2.0
    max_render_lines: int = 2_000_000  # template code lines executed, over all renders
    max_output_chars: int = 1_000_000
    max_operand_len: int = 100_000  # string/list length produced by *, %, + and filters
    max_int_arg: int = 100_000  # widths and counts passed to filters (center, indent…)
    max_fold_chars: int = 4_096
    max_findings: int = 20

    def __post_init__(self) -> None:
        if self.max_render_s <= 0 or self.max_render_lines <= 0 or self.max_source_chars <= 0:
            raise ValueError("template limits must be positive")


DEFAULT_LIMITS = TemplateLimits()

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
_MAX_INT_BITS = 100_000
_DUNDER = re.compile(r"__[A-Za-z0-9_]+__")
# "{0.attr}" / "{0[key]}" make str.format look things up: never evaluate those while folding.
_FORMAT_FIELD_LOOKUP = re.compile(r"\{[^{}]*[.\[]")
# A %-format or str.format width of six digits or more allocates megabytes from a few bytes.
_HUGE_WIDTH = re.compile(r"%[-#0 +]*\*|%[-#0 +]*\d{6,}|\{[^{}]*:[^{}]*\d{6,}")
# Mutating methods ImmutableSandboxedEnvironment blocks: a template calling them fails under
# transformers too, but is a broken template, not an escape.
_MUTATORS = frozenset(
    {
        "append",
        "extend",
        "insert",
        "pop",
        "popitem",
        "remove",
        "clear",
        "sort",
        "reverse",
        "update",
        "setdefault",
        "add",
        "discard",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
    }
)
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


def _finding(
    code: str,
    outcome: Outcome,
    message: str,
    severity: Severity | None = None,
    **details: JsonValue,
) -> Finding:
    if severity is None:
        severity = outcome.default_severity
    return Finding(SCANNER, code, severity, outcome, message, dict(details))


def _cut(text: str, limit: int = 120) -> str:
    return cut_text(text, limit)


def scan_template(
    source: str, where: str, limits: TemplateLimits = DEFAULT_LIMITS
) -> list[Finding]:
    """Inspect one chat template; `[]` when clean. Never raises on bad input."""
    if len(source) > limits.max_source_chars:
        return [
            _finding(
                "TEMPLATE_TOO_LARGE",
                Outcome.ERROR,
                f"{where}: chat template of {len(source)} characters is over the "
                f"{limits.max_source_chars}-character limit",
                where=_cut(where),
                chars=len(source),
            )
        ]
    env = _GuardedSandbox(limits)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        return [
            _finding(
                "TEMPLATE_SYNTAX_ERROR",
                Outcome.REVIEW,
                f"{where}: chat template does not parse "
                f"(line {exc.lineno}: {_cut(exc.message or '')})",
                where=_cut(where),
                line=exc.lineno,
            )
        ]
    except (RecursionError, MemoryError) as exc:
        return [_unparseable(where, exc)]
    try:
        findings = _StaticCheck(where, limits).run(tree)
    except RecursionError as exc:
        return [_unparseable(where, exc)]
    if not any(f.outcome is Outcome.MALICIOUS for f in findings):
        findings.extend(_render_findings(env, source, where, limits))
    return _dedupe(findings)[: limits.max_findings]


def _unparseable(where: str, exc: BaseException) -> Finding:
    return _finding(
        "TEMPLATE_UNPARSEABLE",
        Outcome.ERROR,
        f"{where}: chat template is too deeply nested to inspect ({type(exc).__name__})",
        where=_cut(where),
    )


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    unique: list[Finding] = []
    for finding in findings:
        if (finding.code, finding.message) not in seen:
            seen.add((finding.code, finding.message))
            unique.append(finding)
    return unique


# ---- static inspection -------------------------------------------------------------------------


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
class _StaticCheck:
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
                name=_cut(name),
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
            _finding(
                code,
                outcome,
                f"{self.where}: chat template line {lineno} {what}",
                severity,
                where=_cut(self.where),
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
        if _HUGE_WIDTH.search(subject):
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


# ---- guarded rendering -------------------------------------------------------------------------


class _RenderBudgetExceeded(Exception):
    """The render ran out of lines, time or output; raised inside the render thread."""


class _AssistantTracker(jinja2.ext.Extension):
    """Accepts transformers' `{% generation %}…{% endgeneration %}` blocks and renders the body."""

    tags = {"generation"}  # noqa: RUF012 -- jinja2.ext.Extension declares a plain set

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


class _GuardedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox transformers renders chat templates in, with every blocked attribute recorded
    and the operators and filters that can allocate without bound held to limits."""

    intercepted_binops = frozenset({"*", "**", "%", "+", "//"})

    def __init__(self, limits: TemplateLimits) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_AssistantTracker, jinja2.ext.loopcontrols],
        )
        self.limits = limits
        self.blocked: list[tuple[str, str]] = []  # (type name, attribute)
        self.filters = {name: self._guard(f) for name, f in self.filters.items()}
        del self.globals["lipsum"]  # lipsum(100000) alone renders ~50 MB
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = _strftime_now

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        if len(self.blocked) < 100:
            self.blocked.append((type(obj).__name__, attribute))
        return super().unsafe_undefined(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self._check_operands(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        self._check_size(result)
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # the double underscores mirror SandboxedEnvironment.call (keyword clashes)
        __self._check_args((*args, *kwargs.values()), skip=0)
        result = super().call(__context, __obj, *args, **kwargs)
        __self._check_size(result)
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and _HUGE_WIDTH.search(owner):
            raise _RenderBudgetExceeded("format width is over the limit")
        return super().wrap_str_format(value)

    def _check_args(self, args: tuple[Any, ...], skip: int) -> None:
        for index, arg in enumerate(args):
            if isinstance(arg, str) and _HUGE_WIDTH.search(arg):
                raise _RenderBudgetExceeded("format width is over the limit")
            if index >= skip and type(arg) is int and abs(arg) > self.limits.max_int_arg:
                raise _RenderBudgetExceeded(f"argument {arg} is over the limit")

    def _check_operands(self, operator: str, left: Any, right: Any) -> None:
        for operand in (left, right):
            if type(operand) is int and operand.bit_length() > _MAX_INT_BITS:
                raise _RenderBudgetExceeded("an integer grew over the size limit")
        if operator == "**" and isinstance(right, int) and abs(right) > 1_000:
            raise _RenderBudgetExceeded(f"exponent {right} is over the limit")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
                if sized and len(seq) * count > self.limits.max_operand_len:
                    raise _RenderBudgetExceeded("repetition is over the size limit")
        if operator == "%" and isinstance(left, str) and re.search(r"%[-#0 +]*\d{6,}", left):
            raise _RenderBudgetExceeded("format width is over the limit")

    def _check_size(self, value: Any) -> None:
        if isinstance(value, str | list | tuple) and len(value) > self.limits.max_operand_len:
            raise _RenderBudgetExceeded("a value grew over the size limit")
        if type(value) is int and value.bit_length() > _MAX_INT_BITS:
            raise _RenderBudgetExceeded("an integer grew over the size limit")

    def _guard(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # the filtered value comes first (after the context/environment for pass_* filters);
        # only the arguments after it are widths and counts
        skip = 2 if hasattr(func, "jinja_pass_arg") else 1

        @functools.wraps(func)  # keeps jinja_pass_arg, so pass_context filters still get one
        def guarded(*args: Any, **kwargs: Any) -> Any:
            self._check_args((*args, *kwargs.values()), skip=skip)
            result = func(*args, **kwargs)
            self._check_size(result)
            return result

        return guarded


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return time.strftime(fmt[:64], time.gmtime(1_700_000_000))


_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
_TOOL_CALL = {
    "id": "call_0001",
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
}


def _render_contexts() -> list[dict[str, Any]]:
    tokens = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
    }
    chat = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi, how can I help?"},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    with_tools = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [_TOOL_CALL]},
        {"role": "tool", "name": "get_weather", "tool_call_id": "call_0001", "content": "18C"},
        {"role": "assistant", "content": "It is 18C in Paris."},
    ]
    return [
        {"messages": chat, "add_generation_prompt": True, **tokens},
        {"messages": chat[1:2], "add_generation_prompt": False, **tokens},
        {"messages": with_tools, "tools": [_TOOL], "add_generation_prompt": True, **tokens},
    ]


@dataclass
class _RenderOutcome:
    security_error: str | None = None
    budget_exceeded: str | None = None
    output_too_large: bool = False
    timed_out: bool = False
    crashed: str | None = None


def _render_findings(
    env: _GuardedSandbox, source: str, where: str, limits: TemplateLimits
) -> list[Finding]:
    try:
        template = env.from_string(source)
    except TemplateError:  # unknown filter or test: the template cannot run at all
        return []
    outcome = _render_in_thread(template, limits)
    findings = _blocked_findings(env, where)
    if outcome.security_error is not None and not findings:
        findings.append(
            _finding(
                "TEMPLATE_SANDBOX_VIOLATION",
                Outcome.MALICIOUS,
                f"{where}: rendering the chat template in the sandbox raised a security error: "
                f"{_cut(outcome.security_error)}",
                where=_cut(where),
            )
        )
    if outcome.timed_out or outcome.budget_exceeded is not None:
        why = outcome.budget_exceeded or f"still running after {limits.max_render_s} s"
        findings.append(
            _finding(
                "TEMPLATE_RENDER_LIMIT",
                Outcome.ERROR,
                f"{where}: rendering the chat template with sample messages hit a limit ({why});"
                " a template that loops or allocates without bound",
                where=_cut(where),
            )
        )
    if outcome.crashed is not None:
        findings.append(
            _finding(
                "TEMPLATE_RENDER_FAILED",
                Outcome.ERROR,
                f"{where}: rendering the chat template failed unexpectedly: "
                f"{_cut(outcome.crashed)}",
                where=_cut(where),
            )
        )
    if outcome.output_too_large:
        findings.append(
            _finding(
                "TEMPLATE_RENDER_OUTPUT_TOO_LARGE",
                Outcome.REVIEW,
                f"{where}: the chat template renders over {limits.max_output_chars} characters "
                "for a four-message chat",
                where=_cut(where),
            )
        )
    return findings


def _blocked_findings(env: _GuardedSandbox, where: str) -> list[Finding]:
    findings: list[Finding] = []
    for type_name, attribute in env.blocked:
        if attribute in _MUTATORS and not attribute.startswith("_"):
            findings.append(
                _finding(
                    "TEMPLATE_MUTATION_BLOCKED",
                    Outcome.REVIEW,
                    f"{where}: the chat template calls {type_name}.{attribute}, which the "
                    "immutable sandbox refuses (transformers cannot render it either)",
                    where=_cut(where),
                    attribute=attribute,
                )
            )
        else:
            findings.append(
                _finding(
                    "TEMPLATE_SANDBOX_VIOLATION",
                    Outcome.MALICIOUS,
                    f"{where}: rendering the chat template reached for "
                    f"{type_name}.{_cut(attribute)}, which the sandbox blocked as unsafe",
                    where=_cut(where),
                    attribute=_cut(attribute),
                )
            )
    return findings


def _render_in_thread(template: jinja2.Template, limits: TemplateLimits) -> _RenderOutcome:
    outcome = _RenderOutcome()
    deadline = time.monotonic() + limits.max_render_s
    worker = threading.Thread(
        target=_render_all,
        args=(template, limits, deadline, outcome),
        name="template-render",
        daemon=True,  # a render stuck in one C call cannot be stopped; it must not block exit
    )
    worker.start()
    worker.join(limits.max_render_s + 1.0)
    if worker.is_alive():
        outcome.timed_out = True
    return outcome


def _render_all(
    template: jinja2.Template, limits: TemplateLimits, deadline: float, outcome: _RenderOutcome
) -> None:
    budget = _LineBudget(limits.max_render_lines, deadline, limits.max_operand_len)
    sys.settrace(budget.global_trace)
    try:
        for context in _render_contexts():
            if _render_one(template, context, limits, outcome):
                return
    except Exception as exc:  # noqa: BLE001 -- render-thread boundary: fail closed, never die
        outcome.crashed = f"{type(exc).__name__}: {exc}"
    finally:
        sys.settrace(None)


def _render_one(
    template: jinja2.Template,
    context: dict[str, Any],
    limits: TemplateLimits,
    outcome: _RenderOutcome,
) -> bool:
    """Render once; True when the renders should stop (an attack or a limit)."""
    produced = 0
    try:
        for piece in template.generate(**context):
            produced += len(piece)
            if produced > limits.max_output_chars:
                outcome.output_too_large = True
                return True
    except SecurityError as exc:
        outcome.security_error = str(exc)
        return True
    except _RenderBudgetExceeded as exc:
        outcome.budget_exceeded = str(exc)
        return True
    except RecursionError:
        outcome.budget_exceeded = "recursion too deep"
        return True
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError):
        return False  # templates legitimately raise_exception or dislike our sample chat
    except MemoryError:
        outcome.budget_exceeded = "out of memory"
        return True
    except RuntimeError:
        return False
    return False


@dataclass
class _LineBudget:
    """A trace function counting lines executed in template code, stopping on budget or time,
    and on a local variable or namespace value grown past the size limit (`a ~ a` doubling is a
    plain join in the compiled template, which no sandbox hook sees)."""

    lines_left: int
    deadline: float
    max_len: int

    def global_trace(self, frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        if frame.f_code.co_filename == "<template>":
            return self.local_trace
        return None

    def local_trace(self, frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        if event == "line":
            self.lines_left -= 1
            if self.lines_left <= 0:
                raise _RenderBudgetExceeded("too many template lines executed")
            if self.lines_left % 1024 == 0 and time.monotonic() > self.deadline:
                raise _RenderBudgetExceeded("render took too long")
            self._check_locals(frame)
        return self.local_trace

    def _check_locals(self, frame: FrameType) -> None:
        for value in frame.f_locals.values():
            values = value._Namespace__attrs.values() if isinstance(value, Namespace) else (value,)
            for item in values:
                if isinstance(item, str | list | dict) and len(item) > self.max_len:
                    raise _RenderBudgetExceeded("a value grew over the size limit")
