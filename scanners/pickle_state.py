"""The pickle walker's state and signals: what a walk found, a paused walk, and why it stopped.

Shared by the walker (`scanners.pickles`), its opcode loop (`scanners.pickle_loop`) and its
checks (`scanners.pickle_checks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scanners.pickle_values import Global
from scanners.report import Finding

SCANNER = "pickle"


SCANNER_VERSION = "1.0"


class Malformed(Exception):
    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


class LimitHit(Malformed):
    def __init__(self, reason: str, offset: int, code: str = "PICKLE_LIMIT_EXCEEDED") -> None:
        super().__init__(reason, offset)
        self.code = code


MEMO_RESOURCE = "PICKLE_MEMO_RESOURCE"


NESTING_RESOURCE = "PICKLE_NESTING_RESOURCE"


EXPANSION_RESOURCE = "PICKLE_EXPANSION_RESOURCE"


class Truncated(Malformed):
    """The bytes end before this opcode does. Malformed in a complete stream; in a streaming walk
    that has not seen the last byte it means "wait for more". Raised before the opcode changes
    anything, so the walk resumes at the same opcode."""


class Skip(Exception):
    """Streaming only: an opcode whose argument need not be kept (a long string, a joblib array)
    is done without its bytes; the walk resumes at `to` (a data index) once `value` is pushed
    (`peek`: the memo store folded into the opcode is still to do)."""

    def __init__(self, to: int, value: object = None, *, push: bool = False, peek: bool = False):
        super().__init__()
        self.to = to
        self.value = value
        self.push = push
        self.peek = peek


class Suspend(Exception):
    """Streaming only: this opcode needs bytes far ahead (a joblib object array's own pickle, an
    array to walk as opcodes): the streaming walk stops here, before the opcode changes anything,
    and resumes from it once every byte is there."""


@dataclass(slots=True)
class Frame:
    """A paused streaming walk of one pickle: the stack machine's state at an opcode boundary.

    `walk_opcodes` resumed from a frame does exactly what it would have done had it not stopped:
    same stack, memo and MARKs, and the same place in its batch of opcodes (so the limits are
    checked at the same opcodes and the opcode count is the same)."""

    pos: int  # absolute offset where the walk resumes
    at: int  # absolute offset of the opcode being finished when `peek`
    stack: list[object]
    marks: list[int]
    memo: dict[int, object]
    ops_left: int
    index: int  # the next turn in the current batch of opcodes; `_BATCH`: a new batch
    shared: bool  # a memo GET or DUP gave a container: the value is no tree (`_check_shape`)
    start_ops: int  # `ops_left` when this pickle started
    frame_end: int  # absolute end of the open FRAME (`scanners.pickle_frames.NO_FRAME`: none)
    peek: bool = False  # the memo store folded into a skipped string is still to do
    suspended: bool = False  # stopped for good until the last byte (see `Suspend`)


class Pause(Exception):
    def __init__(self, frame: Frame) -> None:
        super().__init__()
        self.frame = frame


@dataclass(slots=True)
class WalkResult:
    """What walking one stream found. `end` is where the last complete pickle stopped."""

    globals: list[Global] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    calls: dict[str, str] = field(default_factory=dict)  # global -> first call, decompiled
    # torch.storage._load_from_bytes payloads: torch.load runs on them, so they are scanned too
    # (offset, length, is UTF-8 text to encode as latin-1) for payloads too long to keep
    nested: list[bytes | tuple[int, int, bool]] = field(default_factory=list)
    end: int = 0
    starts: list[int] = field(default_factory=list)  # where each pickle walked starts
    pickles: int = 0
    opcodes: int = 0
    fast_records: int = 0  # torch tensor records built by the fast path
    complete: bool = False


@dataclass(frozen=True, slots=True)
class Walked:
    """A pickle-family stream already walked (by `scanners.pickle_stream`, as bytes arrived):
    what `dispatch._scan_pickle` would have found walking it, and whether it is legacy torch."""

    result: WalkResult
    legacy: bool


OPCODE_BYTES = frozenset(b"(.012FIJKLMNPQRSTUVXabcdeghijlopqrstu}])GBC" + bytes(range(0x80, 0x99)))
