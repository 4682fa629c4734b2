"""NeMo `.nemo` archives and Hydra YAML configs: the callables a config makes its loader import.

A `.nemo` file is a tar (sometimes gzipped) of `model_config.yaml`, `model_weights.ckpt` (a torch
zip, scanned as one) and tokenizer files. `restore_from` builds the model with Hydra's
`instantiate`, which imports and calls whatever `_target_` names, with the config's values as
arguments; the top-level `target` names the model class the same way. Before NeMo 2.3.2 any
callable went (CVE-2025-23304): `_target_: os.system` runs a command on load. NeMo also passes
config sections to `datasets.load_dataset`, so a `trust_remote_code: true` there runs the
dataset repo's code (NVIDIA-NeMo/Speech#15598).

Allow-list: in `model_config.yaml`, a target must be a NeMo collection or core class
(`nemo.collections.*`, `nemo.core.*`), a `torch.nn` / `torch.optim` / `torch.utils.data` class,
or a Lightning callback, and must not name a loader (`restore_from`, `from_pretrained`,
`load_from_checkpoint`, `import_class_by_path`...); anything else needs review, and a target the
pickle deny-list knows (`os.system`, `builtins.eval`, `torch.load`, `hydra.utils.get_method`...)
is malicious. In other YAML files only denied targets are reported (projects have their own
namespaces). A `!!python/...` tag is malicious in any YAML: `yaml.unsafe_load` (and `yaml.load`
before PyYAML 5.1) builds and calls the object it names (CVE-2017-18342, CVE-2020-14343).

YAML is parsed with PyYAML's safe loader (no tags, no objects) after bounds on size and flow
nesting; aliases are walked as a graph, so a "billion laughs" config (aliases of aliases) is a
resource finding instead of a walk of its expansion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from scanners.allowlist import GlobalVerdict, judge_global
from scanners.limits import NemoLimits
from scanners.report import Finding, JsonValue, Outcome, Severity, cut_text

SCANNER = "nemo"
SCANNER_VERSION = "1.0"
NEMO_CONFIG_NAME = "model_config.yaml"


DEFAULT_LIMITS = NemoLimits()

_TARGET_KEYS = frozenset({"_target_", "target"})
_PYTHON_TAG = re.compile(r"!!?python/(\w+)(?::([\w.]+))?")
_CLASS = re.compile(r"[A-Z][A-Za-z0-9_]*")
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_ALLOWED_PREFIXES: tuple[tuple[str, bool], ...] = (
    # (prefix, the last segment must be a class name)
    ("nemo.collections.", False),
    ("nemo.core.", False),
    ("torch.nn.", True),
    ("torch.optim.", True),
    ("torch.utils.data.", True),
    ("pytorch_lightning.callbacks.", True),
    ("lightning.pytorch.callbacks.", True),
)
# Segments that make an allowed namespace load or import something else.
_LOADER_SEGMENTS = frozenset(
    {
        "restore_from", "from_pretrained", "load_from_checkpoint", "import_class_by_path",
        "load", "load_state_dict", "load_config_and_state_dict", "from_config_dict",
        "from_config_file", "save_to", "extract_state_dict_from", "get_class", "get_method",
        "instantiate", "import_module",
    }
)  # fmt: skip
_HYDRA_DENIED = frozenset(
    {"_locate", "get_method", "get_class", "get_object", "get_static_method", "instantiate", "call"}
)


def _finding(
    code: str, outcome: Outcome, severity: Severity, message: str, **details: JsonValue
) -> Finding:
    return Finding(SCANNER, code, severity, outcome, message, dict(details))


def _cut(text: str, limit: int = 160) -> str:
    return cut_text(text, limit)


def is_nemo_config(name: str) -> bool:
    """NeMo's config inside a `.nemo` tar (`./model_config.yaml`) or beside it in a repo."""
    return name.rsplit("/", 1)[-1] == NEMO_CONFIG_NAME


def scan_yaml(source: bytes, name: str, limits: NemoLimits = DEFAULT_LIMITS) -> list[Finding]:
    """Check one YAML file (strictly when it is NeMo's model_config.yaml). Never raises."""
    strict = is_nemo_config(name)
    text = source[: limits.max_config_bytes + 1].decode("utf-8", "replace")
    findings = _python_tags(text, name)
    if len(source) > limits.max_config_bytes:
        return [*findings, _resource(name, f"is over {limits.max_config_bytes} bytes")]
    too_nested = _nesting_problem(text, limits)
    if too_nested is not None:
        return [*findings, _resource(name, too_nested)]
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader (CSafeLoader when built)
    except (yaml.YAMLError, RecursionError, ValueError, MemoryError) as exc:
        if strict and not findings:
            findings.append(_malformed(name, type(exc).__name__))
        return findings
    check = _ConfigWalk(limits, strict)
    problem = check.walk(data)
    if problem is not None:
        return [*findings, _resource(name, problem)]
    return findings + check.findings(name)


def _python_tags(text: str, name: str) -> list[Finding]:
    tags = sorted({m.group(0) for m in _PYTHON_TAG.finditer(text[:1_000_000])})
    if not tags:
        return []
    return [
        _finding(
            "YAML_PYTHON_TAG",
            Outcome.MALICIOUS,
            Severity.CRITICAL,
            f"{name}: uses the YAML tags {', '.join(_cut(t, 80) for t in tags[:5])}, which "
            "build and call Python objects under yaml.load / yaml.unsafe_load",
            tags=[_cut(t, 200) for t in tags[:20]],
        )
    ]


def _nesting_problem(text: str, limits: NemoLimits) -> str | None:
    """Deep nesting makes the YAML composer (and OmegaConf after it) recurse: refused before
    parsing. Brackets inside quotes count too, so this errs on the side of refusing."""
    depth = deepest = 0
    for char in _NOT_BRACKET.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(depth - 1, 0)
    if deepest > limits.max_flow_depth:
        return f"nests [ and {{ {deepest} deep (limit {limits.max_flow_depth})"
    indent = max((len(line) - len(line.lstrip(" ")) for line in text.splitlines()), default=0)
    if indent > limits.max_indent_chars:
        return f"indents {indent} characters deep (limit {limits.max_indent_chars})"
    return None


@dataclass
class _ConfigWalk:
    """Walks parsed YAML as a graph (aliases are shared objects) and sizes its expansion."""

    limits: NemoLimits
    strict: bool
    denied: dict[str, str] = field(default_factory=dict)  # target -> why
    unknown: dict[str, str] = field(default_factory=dict)
    remote_code: list[str] = field(default_factory=list)  # paths with trust_remote_code true
    sizes: dict[int, int] = field(default_factory=dict)  # id(container) -> expanded size

    def walk(self, data: object) -> str | None:
        """Visit every distinct node once; a problem that makes the config a resource attack."""
        visiting: set[int] = set()
        stack: list[tuple[object, str, bool]] = [(data, "", False)]
        while stack:
            node, path, done = stack.pop()
            if not isinstance(node, dict | list):
                continue
            key = id(node)
            if done:
                visiting.discard(key)
                self.sizes[key] = 1 + sum(self._size(child) for child in _children(node))
                if self.sizes[key] > self.limits.max_expanded_nodes:
                    return "expands through aliases past the limit (a billion-laughs config)"
                continue
            if key in visiting:
                return "refers to itself through an alias (a recursive config)"
            if key in self.sizes:
                continue
            if len(self.sizes) + len(visiting) > self.limits.max_nodes:
                return f"has more than {self.limits.max_nodes} nodes"
            visiting.add(key)
            stack.append((node, path, True))
            if isinstance(node, dict):
                self._mapping(node, path)
                stack.extend((v, f"{path}.{k}"[:200], False) for k, v in node.items())
            else:
                stack.extend((v, f"{path}[{i}]"[:200], False) for i, v in enumerate(node))
        return None

    def _size(self, child: object) -> int:
        return self.sizes.get(id(child), 1) if isinstance(child, dict | list) else 1

    def _mapping(self, node: dict[object, object], path: str) -> None:
        for key in _TARGET_KEYS:
            target = node.get(key)
            if isinstance(target, str) and (key == "_target_" or path == ""):
                self._target(target, f"{path}.{key}".lstrip("."))
        listed = len(self.remote_code) < self.limits.max_listed
        if self.strict and node.get("trust_remote_code") is True and listed:
            self.remote_code.append(f"{path}.trust_remote_code".lstrip("."))

    def _target(self, target: str, where: str) -> None:
        why = _denial(target)
        if why is not None:
            if len(self.denied) < self.limits.max_listed:
                self.denied.setdefault(_cut(target, 200), f"{_cut(where, 120)}: {why}")
        elif self.strict and not _allowed(target) and len(self.unknown) < self.limits.max_listed:
            self.unknown.setdefault(_cut(target, 200), _cut(where, 160))

    def findings(self, name: str) -> list[Finding]:
        out: list[Finding] = []
        if self.denied:
            out.append(
                _finding(
                    "HYDRA_TARGET_DENIED",
                    Outcome.MALICIOUS,
                    Severity.CRITICAL,
                    f"{name}: the config makes its loader import and call "
                    f"{', '.join(list(self.denied)[:5])}, which runs code, loads files or "
                    "imports anything (CVE-2025-23304)",
                    targets=dict[str, JsonValue](self.denied),
                )
            )
        if self.unknown:
            out.append(
                _finding(
                    "HYDRA_TARGET_UNKNOWN",
                    Outcome.REVIEW,
                    Severity.HIGH,
                    f"{name}: the config makes NeMo import and call "
                    f"{', '.join(list(self.unknown)[:5])}, outside NeMo's and torch's own "
                    "classes",
                    targets=dict[str, JsonValue](self.unknown),
                )
            )
        if self.remote_code:
            out.append(
                _finding(
                    "NEMO_TRUST_REMOTE_CODE",
                    Outcome.REVIEW,
                    Severity.HIGH,
                    f"{name}: sets trust_remote_code ({', '.join(self.remote_code[:3])}), which "
                    "NeMo passes to Hugging Face loaders: they run the named repo's code",
                    paths=list[JsonValue](self.remote_code),
                )
            )
        return out


def _children(node: dict[object, object] | list[object]) -> list[object]:
    return list(node.values()) if isinstance(node, dict) else node


def _denial(target: str) -> str | None:
    module, _, attribute = target.strip().rpartition(".")
    if not module:
        return None if attribute.isidentifier() else "is not a dotted Python name"
    if module.split(".")[0] == "hydra" and attribute in _HYDRA_DENIED:
        return "resolves another target by name"
    judgement = judge_global(module, attribute)
    return judgement.reason if judgement.verdict == GlobalVerdict.DENIED else None


def _allowed(target: str) -> bool:
    parts = target.split(".")
    if any(part in _LOADER_SEGMENTS for part in parts) or not all(p.isidentifier() for p in parts):
        return False
    for prefix, must_be_class in _ALLOWED_PREFIXES:
        if target.startswith(prefix):
            return not must_be_class or bool(_CLASS.fullmatch(parts[-1]))
    return False


def _malformed(name: str, why: str) -> Finding:
    return _finding(
        "NEMO_CONFIG_MALFORMED",
        Outcome.ERROR,
        Severity.HIGH,
        f"{name}: is not valid YAML ({why}): its targets could not be checked",
        file=name,
    )


def _resource(name: str, why: str) -> Finding:
    return _finding(
        "NEMO_CONFIG_RESOURCE",
        Outcome.ERROR,
        Severity.HIGH,
        f"{name}: the YAML config {why}: not parsed",
        file=name,
    )
