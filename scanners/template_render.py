"""A chat template rendered in a guarded sandbox, with harmless messages.

`ImmutableSandboxedEnvironment` (as transformers uses) with every unsafe attribute the sandbox
blocked recorded, a line budget, a deadline, bounded operators and filters, and a bounded output.
A `SecurityError` is an attack; other errors are fine (templates legitimately call
`raise_exception`).
"""

from __future__ import annotations

import functools
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from scanners.limits import TemplateLimits
from scanners.report import Finding, Outcome
from scanners.template_findings import cut, finding
from scanners.template_static import HUGE_WIDTH

_MAX_INT_BITS = 100_000


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


class _RenderBudgetExceeded(Exception):
    """The render ran out of lines, time or output; raised inside the render thread."""


class _AssistantTracker(jinja2.ext.Extension):
    """Accepts transformers' `{% generation %}…{% endgeneration %}` blocks and renders the body."""

    tags = {"generation"}  # noqa: RUF012 -- jinja2.ext.Extension declares a plain set

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


class GuardedSandbox(ImmutableSandboxedEnvironment):
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
        if isinstance(owner, str) and HUGE_WIDTH.search(owner):
            raise _RenderBudgetExceeded("format width is over the limit")
        return super().wrap_str_format(value)

    def _check_args(self, args: tuple[Any, ...], skip: int) -> None:
        for index, arg in enumerate(args):
            if isinstance(arg, str) and HUGE_WIDTH.search(arg):
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


def render_findings(
    env: GuardedSandbox, source: str, where: str, limits: TemplateLimits
) -> list[Finding]:
    try:
        template = env.from_string(source)
    except TemplateError:  # unknown filter or test: the template cannot run at all
        return []
    outcome = _render_in_thread(template, limits)
    findings = _blocked_findings(env, where)
    if outcome.security_error is not None and not findings:
        findings.append(
            finding(
                "TEMPLATE_SANDBOX_VIOLATION",
                Outcome.MALICIOUS,
                f"{where}: rendering the chat template in the sandbox raised a security error: "
                f"{cut(outcome.security_error)}",
                where=cut(where),
            )
        )
    if outcome.timed_out or outcome.budget_exceeded is not None:
        why = outcome.budget_exceeded or f"still running after {limits.max_render_s} s"
        findings.append(
            finding(
                "TEMPLATE_RENDER_LIMIT",
                Outcome.ERROR,
                f"{where}: rendering the chat template with sample messages hit a limit ({why});"
                " a template that loops or allocates without bound",
                where=cut(where),
            )
        )
    if outcome.crashed is not None:
        findings.append(
            finding(
                "TEMPLATE_RENDER_FAILED",
                Outcome.ERROR,
                f"{where}: rendering the chat template failed unexpectedly: {cut(outcome.crashed)}",
                where=cut(where),
            )
        )
    if outcome.output_too_large:
        findings.append(
            finding(
                "TEMPLATE_RENDER_OUTPUT_TOO_LARGE",
                Outcome.REVIEW,
                f"{where}: the chat template renders over {limits.max_output_chars} characters "
                "for a four-message chat",
                where=cut(where),
            )
        )
    return findings


def _blocked_findings(env: GuardedSandbox, where: str) -> list[Finding]:
    findings: list[Finding] = []
    for type_name, attribute in env.blocked:
        if attribute in _MUTATORS and not attribute.startswith("_"):
            findings.append(
                finding(
                    "TEMPLATE_MUTATION_BLOCKED",
                    Outcome.REVIEW,
                    f"{where}: the chat template calls {type_name}.{attribute}, which the "
                    "immutable sandbox refuses (transformers cannot render it either)",
                    where=cut(where),
                    attribute=attribute,
                )
            )
        else:
            findings.append(
                finding(
                    "TEMPLATE_SANDBOX_VIOLATION",
                    Outcome.MALICIOUS,
                    f"{where}: rendering the chat template reached for "
                    f"{type_name}.{cut(attribute)}, which the sandbox blocked as unsafe",
                    where=cut(where),
                    attribute=cut(attribute),
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
