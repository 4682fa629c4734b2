"""Keras scanner: `.keras` zips and `.h5` model configs are read (never loaded); Lambda bytecode,
objects outside Keras' namespaces, safe-mode switches and custom objects are reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from scanners import keras
from scanners.report import Finding, Outcome
from tests.scanners.corpus_headers import (
    dense,
    keras3_lambda,
    keras_config,
    keras_layer,
    lambda_code,
    make_keras_zip,
    zip_bytes,
)


def scan_path(path: Path) -> list[Finding]:
    with path.open("rb") as fh:
        return keras.scan(fh, path.stat().st_size, path.name)


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def keras_file(tmp_path: Path, layers: list[dict[str, Any]]) -> Path:
    return make_keras_zip(tmp_path / "model.keras", keras_config(layers))


def test_scan_keras_sequential_of_builtin_layers_is_clean(tmp_path: Path) -> None:
    layers = [dense(8), keras_layer("Dropout", {"rate": 0.1}), dense(2)]
    assert scan_path(keras_file(tmp_path, layers)) == []


def test_scan_keras_builtin_function_reference_is_clean(tmp_path: Path) -> None:
    activation = {"module": "builtins", "class_name": "function", "config": "relu"}
    layer = keras_layer("Dense", {"units": 2, "activation": activation | {"registered_name": None}})
    assert scan_path(keras_file(tmp_path, [layer])) == []


def test_scan_keras_hub_module_is_clean(tmp_path: Path) -> None:
    layer = keras_layer("GemmaBackbone", {}, module="keras_hub.src.models.gemma.gemma_backbone")
    assert scan_path(keras_file(tmp_path, [layer])) == []


def test_scan_keras_harmless_lambda_needs_review_with_code_noted(tmp_path: Path) -> None:
    findings = scan_path(keras_file(tmp_path, [keras3_lambda(lambda x: x * 2)]))
    assert codes(findings) == ["KERAS_LAMBDA_CODE"]
    assert findings[0].outcome is Outcome.REVIEW
    noted = findings[0].details["code_base64"]
    assert isinstance(noted, str) and noted.startswith(lambda_code(lambda x: x * 2)[:200])


def test_scan_keras_lambda_reaching_os_is_malicious(tmp_path: Path) -> None:
    payload = keras3_lambda(lambda x: __import__("os").system("id") or x)
    findings = scan_path(keras_file(tmp_path, [payload]))
    assert codes(findings) == ["KERAS_LAMBDA_CODE"]
    assert findings[0].outcome is Outcome.MALICIOUS
    names = findings[0].details["names"]
    assert isinstance(names, list) and "system" in names


def test_scan_keras_bare_lambda_object_is_reported(tmp_path: Path) -> None:
    bare = {"class_name": "__lambda__", "config": {"value": lambda_code(lambda x: x)}}
    layer = keras_layer("Dense", {"units": 2, "activation": bare})
    assert codes(scan_path(keras_file(tmp_path, [layer]))) == ["KERAS_LAMBDA_CODE"]


@pytest.mark.parametrize(
    ("module", "class_name", "config"),
    [
        # CVE-2025-1550: the config switches safe mode off before a Lambda is rebuilt
        ("keras.config", "enable_unsafe_deserialization", {}),
        # CVE-2025-8747: a Keras utility that downloads and writes files
        ("keras.utils", "get_file", {}),
        ("keras.src.utils.file_utils", "get_file", {}),
        ("os", "system", {}),
        ("builtins", "eval", {}),
        ("subprocess", "Popen", {}),
    ],
)
def test_scan_keras_object_that_runs_code_is_malicious(
    tmp_path: Path, module: str, class_name: str, config: dict[str, Any]
) -> None:
    findings = scan_path(keras_file(tmp_path, [keras_layer(class_name, config, module=module)]))
    assert codes(findings) == ["KERAS_UNSAFE_OBJECT"]
    assert findings[0].outcome is Outcome.MALICIOUS


def test_scan_keras_function_reference_into_os_is_malicious(tmp_path: Path) -> None:
    activation = {"module": "os", "class_name": "function", "config": "system"}
    layer = keras_layer("Dense", {"units": 2, "activation": activation})
    assert codes(scan_path(keras_file(tmp_path, [layer]))) == ["KERAS_UNSAFE_OBJECT"]


def test_scan_keras_layer_from_unknown_module_needs_review(tmp_path: Path) -> None:
    findings = scan_path(keras_file(tmp_path, [keras_layer("MyAttention", {}, module="mylib")]))
    assert codes(findings) == ["KERAS_UNKNOWN_MODULE"]
    assert findings[0].outcome is Outcome.REVIEW
    assert findings[0].details["module"] == "mylib"


def test_scan_keras_registered_custom_object_needs_review(tmp_path: Path) -> None:
    layer = keras_layer("Scale", {}, module=None, registered_name="my_package>Scale")
    findings = scan_path(keras_file(tmp_path, [layer]))
    assert codes(findings) == ["KERAS_CUSTOM_OBJECT"]
    assert findings[0].details["registered_name"] == "my_package>Scale"


def test_scan_keras_duplicate_config_member_is_malicious(tmp_path: Path) -> None:
    path = tmp_path / "dup.keras"
    benign = json.dumps(keras_config([dense()])).encode()
    evil = json.dumps(keras_config([keras3_lambda(lambda x: x)])).encode()
    with pytest.warns(UserWarning, match="Duplicate name"):
        path.write_bytes(zip_bytes([("config.json", benign), ("config.json", evil)]))
    findings = scan_path(path)
    assert codes(findings) == ["KERAS_DUPLICATE_CONFIG"]
    assert findings[0].outcome is Outcome.MALICIOUS


def test_scan_keras_zip_without_config_fails_closed(tmp_path: Path) -> None:
    path = make_keras_zip(tmp_path / "m.keras", None, with_config=False)
    assert codes(scan_path(path)) == ["KERAS_MODEL_INVALID"]


def test_scan_keras_config_that_is_not_json_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    path.write_bytes(zip_bytes([("config.json", b"{not json")]))
    assert codes(scan_path(path)) == ["KERAS_MODEL_INVALID"]


def test_scan_keras_corrupt_zip_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    path.write_bytes(b"PK\x03\x04" + os.urandom(200))
    findings = scan_path(path)
    assert codes(findings) == ["KERAS_MODEL_INVALID"]
    assert findings[0].outcome is Outcome.ERROR


def test_scan_keras_deeply_nested_config_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    path.write_bytes(zip_bytes([("config.json", b"[" * 500 + b"]" * 500)]))
    assert codes(scan_path(path)) == ["KERAS_MODEL_INVALID"]


def test_scan_file_neither_zip_nor_hdf5_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    path.write_bytes(b"\x80\x04K\x01.")
    assert codes(scan_path(path)) == ["KERAS_FORMAT_UNKNOWN"]


# ---- Keras 2 HDF5 -------------------------------------------------------------------------------


def keras2_config(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The `model_config` attribute Keras 2 writes in an .h5 model."""
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}


def make_h5(path: Path, model_config: dict[str, Any] | None) -> Path:
    with h5py.File(path, "w") as h5:
        if model_config is not None:
            h5.attrs["model_config"] = json.dumps(model_config)
            h5.attrs["keras_version"] = "2.12.0"
            h5.attrs["backend"] = "tensorflow"
        weights = h5.create_group("model_weights")
        weights.create_dataset("dense/kernel:0", data=np.zeros((4, 2), dtype=np.float32))
    return path


def test_scan_h5_model_of_builtin_layers_is_clean(tmp_path: Path) -> None:
    layers = [{"class_name": "Dense", "config": {"name": "dense", "units": 2}}]
    assert scan_path(make_h5(tmp_path / "m.h5", keras2_config(layers))) == []


def test_scan_h5_weights_only_is_clean(tmp_path: Path) -> None:
    assert scan_path(make_h5(tmp_path / "tf_model.h5", None)) == []


def test_scan_h5_lambda_layer_is_malicious(tmp_path: Path) -> None:
    # the classic Keras 2 payload (safetensors attacks/tf_ace_create.py): Lambda code runs on load
    def payload(x: object) -> object:
        exec("import os; os.system('id')")  # noqa: S102 -- marshalled, never called
        return x

    code = lambda_code(payload)
    layer = {
        "class_name": "Lambda",
        "config": {"name": "lambda", "function": [code, None, None], "function_type": "lambda"},
    }
    findings = scan_path(make_h5(tmp_path / "m.h5", keras2_config([layer])))
    assert codes(findings) == ["KERAS_LAMBDA_CODE"]
    assert findings[0].outcome is Outcome.MALICIOUS


def test_scan_h5_lambda_calling_named_function_needs_review(tmp_path: Path) -> None:
    layer = {
        "class_name": "Lambda",
        "config": {"function": "my_preprocess", "function_type": "function", "module": "__main__"},
    }
    findings = scan_path(make_h5(tmp_path / "m.h5", keras2_config([layer])))
    assert codes(findings) == ["KERAS_LAMBDA_LAYER"]
    assert findings[0].outcome is Outcome.REVIEW


def test_scan_corrupt_h5_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    path.write_bytes(keras.HDF5_MAGIC + b"\0" * 100)
    assert codes(scan_path(path)) == ["KERAS_MODEL_INVALID"]


def test_scan_h5_without_h5py_needs_review(tmp_path: Path) -> None:
    # h5py made unimportable in a child interpreter: the scan must say it could not look inside
    path = make_h5(tmp_path / "m.h5", keras2_config([]))
    program = (
        "import sys; sys.modules['h5py'] = None\n"
        "from pathlib import Path\n"
        "from scanners import keras\n"
        f"p = Path({str(path)!r})\n"
        "with p.open('rb') as fh:\n"
        "    print(','.join(f.code for f in keras.scan(fh, p.stat().st_size, p.name)))\n"
    )
    done = subprocess.run(  # noqa: S603 -- our own interpreter and program
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == "KERAS_H5_UNINSPECTED"


# ---- red team: layers that load something else, tf.keras op lambdas -----------------------------
def _torch_module_wrapper(payload: bytes) -> dict[str, Any]:
    import base64

    return keras_layer("TorchModuleWrapper", {"module": base64.b64encode(payload).decode()})


def test_scan_keras_torch_module_wrapper_with_pickle_payload_is_malicious(tmp_path: Path) -> None:
    from tests.scanners.corpus import EVIL

    findings = scan_path(keras_file(tmp_path, [_torch_module_wrapper(EVIL)]))
    assert "KERAS_LOADS_OTHER_MODEL" in codes(findings)
    assert any(f.code == "PICKLE_GLOBAL_DENIED" for f in findings)
    assert any(f.outcome is Outcome.MALICIOUS for f in findings)


def test_scan_keras_torch_module_wrapper_of_plain_module_needs_review(tmp_path: Path) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buf)
    findings = scan_path(keras_file(tmp_path, [_torch_module_wrapper(buf.getvalue())]))
    assert codes(findings) == ["KERAS_LOADS_OTHER_MODEL"]
    assert findings[0].outcome is Outcome.REVIEW


def test_scan_keras_tfsm_layer_needs_review(tmp_path: Path) -> None:
    layer = keras_layer("TFSMLayer", {"filepath": "/srv/other_model", "call_endpoint": "serve"})
    findings = scan_path(keras_file(tmp_path, [layer]))
    assert codes(findings) == ["KERAS_LOADS_OTHER_MODEL"]
    assert "/srv/other_model" in findings[0].message


@pytest.mark.parametrize(
    "function", ["io.write_file", "raw_ops.ReadFile", "py_function", "compat.v1.py_func"]
)
def test_scan_keras_tf_op_lambda_touching_files_or_python_is_malicious(
    tmp_path: Path, function: str
) -> None:
    layer = keras_layer("TFOpLambda", {"function": function, "name": f"tf.{function}"})
    findings = scan_path(keras_file(tmp_path, [layer]))
    assert codes(findings) == ["KERAS_UNSAFE_OBJECT"]
    assert findings[0].outcome is Outcome.MALICIOUS


def test_scan_keras_tf_op_lambda_of_math_is_clean(tmp_path: Path) -> None:
    layer = keras_layer("TFOpLambda", {"function": "math.add", "name": "tf.math.add"})
    assert scan_path(keras_file(tmp_path, [layer])) == []


def test_scan_keras_h5_after_user_block_is_read(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    with h5py.File(path, "w", userblock_size=512) as h5:
        h5.create_dataset("w", data=np.zeros(4))
    assert scan_path(path) == []


def lookup(vocabulary: object) -> dict[str, Any]:
    return keras_layer("StringLookup", {"vocabulary": vocabulary, "num_oov_indices": 1})


def test_scan_keras_lookup_with_inline_vocabulary_is_clean(tmp_path: Path) -> None:
    assert scan_path(keras_file(tmp_path, [lookup(["a", "b"])])) == []


@pytest.mark.parametrize("path", ["/etc/passwd", "../../secret.txt", "gs://bucket/v.txt", "~/x"])
def test_scan_keras_vocabulary_outside_the_model_is_malicious(tmp_path: Path, path: str) -> None:
    (finding,) = scan_path(keras_file(tmp_path, [lookup(path)]))
    assert (finding.code, finding.outcome) == ("KERAS_VOCABULARY_FILE", Outcome.MALICIOUS)


def test_scan_keras_relative_vocabulary_file_needs_review(tmp_path: Path) -> None:
    (finding,) = scan_path(keras_file(tmp_path, [lookup("assets/vocab.txt")]))
    assert (finding.code, finding.outcome) == ("KERAS_VOCABULARY_FILE", Outcome.REVIEW)


def _h5_lambda(path: Path) -> Path:
    def payload(x: object) -> object:
        exec("import os; os.system('id')")  # noqa: S102 -- marshalled, never called
        return x

    layer = {
        "class_name": "Lambda",
        "config": {
            "name": "l",
            "function": [lambda_code(payload), None, None],
            "function_type": "lambda",
        },
    }
    return make_h5(path, keras2_config([layer]))


def test_scan_h5_reads_the_same_through_fork_and_spawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HDF5 reader is a fork where this process has one thread (milliseconds) and a fresh
    interpreter otherwise; both read the same model_config."""
    clean = make_h5(tmp_path / "clean.h5", keras2_config([dense()]))
    evil = _h5_lambda(tmp_path / "evil.h5")
    seen = []
    for forked in (True, False):
        monkeypatch.setattr(keras, "_can_fork", lambda forked=forked: forked)
        seen.append((codes(scan_path(clean)), codes(scan_path(evil))))
    assert seen == [([], ["KERAS_LAMBDA_CODE"])] * 2


def test_scan_h5_forks_only_when_this_process_has_one_thread() -> None:
    import threading

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert keras._can_fork() is False  # another thread could hold a lock the fork copies
    finally:
        stop.set()
        other.join()


def test_h5_reader_memory_budget_counts_from_what_a_fork_has_mapped() -> None:
    """A fork starts with its parent's mappings: the reader may map `h5_memory_bytes` beyond
    them (an absolute limit below them would fail every read), never past an inherited limit."""
    import resource

    from scanners import h5_child

    budget = 64 * 1024 * 1024
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    limit = h5_child._address_space_limit(budget)
    assert mapped + budget <= limit < mapped + budget + 64 * 1024 * 1024
    program = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2**40, 2**40))\n"
        "from scanners import h5_child\n"
        "print(h5_child._address_space_limit(2**41))\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed program
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert int(done.stdout) == 2**40


def test_h5_reader_fork_dies_of_a_crash_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked reader drops the handlers it inherited for fatal signals (a fuzzer's crash
    reporter would take its crash for the parent's) and faulthandler."""
    import faulthandler
    import signal

    from scanners import h5_child

    def report_handlers(data: bytes, limits: object) -> tuple[str, object]:
        state = (signal.getsignal(signal.SIGFPE) is signal.SIG_DFL, faulthandler.is_enabled())
        return ("invalid", f"handlers {state}")

    monkeypatch.setattr(keras, "_can_fork", lambda: True)
    monkeypatch.setattr(h5_child, "_read", report_handlers)
    previous = signal.signal(signal.SIGFPE, lambda number, frame: None)
    try:
        findings = scan_path(make_h5(tmp_path / "m.h5", keras2_config([])))
    finally:
        signal.signal(signal.SIGFPE, previous)
    assert "handlers (True, False)" in findings[0].message
