"""GGUF's header, parsed by a bounded parser of our own (versions 1-3).

Layout (ggml `gguf.cpp`, gguf-py `gguf_reader.py`): magic `GGUF`, version u32, tensor count and
KV count (u64; u32 in v1), the KV pairs (key string, value type u32, value; arrays carry an element
type and a count), the tensor infos (name, n_dims u32, dims u64 (u32 in v1), ggml type u32, offset
u64), then padding to `general.alignment` (default 32) where the tensor data starts.

Every count and length is checked against the bytes left in the file *before* anything is built
(the heap overflows of ggml's early parser, e.g. Cisco Talos TALOS-2024-1912..1916, came from
trusting them), against a header cap, and nested arrays are depth-bounded.

`header_size` and `HeaderProbe` say where the header ends from a prefix of the file, so the proxy
can scan a GGUF before its first byte goes out; `HeaderProbe` resumes where the last call stopped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import BinaryIO

from scanners.gguf_types import (
    ARRAY,
    DEFAULT_ALIGNMENT,
    GGML_TYPES,
    INT64_MAX,
    MAGIC,
    MAX_DIMS,
    STRING,
    TEMPLATE_KEY,
    VALUE_TYPES,
)
from scanners.limits import GGUFLimits
from scanners.report import Finding, JsonValue, Outcome, cut_text

SCANNER = "gguf"

DEFAULT_LIMITS = GGUFLimits()


@dataclass(frozen=True, slots=True)
class GGUFField:
    """One metadata KV: its type (and element type for arrays), count, and value when kept.

    Scalars are kept; strings only for chat-template keys; arrays keep their element count and,
    for `tokenizer.chat_templates`, the string elements."""

    key: str
    value_type: str
    element_type: str | None
    count: int
    value: object
    offset: int


@dataclass(frozen=True, slots=True)
class GGUFTensor:
    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int  # relative to the start of the tensor data
    n_bytes: int


@dataclass(slots=True)
class GGUFHeader:
    """What the header says; filled as the parser goes."""

    version: int = 0
    byte_order: str = "<"
    tensor_count: int = 0
    kv_count: int = 0
    fields: dict[str, GGUFField] = field(default_factory=dict)
    tensors: list[GGUFTensor] = field(default_factory=list)
    alignment: int = DEFAULT_ALIGNMENT
    data_offset: int = 0


class GGUFMalformed(Exception):
    """The header is refused; the finding says why."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


class _NeedBytes(Exception):
    """The prefix ends before `needed` bytes; more of the file is required."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


def finding(code: str, outcome: Outcome, message: str, **details: JsonValue) -> Finding:
    severity = outcome.default_severity
    return Finding(SCANNER, code, severity, outcome, message, dict(details))


def malformed(code: str, message: str, **details: JsonValue) -> GGUFMalformed:
    return GGUFMalformed(finding(code, Outcome.ERROR, message, **details))


def cut(text: str, limit: int = 120) -> str:
    return cut_text(text, limit)


class _Parser:
    """A resumable parser over a growing prefix of the file.

    State is committed after the fixed header, after each KV pair, after each element of a
    top-level string array (vocabularies are the bulk of a header) and after each tensor info,
    so feeding a longer prefix continues where the last call stopped."""

    def __init__(self, size: int, limits: GGUFLimits) -> None:
        self.size = size
        self.limits = limits
        self.cap = min(size, limits.max_header_bytes)
        self.buf = b""
        self.pos = 0
        self.header = GGUFHeader()
        self.stage = "fixed"
        self.kv_done = 0
        self.tensors_done = 0
        self.tensor_names: set[str] = set()
        # a top-level string array in progress: (key, count, done, kept values, key offset)
        self.array: tuple[str, int, int, list[str] | None, int] | None = None
        self.needed = 0

    # ---- driving -------------------------------------------------------------------------
    def feed(self, prefix: bytes) -> int | None:
        """Parse on with a longer prefix; the header's end once complete, None for more bytes.

        Raises GGUFMalformed."""
        if len(prefix) < self.needed and len(prefix) < self.cap:
            return None
        self.buf = prefix
        try:
            self._run()
        except _NeedBytes as need:
            self.needed = need.needed
            if len(prefix) >= self.cap:
                raise self.beyond_prefix(need.needed) from None
            return None
        return self.header.data_offset

    def beyond_prefix(self, needed: int) -> GGUFMalformed:
        if needed > self.limits.max_header_bytes:
            return malformed(
                "GGUF_HEADER_TOO_LARGE",
                f"metadata runs past the {self.limits.max_header_bytes}-byte header cap",
                cap=self.limits.max_header_bytes,
            )
        if needed > self.size:
            return malformed(
                "GGUF_TRUNCATED",
                f"header needs {needed} bytes but the file has {self.size}",
                needed=needed,
                size=self.size,
            )
        return malformed(
            "GGUF_HEADER_UNREADABLE",
            f"could read only {len(self.buf)} of the {needed} header bytes",
            got=len(self.buf),
            needed=needed,
        )

    def _run(self) -> None:
        if self.stage == "fixed":
            self.pos = self._fixed_header()
            self.stage = "kv"
        while self.stage == "kv" and self.kv_done < self.header.kv_count:
            self.pos = self._kv(self.pos)
            self.kv_done += 1
        if self.stage == "kv":
            self._settle_alignment()
            self.stage = "tensors"
        while self.tensors_done < self.header.tensor_count:
            self.pos = self._tensor_info(self.pos)
            self.tensors_done += 1
        self._finish()

    # ---- raw reads -----------------------------------------------------------------------
    def _need(self, pos: int, n: int, what: str) -> None:
        end = pos + n
        if end > self.size:
            raise malformed(
                "GGUF_TRUNCATED",
                f"{what} at offset {pos} needs {n} bytes, past the end of the "
                f"{self.size}-byte file",
                offset=pos,
                size=self.size,
            )
        if end > self.limits.max_header_bytes:
            raise malformed(
                "GGUF_HEADER_TOO_LARGE",
                f"{what} at offset {pos} runs past the {self.limits.max_header_bytes}-byte "
                "header cap",
                offset=pos,
                cap=self.limits.max_header_bytes,
            )
        if end > len(self.buf):
            raise _NeedBytes(end)

    def _unpack(self, code: str, pos: int, what: str) -> tuple[object, int]:
        n = struct.calcsize(code)
        self._need(pos, n, what)
        (value,) = struct.unpack_from(self.header.byte_order + code, self.buf, pos)
        return value, pos + n

    def _uint(self, code: str, pos: int, what: str) -> tuple[int, int]:
        n = struct.calcsize(code)
        self._need(pos, n, what)
        (value,) = struct.unpack_from(self.header.byte_order + code, self.buf, pos)
        return int(value), pos + n

    def _count(self, pos: int, what: str) -> tuple[int, int]:
        return self._uint("I" if self.header.version == 1 else "Q", pos, what)

    def _string_span(self, pos: int, what: str, limit: int) -> tuple[int, int]:
        """(start, end) of a length-prefixed string, bounded before it is read."""
        length, start = self._count(pos, what)
        if length > limit or length > self.size - start:
            raise malformed(
                "GGUF_STRING_LENGTH_INVALID",
                f"{what} at offset {pos} declares {length} bytes; "
                f"{min(limit, max(self.size - start, 0))} at most fit",
                offset=pos,
                declared=length,
            )
        self._need(start, length, what)
        return start, start + length

    def _text(self, pos: int, what: str, limit: int) -> tuple[str, int]:
        start, end = self._string_span(pos, what, limit)
        try:
            return self.buf[start:end].decode("utf-8"), end
        except UnicodeDecodeError as exc:
            raise malformed(
                "GGUF_STRING_NOT_UTF8", f"{what} at offset {pos} is not UTF-8", offset=pos
            ) from exc

    # ---- structure -----------------------------------------------------------------------
    def _fixed_header(self) -> int:
        self._need(0, 8, "magic and version")
        if self.buf[:4] != MAGIC:
            raise malformed("GGUF_BAD_MAGIC", f"magic is {self.buf[:4]!r}, not b'GGUF'")
        (version,) = struct.unpack_from("<I", self.buf, 4)
        if version & 0xFFFF == 0:  # a big-endian file read little-endian: 3 -> 0x03000000
            self.header.byte_order = ">"
            (version,) = struct.unpack_from(">I", self.buf, 4)
        if version not in (1, 2, 3):
            raise malformed(
                "GGUF_VERSION_UNSUPPORTED",
                f"GGUF version {version} is not 1, 2 or 3",
                version=version,
            )
        self.header.version = version
        tensors, pos = self._count(8, "tensor count")
        kvs, pos = self._count(pos, "KV count")
        self.header.tensor_count, self.header.kv_count = tensors, kvs
        # each KV is at least a key length, a type and a byte; each tensor info at least a name
        # length, n_dims, a type and an offset: refuse counts the file cannot hold, at once
        width = 4 if version == 1 else 8
        least = kvs * (width + 5) + tensors * (width + 16)
        if least > self.size - pos or least > self.limits.max_header_bytes:
            raise malformed(
                "GGUF_COUNT_INVALID",
                f"{tensors} tensors and {kvs} KV pairs cannot fit in the "
                f"{self.size}-byte file (or the header cap)",
                tensor_count=tensors,
                kv_count=kvs,
            )
        return pos

    def _kv(self, pos: int) -> int:
        if self.array is not None:
            return self._resume_string_array(pos)
        key, value_pos = self._text(pos, "key", self.limits.max_key_bytes)
        if not key:
            raise malformed("GGUF_KEY_INVALID", f"empty key at offset {pos}", offset=pos)
        if key in self.header.fields:
            raise GGUFMalformed(
                finding(
                    "GGUF_DUPLICATE_KEY",
                    Outcome.MALICIOUS,
                    f"key {cut(key)!r} appears twice; readers disagree on which counts, a known"
                    " way to show a scanner one chat template and a loader another",
                    key=cut(key),
                )
            )
        type_id, after = self._uint("I", value_pos, f"type of {key!r}")
        if type_id == ARRAY:
            return self._array_kv(key, pos, after)
        value, end = self._scalar(type_id, after, key)
        self._keep(GGUFField(key, self._type_name(type_id, key), None, 1, value, pos))
        return end

    def _type_name(self, type_id: int, key: str) -> str:
        if type_id not in VALUE_TYPES:
            raise malformed(
                "GGUF_VALUE_TYPE_UNKNOWN",
                f"{cut(key)!r} has value type {type_id}, not a GGUF type",
                key=cut(key),
                type_id=type_id,
            )
        return VALUE_TYPES[type_id][0]

    def _scalar(self, type_id: int, pos: int, key: str) -> tuple[object, int]:
        self._type_name(type_id, key)
        if type_id == STRING:
            if self._keeps_string(key):
                return self._text(pos, f"value of {key!r}", self.limits.max_kept_string_bytes)
            _, end = self._string_span(pos, f"value of {key!r}", self.limits.max_string_bytes)
            return None, end
        return self._unpack(VALUE_TYPES[type_id][1], pos, f"value of {key!r}")

    @staticmethod
    def _keeps_string(key: str) -> bool:
        return key == TEMPLATE_KEY or key.startswith(TEMPLATE_KEY + ".")

    def _keep(self, gguf_field: GGUFField) -> None:
        self.header.fields[gguf_field.key] = gguf_field

    def _array_kv(self, key: str, key_pos: int, pos: int) -> int:
        elem_type, pos = self._uint("I", pos, f"element type of {key!r}")
        elem_name = self._type_name(elem_type, key)
        count, pos = self._array_count(pos, key, elem_type)
        if elem_type == STRING:
            kept: list[str] | None = [] if key == "tokenizer.chat_templates" else None
            self.array = (key, count, 0, kept, key_pos)
            self.pos = pos  # resume point: the first element
            return self._resume_string_array(pos)
        end = self._skip_array_items(pos, key, elem_type, count, depth=1)
        self._keep(GGUFField(key, "ARRAY", elem_name, count, None, key_pos))
        return end

    def _array_count(self, pos: int, key: str, elem_type: int) -> tuple[int, int]:
        count, start = self._count(pos, f"array length of {key!r}")
        width = 4 if self.header.version == 1 else 8
        least = {STRING: width, ARRAY: 4 + width}.get(elem_type)
        per_item = least if least is not None else struct.calcsize(VALUE_TYPES[elem_type][1])
        if count > self.limits.max_array_elements or count * per_item > self.size - start:
            raise malformed(
                "GGUF_ARRAY_LENGTH_INVALID",
                f"array {cut(key)!r} declares {count} elements; the file cannot hold them",
                key=cut(key),
                declared=count,
            )
        return count, start

    def _resume_string_array(self, pos: int) -> int:
        if self.array is None:
            return pos
        key, count, done, kept, key_pos = self.array
        limit = self.limits.max_kept_string_bytes if kept is not None else 0
        if kept is None:
            done, pos = self._skip_strings(pos, count, done)
            self.array = (key, count, done, kept, key_pos)
            self.pos = pos
        while done < count:
            if kept is not None:
                text, pos = self._text(pos, f"element {done} of {key!r}", limit)
                kept.append(text)
            else:
                pos = self._string_span(
                    pos, f"element {done} of {key!r}", self.limits.max_string_bytes
                )[1]
            done += 1
            self.array = (key, count, done, kept, key_pos)
            self.pos = pos
        self.array = None
        value = tuple(kept) if kept is not None else None
        self._keep(GGUFField(key, "ARRAY", "STRING", count, value, key_pos))
        return pos

    def _skip_strings(self, pos: int, count: int, done: int) -> tuple[int, int]:
        """Skip string elements while they are well-formed and inside the prefix: the hot loop
        of a header (a 128k vocabulary and 280k merges). Returns (elements done, position);
        the element it stops at, if any, is left to the checked path to explain."""
        width = 4 if self.header.version == 1 else 8
        length_at = struct.Struct(self.header.byte_order + ("I" if width == 4 else "Q")).unpack_from
        buf = self.buf
        # past this end the checked path raises (truncated, over the cap or needs more bytes)
        end_ok = min(len(buf), self.size, self.limits.max_header_bytes)
        max_len = self.limits.max_string_bytes
        while done < count and pos + width <= end_ok:
            (length,) = length_at(buf, pos)
            after = pos + width + length
            if length > max_len or after > end_ok:
                break
            pos = after
            done += 1
        return done, pos

    def _skip_array_items(self, pos: int, key: str, elem_type: int, count: int, depth: int) -> int:
        if elem_type == STRING:
            for index in range(count):
                pos = self._string_span(
                    pos, f"element {index} of {key!r}", self.limits.max_string_bytes
                )[1]
            return pos
        if elem_type != ARRAY:
            n = count * struct.calcsize(VALUE_TYPES[elem_type][1])
            self._need(pos, n, f"array {key!r}")
            return pos + n
        if depth >= self.limits.max_array_depth:
            raise malformed(
                "GGUF_ARRAY_TOO_DEEP",
                f"array {cut(key)!r} nests arrays deeper than {self.limits.max_array_depth}",
                key=cut(key),
            )
        for _ in range(count):
            inner_type, pos = self._uint("I", pos, f"element type in {key!r}")
            self._type_name(inner_type, key)
            inner_count, pos = self._array_count(pos, key, inner_type)
            pos = self._skip_array_items(pos, key, inner_type, inner_count, depth + 1)
        return pos

    def _settle_alignment(self) -> None:
        alignment = self.header.fields.get("general.alignment")
        if alignment is None:
            return
        value = alignment.value
        if alignment.value_type != "UINT32" or not isinstance(value, int):
            raise malformed(
                "GGUF_ALIGNMENT_INVALID",
                f"general.alignment is {alignment.value_type}, not UINT32",
            )
        if value == 0 or value & (value - 1):
            raise malformed(
                "GGUF_ALIGNMENT_INVALID",
                f"general.alignment {value} is not a power of two",
                alignment=value,
            )
        self.header.alignment = value

    def _tensor_info(self, pos: int) -> int:
        name, after = self._text(pos, "tensor name", self.limits.max_tensor_name_bytes)
        if name in self.tensor_names:
            raise GGUFMalformed(
                finding(
                    "GGUF_DUPLICATE_TENSOR",
                    Outcome.MALICIOUS,
                    f"tensor {cut(name)!r} is declared twice",
                    tensor=cut(name),
                )
            )
        n_dims, after = self._uint("I", after, f"n_dims of {name!r}")
        if n_dims > MAX_DIMS:
            raise self._bad_tensor(name, f"has {n_dims} dimensions; ggml allows {MAX_DIMS}")
        dims: list[int] = []
        for _ in range(n_dims):
            dim, after = self._uint("I" if self.header.version == 1 else "Q", after, "dim")
            dims.append(dim)
        ggml_type, after = self._uint("I", after, f"type of {name!r}")
        offset, after = self._uint("Q", after, f"offset of {name!r}")
        self.header.tensors.append(
            GGUFTensor(
                name, tuple(dims), ggml_type, offset, self._tensor_bytes(name, dims, ggml_type)
            )
        )
        self.tensor_names.add(name)
        return after

    def _tensor_bytes(self, name: str, dims: list[int], ggml_type: int) -> int:
        if ggml_type not in GGML_TYPES:
            raise self._bad_tensor(name, f"has ggml type {ggml_type}, which ggml does not know")
        type_name, block, block_bytes = GGML_TYPES[ggml_type]
        elements = 1
        for dim in dims:
            elements *= dim
            if dim > INT64_MAX or elements > INT64_MAX:
                raise self._bad_tensor(name, f"shape {dims} overflows int64")
        if dims and dims[0] % block:
            raise self._bad_tensor(
                name, f"rows of {dims[0]} elements are not whole {type_name} blocks of {block}"
            )
        return elements // block * block_bytes

    @staticmethod
    def _bad_tensor(name: str, why: str) -> GGUFMalformed:
        return malformed("GGUF_TENSOR_INVALID", f"tensor {cut(name)!r} {why}", tensor=cut(name))

    def _finish(self) -> None:
        end = self.pos
        if self.header.tensor_count:
            end += -end % self.header.alignment
        if end > self.size:
            raise malformed(
                "GGUF_TRUNCATED",
                f"tensor data should start at {end}, past the end of the {self.size}-byte file",
                offset=end,
                size=self.size,
            )
        self.header.data_offset = end
        self.stage = "done"


class HeaderProbe:
    """Finds where a GGUF header ends as a file arrives, resuming between calls."""

    def __init__(self, size: int, limits: GGUFLimits = DEFAULT_LIMITS) -> None:
        self._parser = _Parser(size, limits)
        self._answer: int | None = None

    def feed(self, prefix: bytes) -> int | None:
        """Header size given the longest prefix so far; None while more bytes are needed.

        A header that is malformed or runs past the cap gives the bytes that show it."""
        if self._answer is None:
            try:
                self._answer = self._parser.feed(prefix)
            except GGUFMalformed:
                self._answer = min(len(prefix), self._parser.cap)
        return self._answer


def header_size(prefix: bytes, size: int, limits: GGUFLimits = DEFAULT_LIMITS) -> int | None:
    """Bytes from the start that the header occupies (KV metadata, tensor infos, padding).

    None while `prefix` is too short to tell; at most the header cap (then the scan fails it)."""
    return HeaderProbe(size, limits).feed(prefix)


def parse_header(fh: BinaryIO, size: int, limits: GGUFLimits = DEFAULT_LIMITS) -> GGUFHeader:
    """Parse the header from `fh` (which may hold only a prefix covering it).

    Raises GGUFMalformed."""
    parser = _Parser(size, limits)
    fh.seek(0)
    buf = bytearray()
    while True:
        # read in doubling chunks: the parser resumes, so the total work stays linear
        target = min(
            parser.cap, max(parser.needed, len(buf) + limits.read_chunk_bytes, 2 * len(buf))
        )
        chunk = fh.read(target - len(buf)) if target > len(buf) else b""
        buf += chunk
        if parser.feed(bytes(buf)) is not None:
            return parser.header
        if not chunk:
            raise parser.beyond_prefix(max(parser.needed, len(buf) + 1))
