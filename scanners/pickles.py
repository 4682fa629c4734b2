"""Our own pickle opcode walker: every opcode of protocols 0-5, never executing anything.

The walker runs the unpickler's stack machine over *symbolic* values: strings, numbers and small
tuples are real; a global is a `Global`; anything a call would build is a `Made` naming what built
it. So STACK_GLOBAL sees exactly the strings the real unpickler would see, however they got there
(memo PUT/GET/MEMOIZE games, STRING vs UNICODE, protocol 0 opcodes in a protocol 4 stream), and a
global assembled at run time is caught as such. Where the real unpickler raises, we stop and report
the file as malformed, keeping every global seen before the break (a payload placed before a
deliberate breakage still runs).

The values live in `scanners.pickle_values`; the fast path for torch's tensor records in
`scanners.pickle_records` (it builds the values this loop would, many records per loop turn);
what the loaded value's shape costs whoever walks it in `scanners.pickle_shape`.

Named `pickles.py` so no import of the standard `pickle` module can ever resolve to this file.
"""

from __future__ import annotations

import bisect
import codecs
import copyreg
import gc
import struct
from dataclasses import dataclass, field
from typing import NoReturn

from scanners.allowlist import GlobalVerdict, judge_global
from scanners.limits import PickleLimits
from scanners.pickle_records import (
    ENTRY_OPCODES,
    REBUILD_TENSOR_V2,
    RUN_ENTRIES,
    RUN_MAX_BYTES,
    TensorRecords,
)
from scanners.pickle_shape import NODES, link, measure, within_limits
from scanners.pickle_values import (  # the value classes stay importable from here
    CALLS_ARGUMENT,
    LOAD_FROM_BYTES,
    DictV,
    ListV,
    Record,
    SetV,
)
from scanners.pickle_values import Buffer as Buffer
from scanners.pickle_values import Global as Global
from scanners.pickle_values import LongText as LongText
from scanners.pickle_values import Made as Made
from scanners.report import Finding, JsonValue, Outcome, Severity

SCANNER = "pickle"
SCANNER_VERSION = "1.0"


class _Malformed(Exception):
    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


class _LimitHit(_Malformed):
    def __init__(self, reason: str, offset: int, code: str = "PICKLE_LIMIT_EXCEEDED") -> None:
        super().__init__(reason, offset)
        self.code = code


MEMO_RESOURCE = "PICKLE_MEMO_RESOURCE"
NESTING_RESOURCE = "PICKLE_NESTING_RESOURCE"
EXPANSION_RESOURCE = "PICKLE_EXPANSION_RESOURCE"


class _Truncated(_Malformed):
    """The bytes end before this opcode does. Malformed in a complete stream; in a streaming walk
    that has not seen the last byte it means "wait for more". Raised before the opcode changes
    anything, so the walk resumes at the same opcode."""


class _Skip(Exception):
    """Streaming only: an opcode whose argument need not be kept (a long string, a joblib array)
    is done without its bytes; the walk resumes at `to` (a data index) once `value` is pushed
    (`peek`: the memo store folded into the opcode is still to do)."""

    def __init__(self, to: int, value: object = None, *, push: bool = False, peek: bool = False):
        super().__init__()
        self.to = to
        self.value = value
        self.push = push
        self.peek = peek


class _Suspend(Exception):
    """Streaming only: this opcode needs bytes far ahead (a joblib object array's own pickle, an
    array to walk as opcodes): the streaming walk stops here, before the opcode changes anything,
    and resumes from it once every byte is there."""


@dataclass(slots=True)
class Frame:
    """A paused streaming walk of one pickle: the stack machine's state at an opcode boundary.

    `_loop` resumed from a frame does exactly what it would have done had it not stopped: same
    stack, memo and MARKs, and the same place in its batch of opcodes (so the limits are checked
    at the same opcodes and the opcode count is the same)."""

    pos: int  # absolute offset where the walk resumes
    at: int  # absolute offset of the opcode being finished when `peek`
    stack: list[object]
    marks: list[int]
    memo: dict[int, object]
    ops_left: int
    index: int  # the next turn in the current batch of opcodes; `_BATCH`: a new batch
    shared: bool  # a memo GET or DUP gave a container: the value is no tree (`_check_shape`)
    start_ops: int  # `ops_left` when this pickle started
    peek: bool = False  # the memo store folded into a skipped string is still to do
    suspended: bool = False  # stopped for good until the last byte (see `_Suspend`)


class _Pause(Exception):
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


_JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
_BIT_GENERATOR_CTOR = ("numpy.random._pickle", "__bit_generator_ctor")
_NUMPY_ITEMSIZE = {"b": 1, "i": 0, "u": 0, "f": 0, "c": 0, "m": 0, "M": 0, "S": 0, "a": 0, "V": 0}
_HIGHEST_PROTOCOL = 5
_NO_STOP = 1 << 62  # a whole-file walk never stops between batches
_BATCH = 4096
_BATCH_RANGE = range(_BATCH)
_U32 = struct.Struct("<I").unpack_from


def _u64(data: Buffer, pos: int) -> int:
    value: int = struct.unpack_from("<Q", data, pos)[0]
    return value


class PickleWalker:
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
        except _Pause as pause:
            return pause.frame
        except _LimitHit as exc:
            self._malformed(exc.reason, exc.offset, limit=True, code=exc.code)
            return None
        except _Malformed as exc:
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

    def flag(
        self, code: str, severity: Severity, outcome: Outcome, message: str, **details: JsonValue
    ) -> None:
        """Add one structural finding (once per code: the first offset is the useful one)."""
        if code in self._flagged_codes:
            return
        self._flagged_codes.add(code)
        self.result.findings.append(Finding(SCANNER, code, severity, outcome, message, details))

    # ---- helpers -------------------------------------------------------------------------
    def _starts_like_pickle(self, pos: int) -> bool:
        return self.data[pos] in _OPCODE_BYTES

    def _malformed(
        self, reason: str, offset: int, *, limit: bool = False, code: str | None = None
    ) -> None:
        offset += self.base
        code = code or ("PICKLE_LIMIT_EXCEEDED" if limit else "PICKLE_MALFORMED")
        what = "exceeds a scanning limit" if limit else "does not parse"
        if code.endswith("_RESOURCE"):
            what = "makes the unpickler exhaust memory or its stack"
        self.flag(
            code,
            Severity.HIGH,
            Outcome.ERROR,
            f"the pickle stream {what} ({reason}) at offset {offset}; the file is held because a "
            "loader may act on what comes before the break",
            offset=offset,
            reason=reason,
        )

    def _new_global(self, module: str, name: str, offset: int) -> Global:
        offset += self.base
        key = (module, name)
        verdict = self._judged.get(key)
        if verdict is None:
            judgement = judge_global(module, name)
            verdict = judgement.verdict
            self._judged[key] = verdict
            if verdict != GlobalVerdict.ALLOWED:
                self._report_global(module, name, offset, verdict, judgement.reason)
        glob = Global(module, name, offset, verdict)
        if len(self.result.globals) < self.limits.max_reported_globals:
            self.result.globals.append(glob)
        return glob

    def _report_global(
        self, module: str, name: str, offset: int, verdict: GlobalVerdict, reason: str
    ) -> None:
        if len(self._reported) >= self.limits.max_reported_globals:
            return
        shown = f"{module}.{name}"[:200]
        if verdict == GlobalVerdict.DENIED:
            finding = Finding(
                SCANNER,
                "PICKLE_GLOBAL_DENIED",
                Severity.CRITICAL,
                Outcome.MALICIOUS,
                f"the pickle imports {shown}: {reason}; loading it can run code",
                {"global": shown, "offset": offset, "reason": reason},
            )
        else:
            finding = Finding(
                SCANNER,
                "PICKLE_GLOBAL_UNKNOWN",
                Severity.MEDIUM,
                Outcome.REVIEW,
                f"the pickle imports {shown}, which is not on the allow-list of ML globals; "
                "loading it calls that code",
                {"global": shown, "offset": offset},
            )
        self._reported[(module, name)] = finding
        self.result.findings.append(finding)

    def _note_call(self, callee: object, args: object, offset: int) -> None:
        """Check a call/instantiation; remember a readable form of calls to non-allowed globals."""
        offset += self.base
        if isinstance(callee, Global):
            if callee.verdict != GlobalVerdict.ALLOWED:
                key = callee.dotted[:200]
                if key not in self.result.calls and len(self.result.calls) < 50:
                    self.result.calls[key] = describe_call(callee, args)
                return
            self._check_allowed_call(callee, args, offset)
            return
        self.flag(
            "PICKLE_INDIRECT_CALL",
            Severity.HIGH,
            Outcome.REVIEW,
            f"the pickle calls the result of another call ({describe(callee)}) at offset "
            f"{offset}: a chain no ML file needs",
            offset=offset,
            call=describe_call(callee, args),
        )

    def _check_allowed_call(self, callee: Global, args: object, offset: int) -> None:
        pair = callee.pair
        if pair in CALLS_ARGUMENT:
            self._check_callable_argument(callee, args, CALLS_ARGUMENT[pair], offset)
        elif pair == ("_codecs", "encode"):
            ok = (
                isinstance(args, tuple)
                and len(args) == 2
                and isinstance(args[0], str | LongText)
                and args[1] in ("latin1", "latin-1")
            )
            if not ok:
                self.flag(
                    "PICKLE_CODECS_MISUSE",
                    Severity.HIGH,
                    Outcome.REVIEW,
                    f"_codecs.encode is called as numpy never does: {describe_call(callee, args)}",
                    offset=offset,
                )
        elif pair == LOAD_FROM_BYTES:
            self._nested_load(args, offset)
        elif pair == ("copyreg", "_reconstructor"):
            ok = (
                isinstance(args, tuple)
                and len(args) >= 2
                and isinstance(args[0], Global)
                and args[0].plain
                and isinstance(args[1], Global)
                and args[1].plain
            )
            if not ok:
                self.flag(
                    "PICKLE_RECONSTRUCTOR_MISUSE",
                    Severity.HIGH,
                    Outcome.MALICIOUS,
                    "copyreg._reconstructor is called with a class or base that is not on the "
                    f"allow-list: {describe_call(callee, args)}",
                    offset=offset,
                )

    def _check_callable_argument(
        self, callee: Global, args: object, index: int, offset: int
    ) -> None:
        """`callee` calls `args[index]`: it must be an allowed global that needs no check."""
        if not isinstance(args, tuple) or len(args) <= index:
            return  # the default (numpy's own constructor) or a call that fails
        target = args[index]
        if isinstance(target, Global) and (target.plain or target.pair == _BIT_GENERATOR_CTOR):
            return
        if isinstance(target, str) and index == 0 and callee.name == "__bit_generator_ctor":
            return  # a bit generator named by a string: looked up in numpy's own table
        self.flag(
            "PICKLE_CALLS_ARGUMENT",
            Severity.HIGH,
            Outcome.MALICIOUS,
            f"{callee.dotted[:200]} calls its argument {describe(target)} at offset {offset}: "
            "a call hidden inside an allowed function (no ML file passes it that)",
            offset=offset,
            call=describe_call(callee, args),
        )

    def _nested_load(self, args: object, offset: int) -> None:
        payload = args[0] if isinstance(args, tuple) and len(args) == 1 else None
        if (
            isinstance(payload, Made)
            and isinstance(payload.origin, Global)
            and payload.origin.pair == ("_codecs", "encode")
            and isinstance(payload.args, tuple)
            and len(payload.args) == 2
            and payload.args[1] in ("latin1", "latin-1")
        ):
            # protocols 0-2 write bytes as `_codecs.encode(text, "latin1")`
            payload = payload.args[0]
            if isinstance(payload, str):
                payload = payload.encode("latin-1", "replace")
        if isinstance(payload, bytes):
            self.result.nested.append(payload)
        elif isinstance(payload, LongText) and payload.offset >= 0:
            self.result.nested.append((payload.offset, payload.length, payload.text))
        else:
            self.flag(
                "PICKLE_NESTED_LOAD_DYNAMIC",
                Severity.HIGH,
                Outcome.REVIEW,
                "torch.storage._load_from_bytes (a torch.load of embedded bytes) is called on "
                f"something that is not literal bytes: {describe_call(args, None)}",
                offset=offset,
            )

    def _ext(self, code: int, offset: int) -> Global:
        registry: dict[int, tuple[str, str]] = getattr(copyreg, "_inverted_registry", {})
        pair = registry.get(code) if code > 0 else None
        if pair is None:
            self.flag(
                "PICKLE_EXT_UNKNOWN",
                Severity.HIGH,
                Outcome.ERROR,
                f"the pickle uses extension code {code}, which is not registered: a loader "
                "that registered it could import anything",
                offset=self.base + offset,
                extension_code=code,
            )
            raise _Malformed(f"unregistered extension code {code}", offset)
        return self._new_global(str(pair[0]), str(pair[1]), offset)

    def _joblib_skip(self, state: object, pos: int) -> int:
        """Skip the raw array bytes joblib writes right after a NumpyArrayWrapper's BUILD.

        Streaming, the skip may land beyond the bytes there are (the caller pauses); what needs
        the array's bytes (an object array's pickle, a walk of the array as opcodes) suspends."""
        waiting = self.streaming and not self.final
        if not isinstance(state, DictV):
            raise _Malformed("joblib array wrapper without a state dict", pos)
        shape = state.items.get("shape")
        dtype = state.items.get("dtype")
        descr = dtype.args[0] if isinstance(dtype, Made) and isinstance(dtype.args, tuple) else None
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise _Malformed("joblib array wrapper with an unreadable shape", pos)
        if not isinstance(descr, str):
            raise _Malformed("joblib array wrapper with an unreadable dtype", pos)
        if descr.lstrip("<>|=").startswith("O"):
            if waiting:
                raise _Suspend
            nested = self.walk_one(pos)  # object arrays are a nested pickle
            if nested is None:
                raise _Malformed("nested joblib pickle is malformed", pos)
            return nested
        itemsize = numpy_itemsize(descr)
        if itemsize is None:
            raise _Malformed(f"joblib array of an unknown dtype {descr[:40]!r}", pos)
        count = 1
        for dim in shape:
            count *= dim
        start = pos
        if state.items.get("numpy_array_alignment_bytes") is not None:
            if pos >= self.limit:
                raise _Malformed("joblib padding byte missing", pos)
            pos += 1 + self.data[pos]
        pos += count * itemsize
        if pos > self.limit:
            raise _Malformed("joblib array data runs past the end", start)
        if start < self.limit and self.data[start] in _OPCODE_BYTES:
            if waiting and pos > self.end:
                raise _Suspend
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
                raise _Malformed(reason, at)
            if n > self.limits.max_kept_string_chars:
                value = LongText(n) if kind == 2 else self._long(n, pos, kind == 0)
                raise _Skip(pos + n, value, push=True, peek=kind == 0)
        raise _Truncated(reason, at)

    def _frame(self, pos: int, at: int, index: int, state: tuple[object, ...]) -> Frame:
        stack, marks, memo, ops_left, shared, start_ops = state
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
        if not gc.isenabled():
            return self._loop(pos, frame)
        gc.disable()
        try:
            return self._loop(pos, frame)
        finally:
            gc.enable()

    def _loop(self, pos: int, frame: Frame | None = None) -> int:
        data = self.data
        end = self.end
        limit = self.limit
        limits = self.limits
        max_keep = limits.max_kept_string_chars
        max_nesting = limits.max_nesting_depth
        max_memo_index = limits.max_memo_index
        if frame is None:
            stack: list[object] = []
            marks: list[int] = []
            memo: dict[int, object] = {}
            ops_left = self._opcodes_left
            first = _BATCH
            shared = False
            start_ops = ops_left
        else:
            stack, marks, memo = frame.stack, frame.marks, frame.memo
            ops_left, first, pos = frame.ops_left, frame.index, frame.pos - self.base
            shared, start_ops = frame.shared, frame.start_ops
        push = stack.append
        fence = marks[-1] if marks else 0
        fast = self.fast_paths
        records: TensorRecords | None = None  # the fast path, from the first rebuild BINGET on
        max_stack = limits.max_stack_depth
        max_memo = limits.max_memo_entries
        # streaming, before the last byte: stop between batches once `end` is reached (see
        # `scanners.pickle_stream` for why a batch that starts before `end` reads no further than
        # the bytes there are)
        waiting = self.streaming and not self.final
        stop = end if waiting else _NO_STOP
        u32 = _U32
        at = pos
        step_i = first
        try:
            if frame is not None and frame.peek:  # the memo store folded into a skipped string
                at = frame.at - self.base
                if data[pos] == 0x72:
                    idx = u32(data, pos + 1)[0]
                    if idx > max_memo_index:
                        raise _LimitHit("memo index too large", pos, MEMO_RESOURCE)
                    memo[idx] = stack[-1]
                    pos += 5
                elif data[pos] == 0x71:
                    memo[data[pos + 1]] = stack[-1]
                    pos += 2
            while True:
                if first < _BATCH:  # resuming in the middle of a batch
                    turns = range(first, _BATCH)
                    first = _BATCH
                else:
                    if pos >= stop:
                        raise _Pause(
                            self._frame(
                                pos, pos, _BATCH, (stack, marks, memo, ops_left, shared, start_ops)
                            )
                        )
                    # Bounds are checked between batches of opcodes: a counter per opcode costs
                    # ~10%.
                    ops_left -= _BATCH
                    self._check_bounds(ops_left, len(stack) + len(marks), len(memo), pos)
                    turns = _BATCH_RANGE
                for step_i in turns:
                    at = pos
                    op = data[pos]
                    pos += 1
                    if op == 0x72:  # LONG_BINPUT
                        idx = u32(data, pos)[0]
                        pos += 4
                        if idx > max_memo_index:  # CPython sizes its memo array from it
                            raise _LimitHit("memo index too large", at, MEMO_RESOURCE)
                        if len(stack) <= fence:
                            raise _Malformed("memo store with an empty stack", at)
                        memo[idx] = stack[-1]
                    elif op == 0x4B:  # BININT1
                        push(data[pos])
                        pos += 1
                    elif op == 0x68:  # BINGET
                        idx = data[pos]
                        pos += 1
                        try:
                            value = memo[idx]
                        except KeyError:
                            raise _Malformed(
                                f"memo value {idx} read before it was stored", at
                            ) from None
                        if value.__class__ in NODES:
                            shared = True
                        elif fast and value.__class__ is Global and value.pair == REBUILD_TENSOR_V2:
                            if waiting and end - pos < RUN_MAX_BYTES:  # match on all of a run
                                raise _Truncated("a tensor record may continue", at)
                            if records is None:
                                records = TensorRecords(data, memo, limits)
                            room = min(
                                RUN_ENTRIES,
                                (max_stack - len(stack) - len(marks)) >> 1,
                                (max_memo - len(memo)) >> 3,
                                ops_left // ENTRY_OPCODES,
                            )
                            moved = records.run(pos, end, value, stack, room)
                            if moved >= 0:
                                pos = moved
                                ops_left -= ENTRY_OPCODES * records.built - 3
                                self.result.fast_records += records.built
                                continue
                        push(value)
                    elif op == 0x28:  # MARK
                        marks.append(len(stack))
                        fence = len(stack)
                        if len(marks) > max_nesting:
                            raise _LimitHit("too many nested MARKs", at, NESTING_RESOURCE)
                    elif (
                        op == 0x58 or op == 0x8C or op == 0x8D
                    ):  # BINUNICODE SHORT_BINUNICODE BINUNICODE8
                        if op == 0x58:
                            n = u32(data, pos)[0]
                            pos += 4
                        elif op == 0x8C:
                            n = data[pos]
                            pos += 1
                        else:
                            n = struct.unpack_from("<Q", data, pos)[0]
                            pos += 8
                        if n > end - pos:
                            self._beyond(n, pos, at, "string longer than the data left", 0)
                        if n <= max_keep:
                            try:
                                push(str(data[pos : pos + n], "utf-8", "surrogatepass"))
                            except UnicodeDecodeError:
                                raise _Malformed("string is not UTF-8", at) from None
                        else:
                            push(self._long(n, pos, True))
                        pos += n
                        if data[pos] == 0x72:  # LONG_BINPUT right after: done here, one loop turn
                            idx = u32(data, pos + 1)[0]
                            if idx > max_memo_index:
                                raise _LimitHit("memo index too large", pos, MEMO_RESOURCE)
                            memo[idx] = stack[-1]
                            pos += 5
                        elif data[pos] == 0x71:  # BINPUT
                            memo[data[pos + 1]] = stack[-1]
                            pos += 2
                    elif op == 0x74:  # TUPLE
                        if not marks:
                            raise _Malformed("TUPLE without MARK", at)
                        k = marks.pop()
                        fence = marks[-1] if marks else 0
                        items = tuple(stack[k:])
                        del stack[k:]
                        push(items)
                        if data[pos] == 0x72:  # LONG_BINPUT right after: done here, one loop turn
                            idx = u32(data, pos + 1)[0]
                            if idx > max_memo_index:
                                raise _LimitHit("memo index too large", pos, MEMO_RESOURCE)
                            memo[idx] = stack[-1]
                            pos += 5
                        elif data[pos] == 0x71:  # BINPUT
                            memo[data[pos + 1]] = stack[-1]
                            pos += 2
                    elif op == 0x85 or op == 0x86 or op == 0x87:  # TUPLE1 TUPLE2 TUPLE3
                        n = op - 0x84
                        if len(stack) - n < fence:
                            raise _Malformed("TUPLEn with too few stack items", at)
                        items = tuple(stack[-n:])
                        del stack[-n:]
                        push(items)
                        if data[pos] == 0x72:  # LONG_BINPUT right after: done here, one loop turn
                            idx = u32(data, pos + 1)[0]
                            if idx > max_memo_index:
                                raise _LimitHit("memo index too large", pos, MEMO_RESOURCE)
                            memo[idx] = stack[-1]
                            pos += 5
                        elif data[pos] == 0x71:  # BINPUT
                            memo[data[pos + 1]] = stack[-1]
                            pos += 2
                    elif op == 0x52:  # REDUCE
                        if len(stack) - 2 < fence:
                            raise _Malformed("REDUCE with too few stack items", at)
                        args = stack.pop()
                        callee = stack[-1]
                        if callee.__class__ is not Global or not callee.plain:
                            self._note_call(callee, args, at)
                        stack[-1] = Made(callee, args)
                        if data[pos] == 0x72:  # LONG_BINPUT right after: done here, one loop turn
                            idx = u32(data, pos + 1)[0]
                            if idx > max_memo_index:
                                raise _LimitHit("memo index too large", pos, MEMO_RESOURCE)
                            memo[idx] = stack[-1]
                            pos += 5
                        elif data[pos] == 0x71:  # BINPUT
                            memo[data[pos + 1]] = stack[-1]
                            pos += 2
                    elif op == 0x51:  # BINPERSID
                        if len(stack) <= fence:
                            raise _Malformed("BINPERSID with an empty stack", at)
                        stack[-1] = Made("persistent", stack[-1])
                        if data[pos] == 0x72:  # LONG_BINPUT right after: done here, one loop turn
                            idx = u32(data, pos + 1)[0]
                            if idx > max_memo_index:
                                raise _LimitHit("memo index too large", pos, MEMO_RESOURCE)
                            memo[idx] = stack[-1]
                            pos += 5
                        elif data[pos] == 0x71:  # BINPUT
                            memo[data[pos + 1]] = stack[-1]
                            pos += 2
                    elif op == 0x88 or op == 0x89:  # NEWTRUE NEWFALSE
                        push(op == 0x88)
                    elif op == 0x29:  # EMPTY_TUPLE
                        push(())
                    elif op == 0x71 or op == 0x94 or op == 0x70:  # BINPUT MEMOIZE PUT
                        if op == 0x71:
                            idx = data[pos]
                            pos += 1
                        elif op == 0x94:
                            idx = len(memo)
                        else:
                            line, pos = _line(data, pos, end, at)
                            idx = _int_arg(line, at, 10)
                            if idx < 0:
                                raise _Malformed("negative PUT argument", at)
                            if idx > max_memo_index:
                                raise _LimitHit("memo index too large", at, MEMO_RESOURCE)
                        if len(stack) <= fence:
                            raise _Malformed("memo store with an empty stack", at)
                        memo[idx] = stack[-1]
                    elif op == 0x6A or op == 0x67:  # LONG_BINGET GET
                        if op == 0x6A:
                            idx = u32(data, pos)[0]
                            pos += 4
                        else:
                            line, pos = _line(data, pos, end, at)
                            idx = _int_arg(line, at, 10)
                        if idx not in memo:
                            raise _Malformed(f"memo value {idx} read before it was stored", at)
                        value = memo[idx]
                        if value.__class__ in NODES:
                            shared = True
                        elif fast and value.__class__ is Global and value.pair == REBUILD_TENSOR_V2:
                            if waiting and end - pos < RUN_MAX_BYTES:  # match on all of a run
                                raise _Truncated("a tensor record may continue", at)
                            if records is None:
                                records = TensorRecords(data, memo, limits)
                            room = min(
                                RUN_ENTRIES,
                                (max_stack - len(stack) - len(marks)) >> 1,
                                (max_memo - len(memo)) >> 3,
                                ops_left // ENTRY_OPCODES,
                            )
                            moved = records.run(pos, end, value, stack, room)
                            if moved >= 0:
                                pos = moved
                                ops_left -= ENTRY_OPCODES * records.built - 3
                                self.result.fast_records += records.built
                                continue
                        push(value)
                    elif op == 0x4A:  # BININT
                        push(struct.unpack_from("<i", data, pos)[0])
                        pos += 4
                    elif op == 0x4D:  # BININT2
                        push(struct.unpack_from("<H", data, pos)[0])
                        pos += 2
                    elif op == 0x4E:  # NONE
                        push(None)
                    elif op == 0x75 or op == 0x73:  # SETITEMS SETITEM
                        if op == 0x75:
                            if not marks:
                                raise _Malformed("SETITEMS without MARK", at)
                            k = marks.pop()
                            fence = marks[-1] if marks else 0
                        else:
                            k = len(stack) - 2
                        if (len(stack) - k) % 2 or k - 1 < fence:
                            raise _Malformed("SETITEMS with a bad item count or no dict", at)
                        self._set_items(stack[k - 1], stack[k:], at)
                        del stack[k:]
                    elif op == 0x7D:  # EMPTY_DICT
                        push(DictV())
                    elif op == 0x5D:  # EMPTY_LIST
                        push(ListV())
                    elif op == 0x65 or op == 0x61:  # APPENDS APPEND
                        if op == 0x65:
                            if not marks:
                                raise _Malformed("APPENDS without MARK", at)
                            k = marks.pop()
                            fence = marks[-1] if marks else 0
                        else:
                            k = len(stack) - 1
                        if k - 1 < fence:
                            raise _Malformed("APPENDS with no list", at)
                        if stack[k - 1].__class__ is Global:
                            self._mutates_global(stack[k - 1], at)  # type: ignore[arg-type]
                        link(stack[k - 1], stack[k:])
                        del stack[k:]
                    elif op == 0x62:  # BUILD
                        if len(stack) - 2 < fence:
                            raise _Malformed("BUILD with too few stack items", at)
                        target = stack[-2]
                        if self.joblib and self._is_joblib_wrapper(target):
                            self._opcodes_left = ops_left
                            pos = self._joblib_skip(stack[-1], pos)  # first: it may suspend
                            ops_left = self._opcodes_left
                            del stack[-1]
                            stack[-1] = Made("joblib array", None)
                            if pos > end:  # streaming only: the array's bytes are skipped
                                raise _Skip(pos)
                        else:
                            link(target, stack[-1:])
                            del stack[-1]
                            if target.__class__ is Global:
                                self._mutates_global(target, at)
                    elif op == 0x8A or op == 0x8B:  # LONG1 LONG4
                        if op == 0x8A:
                            n = data[pos]
                            pos += 1
                        else:
                            n = struct.unpack_from("<i", data, pos)[0]
                            pos += 4
                            if n < 0:
                                raise _Malformed("LONG4 with a negative length", at)
                        if n > end - pos:
                            self._beyond(n, pos, at, "LONG longer than the data left", 2)
                        push(
                            int.from_bytes(data[pos : pos + n], "little", signed=True)
                            if n <= 16
                            else LongText(n)
                        )
                        pos += n
                    elif op == 0x47:  # BINFLOAT
                        push(struct.unpack_from(">d", data, pos)[0])
                        pos += 8
                    elif op == 0x43 or op == 0x42 or op == 0x8E or op == 0x96:  # bytes, bytearray
                        if op == 0x43:
                            n = data[pos]
                            pos += 1
                        elif op == 0x42:
                            n = u32(data, pos)[0]
                            pos += 4
                        else:
                            n = struct.unpack_from("<Q", data, pos)[0]
                            pos += 8
                        if n > end - pos:
                            self._beyond(n, pos, at, "bytes longer than the data left", 1)
                        push(
                            bytes(data[pos : pos + n])
                            if n <= max_keep
                            else self._long(n, pos, False)
                        )
                        pos += n
                    elif op == 0x55 or op == 0x54:  # SHORT_BINSTRING BINSTRING
                        if op == 0x55:
                            n = data[pos]
                            pos += 1
                        else:
                            n = struct.unpack_from("<i", data, pos)[0]
                            pos += 4
                            if n < 0:
                                raise _Malformed("BINSTRING with a negative length", at)
                        if n > end - pos:
                            self._beyond(n, pos, at, "string longer than the data left", 2)
                        push(str(data[pos : pos + n], "latin-1") if n <= max_keep else LongText(n))
                        pos += n
                    elif op == 0x63 or op == 0x69:  # GLOBAL INST
                        line1, pos = _line(data, pos, end, at)
                        line2, pos = _line(data, pos, end, at)
                        try:
                            glob = self._new_global(str(line1, "utf-8"), str(line2, "utf-8"), at)
                        except UnicodeDecodeError:
                            raise _Malformed("GLOBAL names are not UTF-8", at) from None
                        if op == 0x63:
                            push(glob)
                        else:
                            if not marks:
                                raise _Malformed("INST without MARK", at)
                            k = marks.pop()
                            fence = marks[-1] if marks else 0
                            args = tuple(stack[k:])
                            del stack[k:]
                            self._note_call(glob, args, at)
                            push(Made(glob, args))
                    elif op == 0x93:  # STACK_GLOBAL
                        if len(stack) - 2 < fence:
                            raise _Malformed("STACK_GLOBAL with too few stack items", at)
                        name_v = stack.pop()
                        module_v = stack.pop()
                        if name_v.__class__ is not str or module_v.__class__ is not str:
                            self._dynamic_global(module_v, name_v, at)
                        push(self._new_global(module_v, name_v, at))  # type: ignore[arg-type]
                    elif op == 0x81 or op == 0x92:  # NEWOBJ NEWOBJ_EX
                        n = 2 if op == 0x81 else 3
                        if len(stack) - n < fence:
                            raise _Malformed("NEWOBJ with too few stack items", at)
                        args = tuple(stack[-n + 1 :]) if n == 3 else stack[-1]
                        del stack[-n + 1 :]
                        self._note_call(stack[-1], args, at)
                        stack[-1] = Made(stack[-1], args)
                    elif op == 0x6F:  # OBJ
                        if not marks:
                            raise _Malformed("OBJ without MARK", at)
                        k = marks.pop()
                        fence = marks[-1] if marks else 0
                        if len(stack) <= k:
                            raise _Malformed("OBJ without a class", at)
                        args = tuple(stack[k + 1 :])
                        cls = stack[k]
                        del stack[k:]
                        self._note_call(cls, args, at)
                        push(Made(cls, args))
                    elif op == 0x80:  # PROTO
                        if data[pos] > _HIGHEST_PROTOCOL:
                            raise _Malformed(f"unsupported pickle protocol {data[pos]}", at)
                        pos += 1
                    elif op == 0x95:  # FRAME
                        n = struct.unpack_from("<Q", data, pos)[0]
                        pos += 8
                        if n > limit - pos:
                            raise _Malformed("FRAME longer than the data left", at)
                    elif op == 0x2E:  # STOP
                        if len(stack) <= fence:
                            raise _Malformed("STOP with an empty stack", at)
                        self.last_value = stack[-1]
                        used = start_ops - ops_left - _BATCH + step_i + 1
                        self._check_shape(stack[-1], at, used, shared)
                        self._opcodes_left = ops_left
                        self.result.opcodes = limits.max_opcodes - ops_left - _BATCH + step_i + 1
                        return pos
                    elif (
                        op == 0x30
                    ):  # POP: pops the MARK itself when the frame is empty, as _pickle.c
                        if marks and marks[-1] == len(stack):
                            marks.pop()
                            fence = marks[-1] if marks else 0
                        elif len(stack) <= fence:
                            raise _Malformed("POP with an empty stack", at)
                        else:
                            stack.pop()
                    elif op == 0x31:  # POP_MARK
                        if not marks:
                            raise _Malformed("POP_MARK without MARK", at)
                        del stack[marks.pop() :]
                        fence = marks[-1] if marks else 0
                    elif op == 0x32:  # DUP
                        if len(stack) <= fence:
                            raise _Malformed("DUP with an empty stack", at)
                        if stack[-1].__class__ in NODES:
                            shared = True
                        push(stack[-1])
                    elif (
                        op == 0x6C or op == 0x64 or op == 0x91 or op == 0x90
                    ):  # LIST DICT FROZENSET ADDITEMS
                        if not marks:
                            raise _Malformed("container opcode without MARK", at)
                        k = marks.pop()
                        fence = marks[-1] if marks else 0
                        popped = stack[k:]
                        del stack[k:]
                        if op == 0x6C:
                            built_list = ListV()
                            link(built_list, popped)
                            push(built_list)
                        elif op == 0x64:
                            if len(popped) % 2:
                                raise _Malformed("odd number of items for DICT", at)
                            built = DictV()
                            self._set_items(built, popped, at)
                            push(built)
                        elif op == 0x91:
                            built_set = SetV()
                            link(built_set, popped)
                            push(built_set)
                        elif len(stack) <= fence:
                            raise _Malformed("ADDITEMS with no set", at)
                        elif stack[-1].__class__ is Global:  # calls the global's `add`
                            self._mutates_global(stack[-1], at)
                        else:
                            link(stack[-1], popped)
                    elif op == 0x8F:  # EMPTY_SET
                        push(SetV())
                    elif op == 0x50:  # PERSID
                        line, pos = _line(data, pos, end, at)
                        push(Made("persistent", line))
                    elif op == 0x82 or op == 0x83 or op == 0x84:  # EXT1 EXT2 EXT4
                        n = 1 if op == 0x82 else 2 if op == 0x83 else 4
                        if pos + n > end:
                            raise _Malformed("truncated EXT", at)
                        code = int.from_bytes(data[pos : pos + n], "little", signed=op == 0x84)
                        pos += n
                        push(self._ext(code, at))
                    elif op == 0x97:  # NEXT_BUFFER
                        push(Made("buffer", None))
                    elif op == 0x98:  # READONLY_BUFFER
                        if len(stack) <= fence:
                            raise _Malformed("READONLY_BUFFER with an empty stack", at)
                    elif (
                        op in _TEXT_OPS
                    ):  # INT LONG FLOAT STRING UNICODE: protocol 0 values as lines
                        line, pos = _line(data, pos, end, at)
                        push(_text_value(op, line, at, max_keep))
                    else:
                        raise _Malformed(f"unknown opcode 0x{op:02x}", at)
        except _Truncated:
            if not waiting:
                raise
            raise _Pause(
                self._frame(at, at, step_i, (stack, marks, memo, ops_left, shared, start_ops))
            ) from None
        except _Skip as skip:
            if skip.push:
                stack.append(skip.value)
            paused = self._frame(
                skip.to, at, step_i + 1, (stack, marks, memo, ops_left, shared, start_ops)
            )
            paused.peek = skip.peek
            raise _Pause(paused) from None
        except _Suspend:
            paused = self._frame(at, at, step_i, (stack, marks, memo, ops_left, shared, start_ops))
            paused.suspended = True
            raise _Pause(paused) from None
        except (IndexError, struct.error):
            raise _Malformed("the data ends inside an opcode or before STOP", at) from None

    def _check_shape(self, root: object, at: int, opcodes: int, shared: bool) -> None:
        """What the pickle loads to: nesting depth and expansion (`scanners.pickle_shape`);
        `opcodes` built it, `shared`: a container of it was fetched twice (memo GET, DUP)."""
        limits = self.limits
        if within_limits(shared, opcodes, limits.max_nesting_depth, limits.max_expanded_nodes):
            return  # a small tree: nothing to measure (most pickles of a legacy torch file)
        cap = limits.max_expanded_nodes * _EXPANSION_FACTOR  # counts saturate: no huge ints
        shape = measure(root, limits.max_nesting_depth, cap)
        offset = self.base + at
        if shape.depth > limits.max_nesting_depth:
            self.flag(
                NESTING_RESOURCE,
                Severity.HIGH,
                Outcome.ERROR,
                f"the pickle ending at offset {offset} loads containers nested more than "
                f"{limits.max_nesting_depth} deep: the first recursive walk over the value "
                "(repr, copy, compare, serialise) exhausts the stack",
                offset=offset,
                depth=shape.depth,
            )
        expansion = min(max(limits.max_expanded_nodes, _EXPANSION_FACTOR * shape.distinct), cap)
        if shape.expanded > expansion:
            self.flag(
                EXPANSION_RESOURCE,
                Severity.HIGH,
                Outcome.ERROR,
                f"the pickle ending at offset {offset} loads {shape.distinct} containers that "
                f"reference each other into more than {limits.max_expanded_nodes} (a billion "
                "laughs): whatever walks the value as a tree exhausts memory or time",
                offset=offset,
                distinct=shape.distinct,
            )

    def _check_bounds(self, ops_left: int, depth: int, memo_entries: int, pos: int) -> None:
        if ops_left < 0:
            raise _LimitHit("too many opcodes", pos)
        if depth > self.limits.max_stack_depth:
            raise _LimitHit("stack too deep", pos)
        if memo_entries > self.limits.max_memo_entries:
            raise _LimitHit("memo too large", pos, MEMO_RESOURCE)

    def _set_items(self, target: object, items: list[object], at: int) -> None:
        link(target, items)
        if target.__class__ is Global:
            self._mutates_global(target, at)
        elif _never_a_mapping(target):
            self._set_items_on_non_dict(target, at)
        elif isinstance(target, DictV) and len(target.items) < self.limits.max_tracked_items:
            for i in range(0, min(len(items) - 1, 2 * self.limits.max_tracked_items), 2):
                key = items[i]
                if isinstance(key, str | int):
                    target.items[key] = items[i + 1]

    def _dynamic_global(self, module_v: object, name_v: object, at: int) -> None:
        self.flag(
            "PICKLE_GLOBAL_DYNAMIC",
            Severity.CRITICAL,
            Outcome.MALICIOUS,
            f"STACK_GLOBAL at offset {self.base + at} imports a name that is not a plain string "
            f"({describe(module_v)}, {describe(name_v)}): a global assembled at load time to "
            "hide what it imports",
            offset=self.base + at,
        )
        raise _Malformed("STACK_GLOBAL requires two strings", at)

    @staticmethod
    def _is_joblib_wrapper(target: object) -> bool:
        return (
            isinstance(target, Made)
            and isinstance(target.origin, Global)
            and target.origin.pair == _JOBLIB_WRAPPER
        )

    def _made(self, callee: object, args: object, at: int) -> Made:
        del at  # kept in the signature so a later per-call check has the offset
        return Made(callee, args)

    def _set_items_on_non_dict(self, target: object, at: int) -> None:
        """SETITEM(S) on a list, tuple, scalar or tensor: `pickle.dump` never writes it, and
        torch's weights_only unpickler corrupted memory on it (CVE-2026-24747)."""
        self.flag(
            "PICKLE_SETITEM_NON_DICT",
            Severity.HIGH,
            Outcome.MALICIOUS,
            f"SETITEM(S) at offset {self.base + at} stores items into {describe(target)}, which "
            "is no mapping: no pickler writes that, and torch's weights_only loader corrupted "
            "memory on it (CVE-2026-24747)",
            offset=self.base + at,
        )

    def _mutates_global(self, target: Global, at: int) -> None:
        self.flag(
            "PICKLE_MUTATES_GLOBAL",
            Severity.HIGH,
            Outcome.MALICIOUS,
            f"the pickle changes {target.dotted[:200]} itself at offset {self.base + at} (BUILD, "
            "SETITEMS or APPENDS on an imported object): monkey-patching code while loading",
            offset=self.base + at,
            target=target.dotted[:200],
        )


def _never_a_mapping(target: object) -> bool:
    """A value SETITEMS cannot legitimately fill: a list, tuple, set, scalar, or a tensor
    (a dict subclass built by a call, OrderedDict say, is filled this way)."""
    if isinstance(target, Record) or target.__class__ in (ListV, SetV, tuple, str, bytes):
        return True
    if target is None or isinstance(target, bool | int | float):
        return True
    return (
        isinstance(target, Made)
        and isinstance(target.origin, Global)
        and target.origin.module == "torch._utils"
    )


_EXPANSION_FACTOR = 64  # a benign value shares parts; one built to explode shares exponentially


# INT LONG FLOAT STRING UNICODE: the protocol 0 opcodes whose argument is a line
_TEXT_OPS = frozenset({0x49, 0x4C, 0x46, 0x53, 0x56})
OPCODE_BYTES = frozenset(b"(.012FIJKLMNPQRSTUVXabcdeghijlopqrstu}])GBC" + bytes(range(0x80, 0x99)))
_OPCODE_BYTES = OPCODE_BYTES


def _line(data: Buffer, pos: int, end: int, at: int) -> tuple[bytes, int]:
    nl = data.find(b"\n", pos, end)
    if nl < 0:
        raise _Truncated("line argument without a newline", at)
    return bytes(data[pos:nl]), nl + 1


def _int_arg(line: bytes, at: int, base: int) -> int:
    try:
        return int(line, base)
    except ValueError:
        raise _Malformed("bad integer argument", at) from None


def _text_value(op: int, line: bytes, at: int, max_keep: int) -> object:
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
                raise _Malformed("the STRING opcode argument must be quoted", at)
            if len(line) - 2 > max_keep:
                return LongText(len(line) - 2)
            raw: bytes = codecs.escape_decode(line[1:-1])[0]
            return str(raw, "latin-1")
        if len(line) > max_keep:  # UNICODE
            return LongText(len(line))
        return str(line, "raw-unicode-escape")
    except (ValueError, UnicodeDecodeError):
        raise _Malformed("bad text argument", at) from None


def numpy_itemsize(descr: str) -> int | None:
    """Bytes per element of a simple numpy dtype string ('<f8', '|b1', '<U5'...); None if not."""
    body = descr.lstrip("<>|=")
    if not body or body[0] not in _NUMPY_ITEMSIZE or not body[1:].isdigit():
        return None
    count = int(body[1:])
    if body[0] == "U":
        return count * 4
    return count if count > 0 else None


def describe(value: object, depth: int = 0) -> str:
    """A short, readable rendering of a symbolic value for findings (never more than 200 chars)."""
    text = _describe(value, depth)
    return text if len(text) <= 200 else text[:197] + "..."


def _describe(value: object, depth: int) -> str:
    if isinstance(value, Global):
        return value.dotted
    if isinstance(value, str):
        return repr(value[:80])
    if isinstance(value, bytes):
        return repr(value[:40])
    if isinstance(value, int | float | bool) or value is None:
        return repr(value)
    if depth > 2:
        return "…"
    if isinstance(value, tuple):
        return "(" + ", ".join(_describe(v, depth + 1) for v in value[:6]) + ")"
    if isinstance(value, Made):
        return describe_call(value.origin, value.args, depth + 1)
    if isinstance(value, LongText):
        return f"<{value.length} chars>"
    return f"<{type(value).__name__.removesuffix('V').lower()}>"


def describe_call(callee: object, args: object, depth: int = 0) -> str:
    """`module.name(arg, ...)`: the decompiled form of one call."""
    if isinstance(callee, str):
        return f"<{callee}>"
    inner = (
        ", ".join(_describe(v, depth + 1) for v in args[:6])
        if isinstance(args, tuple)
        else _describe(args, depth + 1)
    )
    text = f"{_describe(callee, depth + 1)}({inner})"
    return text if len(text) <= 200 else text[:197] + "..."


def scan_pickle_bytes(
    data: Buffer, end: int, limits: PickleLimits, *, start: int = 0, joblib: bool = False
) -> WalkResult:
    """Walk every pickle in `data[start:end]` and return what was found (never raises on input)."""
    walker = PickleWalker(data, end, limits, joblib=joblib)
    if start >= end:
        walker.flag("PICKLE_EMPTY", Severity.HIGH, Outcome.ERROR, "the pickle stream is empty")
        return walker.result
    walker.walk_all(start)
    return walker.result


def pickle_span(result: WalkResult, offset: int, size: int) -> tuple[int, int]:
    """The pickle (start, end) that `offset` falls in; `size`: where the stream ends."""
    start = bisect.bisect_right(result.starts, offset) - 1
    if start < 0:
        return 0, size
    begin = result.starts[start]
    if start + 1 < len(result.starts):
        return begin, result.starts[start + 1]
    return begin, result.end if result.end > begin else size


def findings_with_calls(result: WalkResult, member: str | None = None) -> list[Finding]:
    """The walk's findings, each global finding carrying its decompiled call and the member."""
    out: list[Finding] = []
    for finding in result.findings:
        details = dict(finding.details)
        glob = details.get("global")
        if isinstance(glob, str) and glob in result.calls:
            details["call"] = result.calls[glob]
        if member is not None:
            details["member"] = member
        out.append(
            Finding(
                finding.scanner,
                finding.code,
                finding.severity,
                finding.outcome,
                finding.message if member is None else f"{member}: {finding.message}",
                details,
            )
        )
    return out
