"""FRAME boundaries (protocol 4+), checked as the opcode loop walks: an opcode that starts in a
frame must end in it.

Why: the unpicklers disagree on an opcode that runs past its frame's declared end. Python's
`_Unframer` refuses it; `_pickle.c` (what `pickle.load` and `torch.load` use) only makes sure the
frame's bytes are buffered, and its file reader can then read such an argument from elsewhere
than where we did, so bytes we read as one string it runs as opcodes (CPython issue 154848,
fickling PR #317). Picklers never write such a stream: they end a frame between two opcodes and
after STOP, and start one only where the last ended. So the rule is strict: an opcode crossing
its frame's end, a FRAME starting inside another, or a frame going on past STOP is malformed.

The loop keeps `frame_end` (a data index; `NO_FRAME` outside a frame) and, at each opcode
boundary at or past it, calls `leave_frame` once per frame: one comparison per opcode.
"""

from __future__ import annotations

from scanners.pickle_state import Malformed
from scanners.pickle_values import Buffer

NO_FRAME = 1 << 62  # past any data index: no frame to leave
CROSSED = "an opcode runs past the end of its FRAME"
NESTED = "a FRAME starts inside another frame"
PAST_STOP = "the FRAME goes on past STOP"

# The opcodes the loop folds the next memo store into (one loop turn for both): the boundary
# between them is not an `at` the loop sees. Strings: where the length is and its width.
_STRING_LENGTH = {0x58: (1, 4), 0x8C: (1, 1), 0x8D: (1, 8)}  # BINUNICODE, SHORT_, BINUNICODE8
_ONE_BYTE_FOLDS = frozenset({0x74, 0x85, 0x86, 0x87, 0x52, 0x51})  # TUPLE(1-3) REDUCE BINPERSID


def leave_frame(data: Buffer, at: int, pos: int, frame_end: int) -> int:
    """The walk reached opcode boundary `pos` >= `frame_end`, the last opcode starting at `at`:
    NO_FRAME when an opcode boundary falls on the frame's end, else Malformed at `at`."""
    if frame_end in (pos, at) or _unfolded_end(data, at) == frame_end:
        return NO_FRAME
    raise Malformed(CROSSED, at)


def _unfolded_end(data: Buffer, at: int) -> int:
    """Where the opcode at `at` ends before a memo store folded into its loop turn; -1 when it
    folds none (or its bytes are no longer in `data`: a resumed streaming walk)."""
    if at < 0 or at >= len(data):
        return -1
    op = data[at]
    if op in _ONE_BYTE_FOLDS:
        return at + 1
    if op not in _STRING_LENGTH:
        return -1
    skip, width = _STRING_LENGTH[op]
    length = int.from_bytes(data[at + skip : at + skip + width], "little")
    return at + skip + width + length


def start_frame(at: int, pos: int, length: int, frame_end: int) -> int:
    """The FRAME at `at` opens `length` bytes from `pos`: the new frame's end. Only where no
    frame is open, or where the open one ends (Python's unpickler refuses a nested frame)."""
    if frame_end not in (NO_FRAME, pos):
        raise Malformed(NESTED, at)
    return pos + length
