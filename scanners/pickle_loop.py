"""The pickle walker's opcode loop: the unpickler's stack machine over symbolic values.

One flat function, for throughput (`PickleWalker._run` says why); it reads its walker's data,
limits and state, calls the walker's checks (`scanners.pickle_checks`) on every global and call,
and hands torch's tensor records to the fast path (`scanners.pickle_records`).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from scanners.pickle_frames import NO_FRAME, PAST_STOP, leave_frame, start_frame
from scanners.pickle_records import (
    ENTRY_OPCODES,
    REBUILD_TENSOR_V2,
    RUN_ENTRIES,
    RUN_MAX_BYTES,
    TensorRecords,
)
from scanners.pickle_shape import NODES, link
from scanners.pickle_state import (
    MEMO_RESOURCE,
    NESTING_RESOURCE,
    Frame,
    LimitHit,
    Malformed,
    Pause,
    Skip,
    Suspend,
    Truncated,
)
from scanners.pickle_text import TEXT_OPS, int_arg, read_line, text_value
from scanners.pickle_values import (
    Buffer,
    DictV,
    Global,
    ListV,
    LongText,
    Made,
    SetV,
)

if TYPE_CHECKING:
    from scanners.pickles import PickleWalker

_HIGHEST_PROTOCOL = 5
_NO_STOP = 1 << 62  # a whole-file walk never stops between batches
_BATCH = 4096
_BATCH_RANGE = range(_BATCH)
_U32 = struct.Struct("<I").unpack_from


def _u64(data: Buffer, pos: int) -> int:
    value: int = struct.unpack_from("<Q", data, pos)[0]
    return value


def walk_opcodes(walker: PickleWalker, pos: int, frame: Frame | None = None) -> int:
    """Walk opcodes from data index `pos` (or resume `frame`) to STOP; the index after it.

    Raises Malformed, LimitHit, Truncated, Skip, Suspend or Pause (see `scanners.pickle_state`):
    `PickleWalker._walk` turns each into a finding or a paused frame. Why one flat loop:
    `PickleWalker._run`."""
    data = walker.data
    end = walker.end
    limit = walker.limit
    limits = walker.limits
    max_keep = limits.max_kept_string_chars
    max_nesting = limits.max_nesting_depth
    max_memo_index = limits.max_memo_index
    if frame is None:
        stack: list[object] = []
        marks: list[int] = []
        memo: dict[int, object] = {}
        ops_left = walker._opcodes_left
        first = _BATCH
        shared = False
        start_ops = ops_left
        frame_end = NO_FRAME  # the open FRAME's end (`scanners.pickle_frames`)
    else:
        stack, marks, memo = frame.stack, frame.marks, frame.memo
        ops_left, first, pos = frame.ops_left, frame.index, frame.pos - walker.base
        shared, start_ops = frame.shared, frame.start_ops
        frame_end = frame.frame_end - walker.base if frame.frame_end < NO_FRAME else NO_FRAME
    push = stack.append
    fence = marks[-1] if marks else 0
    fast = walker.fast_paths
    records: TensorRecords | None = None  # the fast path, from the first rebuild BINGET on
    max_stack = limits.max_stack_depth
    max_memo = limits.max_memo_entries
    # streaming, before the last byte: stop between batches once `end` is reached (see
    # `scanners.pickle_stream` for why a batch that starts before `end` reads no further than
    # the bytes there are)
    waiting = walker.streaming and not walker.final
    stop = end if waiting else _NO_STOP
    u32 = _U32
    at = pos
    step_i = first
    try:
        if frame is not None and frame.peek:  # the memo store folded into a skipped string
            at = frame.at - walker.base
            if pos >= frame_end:  # the skipped string's end is a boundary the loop never sees
                frame_end = leave_frame(data, pos, pos, frame_end)
            if data[pos] == 0x72:
                idx = u32(data, pos + 1)[0]
                if idx > max_memo_index:
                    raise LimitHit("memo index too large", pos, MEMO_RESOURCE)
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
                if pos >= frame_end:  # before a pause: resumed, the last opcode is unknown
                    frame_end = leave_frame(data, at, pos, frame_end)
                if pos >= stop:
                    raise Pause(
                        walker._frame(
                            pos,
                            pos,
                            _BATCH,
                            (stack, marks, memo, ops_left, shared, start_ops, frame_end),
                        )
                    )
                # Bounds are checked between batches of opcodes: a counter per opcode costs
                # ~10%.
                ops_left -= _BATCH
                walker._check_bounds(ops_left, len(stack) + len(marks), len(memo), pos)
                turns = _BATCH_RANGE
            for step_i in turns:
                if pos >= frame_end:
                    frame_end = leave_frame(data, at, pos, frame_end)
                at = pos
                op = data[pos]
                pos += 1
                if op == 0x72:  # LONG_BINPUT
                    idx = u32(data, pos)[0]
                    pos += 4
                    if idx > max_memo_index:  # CPython sizes its memo array from it
                        raise LimitHit("memo index too large", at, MEMO_RESOURCE)
                    if len(stack) <= fence:
                        raise Malformed("memo store with an empty stack", at)
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
                        raise Malformed(f"memo value {idx} read before it was stored", at) from None
                    if value.__class__ in NODES:
                        shared = True
                    elif fast and value.__class__ is Global and value.pair == REBUILD_TENSOR_V2:
                        if waiting and end - pos < RUN_MAX_BYTES:  # match on all of a run
                            raise Truncated("a tensor record may continue", at)
                        if records is None:
                            records = TensorRecords(data, memo, limits)
                        room = min(
                            RUN_ENTRIES,
                            (max_stack - len(stack) - len(marks)) >> 1,
                            (max_memo - len(memo)) >> 3,
                            ops_left // ENTRY_OPCODES,
                        )
                        bound = end if end < frame_end else frame_end  # a run stays in its frame
                        moved = records.run(pos, bound, value, stack, room)
                        if moved >= 0:
                            pos = moved
                            ops_left -= ENTRY_OPCODES * records.built - 3
                            walker.result.fast_records += records.built
                            continue
                    push(value)
                elif op == 0x28:  # MARK
                    marks.append(len(stack))
                    fence = len(stack)
                    if len(marks) > max_nesting:
                        raise LimitHit("too many nested MARKs", at, NESTING_RESOURCE)
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
                        walker._beyond(n, pos, at, "string longer than the data left", 0)
                    if n <= max_keep:
                        try:
                            push(str(data[pos : pos + n], "utf-8", "surrogatepass"))
                        except UnicodeDecodeError:
                            raise Malformed("string is not UTF-8", at) from None
                    else:
                        push(walker._long(n, pos, True))
                    pos += n
                    if data[pos] == 0x72:  # LONG_BINPUT right after: done here, one loop turn
                        idx = u32(data, pos + 1)[0]
                        if idx > max_memo_index:
                            raise LimitHit("memo index too large", pos, MEMO_RESOURCE)
                        memo[idx] = stack[-1]
                        pos += 5
                    elif data[pos] == 0x71:  # BINPUT
                        memo[data[pos + 1]] = stack[-1]
                        pos += 2
                elif op == 0x74:  # TUPLE
                    if not marks:
                        raise Malformed("TUPLE without MARK", at)
                    k = marks.pop()
                    fence = marks[-1] if marks else 0
                    items = tuple(stack[k:])
                    del stack[k:]
                    push(items)
                    if data[pos] == 0x72:  # LONG_BINPUT right after: done here, one loop turn
                        idx = u32(data, pos + 1)[0]
                        if idx > max_memo_index:
                            raise LimitHit("memo index too large", pos, MEMO_RESOURCE)
                        memo[idx] = stack[-1]
                        pos += 5
                    elif data[pos] == 0x71:  # BINPUT
                        memo[data[pos + 1]] = stack[-1]
                        pos += 2
                elif op == 0x85 or op == 0x86 or op == 0x87:  # TUPLE1 TUPLE2 TUPLE3
                    n = op - 0x84
                    if len(stack) - n < fence:
                        raise Malformed("TUPLEn with too few stack items", at)
                    items = tuple(stack[-n:])
                    del stack[-n:]
                    push(items)
                    if data[pos] == 0x72:  # LONG_BINPUT right after: done here, one loop turn
                        idx = u32(data, pos + 1)[0]
                        if idx > max_memo_index:
                            raise LimitHit("memo index too large", pos, MEMO_RESOURCE)
                        memo[idx] = stack[-1]
                        pos += 5
                    elif data[pos] == 0x71:  # BINPUT
                        memo[data[pos + 1]] = stack[-1]
                        pos += 2
                elif op == 0x52:  # REDUCE
                    if len(stack) - 2 < fence:
                        raise Malformed("REDUCE with too few stack items", at)
                    args = stack.pop()
                    callee = stack[-1]
                    if callee.__class__ is not Global or not callee.plain:
                        walker._note_call(callee, args, at)
                    stack[-1] = Made(callee, args)
                    if data[pos] == 0x72:  # LONG_BINPUT right after: done here, one loop turn
                        idx = u32(data, pos + 1)[0]
                        if idx > max_memo_index:
                            raise LimitHit("memo index too large", pos, MEMO_RESOURCE)
                        memo[idx] = stack[-1]
                        pos += 5
                    elif data[pos] == 0x71:  # BINPUT
                        memo[data[pos + 1]] = stack[-1]
                        pos += 2
                elif op == 0x51:  # BINPERSID
                    if len(stack) <= fence:
                        raise Malformed("BINPERSID with an empty stack", at)
                    stack[-1] = Made("persistent", stack[-1])
                    if data[pos] == 0x72:  # LONG_BINPUT right after: done here, one loop turn
                        idx = u32(data, pos + 1)[0]
                        if idx > max_memo_index:
                            raise LimitHit("memo index too large", pos, MEMO_RESOURCE)
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
                        line, pos = read_line(data, pos, end, at)
                        idx = int_arg(line, at, 10)
                        if idx < 0:
                            raise Malformed("negative PUT argument", at)
                        if idx > max_memo_index:
                            raise LimitHit("memo index too large", at, MEMO_RESOURCE)
                    if len(stack) <= fence:
                        raise Malformed("memo store with an empty stack", at)
                    memo[idx] = stack[-1]
                elif op == 0x6A or op == 0x67:  # LONG_BINGET GET
                    if op == 0x6A:
                        idx = u32(data, pos)[0]
                        pos += 4
                    else:
                        line, pos = read_line(data, pos, end, at)
                        idx = int_arg(line, at, 10)
                    if idx not in memo:
                        raise Malformed(f"memo value {idx} read before it was stored", at)
                    value = memo[idx]
                    if value.__class__ in NODES:
                        shared = True
                    elif fast and value.__class__ is Global and value.pair == REBUILD_TENSOR_V2:
                        if waiting and end - pos < RUN_MAX_BYTES:  # match on all of a run
                            raise Truncated("a tensor record may continue", at)
                        if records is None:
                            records = TensorRecords(data, memo, limits)
                        room = min(
                            RUN_ENTRIES,
                            (max_stack - len(stack) - len(marks)) >> 1,
                            (max_memo - len(memo)) >> 3,
                            ops_left // ENTRY_OPCODES,
                        )
                        bound = end if end < frame_end else frame_end  # a run stays in its frame
                        moved = records.run(pos, bound, value, stack, room)
                        if moved >= 0:
                            pos = moved
                            ops_left -= ENTRY_OPCODES * records.built - 3
                            walker.result.fast_records += records.built
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
                            raise Malformed("SETITEMS without MARK", at)
                        k = marks.pop()
                        fence = marks[-1] if marks else 0
                    else:
                        k = len(stack) - 2
                    if (len(stack) - k) % 2 or k - 1 < fence:
                        raise Malformed("SETITEMS with a bad item count or no dict", at)
                    walker._set_items(stack[k - 1], stack[k:], at)
                    del stack[k:]
                elif op == 0x7D:  # EMPTY_DICT
                    push(DictV())
                elif op == 0x5D:  # EMPTY_LIST
                    push(ListV())
                elif op == 0x65 or op == 0x61:  # APPENDS APPEND
                    if op == 0x65:
                        if not marks:
                            raise Malformed("APPENDS without MARK", at)
                        k = marks.pop()
                        fence = marks[-1] if marks else 0
                    else:
                        k = len(stack) - 1
                    if k - 1 < fence:
                        raise Malformed("APPENDS with no list", at)
                    if stack[k - 1].__class__ is Global:
                        walker._mutates_global(stack[k - 1], at)  # type: ignore[arg-type]
                    link(stack[k - 1], stack[k:])
                    del stack[k:]
                elif op == 0x62:  # BUILD
                    if len(stack) - 2 < fence:
                        raise Malformed("BUILD with too few stack items", at)
                    target = stack[-2]
                    if walker.joblib and walker._is_joblib_wrapper(target):
                        if pos >= frame_end:  # joblib ends the frame here: the array is raw bytes
                            frame_end = leave_frame(data, at, pos, frame_end)
                        walker._opcodes_left = ops_left
                        pos = walker._joblib_skip(stack[-1], pos)  # first: it may suspend
                        ops_left = walker._opcodes_left
                        del stack[-1]
                        stack[-1] = Made("joblib array", None)
                        if pos > end:  # streaming only: the array's bytes are skipped
                            raise Skip(pos)
                    else:
                        link(target, stack[-1:])
                        del stack[-1]
                        if target.__class__ is Global:
                            walker._mutates_global(target, at)
                elif op == 0x8A or op == 0x8B:  # LONG1 LONG4
                    if op == 0x8A:
                        n = data[pos]
                        pos += 1
                    else:
                        n = struct.unpack_from("<i", data, pos)[0]
                        pos += 4
                        if n < 0:
                            raise Malformed("LONG4 with a negative length", at)
                    if n > end - pos:
                        walker._beyond(n, pos, at, "LONG longer than the data left", 2)
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
                        walker._beyond(n, pos, at, "bytes longer than the data left", 1)
                    push(
                        bytes(data[pos : pos + n]) if n <= max_keep else walker._long(n, pos, False)
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
                            raise Malformed("BINSTRING with a negative length", at)
                    if n > end - pos:
                        walker._beyond(n, pos, at, "string longer than the data left", 2)
                    push(str(data[pos : pos + n], "latin-1") if n <= max_keep else LongText(n))
                    pos += n
                elif op == 0x63 or op == 0x69:  # GLOBAL INST
                    line1, pos = read_line(data, pos, end, at)
                    line2, pos = read_line(data, pos, end, at)
                    try:
                        glob = walker._new_global(str(line1, "utf-8"), str(line2, "utf-8"), at)
                    except UnicodeDecodeError:
                        raise Malformed("GLOBAL names are not UTF-8", at) from None
                    if op == 0x63:
                        push(glob)
                    else:
                        if not marks:
                            raise Malformed("INST without MARK", at)
                        k = marks.pop()
                        fence = marks[-1] if marks else 0
                        args = tuple(stack[k:])
                        del stack[k:]
                        walker._note_call(glob, args, at)
                        push(Made(glob, args))
                elif op == 0x93:  # STACK_GLOBAL
                    if len(stack) - 2 < fence:
                        raise Malformed("STACK_GLOBAL with too few stack items", at)
                    name_v = stack.pop()
                    module_v = stack.pop()
                    if name_v.__class__ is not str or module_v.__class__ is not str:
                        walker._dynamic_global(module_v, name_v, at)
                    push(walker._new_global(module_v, name_v, at))  # type: ignore[arg-type]
                elif op == 0x81 or op == 0x92:  # NEWOBJ NEWOBJ_EX
                    n = 2 if op == 0x81 else 3
                    if len(stack) - n < fence:
                        raise Malformed("NEWOBJ with too few stack items", at)
                    args = tuple(stack[-n + 1 :]) if n == 3 else stack[-1]
                    del stack[-n + 1 :]
                    walker._note_call(stack[-1], args, at)
                    stack[-1] = Made(stack[-1], args)
                elif op == 0x6F:  # OBJ
                    if not marks:
                        raise Malformed("OBJ without MARK", at)
                    k = marks.pop()
                    fence = marks[-1] if marks else 0
                    if len(stack) <= k:
                        raise Malformed("OBJ without a class", at)
                    args = tuple(stack[k + 1 :])
                    cls = stack[k]
                    del stack[k:]
                    walker._note_call(cls, args, at)
                    push(Made(cls, args))
                elif op == 0x80:  # PROTO
                    if data[pos] > _HIGHEST_PROTOCOL:
                        raise Malformed(f"unsupported pickle protocol {data[pos]}", at)
                    pos += 1
                elif op == 0x95:  # FRAME
                    n = struct.unpack_from("<Q", data, pos)[0]
                    pos += 8
                    if n > limit - pos:
                        raise Malformed("FRAME longer than the data left", at)
                    frame_end = start_frame(at, pos, n, frame_end)
                elif op == 0x2E:  # STOP
                    if len(stack) <= fence:
                        raise Malformed("STOP with an empty stack", at)
                    if frame_end != NO_FRAME and frame_end != pos:
                        raise Malformed(PAST_STOP, at)
                    walker.last_value = stack[-1]
                    used = start_ops - ops_left - _BATCH + step_i + 1
                    walker._check_shape(stack[-1], at, used, shared)
                    walker._opcodes_left = ops_left
                    walker.result.opcodes = limits.max_opcodes - ops_left - _BATCH + step_i + 1
                    return pos
                elif op == 0x30:  # POP: pops the MARK itself when the frame is empty, as _pickle.c
                    if marks and marks[-1] == len(stack):
                        marks.pop()
                        fence = marks[-1] if marks else 0
                    elif len(stack) <= fence:
                        raise Malformed("POP with an empty stack", at)
                    else:
                        stack.pop()
                elif op == 0x31:  # POP_MARK
                    if not marks:
                        raise Malformed("POP_MARK without MARK", at)
                    del stack[marks.pop() :]
                    fence = marks[-1] if marks else 0
                elif op == 0x32:  # DUP
                    if len(stack) <= fence:
                        raise Malformed("DUP with an empty stack", at)
                    if stack[-1].__class__ in NODES:
                        shared = True
                    push(stack[-1])
                elif (
                    op == 0x6C or op == 0x64 or op == 0x91 or op == 0x90
                ):  # LIST DICT FROZENSET ADDITEMS
                    if not marks:
                        raise Malformed("container opcode without MARK", at)
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
                            raise Malformed("odd number of items for DICT", at)
                        built = DictV()
                        walker._set_items(built, popped, at)
                        push(built)
                    elif op == 0x91:
                        built_set = SetV()
                        link(built_set, popped)
                        push(built_set)
                    elif len(stack) <= fence:
                        raise Malformed("ADDITEMS with no set", at)
                    elif stack[-1].__class__ is Global:  # calls the global's `add`
                        walker._mutates_global(stack[-1], at)
                    else:
                        link(stack[-1], popped)
                elif op == 0x8F:  # EMPTY_SET
                    push(SetV())
                elif op == 0x50:  # PERSID
                    line, pos = read_line(data, pos, end, at)
                    push(Made("persistent", line))
                elif op == 0x82 or op == 0x83 or op == 0x84:  # EXT1 EXT2 EXT4
                    n = 1 if op == 0x82 else 2 if op == 0x83 else 4
                    if pos + n > end:
                        raise Malformed("truncated EXT", at)
                    code = int.from_bytes(data[pos : pos + n], "little", signed=op == 0x84)
                    pos += n
                    push(walker._ext(code, at))
                elif op == 0x97:  # NEXT_BUFFER
                    push(Made("buffer", None))
                elif op == 0x98:  # READONLY_BUFFER
                    if len(stack) <= fence:
                        raise Malformed("READONLY_BUFFER with an empty stack", at)
                elif op in TEXT_OPS:  # INT LONG FLOAT STRING UNICODE: protocol 0 values as lines
                    line, pos = read_line(data, pos, end, at)
                    push(text_value(op, line, at, max_keep))
                else:
                    raise Malformed(f"unknown opcode 0x{op:02x}", at)
    except Truncated:
        if not waiting:
            raise
        raise Pause(
            walker._frame(
                at, at, step_i, (stack, marks, memo, ops_left, shared, start_ops, frame_end)
            )
        ) from None
    except Skip as skip:
        if skip.push:
            stack.append(skip.value)
        paused = walker._frame(
            skip.to, at, step_i + 1, (stack, marks, memo, ops_left, shared, start_ops, frame_end)
        )
        paused.peek = skip.peek
        raise Pause(paused) from None
    except Suspend:
        paused = walker._frame(
            at, at, step_i, (stack, marks, memo, ops_left, shared, start_ops, frame_end)
        )
        paused.suspended = True
        raise Pause(paused) from None
    except (IndexError, struct.error):
        raise Malformed("the data ends inside an opcode or before STOP", at) from None
