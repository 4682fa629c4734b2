"""The protobuf wire format, read field by field with bounds (ONNX, TensorFlow graphs).

No schema and no `protobuf` package: a message is a run of (field number, wire type, value)
records, and the scanners that need one ask for the fields they know by number. Length-delimited
values are returned as spans, so large tensors are skipped by seeking, never read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


class WireMalformed(Exception):
    """The bytes are not well-formed protobuf (or the walk went past its field budget)."""


class WireReader:
    """Random access to a file through one cached block; counts the fields it decodes.

    `max_fields` bounds the whole walk (however the message nests); strings longer than
    `max_string_bytes` are cut when read (their span stays exact)."""

    def __init__(
        self,
        fh: BinaryIO,
        size: int,
        *,
        max_fields: int,
        max_string_bytes: int,
        block_bytes: int = 1024 * 1024,
    ) -> None:
        self.fh = fh
        self.size = size
        self.max_string_bytes = max_string_bytes
        self.block_bytes = block_bytes
        self.block_start = 0
        self.block = b""
        self.fields_left = max_fields

    def _window(self, pos: int, n: int) -> tuple[bytes, int]:
        end = self.block_start + len(self.block)
        if not (self.block_start <= pos and pos + n <= end):
            self.fh.seek(pos)
            self.block = self.fh.read(max(self.block_bytes, n))
            self.block_start = pos
        return self.block, pos - self.block_start

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        """The varint at `pos` and the offset after it; raises WireMalformed."""
        block, i = self._window(pos, min(10, end - pos))
        value = shift = 0
        for step in range(10):
            if pos + step >= end or i + step >= len(block):
                raise WireMalformed(f"varint at {pos} runs past its message")
            byte = block[i + step]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos + step + 1
            shift += 7
        raise WireMalformed(f"varint at {pos} is longer than 10 bytes")

    def read(self, start: int, end: int) -> bytes:
        """The bytes of a span, cut to `max_string_bytes + 1` (so a caller can tell a cut)."""
        n = min(end - start, self.max_string_bytes + 1)
        block, i = self._window(start, n)
        return block[i : i + n]

    def text(self, start: int, end: int) -> str:
        return self.read(start, end).decode("utf-8", "replace")

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(field number, wire type, value or span start, span end) for each field of a message.

        Raises WireMalformed on a broken record or when the field budget is spent."""
        pos = start
        while pos < end:
            self.fields_left -= 1
            if self.fields_left < 0:
                raise WireMalformed("too many protobuf fields to walk")
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise WireMalformed(f"field number 0 at {pos}")
            if wire == VARINT:
                value, pos = self.varint(pos, end)
                yield number, wire, value, pos
            elif wire == LEN:
                length, pos = self.varint(pos, end)
                if length > end - pos:
                    raise WireMalformed(f"field {number} declares {length} bytes past its message")
                yield number, wire, pos, pos + length
                pos += length
            elif wire in (FIXED64, FIXED32):
                pos += 8 if wire == FIXED64 else 4
                if pos > end:
                    raise WireMalformed(f"field {number} runs past its message")
            else:
                raise WireMalformed(f"wire type {wire} (groups) in field {number}")

    def spans(self, start: int, end: int, wanted: dict[int, str]) -> Iterator[tuple[str, int, int]]:
        """(kind, span start, span end) for the length-delimited fields named in `wanted`.

        Raises WireMalformed when one of them has another wire type."""
        for number, wire, a, b in self.fields(start, end):
            kind = wanted.get(number)
            if kind is None:
                continue
            if wire != LEN:
                raise WireMalformed(f"field {number} ({kind}) is not length-delimited")
            yield kind, a, b
