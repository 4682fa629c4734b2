"""Hostile-resource samples: files well-formed enough to open that make a loader allocate or
recurse without bound (issue 13). Each must be refused (outcome `error`, a `…_RESOURCE` or
"could not scan" finding named below) within the scanners' limits, never reported clean.

Every sample is built here byte by byte; nothing is loaded. Each cites where the technique is
described: an advisory, a CWE entry, or the write-up it comes from.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.scanners.corpus import torch_zip_with, zip_bytes


@dataclass(frozen=True, slots=True)
class ResourceSample:
    build: Callable[[], bytes]
    code: str  # the finding that must refuse it
    source: str  # where the technique is described


def _npy(header: str, data: bytes = b"") -> bytes:
    raw = header.encode("latin-1")
    raw += b" " * (63 - (len(raw) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + data


def npy_declares_trillion_elements() -> bytes:
    """`numpy.load` sizes the array from the header (`numpy.empty(count)` / `fromfile(count=)`)
    before reading: 8 TB declared, 64 bytes present."""
    return _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }", bytes(64))


def npy_absurd_itemsize() -> bytes:
    """One element of a 2 GiB void dtype, in a file of a few hundred bytes."""
    return _npy("{'descr': '|V2147483647', 'fortran_order': False, 'shape': (1,), }", bytes(64))


def pickle_memo_index_near_2_32() -> bytes:
    """LONG_BINPUT 0xFFFFFFF0: CPython's `_Unpickler_MemoPut` grows its memo array to twice the
    index (tens of GiB) before storing one value."""
    return b"\x80\x02N" + b"r" + struct.pack("<I", 0xFFFFFFF0) + b"."


def pickle_tuples_nested_300k() -> bytes:
    """((((None,),),)…) 300,000 deep, built bottom-up with TUPLE1 on a stack of one item."""
    return b"\x80\x02N" + b"\x85" * 300_000 + b"."


def pickle_lists_nested_top_down() -> bytes:
    """20,000 lists, each appended to the previous one fetched back from the memo: the stack
    never holds more than two items, and no depth counted at each APPEND sees the chain."""
    return b"\x80\x02]q\x01h\x01" + b"]q\x00a0h\x00" * 20_000 + b"0h\x01."


def pickle_marks_nested_300k() -> bytes:
    """300,000 open MARKs closed into lists one inside the other."""
    return b"\x80\x02" + b"(" * 300_000 + b"l" * 300_000 + b"."


def pickle_billion_laughs_lists(doublings: int = 40) -> bytes:
    """L(i+1) = [L(i), L(i)] through memo GETs: 40 lists that are 2^40 to anything walking the
    result as a tree (repr, json, deepcopy without memo, a recursive size estimate)."""
    body = b"\x80\x02]q\x00"
    for i in range(doublings):
        body += b"](h%ch%ceq%c" % (i, i, i + 1)
    return body + b"."


def pickle_billion_laughs_dup(doublings: int = 40) -> bytes:
    """The same doubling with no memo at all: DUP then TUPLE2, forty times."""
    return b"\x80\x02N" + b"2\x86" * doublings + b"."


def torch_zip_storage_bomb() -> bytes:
    """A torch checkpoint whose storage record (raw data the scanner never unpickles) is deflated
    8 MiB of zeros: a thousand-fold ratio, which PyTorch inflates on load."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        archive.writestr("archive/data/0", bytes(8 * 1024 * 1024))
    return buf.getvalue()


def zip_with_30k_entries() -> bytes:
    """30,000 empty members: each costs every reader a directory object and a scan."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for i in range(30_000):
            archive.writestr(f"f/{i}", b"")
    return buf.getvalue()


def empty_pickle() -> bytes:
    return b""


def truncated_torch_zip() -> bytes:
    """A checkpoint cut in half (an interrupted transfer): it must not pass as clean."""
    data = torch_zip_with(pickle.dumps({"w": 1}, protocol=2))
    return data[: len(data) // 2]


def zip_declaring_million_entries() -> bytes:
    """A tiny zip whose ZIP64 end record claims a million entries: refused before any reader
    builds an object per entry."""
    data = bytearray(zip_bytes([("a.txt", b"x")]))
    eocd = data.rfind(b"PK\x05\x06")
    directory_at = struct.unpack_from("<L", data, eocd + 16)[0]
    directory_size = struct.unpack_from("<L", data, eocd + 12)[0]
    record_at = eocd
    zip64 = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 1_000_000, 1_000_000,
        directory_size, directory_at,
    )  # fmt: skip
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at, 1)
    end = bytearray(data[eocd:])
    struct.pack_into("<HH", end, 8, 0xFFFF, 0xFFFF)
    return bytes(data[:eocd]) + zip64 + locator + bytes(end)


def zip_overlapping_members(members: int = 3000, kernel_bytes: int = 1 << 20) -> bytes:
    """Fifield's non-recursive zip bomb, full-overlap form: one deflated MiB of zeros and
    thousands of directory entries all pointing at it (3 GiB inflated from ~4 KiB of data)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    kernel = packer.compress(bytes(kernel_bytes)) + packer.flush()
    crc = zlib.crc32(bytes(kernel_bytes))
    name = b"archive/data/0"
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(kernel), kernel_bytes, len(name), 0
    )  # fmt: skip
    directory = b""
    for i in range(members):
        entry = f"archive/data/{i}".encode()
        directory += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(kernel), kernel_bytes,
            len(entry), 0, 0, 0, 0, 0, 0,
        ) + entry  # fmt: skip
    body = local + name + kernel
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, members, members, len(directory), len(body), 0
    )  # fmt: skip
    return body + directory + end


def npy_shape_product_overflows() -> bytes:
    """Two dimensions of 2^40: their product wraps a 64-bit size (CWE-190) before any check
    that multiplies in fixed width."""
    shape = "(1099511627776, 1099511627776)"
    return _npy(f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}", bytes(64))


def pickle_binunicode8_declares_exabytes() -> bytes:
    """BINUNICODE8 declaring 2^62 bytes with 8 present: an unpickler reading from a file asks
    the file for the declared size at once."""
    return b"\x80\x04\x8d" + struct.pack("<Q", 1 << 62) + b"abcdefgh."


def gguf_template_render_loop() -> bytes:
    """A chat template looping 10^10 times: rendering it (transformers, llama-cpp-python, vLLM
    render GGUF templates with Jinja) never ends."""
    import tempfile

    from tests.scanners.corpus_headers import make_gguf

    loop = "{% for a in range(100000) %}{% for b in range(100000) %}{{ a ~ b }}{% endfor %}"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "loop.gguf"
        make_gguf(path, templates={"": loop + "{% endfor %}"})
        return path.read_bytes()


RESOURCE_SAMPLES: dict[str, ResourceSample] = {
    "npy_trillion_elements.npy": ResourceSample(
        npy_declares_trillion_elements,
        "NUMPY_SIZE_RESOURCE",
        "CWE-789 (memory allocation with excessive size value); numpy.lib.format.read_array",
    ),
    "npy_absurd_itemsize.npy": ResourceSample(
        npy_absurd_itemsize, "NUMPY_ITEMSIZE_RESOURCE", "CWE-789; numpy.lib.format.read_array"
    ),
    "memo_index_near_2_32.pkl": ResourceSample(
        pickle_memo_index_near_2_32,
        "PICKLE_MEMO_RESOURCE",
        "CWE-789; CPython Modules/_pickle.c _Unpickler_MemoPut (memo resized to 2 x index)",
    ),
    "tuples_nested_300k.pkl": ResourceSample(
        pickle_tuples_nested_300k,
        "PICKLE_NESTING_RESOURCE",
        "CWE-674 (uncontrolled recursion); issue 13",
    ),
    "lists_nested_top_down.pkl": ResourceSample(
        pickle_lists_nested_top_down, "PICKLE_NESTING_RESOURCE", "CWE-674; issue 13"
    ),
    "marks_nested_300k.pkl": ResourceSample(
        pickle_marks_nested_300k, "PICKLE_NESTING_RESOURCE", "CWE-674; issue 13"
    ),
    "billion_laughs_lists.pkl": ResourceSample(
        pickle_billion_laughs_lists,
        "PICKLE_EXPANSION_RESOURCE",
        "CWE-776 (the 'billion laughs' entity expansion, here through the pickle memo)",
    ),
    "billion_laughs_dup.pkl": ResourceSample(
        pickle_billion_laughs_dup, "PICKLE_EXPANSION_RESOURCE", "CWE-776, through DUP"
    ),
    "torch_storage_bomb.pt": ResourceSample(
        torch_zip_storage_bomb,
        "ARCHIVE_RATIO_RESOURCE",
        "CWE-409 (highly compressed data); D. Fifield, 'A better zip bomb' (WOOT 2019)",
    ),
    "zip_30k_entries.zip": ResourceSample(
        zip_with_30k_entries,
        "ARCHIVE_MEMBERS_RESOURCE",
        "CWE-770 (allocation without limits); issue 13",
    ),
    "zip64_declares_million_entries.zip": ResourceSample(
        zip_declaring_million_entries, "ARCHIVE_MEMBERS_RESOURCE", "CWE-770; APPNOTE.TXT 4.3.14"
    ),
    "empty.pkl": ResourceSample(empty_pickle, "FILE_EMPTY", "issue 13 (an empty .pkl)"),
    "zip_overlapping_members.zip": ResourceSample(
        zip_overlapping_members,
        "ARCHIVE_RATIO_RESOURCE",
        "D. Fifield, 'A better zip bomb' (WOOT 2019), overlapping files; CVE-2024-0450 "
        "(CPython zipfile overlap)",
    ),
    "npy_shape_product_overflows.npy": ResourceSample(
        npy_shape_product_overflows, "NUMPY_SIZE_RESOURCE", "CWE-190; numpy.lib.format"
    ),
    "binunicode8_declares_exabytes.pkl": ResourceSample(
        pickle_binunicode8_declares_exabytes,
        "PICKLE_MALFORMED",
        "CWE-789; CPython Modules/_pickle.c load_counted_binunicode (read of the declared size)",
    ),
    "gguf_template_render_loop.gguf": ResourceSample(
        gguf_template_render_loop,
        "GGUF_TEMPLATE_RENDER_LIMIT",
        "CWE-834 (excessive iteration); CVE-2024-34359 class (GGUF templates rendered by Jinja)",
    ),
    "truncated.pt": ResourceSample(truncated_torch_zip, "ZIP_MALFORMED", "issue 13"),
}


def resource_samples(root: Path) -> dict[str, Path]:
    """Write every sample under `root`; name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, sample in RESOURCE_SAMPLES.items():
        path = root / name
        path.write_bytes(sample.build())
        out[name] = path
    return out
