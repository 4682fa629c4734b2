"""Header scans of multi-GB safetensors and GGUF files, in milliseconds.

Builds sparse files in a temporary directory (a 7B-shard-like safetensors of ~4 GB and a
Llama-3-like GGUF of ~4 GB with a 128k vocabulary, 280k merges and a tool-calling chat template),
then times `scanners.safetensors.scan`, `scanners.gguf.scan` and the streaming `HeaderProbe`.
Nothing is asserted: run `python bench/header_scan_bench.py [--repeat N]` and read the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanners import gguf as gguf_scanner
from scanners import safetensors as st_scanner
from tests.scanners.corpus_headers import LLAMA31_TOOLS

GIB = 1024**3


def llama_like_tensors(layers: int, hidden: int, ffn: int) -> list[tuple[str, list[int]]]:
    shapes = [("model.embed_tokens.weight", [128_256, hidden])]
    for i in range(layers):
        prefix = f"model.layers.{i}"
        shapes += [
            (f"{prefix}.self_attn.q_proj.weight", [hidden, hidden]),
            (f"{prefix}.self_attn.k_proj.weight", [hidden // 4, hidden]),
            (f"{prefix}.self_attn.v_proj.weight", [hidden // 4, hidden]),
            (f"{prefix}.self_attn.o_proj.weight", [hidden, hidden]),
            (f"{prefix}.mlp.gate_proj.weight", [ffn, hidden]),
            (f"{prefix}.mlp.up_proj.weight", [ffn, hidden]),
            (f"{prefix}.mlp.down_proj.weight", [hidden, ffn]),
            (f"{prefix}.input_layernorm.weight", [hidden]),
            (f"{prefix}.post_attention_layernorm.weight", [hidden]),
        ]
    return shapes


def make_safetensors(path: Path) -> int:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in llama_like_tensors(layers=16, hidden=4096, ffn=14336):
        n_bytes = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n_bytes]}
        offset += n_bytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)  # sparse: the tensor bytes take no disk
    return len(header) - 1


def make_gguf(path: Path) -> int:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("bench-llama")
    writer.add_tokenizer_model("gpt2")
    vocab = 128_256
    writer.add_token_list([f"tok{i:06d}" for i in range(vocab)])
    writer.add_token_types([1] * vocab)
    writer.add_token_merges([f"t{i} k{i}" for i in range(280_000)])
    writer.add_chat_template(LLAMA31_TOOLS)
    shapes = llama_like_tensors(layers=24, hidden=4096, ffn=14336)
    q4k = gguf.GGMLQuantizationType.Q4_K
    block, block_bytes = gguf.GGML_QUANT_SIZES[q4k]
    total = 0
    for name, shape in shapes:
        elements = int(np.prod(shape))
        if len(shape) == 2:
            n_bytes = elements // block * block_bytes
            # gguf-py takes the byte shape of quantized tensors: rows x bytes per row
            byte_shape = [shape[0], shape[1] // block * block_bytes]
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), n_bytes, raw_dtype=q4k)
        else:
            n_bytes = elements * 4
            writer.add_tensor_info(name, shape, np.dtype(np.float32), n_bytes)
        total += n_bytes + (-n_bytes % 32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header_end = path.stat().st_size
    data_offset = header_end + (-header_end % 32)
    with path.open("r+b") as fh:
        fh.truncate(data_offset + total)
    return len(shapes)


def timed(func: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1000)
    return times


def report(label: str, times: list[float]) -> None:
    print(
        f"  {label:<44} median {statistics.median(times):9.2f} ms   "
        f"best {min(times):9.2f} ms   ({len(times)} runs)"
    )


def bench_safetensors(directory: Path, repeat: int) -> None:
    path = directory / "model-00001-of-00002.safetensors"
    count = make_safetensors(path)
    size = path.stat().st_size

    def scan() -> object:
        with path.open("rb") as fh:
            findings = st_scanner.scan(fh, size, path.name)
        assert findings == [], findings
        return findings

    print(f"safetensors: {size / GIB:.2f} GiB, {count} tensors")
    report("scan (header only)", timed(scan, repeat))


def bench_gguf(directory: Path, repeat: int) -> None:
    path = directory / "model-Q4_K.gguf"
    count = make_gguf(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        header = gguf_scanner.parse_header(fh, size)
    with path.open("rb") as fh:
        raw_header = fh.read(header.data_offset)

    def scan() -> object:
        with path.open("rb") as fh:
            findings = gguf_scanner.scan(fh, size, path.name)
        assert findings == [], findings
        return findings

    def parse_only() -> object:
        with path.open("rb") as fh:
            return gguf_scanner.parse_header(fh, size)

    def probe_streamed() -> object:
        probe = gguf_scanner.HeaderProbe(size)
        for end in range(65_536, len(raw_header) + 65_536, 65_536):
            answer = probe.feed(raw_header[:end])
            if answer is not None:
                return answer
        raise AssertionError("header end not found")

    print(
        f"GGUF: {size / GIB:.2f} GiB, {count} tensors, header {header.data_offset / 2**20:.1f} MiB "
        f"({len(header.fields)} keys, 128k vocab, 280k merges, Llama 3.1 tool template)"
    )
    report("scan (header + template render)", timed(scan, repeat))
    report("parse_header only", timed(parse_only, repeat))
    report("HeaderProbe fed 64 KiB chunks as they arrive", timed(probe_streamed, repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hubwarden-bench-") as tmp:
        bench_safetensors(Path(tmp), args.repeat)
        bench_gguf(Path(tmp), args.repeat)


if __name__ == "__main__":
    main()
