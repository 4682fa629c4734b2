"""Remote code: every shipped `*.py` needs review and what it calls is graded by parsing (never
importing); configs naming modules for trust_remote_code are reported with the modules named."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import transformers

from scanners.limits import RemoteCodeLimits
from scanners.remote_code import scan_config, scan_python
from scanners.report import Finding, Outcome, Severity
from tests.scanners.corpus_headers import CVE_2024_34359, REAL_TEMPLATES

MODELING = """
import math
import torch
from torch import nn
from transformers import PreTrainedModel
from .configuration_tiny import TinyConfig


class TinyModel(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x):
        return self.proj(x) / math.sqrt(x.shape[-1])
"""


def scan_source(source: str, name: str = "modeling_tiny.py", **kwargs: object) -> list[Finding]:
    raw = source.encode()
    return scan_python(io.BytesIO(raw), len(raw), name, **kwargs)  # type: ignore[arg-type]


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def test_scan_python_benign_module_needs_review_naming_it() -> None:
    findings = scan_source(MODELING)
    assert codes(findings) == ["REMOTE_CODE_PYTHON"]
    assert findings[0].outcome is Outcome.REVIEW
    assert findings[0].severity is Severity.MEDIUM
    assert findings[0].details["file"] == "modeling_tiny.py"


def test_scan_python_real_transformers_module_parses(tmp_path: Path) -> None:
    source = Path(transformers.models.bert.modeling_bert.__file__).read_text()
    findings = scan_source(source, "modeling_bert.py")
    assert codes(findings)[0] == "REMOTE_CODE_PYTHON"
    assert "REMOTE_CODE_UNPARSEABLE" not in codes(findings)
    assert Outcome.MALICIOUS not in {f.outcome for f in findings}


DANGEROUS = {
    "os_system": ("import os\nos.system('id')", "os.system", "process"),
    "subprocess_alias": ("import subprocess as sp\nsp.run(['id'])", "subprocess.run", "process"),
    "from_import_alias": ("from os import popen as p\np('id')", "os.popen", "process"),
    "os_execv": ("import os\nos.execv('/bin/sh', ['sh'])", "os.execv", "process"),
    "lazy_import_in_function": (
        "def f():\n    import subprocess\n    subprocess.Popen('id', shell=True)",
        "subprocess.Popen",
        "process",
    ),
    "eval": ("eval(input())", "builtins.eval", "dynamic_exec"),
    "import_module": (
        "import importlib\nimportlib.import_module('x')",
        "importlib.import_module",
        "dynamic_exec",
    ),
    "dunder_import": ("__import__('os')", "builtins.__import__", "dynamic_exec"),
    "builtins_subscript": ("__builtins__['exec']('1')", "builtins.exec", "dynamic_exec"),
    "globals_builtins": (
        "globals()['__builtins__'].eval('1')",
        "builtins.eval",
        "dynamic_exec",
    ),
    "getattr_constant": ("import os\ngetattr(os, 'system')('id')", "os.system", "process"),
    "getattr_computed": (
        "import os\ngetattr(os, 'sys' + 'tem')('id')",
        "os.<computed>",
        "dynamic_exec",
    ),
    "ctypes": ("import ctypes\nctypes.CDLL('libc.so.6')", "ctypes.CDLL", "native_code"),
    "socket": (
        "import socket\nsocket.create_connection(('h', 1))",
        "socket.create_connection",
        "network",
    ),
    "requests": ("import requests\nrequests.get('http://x')", "requests.get", "network"),
    "pickle_loads": ("import pickle\npickle.loads(b'')", "pickle.loads", "deserialization"),
}


@pytest.mark.parametrize(("source", "call", "category"), DANGEROUS.values(), ids=list(DANGEROUS))
def test_scan_python_dangerous_call_is_graded(source: str, call: str, category: str) -> None:
    findings = scan_source(source)
    dangerous = [f for f in findings if f.code == "REMOTE_CODE_DANGEROUS_CALL"]
    assert [(f.details["call"], f.details["category"]) for f in dangerous][:1] == [(call, category)]
    assert {f.outcome for f in findings} == {Outcome.REVIEW}
    assert findings[0].severity is Severity.HIGH or category in {"network", "deserialization"}


OBFUSCATED = {
    "exec_b64": "import base64\nexec(base64.b64decode('cHJpbnQoMSk='))",
    "exec_zlib": "import zlib\nexec(zlib.decompress(b'x'))",
    "eval_marshal": "import marshal\neval(marshal.loads(b'x'))",
    "exec_codecs_rot13": "import codecs\nexec(codecs.decode('cevag(1)', 'rot13'))",
    "exec_bytes_fromhex": "exec(bytes.fromhex('7072696e74283129').decode())",
    "exec_chr_join": "exec(''.join(chr(c) for c in [112, 114]))",
    "compile_b64_alias": "from base64 import b64decode as d\nexec(compile(d('eA=='), 'x', 'exec'))",
}


@pytest.mark.parametrize("source", OBFUSCATED.values(), ids=list(OBFUSCATED))
def test_scan_python_exec_of_decoded_data_is_malicious(source: str) -> None:
    findings = scan_source(source)
    assert "REMOTE_CODE_OBFUSCATED_EXEC" in codes(findings)
    assert Outcome.MALICIOUS in {f.outcome for f in findings}


def test_scan_python_syntax_error_cannot_be_graded() -> None:
    findings = scan_source("def broken(:\n    pass")
    assert codes(findings) == ["REMOTE_CODE_PYTHON", "REMOTE_CODE_UNPARSEABLE"]
    assert {f.outcome for f in findings} == {Outcome.REVIEW}


def test_scan_python_null_bytes_cannot_be_graded() -> None:
    assert "REMOTE_CODE_UNPARSEABLE" in codes(scan_source("x = 1\0"))


def test_scan_python_too_large_fails_closed() -> None:
    findings = scan_source("x = 1\n" * 100, limits=RemoteCodeLimits(max_source_bytes=100))
    assert codes(findings) == ["REMOTE_CODE_PYTHON", "REMOTE_CODE_UNPARSEABLE"]
    assert Outcome.ERROR in {f.outcome for f in findings}


def test_scan_python_deep_nesting_cannot_be_graded() -> None:
    assert "REMOTE_CODE_UNPARSEABLE" in codes(scan_source("x = " + "(" * 100_000 + ")" * 100_000))


def test_scan_python_never_imports_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    scan_source(f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit(3)")
    assert not marker.exists()


# ---- configs ------------------------------------------------------------------------------------


def test_scan_config_auto_map_names_the_modules() -> None:
    config = {
        "model_type": "tiny",
        "auto_map": {
            "AutoConfig": "configuration_tiny.TinyConfig",
            "AutoModel": "modeling_tiny.TinyModel",
            "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM",
        },
    }
    findings = scan_config(config, "config.json")
    assert codes(findings) == ["REMOTE_CODE_AUTO_MAP"]
    assert findings[0].outcome is Outcome.REVIEW
    assert findings[0].details["modules"] == ["configuration_tiny.py", "modeling_tiny.py"]
    assert "modeling_tiny.py" in findings[0].message


def test_scan_config_tokenizer_auto_map_pair_is_read() -> None:
    config = {"auto_map": {"AutoTokenizer": ["tokenization_tiny.TinyTokenizer", None]}}
    findings = scan_config(config, "tokenizer_config.json")
    assert findings[0].details["modules"] == ["tokenization_tiny.py"]


def test_scan_config_auto_map_into_another_repo_is_high_severity() -> None:
    config = {"auto_map": {"AutoModel": "evil-org/payload--modeling_x.Model"}}
    findings = scan_config(config, "config.json")
    assert findings[0].severity is Severity.HIGH
    assert findings[0].details["other_repos"] == ["evil-org/payload:modeling_x.py"]


def test_scan_config_malformed_auto_map_still_needs_review() -> None:
    findings = scan_config({"auto_map": 42}, "config.json")
    assert codes(findings) == ["REMOTE_CODE_AUTO_MAP"]


def test_scan_config_custom_pipeline_names_the_module() -> None:
    config = {"custom_pipelines": {"my-task": {"impl": "pipeline_tiny.TinyPipeline", "pt": []}}}
    findings = scan_config(config, "config.json")
    assert codes(findings) == ["REMOTE_CODE_CUSTOM_PIPELINE"]
    assert findings[0].details["modules"] == ["pipeline_tiny.py"]


def test_scan_config_written_by_transformers_is_clean(tmp_path: Path) -> None:
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert scan_config(data, "config.json") == []


@pytest.mark.parametrize("name", sorted(REAL_TEMPLATES))
def test_scan_config_real_chat_template_is_clean(name: str) -> None:
    assert scan_config({"chat_template": REAL_TEMPLATES[name]}, "tokenizer_config.json") == []


def test_scan_config_malicious_chat_template_is_malicious() -> None:
    findings = scan_config({"chat_template": CVE_2024_34359}, "tokenizer_config.json")
    assert "TEMPLATE_SANDBOX_ESCAPE" in codes(findings)
    assert {f.outcome for f in findings} == {Outcome.MALICIOUS}


def test_scan_config_named_template_list_is_inspected() -> None:
    templates = [
        {"name": "default", "template": REAL_TEMPLATES["chatml"]},
        {"name": "tool_use", "template": "{{ ''|attr('__cla' ~ 'ss__') }}"},
    ]
    findings = scan_config({"chat_template": templates}, "tokenizer_config.json")
    assert codes(findings) == ["TEMPLATE_SANDBOX_ESCAPE"]
    assert "chat_template[tool_use]" in findings[0].message


@pytest.mark.parametrize("value", [42, [{"name": "x"}], {"template": "x"}])
def test_scan_config_chat_template_of_wrong_shape_needs_review(value: object) -> None:
    assert codes(scan_config({"chat_template": value}, "c.json")) == [
        "REMOTE_CODE_TEMPLATE_INVALID"
    ]


@pytest.mark.parametrize("data", [[1, 2], "auto_map", None, 3])
def test_scan_config_that_is_not_an_object_is_clean(data: object) -> None:
    assert scan_config(data, "config.json") == []
