"""Seed inputs for the fuzz targets (`tests.fuzz.targets`), made with the real libraries:
safetensors, gguf-py's GGUFWriter, torch.save and torch.jit.save, numpy.save, h5py, joblib.

Seeds stay small (a few KiB) so that mutations reach every structure of a file quickly; a few
malicious seeds (hand-assembled, never run) make the fuzzer start from the grading paths too.
`write_seeds(target, folder)` writes one target's seeds, one file each, as libFuzzer reads them.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import tarfile
from pathlib import Path

import h5py
import joblib
import numpy as np
import safetensors.numpy
import safetensors.torch
import torch

from tests.fuzz.targets import FORMAT_FILES, STREAM_NAMES, all_seed, stream_seed
from tests.scanners import corpus_headers as headers
from tests.scanners import corpus_torchscript
from tests.scanners.corpus import EVIL, legacy_torch_with, torch_zip_with


def _torch_bytes(obj: object, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def _state_dict() -> dict[str, torch.Tensor]:
    return {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3, dtype=torch.float16)}


def safetensors_seeds() -> list[bytes]:
    return [
        safetensors.torch.save(_state_dict(), metadata={"format": "pt"}),
        safetensors.torch.save({"i8": torch.zeros(4, dtype=torch.int8), "e": torch.zeros(0)}),
        safetensors.numpy.save({"x": np.arange(5, dtype=np.float64)}),
        safetensors.torch.save({}),
    ]


def _gguf_bytes(folder: Path, name: str, **kwargs: object) -> bytes:
    path = folder / name
    headers.make_gguf(path, vocab_size=8, **kwargs)  # type: ignore[arg-type]
    return path.read_bytes()


def _gguf_metadata(writer: object) -> None:
    """Every GGUF value type in one header: ints, floats, bools, arrays, nested strings."""
    import gguf

    assert isinstance(writer, gguf.GGUFWriter)
    writer.add_uint8("t.u8", 7)
    writer.add_int64("t.i64", -3)
    writer.add_float64("t.f64", 0.5)
    writer.add_bool("t.bool", True)
    writer.add_array("t.arr", [1, 2, 3])
    writer.add_array("t.strs", ["a", "bc"])


def gguf_seeds(folder: Path) -> list[bytes]:
    small = {"token_embd.weight": np.ones((8, 4), dtype=np.float32)}
    return [
        _gguf_bytes(folder, "a.gguf", tensors=small),
        _gguf_bytes(folder, "b.gguf", tensors=small, templates={"": headers.MISTRAL}),
        _gguf_bytes(folder, "c.gguf", tensors={}, extra=_gguf_metadata, alignment=64),
        _gguf_bytes(folder, "d.gguf", tensors=small, templates={"": headers.CVE_2024_34359}),
    ]


def _tar_of(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _npz(compressed: bool) -> bytes:
    buf = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buf, a=np.arange(4), b=np.ones((2, 2), dtype=np.float16))
    return buf.getvalue()


def _joblib() -> bytes:
    buf = io.BytesIO()
    joblib.dump({"w": np.arange(8.0), "o": np.array([1, None], dtype=object)}, buf)
    return buf.getvalue()


def archive_seeds() -> list[bytes]:
    saved = _torch_bytes(_state_dict())
    return [
        saved,
        _torch_bytes(_state_dict(), _use_new_zipfile_serialization=False),
        _npz(False),
        _npz(True),
        _tar_of([("model.pt", saved), ("README.md", b"# ok\n")]),
        gzip.compress(saved),
        _joblib(),
        corpus_torchscript.scripted(),
        torch_zip_with(EVIL),
        legacy_torch_with(EVIL),
    ]


def pickle_seeds() -> list[bytes]:
    plain = {"a": [1, 2.5, "x", (3, None)], "b": b"y", "s": {1, 2}, "big": 1 << 70}
    seeds = [pickle.dumps(plain, protocol=p) for p in range(6)]
    seeds.append(pickle.dumps({"t": torch.zeros(3), "dt": torch.float16}, protocol=2))
    seeds.append(pickle.dumps({"a": np.arange(3.0), "rs": np.random.RandomState(0)}, protocol=4))
    seeds.append(EVIL)
    return seeds


def _npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=version, allow_pickle=True)
    return buf.getvalue()


def numpy_seeds() -> list[bytes]:
    return [
        _npy(np.arange(6, dtype=np.float32).reshape(2, 3)),
        _npy(np.asfortranarray(np.ones((2, 2), dtype="<i8"))),
        _npy(np.zeros(2, dtype=[("a", "<f4"), ("b", "S3")]), version=(2, 0)),
        _npy(np.array(["ab", "c"]), version=(3, 0)),
        _npy(np.array([1, "x", None], dtype=object)),
    ]


def _keras_zip(folder: Path) -> bytes:
    path = folder / "m.keras"
    headers.make_keras_zip(path, headers.keras_config([headers.dense()]))
    return path.read_bytes()


def _keras_h5(folder: Path) -> bytes:
    path = folder / "m.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = "2.15.0"
        h5.attrs["model_config"] = json.dumps(headers.keras_config([headers.dense()]))
        h5.create_dataset("model_weights/dense/kernel", data=np.zeros((4, 2), dtype=np.float32))
    return path.read_bytes()


def keras_seeds(folder: Path) -> list[bytes]:
    return [_keras_zip(folder), _keras_h5(folder)]


def onnx_seeds() -> list[bytes]:
    relu = headers.onnx_node("Relu")
    custom = headers.onnx_node("PyOp", domain="com.microsoft")
    function = headers.onnx_function("f", "local", [relu])
    return [
        headers.onnx_model(headers.onnx_graph([relu], [headers.onnx_tensor("w")])),
        headers.onnx_model(headers.onnx_graph([custom]), opsets=(("", 17), ("com.microsoft", 1))),
        headers.onnx_model(
            headers.onnx_graph([relu], [headers.onnx_tensor("e", location="weights.bin")]),
            functions=[function],
        ),
    ]


def template_seeds() -> list[bytes]:
    sources = (headers.CHATML, headers.LLAMA3, headers.MISTRAL, headers.GEMMA)
    return [s.encode() for s in (*sources, headers.CVE_2024_34359)]


def _per_format(folder: Path) -> dict[str, list[bytes]]:
    return {
        "safetensors": safetensors_seeds(),
        "gguf": gguf_seeds(folder),
        "archive": archive_seeds(),
        "pickle": pickle_seeds(),
        "numpy": numpy_seeds(),
        "keras": keras_seeds(folder),
        "onnx": onnx_seeds(),
        "template": template_seeds(),
    }


def all_seeds(folder: Path) -> dict[str, list[bytes]]:
    """Every target's seeds: the format targets', `detect` (all of them, no name) and `stream`
    (each under its format's name, and again under a name that hints nothing)."""
    folder.mkdir(parents=True, exist_ok=True)
    per_format = _per_format(folder)
    every = [seed for seeds in per_format.values() for seed in seeds]
    streamed = [
        stream_seed(FORMAT_FILES[target], seed, index)
        for target, seeds in per_format.items()
        for index, seed in enumerate(seeds)
    ]
    streamed += [stream_seed(STREAM_NAMES[-1], seed, 7) for seed in every]
    by_target = {**per_format, "detect": every, "stream": streamed}
    by_target["all"] = [all_seed(t, seed) for t, seeds in by_target.items() for seed in seeds]
    return by_target


def write_seeds(seeds: list[bytes], folder: Path) -> Path:
    """One file per seed, as libFuzzer reads a corpus folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(seeds):
        (folder / f"seed-{index:03d}").write_bytes(seed)
    return folder
