"""The benign non-model files a Hugging Face repo is full of, made with the real libraries where
they are installed (pyarrow, h5py, wave, tokenizers, numpy, safetensors, gguf) and otherwise as
minimal valid files built byte by byte (PNG with real zlib chunks, a baseline JPEG header, GIF,
WebP, FLAC, MP3 frames, a TFLite flatbuffer, a sentencepiece ModelProto, flax msgpack), and raw
weights no loader executes (OpenVINO's `.bin`, a TensorFlow checkpoint's data shard and SSTable
index: opaque data, `tests/scanners/corpus_opaque.py`).

Each must scan CLEAN: a scanner that holds a repo's README or its parquet shards is a scanner
admins learn to ignore. `repo_file_samples(dir)` writes them all.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import tarfile
import wave
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tests.scanners import corpus_headers as headers
from tests.scanners import corpus_opaque as opaque


def _png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _jpeg() -> bytes:
    """SOI, JFIF APP0, a quantisation table, SOF0, a Huffman table, SOS, a few bytes, EOI."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\x00" + bytes(range(1, 65))
    sof0 = b"\x08\x00\x01\x00\x01\x01\x01\x11\x00"
    dht = b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00"
    sos = b"\x01\x01\x00\x00\x3f\x00"

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body

    return (
        b"\xff\xd8"
        + segment(0xE0, app0)
        + segment(0xDB, dqt)
        + segment(0xC0, sof0)
        + segment(0xC4, dht)
        + segment(0xDA, sos)
        + b"\x00\x3f\x00"
        + b"\xff\xd9"
    )


_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def _webp() -> bytes:
    vp8l = b"\x2f\x00\x00\x00\x00\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


_SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10" fill="#f00"/></svg>\n'
)


def _wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(np.zeros(1600, dtype="<i2").tobytes())
    return buf.getvalue()


def _flac() -> bytes:
    """fLaC, a last-block STREAMINFO (34 bytes: 16 kHz mono 16-bit), no frames."""
    streaminfo = (
        struct.pack(">HH", 4096, 4096)
        + b"\x00\x00\x00\x00\x00\x00"
        + ((16000 << 44) | (0 << 41) | (15 << 36) | 0).to_bytes(8, "big")
        + b"\x00" * 16
    )
    return b"fLaC" + bytes([0x80]) + len(streaminfo).to_bytes(3, "big") + streaminfo


def _mp3(id3: bool) -> bytes:
    """MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz: 417 bytes each), optionally after ID3v2."""
    frame = b"\xff\xfb\x90\x64" + b"\x00" * 413
    tag = b""
    if id3:
        title = b"\x00" + "Démo 🎵".encode()
        frame_tit2 = b"TIT2" + struct.pack(">I", len(title)) + b"\x00\x00" + title
        size = len(frame_tit2)
        syncsafe = bytes(
            [(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F]
        )
        tag = b"ID3\x04\x00\x00" + syncsafe + frame_tit2
    return tag + frame * 3


def _parquet() -> bytes:
    table = pa.table({"text": ["hello", "wörld 🌍"], "label": [0, 1]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _arrow(stream: bool) -> bytes:
    table = pa.table({"input_ids": [[1, 2, 3], [4, 5]], "text": ["a", "b"]})
    sink = pa.BufferOutputStream()
    opener = pa.ipc.new_stream if stream else pa.ipc.new_file
    with opener(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _pb_varint(value: int) -> bytes:
    return headers.pb_varint(value)


def _sentencepiece_model() -> bytes:
    """A sentencepiece ModelProto: pieces (piece, score, type), trainer spec, normalizer spec."""

    def piece(text: str, score: float, kind: int) -> bytes:
        body = (
            headers.pb_field(1, text)
            + b"\x15"
            + struct.pack("<f", score)
            + headers.pb_field(3, kind)
        )
        return headers.pb_field(1, body)

    pieces = piece("<unk>", 0.0, 2) + piece("<s>", 0.0, 3) + piece("</s>", 0.0, 3)
    pieces += b"".join(piece(f"\u2581w{i}", -float(i), 1) for i in range(40))
    trainer = headers.pb_field(1, "corpus.txt") + headers.pb_field(3, 32000)
    normalizer = headers.pb_field(1, "nmt_nfkc") + headers.pb_field(3, 1)
    return pieces + headers.pb_field(2, trainer) + headers.pb_field(3, normalizer)


def _tiktoken() -> bytes:
    lines = [base64.b64encode(bytes([i])).decode() + f" {i}" for i in range(256)]
    return ("\n".join(lines) + "\n").encode()


def _tokenizer_json() -> bytes:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "cat": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str().encode()


def _flax_msgpack() -> bytes:
    """msgpack as flax.serialization writes it: nested maps, arrays as ext type 1 tuples."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return bytes([0xA0 | len(raw)]) + raw

    array = np.zeros((2, 2), dtype=np.float32)
    shape = b"\x92\x02\x02"  # fixarray of 2 ints
    packed = b"\x93" + shape + s("<f4") + b"\xc4" + bytes([array.nbytes]) + array.tobytes()
    ext = b"\xc7" + bytes([len(packed)]) + b"\x01" + packed
    return b"\x81" + s("params") + b"\x81" + s("dense") + b"\x81" + s("kernel") + ext


def _tflite() -> bytes:
    """A flatbuffer with the TFLite identifier: root offset, "TFL3", a small table."""
    body = struct.pack("<I", 16) + b"TFL3" + b"\x00" * 8 + struct.pack("<iI", -8, 3)
    return body + b"\x00" * 48


def _crc32c_masked(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _tfevents() -> bytes:
    """TensorBoard event file: TFRecords (length, masked CRC32C of it, data, masked CRC32C)."""
    out = b""
    for event in (b"\x09\x00\x00\x00\x00\x00\x00\xf0?\x1a\rbrain.Event:2", b"\x10\x01"):
        length = struct.pack("<Q", len(event))
        out += length + struct.pack("<I", _crc32c_masked(length))
        out += event + struct.pack("<I", _crc32c_masked(event))
    return out


def _h5_weights() -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        group = h5.create_group("dense")
        group.create_dataset("kernel:0", data=np.ones((4, 2), dtype=np.float32))
        h5.attrs["layer_names"] = [b"dense"]
    return buf.getvalue()


def _webdataset_tar(gzipped: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for i in range(3):
            for suffix, data in (
                ("jpg", _jpeg()),
                ("png", _png()),
                ("cls", str(i).encode()),
                ("json", json.dumps({"caption": f"image {i}"}).encode()),
            ):
                info = tarfile.TarInfo(f"{i:06d}.{suffix}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw) if gzipped else raw


def _csv_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.csv", "text,label\nhello,0\nworld,1\n")
        archive.writestr("test.csv", "text,label\ncat,1\n")
    return buf.getvalue()


def _npz_numeric() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, a=np.arange(5), b=np.ones((2, 3), dtype=np.float16))
    return buf.getvalue()


def _npy_numeric() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(10, dtype=np.int64).reshape(2, 5))
    return buf.getvalue()


_README = (
    "---\nlicense: apache-2.0\nlanguage:\n- en\n- fr\ntags:\n- text-classification\n"
    "datasets:\n- imdb\nmetrics:\n- accuracy\n---\n\n# My model 🤗\n\nFine-tuned on IMDB — "
    "résumé: 93 % accuracy ✅.\n\n```python\nfrom transformers import pipeline\n"
    "clf = pipeline('text-classification', model='me/model')\n```\n"
).encode()
_LICENSE = (
    b"                                 Apache License\n"
    b"                           Version 2.0, January 2004\n"
    b"                        http://www.apache.org/licenses/\n"
)
_GITATTRIBUTES = (
    b"*.7z filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*tfevents* filter=lfs diff=lfs merge=lfs "
    b"-text\n"
)


def _json(value: object) -> bytes:
    return json.dumps(value, indent=2).encode()


def _save(writer: Callable[[Path], Path]) -> Callable[[Path], bytes]:
    def build(path: Path) -> bytes:
        return writer(path).read_bytes()

    return build


# name -> builder(path) -> bytes (written to `path` by `repo_file_samples`)
REPO_FILES: dict[str, Callable[[Path], bytes]] = {
    "tokenizer.model": lambda _: _sentencepiece_model(),
    "tokenizer.json": lambda _: _tokenizer_json(),
    "vocab.txt": lambda _: b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nof\n",
    "labels.txt": lambda _: b"cat\ndog\nbird\n",
    "merges.txt": lambda _: "#version: 0.2\n\u0120 t\n\u0120 a\nh e\n".encode(),
    "cl100k_base.tiktoken": lambda _: _tiktoken(),
    "special_tokens_map.json": lambda _: _json(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    ),
    "generation_config.json": lambda _: _json(
        {"bos_token_id": 1, "eos_token_id": 2, "max_new_tokens": 256, "do_sample": True}
    ),
    "model.safetensors.index.json": lambda _: _json(
        {
            "metadata": {"total_size": 64},
            "weight_map": {"a.weight": "model-00001-of-00002.safetensors"},
        }
    ),
    ".gitattributes": lambda _: _GITATTRIBUTES,
    "README.md": lambda _: _README,
    "LICENSE": lambda _: _LICENSE,
    "image.png": lambda _: _png(),
    "photo.jpg": lambda _: _jpeg(),
    "anim.gif": lambda _: _GIF,
    "image.webp": lambda _: _webp(),
    "logo.svg": lambda _: _SVG,
    "sample.wav": lambda _: _wav(),
    "sample.flac": lambda _: _flac(),
    "sample.mp3": lambda _: _mp3(id3=True),
    "bare_frames.mp3": lambda _: _mp3(id3=False),
    "train-00000-of-00001.parquet": lambda _: _parquet(),
    "data-00000-of-00001.arrow": lambda _: _arrow(stream=True),
    "table.arrow": lambda _: _arrow(stream=False),
    "train.csv": lambda _: 'text,label\n"hello, world",0\ncafé,1\n'.encode(),
    "train.jsonl": lambda _: b'{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n',
    "dev.tsv": lambda _: b"sentence\tlabel\nhello\t0\n",
    "flax_model.msgpack": lambda _: _flax_msgpack(),
    "model.tflite": lambda _: _tflite(),
    "embeddings.npy": lambda _: _npy_numeric(),
    "arrays.npz": lambda _: _npz_numeric(),
    "model.safetensors": _save(lambda p: headers.make_safetensors_torch(p)),
    "model.gguf": _save(lambda p: headers.make_gguf(p)),
    "shard-000000.tar": lambda _: _webdataset_tar(gzipped=False),
    "shard-000001.tar.gz": lambda _: _webdataset_tar(gzipped=True),
    "tf_model.h5": lambda _: _h5_weights(),
    "data.zip": lambda _: _csv_zip(),
    "events.out.tfevents.1700000000.host.1.0": lambda _: _tfevents(),
    "optimizer.pt": lambda _: _torch_bytes(_optimizer_state()),
    "scheduler.pt": lambda _: _torch_bytes(_scheduler_state()),
    "openvino_model.bin": lambda _: opaque.openvino_weights(),
    "variables.data-00000-of-00001": lambda _: opaque.tf_checkpoint_data(),
    "variables.index": lambda _: opaque.tf_checkpoint_index(),
}


def _optimizer_state() -> dict[str, object]:
    return torch.optim.AdamW(torch.nn.Linear(2, 2).parameters()).state_dict()


def _scheduler_state() -> dict[str, object]:
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10).state_dict()


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def repo_file_samples(root: Path) -> dict[str, Path]:
    """Write every benign repo file under `root`; name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, build in REPO_FILES.items():
        path = root / name
        data = build(path)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        out[name] = path
    return out
