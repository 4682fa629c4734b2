"""Our own pickle opcode walker: every opcode of protocols 0-5, never executing anything.

The walker runs the unpickler's stack machine over *symbolic* values: strings, numbers and small
tuples are real; a global is a `Global`; anything a call would build is a `Made` naming what built
it. So STACK_GLOBAL sees exactly the strings the real unpickler would see, however they got there
(memo PUT/GET/MEMOIZE games, STRING vs UNICODE, protocol 0 opcodes in a protocol 4 stream), and a
global assembled at run time is caught as such. Where the real unpickler raises, we stop and report
the file as malformed, keeping every global seen before the break (a payload placed before a
deliberate breakage still runs).

Along its seams: the opcode loop is `scanners.pickle_loop`; the checks that grade globals and
calls `scanners.pickle_checks`; the fast path for torch's tensor records `scanners.pickle_records`
(it builds the values the loop would, many records per loop turn); the values
`scanners.pickle_values`; what the loaded value's shape costs whoever walks it
`scanners.pickle_shape`; the walk's state `scanners.pickle_state`; findings for people
`scanners.pickle_grading`.

Named `pickles.py` so no import of the standard `pickle` module can ever resolve to this file.
"""

from __future__ import annotations

import gc
from typing import NoReturn

from scanners.allowlist import GlobalVerdict
from scanners.gc_pause import gc_paused
from scanners.limits import PickleLimits
from scanners.pickle_checks import WalkChecks, numpy_itemsize
from scanners.pickle_frames import NO_FRAME
from scanners.pickle_grading import describe as describe
from scanners.pickle_grading import describe_call as describe_call
from scanners.pickle_grading import findings_with_calls as findings_with_calls
from scanners.pickle_grading import pickle_span as pickle_span
from scanners.pickle_loop import walk_opcodes
from scanners.pickle_state import EXPANSION_RESOURCE as EXPANSION_RESOURCE
from scanners.pickle_state import (
    MEMO_RESOURCE,
    LimitHit,
    Malformed,
    Pause,
    Skip,
    Suspend,
    Truncated,
)
from scanners.pickle_state import NESTING_RESOURCE as NESTING_RESOURCE
from scanners.pickle_state import OPCODE_BYTES as OPCODE_BYTES
from scanners.pickle_state import SCANNER as SCANNER
from scanners.pickle_state import SCANNER_VERSION as SCANNER_VERSION
from scanners.pickle_state import Frame as Frame
from scanners.pickle_state import Walked as Walked
from scanners.pickle_state import WalkResult as WalkResult
from scanners.pickle_values import Buffer as Buffer
from scanners.pickle_values import DictV
from scanners.pickle_values import Global as Global
from scanners.pickle_values import LongText as LongText
from scanners.pickle_values import Made as Made
from scanners.report import Finding, Outcome, Severity

_OPCODE_BYTES = OPCODE_BYTES


class PickleWalker(WalkChecks):
    """Walks pickle streams in `data` between offsets; one instance per stream (file or member).

    Usage: `walker.walk_one(pos)` walks one pickle from `pos` and returns where it stopped
    (raising nothing: problems become findings in `walker.result`).

    Streaming (`scanners.pickle_stream`): `data` is a window of the stream starting at absolute
    offset `base` (every offset the walker reports is absolute), `end` is where the bytes that
    may be read end (the window's end minus a margin), `limit` where the stream itself ends;
    `step` walks as far as `end` allows and returns a `Frame` to resume from. With
    `final` (the last byte is there) a streaming walk is exactly a whole-file walk.
    """

    def __init__(
        self,
        data: Buffer,
        end: int,
        limits: PickleLimits,
        *,
        joblib: bool = False,
        fast_paths: bool = True,
    ) -> None:
        self.fast_paths = fast_paths  # False: every opcode through the loop (tests, benchmark)
        self.data = data
        self.end = end
        self.limit = end  # where the stream ends (streaming: beyond `end`)
        self.base = 0  # absolute offset of data[0]
        self.streaming = False
        self.final = True
        self.first_payload = -1  # absolute offset of the first string/bytes too long to keep
        self.limits = limits
        self.joblib = joblib
        self.result = WalkResult()
        self._judged: dict[tuple[str, str], GlobalVerdict] = {}
        self._reported: dict[tuple[str, str], Finding] = {}
        self._opcodes_left = limits.max_opcodes
        self._flagged_codes: set[str] = set()
        self.last_value: object = None  # what the last complete pickle loads to, symbolically

    # ---- public --------------------------------------------------------------------------
    def walk_one(self, pos: int) -> int | None:
        """Walk one pickle from `pos`; its end offset, or None when it is malformed."""
        found = self._walk(pos, None)
        if isinstance(found, Frame):  # only a streaming walk pauses, and it calls `step`
            raise RuntimeError("walk_one paused: use step() for a streaming walk")
        return found

    def rebase(self, data: Buffer, base: int, end: int, limit: int, *, final: bool) -> None:
        """Streaming: walk `data`, which holds the stream from absolute offset `base`; read no
        further than absolute `end`; the stream ends at absolute `limit`."""
        self.data = data
        self.base = base
        self.end = end - base
        self.limit = limit - base
        self.streaming = True
        self.final = final

    def step(self, pos: int, frame: Frame | None) -> int | Frame | None:
        """Streaming `walk_one` from absolute `pos`, or resuming `frame`: the pickle's absolute
        end, a `Frame` when the bytes ran out first, or None when it is malformed."""
        found = self._walk(pos - self.base, frame)
        if isinstance(found, int):
            return found + self.base
        return found

    def trailing(self, pos: int) -> None:
        """The finding for non-pickle bytes after the last pickle, from data index `pos`."""
        self.flag(
            "PICKLE_TRAILING_DATA",
            Severity.LOW,
            Outcome.REVIEW,
            f"{self.limit - pos} bytes follow the last pickle and are not a pickle; a loader "
            "reading them in a loop could act on them",
            offset=self.base + pos,
        )

    def _walk(self, pos: int, frame: Frame | None) -> int | Frame | None:
        if frame is None:
            if self.result.pickles >= self.limits.max_pickles:
                self._malformed("more pickles in one stream than the limit", pos, limit=True)
                return None
            self.result.starts.append(self.base + pos)
        try:
            end = self._run(pos, frame)
        except Pause as pause:
            return pause.frame
        except LimitHit as exc:
            self._malformed(exc.reason, exc.offset, limit=True, code=exc.code)
            return None
        except Malformed as exc:
            self._malformed(exc.reason, exc.offset)
            return None
        self.result.pickles += 1
        self.result.end = self.base + end
        return end

    def walk_all(self, pos: int) -> None:
        """Walk pickle after pickle until the data ends; trailing non-pickle bytes are a finding."""
        first = True
        while pos < self.end:
            if not first and not self._starts_like_pickle(pos):
                self.trailing(pos)
                return
            next_pos = self.walk_one(pos)
            if next_pos is None:
                return
            pos = next_pos
            first = False
        self.result.complete = True

    # ---- helpers -------------------------------------------------------------------------
    def _starts_like_pickle(self, pos: int) -> bool:
        return self.data[pos] in _OPCODE_BYTES

    def _joblib_skip(self, state: object, pos: int) -> int:
        """Skip the raw array bytes joblib writes right after a NumpyArrayWrapper's BUILD.

        Streaming, the skip may land beyond the bytes there are (the caller pauses); what needs
        the array's bytes (an object array's pickle, a walk of the array as opcodes) suspends."""
        waiting = self.streaming and not self.final
        if not isinstance(state, DictV):
            raise Malformed("joblib array wrapper without a state dict", pos)
        shape = state.items.get("shape")
        dtype = state.items.get("dtype")
        descr = dtype.args[0] if isinstance(dtype, Made) and isinstance(dtype.args, tuple) else None
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise Malformed("joblib array wrapper with an unreadable shape", pos)
        if not isinstance(descr, str):
            raise Malformed("joblib array wrapper with an unreadable dtype", pos)
        if descr.lstrip("<>|=").startswith("O"):
            if waiting:
                raise Suspend
            nested = self.walk_one(pos)  # object arrays are a nested pickle
            if nested is None:
                raise Malformed("nested joblib pickle is malformed", pos)
            return nested
        itemsize = numpy_itemsize(descr)
        if itemsize is None:
            raise Malformed(f"joblib array of an unknown dtype {descr[:40]!r}", pos)
        count = 1
        for dim in shape:
            count *= dim
        start = pos
        if state.items.get("numpy_array_alignment_bytes") is not None:
            if pos >= self.limit:
                raise Malformed("joblib padding byte missing", pos)
            pos += 1 + self.data[pos]
        pos += count * itemsize
        if pos > self.limit:
            raise Malformed("joblib array data runs past the end", start)
        if start < self.limit and self.data[start] in _OPCODE_BYTES:
            if waiting and pos > self.end:
                raise Suspend
            self._shadow_walk(start, pos)
        return pos

    def _shadow_walk(self, start: int, end: int) -> None:
        """A plain `pickle.load` reads joblib's array bytes as opcodes: report its globals too."""
        shadow = PickleWalker(self.data, end, self.limits)
        shadow.base = self.base
        shadow.walk_one(start)
        for finding in shadow.result.findings:
            if finding.code in ("PICKLE_GLOBAL_DENIED", "PICKLE_GLOBAL_UNKNOWN"):
                self.result.findings.append(finding)

    # ---- the stack machine ---------------------------------------------------------------
    def _long(self, length: int, pos: int, text: bool) -> LongText:
        """A string or bytes too long to keep, starting at data index `pos`."""
        offset = self.base + pos
        if self.first_payload < 0:
            self.first_payload = offset
        return LongText(length, offset, text)

    def _beyond(self, n: int, pos: int, at: int, reason: str, kind: int) -> NoReturn:
        """An argument of `n` bytes at `pos` runs past `end`: malformed in a complete stream;
        streaming, wait for it (short), or push it by its length and skip its bytes (long).
        `kind`: 0 text and 1 bytes (kept by offset), 2 anything else (by length only)."""
        if self.streaming and not self.final:
            if n > self.limit - pos:
                raise Malformed(reason, at)
            if n > self.limits.max_kept_string_chars:
                value = LongText(n) if kind == 2 else self._long(n, pos, kind == 0)
                raise Skip(pos + n, value, push=True, peek=kind == 0)
        raise Truncated(reason, at)

    def _frame(self, pos: int, at: int, index: int, state: tuple[object, ...]) -> Frame:
        stack, marks, memo, ops_left, shared, start_ops, frame_end = state
        if frame_end < NO_FRAME:  # type: ignore[operator]
            frame_end = self.base + frame_end  # type: ignore[operator]
        return Frame(
            self.base + pos,
            self.base + at,
            stack,  # type: ignore[arg-type]
            marks,  # type: ignore[arg-type]
            memo,  # type: ignore[arg-type]
            ops_left,  # type: ignore[arg-type]
            index,
            shared,  # type: ignore[arg-type]
            start_ops,  # type: ignore[arg-type]
            frame_end,  # type: ignore[arg-type]
        )

    def _run(self, pos: int, frame: Frame | None = None) -> int:
        """Walk opcodes from `pos` to STOP.

        Deliberately one flat loop over one stack with a list of MARK positions (as CPython's
        `_pickle.c` does): a dispatch table of small functions costs several times the throughput
        on opcode-dense state dicts, and issue 4 asks for ≥ 20x fickling. Opcodes are tested in
        the order of their frequency in real torch/numpy files, and the memo store that follows
        nearly every string, tuple and call in them is done in the same loop turn (a quarter of
        all opcodes: counted against `max_opcodes` with the value they store). Reads past the
        end raise IndexError/struct.error, turned into "truncated" below.

        The cyclic garbage collector is paused meanwhile: the walk allocates a small object per
        opcode and makes no cycles worth collecting, and in a process holding many objects each
        automatic collection rescans them all (it halved the throughput in the benchmark).
        """
        if not gc.isenabled():  # paused by the scan around this walk (most walks)
            return walk_opcodes(self, pos, frame)
        with gc_paused():
            return walk_opcodes(self, pos, frame)

    def _check_bounds(self, ops_left: int, depth: int, memo_entries: int, pos: int) -> None:
        if ops_left < 0:
            raise LimitHit("too many opcodes", pos)
        if depth > self.limits.max_stack_depth:
            raise LimitHit("stack too deep", pos)
        if memo_entries > self.limits.max_memo_entries:
            raise LimitHit("memo too large", pos, MEMO_RESOURCE)


def scan_pickle_bytes(
    data: Buffer, end: int, limits: PickleLimits, *, start: int = 0, joblib: bool = False
) -> WalkResult:
    """Walk every pickle in `data[start:end]` and return what was found (never raises on input)."""
    walker = PickleWalker(data, end, limits, joblib=joblib)
    if start >= end:
        walker.flag("PICKLE_EMPTY", Severity.HIGH, Outcome.ERROR, "the pickle stream is empty")
        return walker.result
    with gc_paused():  # the walk's values live until the walker goes (`_run` says why)
        walker.walk_all(start)
    return walker.result
