"""Techniques from public scanner and loader advisories that the other corpora did not hold yet
(issue 13, item 6), each sample citing its advisory, pull request or write-up.

Gathered from: picklescan's advisories and tests (mmaitre314/picklescan), fickling's bypass tests
and advisories (trailofbits/fickling), modelscan and ModelAudit issues and pull requests, the
Keras safe-mode CVE reports (io-no/CVE-Reports, keras-team/keras pull requests), ONNX external
data advisories, Jinja sandbox CVEs and the "Zombie Zip" write-up. Every sample is assembled here
byte by byte (or written by h5py, gguf-py, torch); nothing is ever loaded or run. The expected
verdict is `HELD` for malicious samples (an admin must look before anyone loads them) and clean
for the benign neighbours that keep the rules honest.

`advisory_samples(root)` writes them all; `advisory_sources()` maps each name to its source.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from scanners.report import Outcome
from tests.scanners.corpus import (
    EVIL,
    HELD,
    Sample,
    call,
    g,
    pkl,
    reduce_global,
    sg,
    torch_zip_with,
    u,
    zip_bytes,
)
from tests.scanners.corpus_headers import (
    dense,
    keras_config,
    keras_layer,
    make_gguf,
    make_keras_zip,
    onnx_graph,
    onnx_model,
    onnx_node,
    onnx_tensor,
    pb_field,
)

CLEAN = frozenset({Outcome.CLEAN})
Writer = Callable[[Path], None]
Entry = tuple[bytes | Writer, frozenset[Outcome], str]


# ---- pickles ------------------------------------------------------------------------------------
def _legacy_magic_via_eval() -> bytes:
    """Legacy torch.save layout whose magic number is itself computed by a call (eval of the
    number's text), the payload in a pickle after the storage keys."""
    return (
        reduce_global("builtins", "eval", "0x1950A86A20F9469CFC6C")
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps({}, protocol=2)
        + pickle.dumps([], protocol=2)
        + EVIL
        + pickle.dumps(None, protocol=2)
    )


def _frame(body: bytes, declared: int) -> bytes:
    return b"\x95" + struct.pack("<Q", declared) + body


def _frame_hides_global() -> bytes:
    """A FRAME declaring 2 bytes whose BINBYTES claims 263: a parser bounded by frames sees one
    long bytestring, CPython's file unpickler reads past the frame and runs the GLOBAL/REDUCE
    buried in it. The first string pushes the frame across the unpickler's 128 KiB read buffer."""
    hidden = g("os", "system") + b"Vecho pwned\n" + b"\x85R"
    return (
        b"\x80\x05N"
        + b"V"
        + b"a" * (8192 * 16 - 17)
        + b"\n0("
        + _frame(b"B" + struct.pack("<I", 0x107) + b"\x00\x00", 2)
        + (hidden + b"(").ljust(261, b"N")
        + b"1."
    )


def _frame_straddled_by_global() -> bytes:
    """GLOBAL os/system longer than the frame that opens it: Python's `_Unframer` refuses it,
    the C unpickler (what `pickle.load` and `torch.load` use) runs it."""
    return b"\x80\x05" + _frame(g("os", "system"), 7) + b"Vid\n\x85R."


def _obj_call_popped() -> bytes:
    """OBJ calls smtplib.SMTP('127.0.0.1') and POP drops the result: the call leaves nothing in
    what the pickle returns."""
    return b"\x80\x04(" + sg("smtplib", "SMTP") + u("127.0.0.1") + b"o0N."


def _mapping_wrapper_getitem() -> bytes:
    """operator.getitem on a ChainMap over a defaultdict: the lookup of a missing key calls the
    defaultdict's factory, a call no REDUCE names."""
    factory = call(g("collections", "defaultdict"), g("builtins", "breakpoint"))
    chained = call(g("collections", "ChainMap"), factory)
    return pkl(call(g("operator", "getitem"), chained, u("missing")), 2)


def _find_spec_chain() -> bytes:
    """importlib.util.module_from_spec(importlib.util.find_spec('os')): a module object with no
    GLOBAL naming it."""
    spec = call(g("importlib.util", "find_spec"), u("os"))
    return pkl(call(g("importlib.util", "module_from_spec"), spec), 2)


def _sg_call(module: str, name: str, *args: bytes) -> bytes:
    return pkl(sg(module, name) + b"(" + b"".join(args) + b"tR")


# (module, name, source): callables picklescan, fickling or ModelAudit added to their lists after
# a bypass, that no other corpus calls yet.
ADVISORY_GADGETS: tuple[tuple[str, str, str], ...] = (
    ("_io", "FileIO", "GHSA-9726-w42j-3qjr (picklescan: io.FileIO stored as _io.FileIO)"),
    ("httplib", "HTTPSConnection", "GHSA-hgrh-qx5j-jfwx (picklescan network modules)"),
    ("commands", "getoutput", "picklescan _unsafe_globals (Python 2 commands)"),
    ("cloudpickle.cloudpickle", "_builtin_type", "GHSA-9m3x-qqw2-h32h (cloudpickle CodeType)"),
    ("cloudpickle.cloudpickle", "_function_setstate", "GHSA-9m3x-qqw2-h32h"),
    ("idlelib.calltip", "Calltip.fetch_tip", "GHSA-r8g5-cgf2-4m4m (picklescan idlelib)"),
    ("idlelib.pyshell", "ModifiedInterpreter.runcommand", "GHSA-r8g5-cgf2-4m4m"),
    ("idlelib.autocomplete", "AutoComplete.get_entity", "GHSA-r8g5-cgf2-4m4m"),
    ("trace", "Trace.run", "GHSA-4675-36f9-wf6r (picklescan profilers and tracers)"),
    ("_interpreters", "create", "GHSA-6ggj-6f2q-f7mx (fickling: private stdlib interpreters)"),
    ("_xxsubinterpreters", "create", "GHSA-6ggj-6f2q-f7mx"),
    ("imp", "load_source", "https://github.com/trailofbits/fickling/pull/312 (imp, pipes)"),
    ("pipes", "Template", "https://github.com/trailofbits/fickling/pull/312 (imp, pipes)"),
    ("fickling.hook", "remove_hook", "https://github.com/trailofbits/fickling/pull/249"),
    ("pickle", "_loads", "GHSA-fphw-536r-4p88 (pickle's Python fallbacks bypass hooks)"),
    ("pip._internal.cli.main", "main", "CVE-2025-1716 (picklescan: pip entry points)"),
    ("ast", "parse", "GHSA-cffv-grgg-g429 (fickling ML allow-list shadowing)"),
)


def pickle_samples() -> dict[str, Entry]:
    out: dict[str, Entry] = {
        f"gadget_{module}_{name}.pkl": (_sg_call(module, name, u("x")), HELD, source)
        for module, name, source in ADVISORY_GADGETS
    }
    out |= {
        "legacy_torch_magic_via_eval.pt": (
            _legacy_magic_via_eval(),
            HELD,
            "GHSA-97f8-7cmv-76j2 (picklescan: torch magic number built by eval)",
        ),
        "frame_hides_global.pkl": (
            _frame_hides_global(),
            HELD,
            "https://github.com/python/cpython/issues/154848 (fickling PR #317: FRAME "
            "boundaries, BINBYTES reading past its frame)",
        ),
        "frame_straddled_by_global.pkl": (
            _frame_straddled_by_global(),
            HELD,
            "https://github.com/python/cpython/issues/154848 (opcode straddling a FRAME)",
        ),
        "obj_call_popped.pkl": (
            _obj_call_popped(),
            HELD,
            "GHSA-mxhj-88fx-4pcv (fickling: OBJ call discarded by POP)",
        ),
        "dotted_attribute_of_pathlib.pkl": (
            _sg_call("pathlib", "os.system", u("id")),
            HELD,
            "GHSA-5j3x-jp52-966f (fickling: dotted attribute names in STACK_GLOBAL)",
        ),
        "mapping_wrapper_getitem.pkl": (
            _mapping_wrapper_getitem(),
            HELD,
            "https://github.com/promptfoo/modelaudit/pull/1063 (ChainMap/defaultdict getitem)",
        ),
        "importlib_find_spec_chain.pkl": (
            _find_spec_chain(),
            HELD,
            "https://github.com/mmaitre314/picklescan/issues/66 (find_spec + module_from_spec)",
        ),
        # benign neighbours: well-formed frames (fickling's false-positive guard)
        "frames_interleaved_proto5.pkl": (
            pickle.dumps([1, b"y" * 100_000, 2], protocol=5),
            CLEAN,
            "benign (fickling test_well_formed_frames_are_not_flagged)",
        ),
        "frames_many_proto4.pkl": (
            pickle.dumps(list(range(200_000)), protocol=4),
            CLEAN,
            "benign (several full frames)",
        ),
    }
    return out


# ---- zip ----------------------------------------------------------------------------------------
def _local_method_differs() -> bytes:
    """ "Zombie Zip": the central directory says deflated (what torch's and Python's readers use),
    the local header says stored (what a scanner walking local headers reads: no pickle)."""
    data = bytearray(zip_bytes([("archive/data.pkl", EVIL)], zipfile.ZIP_DEFLATED))
    at = data.find(b"PK\x03\x04")
    struct.pack_into("<H", data, at + 8, zipfile.ZIP_STORED)
    return bytes(data)


def _central_method_stored_of_deflated() -> bytes:
    """The other way round: deflated bytes the central directory calls stored. No loader can
    read them as a pickle; the archive is malformed, never clean."""
    data = bytearray(zip_bytes([("archive/data.pkl", EVIL)], zipfile.ZIP_DEFLATED))
    at = data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, at + 10, zipfile.ZIP_STORED)
    return bytes(data)


def _nemo_with(link: tarfile.TarInfo) -> bytes:
    """A `.nemo` (NeMo's tar layout) with one link member besides its config: NeMo extracts the
    archive to a temporary folder before reading it."""
    config = b"target: nemo.collections.asr.models.EncDecCTCModelBPE\nsample_rate: 16000\n"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        info = tarfile.TarInfo("./model_config.yaml")
        info.size = len(config)
        archive.addfile(info, io.BytesIO(config))
        archive.addfile(link)
    return out.getvalue()


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def tar_samples() -> dict[str, Entry]:
    escape = "CVE-2007-4559 / CVE-2025-4517 (tarfile extraction through links out of the folder)"
    return {
        "nemo_symlink_escape.nemo": (
            _nemo_with(_link("./model_weights.ckpt", "../../../../root/.bashrc", tarfile.SYMTYPE)),
            HELD,
            escape,
        ),
        "nemo_hardlink_absolute.nemo": (
            _nemo_with(_link("./tokenizer.model", "/etc/passwd", tarfile.LNKTYPE)),
            HELD,
            escape,
        ),
    }


def zip_samples() -> dict[str, Entry]:
    zombie = "CVE-2026-0866 ('Zombie Zip': compression method fields that disagree)"
    return {
        "zip_local_method_stored_central_deflated.pt": (_local_method_differs(), HELD, zombie),
        "zip_central_method_stored_of_deflated.pt": (
            _central_method_stored_of_deflated(),
            HELD,
            zombie,
        ),
        "zip_deflated_pickle_raw_zlib.bin": (
            zip_bytes([("archive/data.pkl", zlib.compress(EVIL))]),
            HELD,
            "GHSA-gx77-x2pv-48v7 class (JFrog: picklescan zero-days, members a scanner cannot "
            "parse are skipped); zlib stream in a stored member",
        ),
    }


# ---- Keras --------------------------------------------------------------------------------------
def _keras_zip(config: dict[str, Any]) -> Writer:
    def write(path: Path) -> None:
        make_keras_zip(path, config)

    return write


def _keras_with_weights(config: dict[str, Any]) -> Writer:
    """A `.keras` archive with real HDF5 weights (h5py), as Keras 3 saves a Dense model."""

    def write(path: Path) -> None:
        weights = io.BytesIO()
        with h5py.File(weights, "w") as h5:
            h5.create_dataset("layers/dense/vars/0", data=np.zeros((4, 2), dtype=np.float32))
            h5.create_dataset("layers/dense/vars/1", data=np.zeros(2, dtype=np.float32))
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
            archive.writestr("config.json", json.dumps(config))
            archive.writestr("model.weights.h5", weights.getvalue())

    return write


def _lambda_bytecode() -> str:
    """A marshalled code object, base64 as Keras' `func_dump` writes it (compiled, never run)."""
    import marshal

    code = compile("__import__('os').system('id')", "<lambda>", "eval")
    return base64.b64encode(marshal.dumps(code)).decode("ascii")


def _lambda_layer(function: dict[str, Any], arguments: dict[str, Any] | None = None) -> Any:
    return keras_layer("Lambda", {"function": function, "arguments": arguments or {}})


def _keras_h5_lambda(path: Path) -> None:
    layer = {
        "class_name": "Lambda",
        "config": {"name": "l", "function": [_lambda_bytecode(), None, None]},
    }
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [layer]}}
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(config)
        h5.attrs["keras_version"] = "2.12.0"
        h5.create_dataset("model_weights/l/w", data=np.zeros(2, dtype=np.float32))


def keras_samples() -> dict[str, Entry]:
    marshal_lambda = {
        "class_name": "__lambda__",
        "config": {"value": _lambda_bytecode(), "defaults": None, "closure": None},
    }
    os_system = {"module": "os", "class_name": "function", "config": "system"}
    load_model = {"module": "keras.models", "class_name": "function", "config": "load_model"}
    wrapper = keras_layer(
        "TorchModuleWrapper",
        {"module": base64.b64encode(torch_zip_with(EVIL)).decode("ascii")},
    )
    tfsm = keras_layer("TFSMLayer", {"filepath": "/tmp/attacker_model", "call_endpoint": "serve"})
    return {
        "keras_lambda_marshal.keras": (
            _keras_zip(keras_config([_lambda_layer(marshal_lambda)])),
            HELD,
            "CVE-2024-3660 (Keras Lambda layer bytecode, marshal.loads at load)",
        ),
        "keras_lambda_h5.h5": (
            _keras_h5_lambda,
            HELD,
            "CVE-2025-9905 (legacy HDF5 load ignores safe_mode; io-no/CVE-Reports#7)",
        ),
        "keras_lambda_function_gadget.keras": (
            _keras_zip(keras_config([_lambda_layer(os_system)])),
            HELD,
            "CVE-2025-1550 / https://github.com/keras-team/tf-keras/pull/910 (a Lambda "
            "'function' resolved from any module)",
        ),
        "keras_lambda_load_model_unsafe.keras": (
            _keras_zip(keras_config([_lambda_layer(load_model, {"safe_mode": False})])),
            HELD,
            "CVE-2025-9906 / CVE-2025-8747 (io-no/CVE-Reports#5: Lambda calls load_model with "
            "safe_mode off)",
        ),
        "keras_torch_module_wrapper.keras": (
            _keras_zip(keras_config([wrapper])),
            HELD,
            "https://github.com/keras-team/keras/pull/21575 (TorchModuleWrapper torch.load of a "
            "base64 pickle in config.json)",
        ),
        "keras_tfsm_layer.keras": (
            _keras_zip(keras_config([tfsm])),
            HELD,
            "https://github.com/keras-team/keras/pull/22035 (TFSMLayer loads an outside "
            "SavedModel in safe mode)",
        ),
        "keras_dense_only.keras": (_keras_with_weights(keras_config([dense()])), CLEAN, "benign"),
    }


# ---- ONNX ---------------------------------------------------------------------------------------
def _external_entry(key: str, value: str) -> bytes:
    return pb_field(13, pb_field(1, key) + pb_field(2, value))


def _tensor_with_external(entries: list[tuple[str, str]]) -> bytes:
    tensor = pb_field(1, 4) + pb_field(2, 1) + pb_field(8, "w")
    tensor += b"".join(_external_entry(k, v) for k, v in entries)
    return tensor + pb_field(14, 1)


def onnx_samples() -> dict[str, Entry]:
    relu = onnx_node("Relu")
    return {
        "onnx_external_data_absolute.onnx": (
            onnx_model(onnx_graph([relu], [onnx_tensor("w", location="/etc/passwd")])),
            HELD,
            "CVE-2022-25882 / https://github.com/onnx/onnx/issues/3991 (absolute external path)",
        ),
        "onnx_external_data_key_injection.onnx": (
            onnx_model(
                onnx_graph(
                    [relu],
                    [_tensor_with_external([("location", "w.bin"), ("__class__", "x")])],
                )
            ),
            HELD,
            "CVE-2026-34445 (onnx ExternalDataInfo setattr of keys from the model)",
        ),
        "onnx_pythonop_com_microsoft.onnx": (
            onnx_model(
                onnx_graph([onnx_node("PythonOp", domain="com.microsoft")]),
                opsets=(("", 17), ("com.microsoft", 1)),
            ),
            HELD,
            "https://github.com/promptfoo/modelaudit/pull/140 (PythonOp nodes: onnxruntime "
            "training's com.microsoft PythonOp calls a Python function named in the node)",
        ),
    }


# ---- GGUF chat templates ------------------------------------------------------------------------
TEMPLATES: dict[str, tuple[str, str]] = {
    "gguf_template_cycler_globals.gguf": (
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "Jinja SSTI through cycler's globals (PayloadsAllTheThings, Jinja2 section)",
    ),
    "gguf_template_lipsum_globals.gguf": (
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "Jinja SSTI through lipsum's globals (PayloadsAllTheThings, Jinja2 section)",
    ),
    "gguf_template_reference_context.gguf": (
        "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
        "Jinja SSTI through self._TemplateReference__context (PayloadsAllTheThings)",
    ),
    "gguf_template_stored_format_cve_2024_56326.gguf": (
        "{% set f = '{0.__init__.__globals__}'.format %}{{ f(cycler) }}",
        "CVE-2024-56326 (Jinja sandbox: str.format reached through a stored reference)",
    ),
    "gguf_template_attr_format_cve_2025_27516.gguf": (
        "{{ '{0.__init__.__globals__}'|attr('format')(cycler) }}",
        "CVE-2025-27516 (Jinja sandbox: |attr filter fetches str.format)",
    ),
}


def _gguf(template: str) -> Writer:
    def write(path: Path) -> None:
        make_gguf(path, templates={"": template})

    return write


def template_samples() -> dict[str, Entry]:
    return {name: (_gguf(text), HELD, source) for name, (text, source) in TEMPLATES.items()}


# ---- the whole set ------------------------------------------------------------------------------
def _all() -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    groups = (
        pickle_samples,
        zip_samples,
        tar_samples,
        keras_samples,
        onnx_samples,
        template_samples,
    )
    for group in groups:
        out |= group()
    return out


def advisory_sample_names() -> list[str]:
    return sorted(_all())


def advisory_samples(root: Path) -> list[Sample]:
    """Write every sample under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []
    for name, (content, expect, _source) in _all().items():
        path = root / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content(path)
        samples.append(Sample(name, path, expect))
    return samples


def advisory_sources() -> dict[str, str]:
    """Each sample's source (advisory id, pull request or write-up)."""
    return {name: source for name, (_, _, source) in _all().items()}
