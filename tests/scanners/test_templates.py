"""Chat template scanner: real-world templates pass; Jinja2 sandbox escapes (direct, through the
attr filter, through names built at render time, through Jinja's globals) are malicious; templates
that loop or allocate without bound hit the render limits instead of hanging the scan."""

from __future__ import annotations

import pytest

from scanners.limits import TemplateLimits
from scanners.report import Finding, Outcome
from scanners.templates import scan_template
from tests.scanners.corpus_headers import CVE_2024_34359, REAL_TEMPLATES

FAST = TemplateLimits(max_render_s=0.5, max_render_lines=200_000)


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def outcomes(findings: list[Finding]) -> set[Outcome]:
    return {f.outcome for f in findings}


@pytest.mark.parametrize("name", sorted(REAL_TEMPLATES))
def test_scan_real_template_is_clean(name: str) -> None:
    assert scan_template(REAL_TEMPLATES[name], name) == []


# Escapes the static walk must catch (each a published technique or a variant of one).
ESCAPES = {
    "cve_2024_34359": CVE_2024_34359,
    "mro_subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "mro_method": "{{ ''.__class__.mro()[1] }}",
    "cycler_globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "joiner_globals": "{{ joiner.__init__.__globals__['__builtins__']['eval']('1') }}",
    "namespace_globals": "{{ namespace.__init__.__globals__.os.system('id') }}",
    "lipsum_globals": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "range_self": "{{ range.__self__ }}",
    "template_reference_context": "{{ self._TemplateReference__context.cycler }}",
    "subscript_dunder": "{{ ''['__class__'] }}",
    "attr_filter": "{{ ''|attr('__class__') }}",
    "attr_filter_concat": "{{ ''|attr('__cla' ~ 'ss__') }}",
    "attr_filter_plus": "{{ ''|attr('__cla' + 'ss__') }}",
    "attr_filter_reverse": "{{ ''|attr('__ssalc__'|reverse) }}",
    "attr_filter_format": "{{ ''|attr('%c%cclass%c%c'|format(95, 95, 95, 95)) }}",
    "attr_filter_join": "{{ ''|attr(['_', '_', 'class', '_', '_']|join) }}",
    "attr_filter_replace": "{{ ''|attr('XXclassXX'|replace('X', '_')) }}",
    "attr_filter_multiply": "{{ ''|attr('_' * 2 ~ 'class' ~ '_' * 2) }}",
    "method_join": "{{ ''|attr(''.join(['__', 'class', '__'])) }}",
    "method_format": "{{ ''|attr('{}{}{}'.format('__', 'globals', '__')) }}",
    "map_attribute": "{{ messages|map(attribute='__class__')|list }}",
    "map_attr_filter": "{{ messages|map('attr', 'mro')|list }}",
    "map_dotted_attribute": "{{ messages|map(attribute='x.gi_frame')|list }}",
    "selectattr": "{{ messages|selectattr('func_globals')|list }}",
    "dict_keyword_dunder": "{{ dict(__class__=1)|first }}",
    "generator_frame": "{{ (messages|map('upper')).gi_frame.f_back.f_globals }}",
    "popen_attribute": "{{ x.popen('id') }}",
    "subprocess_attribute": "{{ x.subprocess.check_output('id') }}",
    "import_dunder_name": "{{ __import__('os') }}",
    "builtins_key": "{{ x['__builtins__'] }}",
}


@pytest.mark.parametrize("source", list(ESCAPES.values()), ids=list(ESCAPES))
def test_scan_sandbox_escape_is_malicious(source: str) -> None:
    findings = scan_template(source, "t")
    assert "TEMPLATE_SANDBOX_ESCAPE" in codes(findings)
    assert outcomes(findings) == {Outcome.MALICIOUS}


def test_scan_escape_finding_names_the_attribute_and_line() -> None:
    findings = scan_template("{{ 'x' }}\n{{ ''|attr('__cla' ~ 'ss__') }}", "repo/config.json")
    assert findings[0].details["name"] == "__class__"
    assert findings[0].details["line"] == 2
    assert "repo/config.json" in findings[0].message


def test_scan_name_built_from_object_repr_is_caught_when_rendered() -> None:
    # "_" taken from a function's repr, so no constant names a dunder: static analysis sees only
    # a computed attribute, the sandbox blocks the lookup while rendering
    source = (
        "{% set u = (raise_exception|string)[10] %}"
        "{% set c = messages|attr(u ~ u ~ 'class' ~ u ~ u) %}{{ c }}"
    )
    findings = scan_template(source, "t")
    assert "TEMPLATE_COMPUTED_ATTRIBUTE" in codes(findings)
    assert "TEMPLATE_SANDBOX_VIOLATION" in codes(findings)
    assert Outcome.MALICIOUS in outcomes(findings)


def test_scan_dynamic_attr_filter_needs_review() -> None:
    findings = scan_template("{{ messages|attr(messages[0].content) }}", "t")
    assert codes(findings) == ["TEMPLATE_COMPUTED_ATTRIBUTE"]
    assert outcomes(findings) == {Outcome.REVIEW}


def test_scan_arithmetic_subscript_is_clean() -> None:
    source = "{% for m in messages %}{% if not loop.last %}{{ messages[loop.index0 + 1].role }}"
    assert scan_template(source + "{% endif %}{% endfor %}", "t") == []


def test_scan_suspicious_free_variable_needs_review() -> None:
    findings = scan_template("{{ os }}", "t")
    assert codes(findings) == ["TEMPLATE_SUSPICIOUS_NAME"]
    assert outcomes(findings) == {Outcome.REVIEW}


@pytest.mark.parametrize(
    "source",
    ["{% include 'x.j2' %}", "{% import 'm.j2' as m %}", "{% extends 'base.j2' %}"],
)
def test_scan_loader_statement_needs_review(source: str) -> None:
    assert "TEMPLATE_LOADER_STATEMENT" in codes(scan_template(source, "t"))


def test_scan_list_mutation_is_blocked_for_review() -> None:
    findings = scan_template("{% set l = [] %}{{ l.append(1) }}{{ l }}", "t")
    assert codes(findings) == ["TEMPLATE_MUTATION_BLOCKED"]
    assert outcomes(findings) == {Outcome.REVIEW}


def test_scan_syntax_error_needs_review() -> None:
    findings = scan_template("{% for %}", "t")
    assert codes(findings) == ["TEMPLATE_SYNTAX_ERROR"]
    assert outcomes(findings) == {Outcome.REVIEW}


def test_scan_template_raising_on_sample_chat_is_clean() -> None:
    assert scan_template("{{ raise_exception('only tools chats') }}", "t") == []


def test_scan_undefined_filter_is_clean() -> None:
    assert scan_template("{{ messages|no_such_filter }}", "t") == []


def test_scan_oversized_template_is_refused() -> None:
    findings = scan_template("x" * 2_000, "t", TemplateLimits(max_source_chars=1_000))
    assert codes(findings) == ["TEMPLATE_TOO_LARGE"]
    assert outcomes(findings) == {Outcome.ERROR}


def test_scan_deeply_nested_expression_is_refused() -> None:
    findings = scan_template("{{ " + "(" * 50_000 + "1" + ")" * 50_000 + " }}", "t")
    assert codes(findings) in (["TEMPLATE_UNPARSEABLE"], ["TEMPLATE_SYNTAX_ERROR"])
    assert outcomes(findings) & {Outcome.ERROR, Outcome.REVIEW}


# Templates that would hang or exhaust a renderer.
UNBOUNDED = {
    "nested_loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
    "{% endfor %}",
    "recursive_macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "string_repeat": "{{ 'a' * 1000000000 }}",
    "list_repeat": "{{ ([1] * 100000000)|length }}",
    "power": "{{ 7 ** 100000000 }}",
    "center_width": "{{ 'a'|center(1000000000) }}",
    "indent_width": "{{ 'a\nb'|indent(1000000000) }}",
    "percent_width": "{{ '%0999999999d' % 1 }}",
    "format_filter_width": "{{ '%0999999999d'|format(1) }}",
    "str_format_width": "{{ '{:>999999999}'.format(1) }}",
    "concat_doubling": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
}


@pytest.mark.parametrize("source", list(UNBOUNDED.values()), ids=list(UNBOUNDED))
def test_scan_unbounded_render_hits_a_limit(source: str) -> None:
    findings = scan_template(source, "t", FAST)
    assert codes(findings) == ["TEMPLATE_RENDER_LIMIT"]
    assert outcomes(findings) == {Outcome.ERROR}


def test_scan_huge_output_needs_review() -> None:
    source = "{% for i in range(100000) %}0123456789{% endfor %}"
    findings = scan_template(source, "t", TemplateLimits(max_output_chars=100_000))
    assert codes(findings) == ["TEMPLATE_RENDER_OUTPUT_TOO_LARGE"]
    assert outcomes(findings) == {Outcome.REVIEW}


def test_scan_template_render_sees_tools_and_messages() -> None:
    # a template that raises unless our sample chat carries tools, tool calls and add_generation
    source = (
        "{% if tools %}{% for m in messages %}{% if m.tool_calls %}"
        "{{ m.tool_calls[0].function.arguments|tojson }}{% endif %}{% endfor %}{% endif %}"
        "{% if add_generation_prompt %}{{ bos_token ~ eos_token }}{% endif %}"
    )
    assert scan_template(source, "t") == []
