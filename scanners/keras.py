"""Keras models: `.keras` zips (Keras 3) and `.h5` files (Keras 2), read as configs, never loaded.

A Keras model's config says which classes and functions to rebuild it from, and loading it
imports them:
- `Lambda` layers carry marshalled Python bytecode (base64): Keras 2 `.h5` runs it on load, Keras 3
  only with `safe_mode=False` (CVE-2024-3660 was the bypass before 2.13).
- `module` + `class_name` pairs are imported by name: outside Keras' own namespaces that is any
  Python callable (CVE-2025-1550 used `keras.config.enable_unsafe_deserialization` to switch safe
  mode off from inside the config; CVE-2025-8747 reached `keras.utils.get_file`).
- `registered_name` points at custom objects registered by user code.
- `StringLookup` / `IntegerLookup` / `TextVectorization` read a `vocabulary` given as a path when
  the model loads, local or remote (CVE-2025-12058).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import multiprocessing
import re
import sys
import threading
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.context import ForkContext, SpawnContext
from typing import BinaryIO

from scanners import h5_child
from scanners.limits import KerasLimits
from scanners.report import Finding, JsonValue, Outcome, Severity, cut_text

SCANNER = "keras"
ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
CONFIG_MEMBER = "config.json"


DEFAULT_LIMITS = KerasLimits()
# scans embedded file bytes under a label, as a member of the file being scanned
EmbeddedScan = Callable[[bytes, str], list[Finding]]

# Namespaces Keras itself serialises objects from (module "keras", "keras.layers",
# "keras.src.models.functional"…), and "builtins" for functions, which Keras resolves only
# among its own built-in modules.
_KERAS_MODULE = re.compile(
    r"(keras|keras_hub|keras_nlp|keras_cv|keras_rs|tf_keras)(\.[A-Za-z0-9_]+)*"
)
# Inside Keras, what switches safe mode off, downloads, or loads further files.
_UNSAFE_KERAS_NAMES = frozenset(
    {
        "enable_unsafe_deserialization",
        "get_file",
        "load_model",
        "load_weights",
        "func_load",
        "exec",
        "eval",
    }
)
_UNSAFE_KERAS_SEGMENTS = frozenset({"config", "python_utils", "file_utils", "io_utils"})
# Layers that load something else at load time: TorchModuleWrapper `torch.load`s a pickled
# module (CVE-2025-49655 territory), TFSMLayer loads and runs a TensorFlow SavedModel.
_LAYERS_THAT_LOAD = {
    "TorchModuleWrapper": "a pickled PyTorch module with torch.load(weights_only=False)",
    "TFSMLayer": "a TensorFlow SavedModel",
}
# Preprocessing layers whose `vocabulary` may be a file path, read when the model loads.
_VOCABULARY_LAYERS = frozenset({"StringLookup", "IntegerLookup", "TextVectorization"})
# `tf.<function>` names a TFOpLambda may call that read or write files, run Python or load code.
_UNSAFE_TF_OPS = frozenset(
    {
        "io", "raw_ops", "gfile", "py_function", "numpy_function", "py_func", "eager_py_func",
        "load_op_library", "load_library", "saved_model", "summary", "print", "debugging",
        "data", "distribute", "write_file", "read_file", "system",
    }
)  # fmt: skip
# Python modules whose names in a config mean an attack, not a custom layer.
_DANGEROUS_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "sys",
        "builtins",
        "importlib",
        "runpy",
        "shutil",
        "socket",
        "pickle",
        "marshal",
        "ctypes",
        "code",
        "pty",
        "webbrowser",
        "urllib",
        "requests",
        "tensorflow.io",
    }
)
# Identifiers in marshalled lambda bytecode that mean it reaches for the system.
_DANGEROUS_STRINGS = frozenset(
    {
        "os",
        "system",
        "popen",
        "subprocess",
        "exec",
        "eval",
        "__import__",
        "builtins",
        "socket",
        "open",
        "compile",
        "getattr",
        "Popen",
        "check_output",
        "urlopen",
        "remove",
        "rmtree",
    }
)


def _finding(
    code: str, outcome: Outcome, severity: Severity, message: str, **details: JsonValue
) -> Finding:
    return Finding(SCANNER, code, severity, outcome, message, dict(details))


def _cut(text: str, limit: int = 160) -> str:
    return cut_text(text, limit)


class _Refused(Exception):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


def scan(
    fh: BinaryIO,
    size: int,
    name: str,
    limits: KerasLimits = DEFAULT_LIMITS,
    embedded: EmbeddedScan | None = None,
) -> list[Finding]:
    """Inspect a `.keras` zip or a Keras `.h5` file's model config. Never raises on bad input.

    `embedded` scans a file the config embeds (a TorchModuleWrapper's `torch.save` bytes) as a
    member of this one (the dispatch passes its scan context's); None: as a file of its own."""
    fh.seek(0)
    head = fh.read(min(size, 2056))
    magic = head[:8]
    try:
        if magic.startswith(ZIP_MAGIC):
            config = _zip_config(fh, name, limits)
        elif any(head[at : at + 8] == HDF5_MAGIC for at in (0, 512, 1024, 2048)):
            # HDF5 may start after a user block of 512, 1024, 2048... bytes
            config = _h5_config(fh, name, limits)
        else:
            return [
                _finding(
                    "KERAS_FORMAT_UNKNOWN",
                    Outcome.ERROR,
                    Severity.HIGH,
                    f"{name}: neither a .keras zip nor an HDF5 file",
                    file=name,
                )
            ]
    except _Refused as refused:
        return [refused.finding]
    if config is None:
        return []
    return list(_ConfigCheck(name, limits, embedded).run(config))[: limits.max_findings]


def _zip_config(fh: BinaryIO, name: str, limits: KerasLimits) -> object:
    try:
        with zipfile.ZipFile(fh) as archive:
            infos = archive.infolist()
            if len(infos) > limits.max_members:
                raise _Refused(_invalid(name, f"{len(infos)} members, over {limits.max_members}"))
            configs = [i for i in infos if i.filename == CONFIG_MEMBER]
            if len(configs) > 1:
                raise _Refused(
                    _finding(
                        "KERAS_DUPLICATE_CONFIG",
                        Outcome.MALICIOUS,
                        Severity.CRITICAL,
                        f"{name}: the zip holds config.json {len(configs)} times; readers "
                        "disagree on which one counts",
                        file=name,
                    )
                )
            if not configs:
                raise _Refused(_invalid(name, "no config.json member"))
            if configs[0].file_size > limits.max_config_bytes:
                raise _Refused(_invalid(name, f"config.json is {configs[0].file_size} bytes"))
            with archive.open(configs[0]) as member:
                raw = member.read(limits.max_config_bytes + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error) as exc:
        raise _Refused(_invalid(name, f"unreadable zip ({_cut(str(exc), 80)})")) from exc
    except (NotImplementedError, RuntimeError, ValueError) as exc:  # compression, encryption
        raise _Refused(_invalid(name, f"unreadable zip ({_cut(str(exc), 80)})")) from exc
    if len(raw) > limits.max_config_bytes:
        raise _Refused(_invalid(name, "config.json is larger than its directory entry says"))
    return _parse_json(raw, name)


def _h5_config(fh: BinaryIO, name: str, limits: KerasLimits) -> object:
    """model_config read by h5py in a child process: the HDF5 library trusts sizes the file
    gives (a variable-length string's heap entry), so a hostile file can make it hang or
    allocate gigabytes; the child's memory, CPU and wall-clock limits bound that."""
    try:
        import h5py  # noqa: F401 - here only to say when it is missing; the child reads
    except ImportError:
        return _h5_reply(("missing", None), name)
    fh.seek(0)
    data = fh.read()
    if _can_fork():
        context: ForkContext | SpawnContext = multiprocessing.get_context("fork")
    else:
        context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=h5_child.read_model_config, args=(data, limits, send))
    with warnings.catch_warnings():
        # Python 3.12+ counts OS threads: numpy's idle OpenBLAS threads are not ours to fear
        # (OpenBLAS has fork handlers); the one thread that runs Python is checked above
        warnings.filterwarnings("ignore", ".*fork", DeprecationWarning)
        child.start()
    send.close()
    try:
        reply = receive.recv() if receive.poll(limits.h5_wall_s) else None
    except EOFError:
        reply = None
    finally:
        receive.close()
        child.kill()
        child.join()
    return _h5_reply(reply, name)


def _can_fork() -> bool:
    """`fork` where it is safe and available (Linux, this process has one thread: a scan
    worker, `hubwarden scan`): the child has h5py loaded already and starts in milliseconds.
    Elsewhere `spawn`, a fresh interpreter (about 0.6 s): forking a process with other
    threads can copy a lock one of them holds."""
    return sys.platform.startswith("linux") and threading.active_count() == 1


def _h5_reply(reply: object, name: str) -> object:
    if reply is None:
        raise _Refused(
            _finding(
                "KERAS_RESOURCE",
                Outcome.ERROR,
                Severity.HIGH,
                f"{name}: reading the HDF5 model_config hit a memory, CPU or time limit",
                file=name,
            )
        )
    if not isinstance(reply, tuple) or len(reply) != 2:
        raise _Refused(_invalid(name, "the HDF5 reader gave no usable reply"))
    kind, value = reply
    if kind == "missing":
        raise _Refused(
            _finding(
                "KERAS_H5_UNINSPECTED",
                Outcome.REVIEW,
                Severity.MEDIUM,
                f"{name}: HDF5 model file, and h5py is not installed to read its model_config",
                file=name,
            )
        )
    if kind == "invalid":
        raise _Refused(_invalid(name, str(value)))
    if kind == "none":
        return None
    if not isinstance(value, bytes):
        raise _Refused(_invalid(name, "model_config is not JSON text"))
    return _parse_json(value, name)


def _invalid(name: str, why: str) -> Finding:
    return _finding(
        "KERAS_MODEL_INVALID", Outcome.ERROR, Severity.HIGH, f"{name}: {why}", file=name
    )


def _parse_json(raw: bytes, name: str) -> object:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Refused(_invalid(name, f"config is not JSON ({_cut(str(exc), 80)})")) from exc


@dataclass
class _ConfigCheck:
    name: str
    limits: KerasLimits
    embedded: EmbeddedScan | None = None

    def run(self, config: object) -> Iterator[Finding]:
        walked = 0
        stack: list[tuple[object, int]] = [(config, 0)]
        while stack:
            node, depth = stack.pop()
            walked += 1
            if walked > self.limits.max_nodes or depth > self.limits.max_depth:
                yield _invalid(self.name, "config is too large or too deeply nested to inspect")
                return
            if isinstance(node, dict):
                yield from self._object(node)
                stack.extend((v, depth + 1) for v in node.values())
            elif isinstance(node, list):
                stack.extend((v, depth + 1) for v in node)

    def _object(self, node: dict[str, object]) -> Iterator[Finding]:
        class_name = node.get("class_name")
        if not isinstance(class_name, str):
            return
        config = node.get("config")
        function = config.get("function") if isinstance(config, dict) else None
        # a Keras 3 Lambda's function is an object of its own (`__lambda__`, or a function
        # reference with a module), reported when the walk reaches it
        if class_name == "__lambda__" or (
            class_name == "Lambda" and not isinstance(function, dict)
        ):
            yield self._lambda(node)
        if class_name in _LAYERS_THAT_LOAD:
            yield self._loading_layer(class_name, config)
            if isinstance(config, dict) and isinstance(config.get("module"), str):
                yield from self._embedded_module(str(config["module"]))
        if class_name in _VOCABULARY_LAYERS and isinstance(config, dict):
            vocabulary = config.get("vocabulary")
            if isinstance(vocabulary, str):
                yield self._vocabulary_file(class_name, vocabulary)
        if class_name in ("TFOpLambda", "SlicingOpLambda"):
            tf_finding = self._tf_op(config)
            if tf_finding is not None:
                yield tf_finding
        module = node.get("module")
        if isinstance(module, str):
            finding = self._module(module, class_name, node)
            if finding is not None:
                yield finding
        registered = node.get("registered_name")
        if isinstance(registered, str) and ">" in registered:
            yield _finding(
                "KERAS_CUSTOM_OBJECT",
                Outcome.REVIEW,
                Severity.MEDIUM,
                f"{self.name}: uses the custom object {_cut(registered)!r}, registered by code "
                "that must be imported to load the model",
                file=self.name,
                registered_name=_cut(registered),
            )

    def _module(self, module: str, class_name: str, node: dict[str, object]) -> Finding | None:
        qualified = f"{module}.{class_name}"
        function_name = node.get("config") if class_name == "function" else None
        names = {class_name, function_name if isinstance(function_name, str) else ""}
        if _KERAS_MODULE.fullmatch(module):
            if names & _UNSAFE_KERAS_NAMES or _UNSAFE_KERAS_SEGMENTS & set(module.split(".")):
                return self._unsafe(qualified)
            return None
        if module == "builtins" and class_name == "function":
            return None  # Keras looks such names up only in its own built-in modules
        if module.split(".")[0] in _DANGEROUS_MODULES or module in _DANGEROUS_MODULES:
            return self._unsafe(qualified)
        return _finding(
            "KERAS_UNKNOWN_MODULE",
            Outcome.REVIEW,
            Severity.HIGH,
            f"{self.name}: rebuilds {_cut(qualified)} from a module outside Keras, which loading "
            "imports",
            file=self.name,
            module=_cut(module),
            class_name=_cut(class_name),
        )

    def _loading_layer(self, class_name: str, config: object) -> Finding:
        """Layers whose config makes loading read and run another model (a safe-mode bypass)."""
        detail = ""
        if isinstance(config, dict):
            path = config.get("filepath")
            if isinstance(path, str):
                detail = f" from {_cut(path)!r}"
        return _finding(
            "KERAS_LOADS_OTHER_MODEL",
            Outcome.REVIEW,
            Severity.HIGH,
            f"{self.name}: the {class_name} layer loads {_LAYERS_THAT_LOAD[class_name]}{detail} "
            "when the model loads, which safe mode does not stop in older Keras",
            file=self.name,
            class_name=class_name,
        )

    def _embedded_module(self, encoded: str) -> Iterator[Finding]:
        """TorchModuleWrapper keeps `torch.save(module)` base64-encoded: scan it as a file."""
        if len(encoded) > self.limits.max_config_bytes:
            return
        blob = _b64(encoded)
        if not blob:
            return
        label = f"{self.name}:TorchModuleWrapper"
        for found in (self.embedded or _scan_alone)(blob, label):
            yield _finding(
                found.code,
                found.outcome,
                found.severity,
                f"{label}: {found.message}",
                **found.details,
            )

    def _vocabulary_file(self, class_name: str, path: str) -> Finding:
        """A lookup layer whose vocabulary is a file path: loading reads it (CVE-2025-12058),
        through `tf.io.gfile`, which also fetches URLs and cloud paths."""
        escapes = path.startswith(("/", "~", "\\")) or ".." in path.replace("\\", "/").split("/")
        remote = "://" in path
        return _finding(
            "KERAS_VOCABULARY_FILE",
            Outcome.MALICIOUS if escapes or remote else Outcome.REVIEW,
            Severity.CRITICAL if escapes or remote else Severity.HIGH,
            f"{self.name}: the {class_name} layer reads its vocabulary from {_cut(path)!r} when "
            "the model loads (a local file or a URL outside the model: CVE-2025-12058)",
            file=self.name,
            class_name=class_name,
            path=_cut(path, 200),
        )

    def _tf_op(self, config: object) -> Finding | None:
        """tf.keras `TFOpLambda` calls `tf.<function>`: a few of those touch files or run code."""
        function = config.get("function") if isinstance(config, dict) else None
        if not isinstance(function, str):
            return None
        parts = set(function.replace("tf.", "", 1).split("."))
        if not parts & _UNSAFE_TF_OPS:
            return None
        return self._unsafe(f"tf.{function}")

    def _unsafe(self, qualified: str) -> Finding:
        return _finding(
            "KERAS_UNSAFE_OBJECT",
            Outcome.MALICIOUS,
            Severity.CRITICAL,
            f"{self.name}: the config names {_cut(qualified)}, which runs code, downloads or "
            "turns safe mode off when the model loads",
            file=self.name,
            object=_cut(qualified),
        )

    def _lambda(self, node: dict[str, object]) -> Finding:
        code = _lambda_code(node)
        if code is None:
            return _finding(
                "KERAS_LAMBDA_LAYER",
                Outcome.REVIEW,
                Severity.HIGH,
                f"{self.name}: has a Lambda layer calling a named Python function",
                file=self.name,
            )
        decoded = _b64(code)
        strings = _identifiers(decoded) if decoded is not None else []
        dangerous = sorted(set(strings) & _DANGEROUS_STRINGS)
        return _finding(
            "KERAS_LAMBDA_CODE",
            Outcome.MALICIOUS if dangerous or decoded is None else Outcome.REVIEW,
            Severity.CRITICAL if dangerous else Severity.HIGH,
            f"{self.name}: has a Lambda layer with marshalled Python bytecode that runs on load"
            + (f"; it names {', '.join(dangerous)}" if dangerous else ""),
            file=self.name,
            code_base64=_cut(code, 200),
            code_bytes=len(decoded) if decoded is not None else None,
            names=list[JsonValue](strings[:40]),
        )


def _lambda_code(node: dict[str, object]) -> str | None:
    """The base64 bytecode of a Lambda (Keras 3 `__lambda__` value/code, Keras 2 function)."""
    config = node.get("config")
    if not isinstance(config, dict):
        return None
    if node.get("class_name") == "__lambda__":
        candidate = config.get("value", config.get("code"))
        return candidate if isinstance(candidate, str) else None
    function = config.get("function")
    if config.get("function_type") == "lambda":
        if isinstance(function, list | tuple) and function and isinstance(function[0], str):
            return function[0]
        if isinstance(function, str):
            return function
    return None


def _b64(code: str) -> bytes | None:
    try:
        return base64.b64decode(code.encode("ascii", "replace"), validate=False)
    except (binascii.Error, ValueError):
        return None


def _identifiers(blob: bytes) -> list[str]:
    """Identifier-like ASCII runs in marshalled code (its names and constants), in order."""
    seen: dict[str, None] = {}
    for match in re.finditer(rb"[A-Za-z_][A-Za-z0-9_]{1,63}", blob[: 1024 * 1024]):
        seen.setdefault(match.group(0).decode("ascii"), None)
    return list(seen)


def _scan_alone(blob: bytes, label: str) -> list[Finding]:
    """Embedded bytes scanned as a file of their own, for a caller of `scan` that passed no scan
    context (the dispatch always passes its own: depth and budget shared)."""
    from scanners.dispatch import scan_stream  # late: the dispatch imports this module

    return list(scan_stream(io.BytesIO(blob), len(blob), label).findings)
