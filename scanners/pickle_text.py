"""Protocol 0's text arguments: the opcodes whose argument is a line (INT, LONG, FLOAT, STRING,
UNICODE, and the GET/PUT indices), parsed as the unpickler parses them, bounded.
"""

from __future__ import annotations

import codecs

from scanners.pickle_state import Malformed, Truncated
from scanners.pickle_values import Buffer, LongText

# INT LONG FLOAT STRING UNICODE: the protocol 0 opcodes whose argument is a line
TEXT_OPS = frozenset({0x49, 0x4C, 0x46, 0x53, 0x56})


def read_line(data: Buffer, pos: int, end: int, at: int) -> tuple[bytes, int]:
    """The line at `pos` (before `end`) and where the next opcode starts."""
    nl = data.find(b"\n", pos, end)
    if nl < 0:
        raise Truncated("line argument without a newline", at)
    return bytes(data[pos:nl]), nl + 1


def int_arg(line: bytes, at: int, base: int) -> int:
    try:
        return int(line, base)
    except ValueError:
        raise Malformed("bad integer argument", at) from None


def text_value(op: int, line: bytes, at: int, max_keep: int) -> object:
    try:
        if op == 0x49:  # INT: "00"/"01" are the protocol 0 booleans
            if line in (b"00", b"01"):
                return line == b"01"
            return int(line, 0) if len(line) < 64 else LongText(len(line))
        if op == 0x4C:  # LONG
            text = line[:-1] if line.endswith(b"L") else line
            return int(text, 0) if len(text) < 64 else LongText(len(text))
        if op == 0x46:  # FLOAT
            return float(line)
        if op == 0x53:  # STRING: quoted, with Python escapes
            if len(line) < 2 or line[0] != line[-1] or line[0] not in b"'\"":
                raise Malformed("the STRING opcode argument must be quoted", at)
            if len(line) - 2 > max_keep:
                return LongText(len(line) - 2)
            raw: bytes = codecs.escape_decode(line[1:-1])[0]
            return str(raw, "latin-1")
        if len(line) > max_keep:  # UNICODE
            return LongText(len(line))
        return str(line, "raw-unicode-escape")
    except (ValueError, UnicodeDecodeError):
        raise Malformed("bad text argument", at) from None
