"""Chat templates (Jinja2): find sandbox escapes statically, then render in a guarded sandbox.

A chat template ships inside a GGUF (`tokenizer.chat_template`), a `tokenizer_config.json` or a
`chat_template.jinja`, and is rendered by whatever serves the model. CVE-2024-34359
(llama-cpp-python) rendered GGUF templates with a plain `jinja2.Environment`, so
`{{ ''.__class__.__mro__[1].__subclasses__() }}` or `cycler.__init__.__globals__.os.popen(...)`
ran code. We look for that in two ways (`scanners.template_static`, then
`scanners.template_render`):

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

from jinja2.exceptions import TemplateSyntaxError

from scanners.limits import TemplateLimits
from scanners.report import Finding, Outcome
from scanners.template_findings import SCANNER as SCANNER
from scanners.template_findings import cut, finding
from scanners.template_render import GuardedSandbox, render_findings
from scanners.template_static import StaticCheck

DEFAULT_LIMITS = TemplateLimits()


def scan_template(
    source: str, where: str, limits: TemplateLimits = DEFAULT_LIMITS
) -> list[Finding]:
    """Inspect one chat template; `[]` when clean. Never raises on bad input."""
    if len(source) > limits.max_source_chars:
        return [
            finding(
                "TEMPLATE_TOO_LARGE",
                Outcome.ERROR,
                f"{where}: chat template of {len(source)} characters is over the "
                f"{limits.max_source_chars}-character limit",
                where=cut(where),
                chars=len(source),
            )
        ]
    env = GuardedSandbox(limits)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        return [
            finding(
                "TEMPLATE_SYNTAX_ERROR",
                Outcome.REVIEW,
                f"{where}: chat template does not parse "
                f"(line {exc.lineno}: {cut(exc.message or '')})",
                where=cut(where),
                line=exc.lineno,
            )
        ]
    except (RecursionError, MemoryError) as exc:
        return [_unparseable(where, exc)]
    try:
        findings = StaticCheck(where, limits).run(tree)
    except RecursionError as exc:
        return [_unparseable(where, exc)]
    if not any(f.outcome is Outcome.MALICIOUS for f in findings):
        findings.extend(render_findings(env, source, where, limits))
    return _dedupe(findings)[: limits.max_findings]


def _unparseable(where: str, exc: BaseException) -> Finding:
    return finding(
        "TEMPLATE_UNPARSEABLE",
        Outcome.ERROR,
        f"{where}: chat template is too deeply nested to inspect ({type(exc).__name__})",
        where=cut(where),
    )


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    unique: list[Finding] = []
    for found in findings:
        if (found.code, found.message) not in seen:
            seen.add((found.code, found.message))
            unique.append(found)
    return unique
