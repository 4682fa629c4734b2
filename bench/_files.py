"""Large, valid safetensors files for the benchmarks, written without holding them in memory.

A safetensors file is what a cold download usually is, and its header is scanned before the first
byte goes out (DESIGN.md, "serving while ingesting"), so it takes the progressive path the design
cares about. The data area is a pseudo-random block repeated (cheap to write; every file differs
through its seed), so no disk-level compression or sparse files make one server look faster.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path

WRITE_BYTES = 8 * 1024 * 1024
MAX_BENCH_FILE_BYTES = 64 * 1024**3


def safetensors_header(data_bytes: int) -> bytes:
    """The length prefix and JSON header of a file holding one U8 tensor of ``data_bytes``."""
    header = {
        "__metadata__": {"format": "pt"},
        "weight": {"dtype": "U8", "shape": [data_bytes], "data_offsets": [0, data_bytes]},
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data area starts 8-byte aligned, as writers do
    return struct.pack("<Q", len(text)) + text


def write_safetensors(path: Path, total_bytes: int, seed: int) -> str:
    """Write a valid safetensors file of exactly ``total_bytes``; returns its sha256 hex."""
    if not 1024 <= total_bytes <= MAX_BENCH_FILE_BYTES:
        raise ValueError(f"file size {total_bytes} out of range 1 KiB..64 GiB")
    # The header length depends on the digits of the data size: settle it in two passes.
    data_bytes = total_bytes - len(safetensors_header(total_bytes))
    header = safetensors_header(data_bytes)
    data_bytes = total_bytes - len(header)
    header = safetensors_header(data_bytes)
    if len(header) + data_bytes != total_bytes:
        raise ValueError(f"cannot fit a safetensors header in {total_bytes} bytes")
    block = random.Random(seed).randbytes(WRITE_BYTES)
    digest = hashlib.sha256(header)
    with path.open("wb") as handle:
        handle.write(header)
        left = data_bytes
        while left:
            chunk = block[: min(left, WRITE_BYTES)]
            handle.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()
