"""The pickle walker's fast path: the tensor record `torch.save` writes thousands of times.

After its first occurrence, every tensor in a torch `data.pkl` is the same 30-odd opcodes, with
the rebuild function, 'storage', the storage class, the location and OrderedDict fetched from
the memo:
  BINGET _rebuild_tensor_v2  MARK MARK  GET 'storage'  GET <class>  BINUNICODE '<key>' PUT
  GET 'cpu'  <numel>  TUPLE PUT  BINPERSID  <offset>  <size tuple> [PUT]  <stride tuple> [PUT]
  NEWFALSE|NEWTRUE  GET OrderedDict  EMPTY_TUPLE REDUCE PUT  TUPLE PUT  REDUCE [PUT]
(a legacy `torch.save` adds NONE, the view metadata, after the numel), and in a state dict the
next entry follows at once: its key, a PUT, the BINGET of the rebuild function and the next
record. One regular expression (C speed) recognises a record; the values
the opcodes would build are then built in one go, memo stores included, exactly as the loop
would build them, and so on entry after entry (a *run*) without going back to the loop. Its
calls are to allowed globals that need no check, so the loop would report nothing either;
anything else (another callee, a memo miss, a store into a slot the run fetches from, a string
that is not a plain storage key, a long or non-UTF-8 key, a memo store cut short) ends the run
there and leaves the rest to the loop, opcode by opcode. A run builds at most `RUN_ENTRIES`
entries, fewer when the stack, the memo or the opcode budget could not take that many (the loop
checks its bounds between batches of opcodes; a run never takes the walk past one of them).

Protocol 4 and later (`torch.save(..., pickle_protocol=4)`) store with MEMOIZE, whose index is
the memo's size at that point: a record whose every store is a MEMOIZE into a new slot is built
the same way, its indices counted as the loop counts them (issue 13: such files took the loop's
slow path, opcode by opcode).

Past 256 memo slots every store is a LONG_BINPUT: once a record of that kind has been matched,
the next ones with the same fixed parts (the GETs, the numbers, the flag) are matched by a pattern
of that layout's own (`_special_pattern`: the fixed parts as literals, only the key and the eight
store indices captured), which matches a subset of what `_ENTRY` matches and leaves the same
checks to run; a record of another layout goes back to `_ENTRY`. A walk compiles at most
`SPECIALS_PER_WALK` such patterns (issue 13: `scan_file` on 46,000 tiny tensors went from 16 to
22 MB/s).

The profile that shaped it (issue 13, a `data.pkl` of 46,000 tiny tensors): going back to the
loop for each key and each rebuild BINGET cost as much as the record itself, and so did slicing
and decoding each memo index. A GET/PUT index is read with its opcode byte, which is the lowest
byte in little-endian order and shifted out: `int.from_bytes(b"q\x05", "little") >> 8 == 5`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

from scanners.limits import PickleLimits
from scanners.pickle_values import Buffer, Global, Made, Record

REBUILD_TENSOR_V2 = ("torch._utils", "_rebuild_tensor_v2")
RECORD_MAX = 512  # > the longest byte run `_ENTRY` can match after a key
KEY_MAX = 512  # a longer state-dict key ends a run (the loop takes it)
RUN_ENTRIES = 64
RECORD_OPCODES = 30  # counted against `max_opcodes` per record
ENTRY_OPCODES = RECORD_OPCODES + 3  # the key, its PUT and the rebuild BINGET too
# what a run may read after the rebuild BINGET: a streaming walk waits for that many bytes, so a
# run sees the same bytes, and stops at the same entry, as a whole-file walk
RUN_MAX_BYTES = RECORD_MAX + RUN_ENTRIES * (9 + KEY_MAX + RECORD_MAX)
_CACHED_VALUES = 4096

_RB = rb"(h.|j.{4})"  # BINGET / LONG_BINGET: the index is what follows the opcode
# BINPUT / LONG_BINPUT below 2^24 (a larger index, or one over a smaller `max_memo_index`, is the
# loop's to check), or MEMOIZE (protocol 4 and later: the index is the memo's size)
_RP = rb"(q.|r.{3}\x00|\x94)"
_MEMOIZE = b"\x94"
_FAST_MEMO_INDEX = (1 << 24) - 1
_RI = rb"(?:K.|M.{2}|J.{4})"  # BININT1 / BININT2 / BININT
_RT = rb"(\)|" + _RI + rb"\x85|" + _RI + rb"{2}\x86|" + _RI + rb"{3}\x87|\(" + _RI + rb"{4,16}t)"
_ENTRY = re.compile(
    rb"(?:"
    + _RP  # 1 the entry's key PUT (absent for the record right after the loop's BINGET)
    + _RB  # 2 the rebuild function
    + rb")?\(\("
    + _RB  # 3 'storage'
    + _RB  # 4 storage class
    + rb"(?:X(.)\x00\x00\x00|\x8c(.))([0-9]{1,20})"  # 5|6 key length, 7 the storage key
    + _RP  # 8
    + _RB  # 9 location
    + rb"("
    + _RI
    + rb")(N?)t"  # 10 numel, 11 legacy torch.save: view metadata None
    + _RP  # 12
    + rb"Q("
    + _RI
    + rb")"  # 13 offset
    + _RT  # 14 size
    + _RP
    + rb"?"  # 15
    + _RT  # 16 stride
    + _RP
    + rb"?"  # 17
    + rb"([\x88\x89])"  # 18 requires_grad
    + _RB  # 19 OrderedDict
    + rb"\)R"
    + _RP  # 20
    + rb"t"
    + _RP  # 21
    + rb"R"
    + _RP
    + rb"?",  # 22
    re.DOTALL,
)
_from_bytes = int.from_bytes
_U32 = struct.Struct("<I").unpack_from


_STORES = frozenset(b"qr\x94")  # BINPUT LONG_BINPUT MEMOIZE
# a record's eight memo stores joined, when all are LONG_BINPUT (5 bytes each)
_LONG_PUTS = struct.Struct("<" + "xI" * 8).unpack


_LONG_PUT_INDICES = struct.Struct("<8I").unpack  # the same, captured without their opcodes
_Match = Callable[[Buffer, int, int], "re.Match[bytes] | None"]
# A layout's own pattern (`TensorRecords._special`): at most this many compiled per walk (a
# hostile pickle could vary its layout at every record), this many kept for the next walks
SPECIALS_PER_WALK = 8
_SPECIALS_KEPT = 64
_specials: dict[tuple[bytes, ...], _Match] = {}
_PUT = rb"r(.{3}\x00)"  # LONG_BINPUT below 2^24, as `_RP` takes it: the index's 4 bytes


def _join_stores(stores: tuple[bytes | None, ...]) -> bytes:
    """The stores' bytes joined, or b"" when one is absent."""
    return b"" if None in stores else b"".join(stores)  # type: ignore[arg-type]


def _special_pattern(layout: tuple[bytes, ...]) -> _Match:
    """`_ENTRY` for an entry (key PUT and rebuild GET present) whose fixed parts are `layout`'s
    bytes and whose eight stores are LONG_BINPUTs (or, when the layout ends with MEMOIZE, eight
    MEMOIZEs): it matches a subset of what `_ENTRY` matches, and where both match, the key and
    the stores are the same groups' bytes."""
    (get_rebuild, get_word, get_cls, get_loc, numel, legacy, offset, size, stride, grad,
     get_od, memoize) = map(re.escape, layout)  # fmt: skip
    put = memoize or _PUT  # MEMOIZE has no index to capture
    pattern = (
        put + get_rebuild + rb"\(\(" + get_word + get_cls
        + rb"(?:X(.)\x00\x00\x00|\x8c(.))([0-9]{1,20})" + put + get_loc + numel + legacy
        + rb"t" + put + rb"Q" + offset + size + put + stride + put + grad + get_od + rb"\)R"
        + put + rb"t" + put + rb"R" + put
    )  # fmt: skip
    return re.compile(pattern, re.DOTALL).match


def _memoized(memo: dict[int, object], stores: tuple[bytes | None, ...]) -> tuple[int, ...] | None:
    """The memo indices a record's MEMOIZEs store at, in order (-1 where it stores nothing):
    each is the memo's size then, as the loop computes it, so each must be a new slot (a slot
    already filled would leave the size, and the next index, unchanged: the loop's to do). None
    when the record mixes MEMOIZE with PUTs (no pickler does) or reuses a slot."""
    size = len(memo)
    out: list[int] = []
    for raw in stores:
        if raw is None:
            out.append(-1)
        elif raw != _MEMOIZE or size in memo:
            return None
        else:
            out.append(size)
            size += 1
    return tuple(out)


def _int_op(raw: bytes) -> int:
    """The value of one BININT1 / BININT2 / BININT opcode (opcode byte included)."""
    if len(raw) == 5:
        return _from_bytes(raw[1:], "little", signed=True)
    return _from_bytes(raw, "little") >> 8


def _tuple_op(raw: bytes) -> tuple[int, ...]:
    """The tuple of ints an EMPTY_TUPLE / TUPLEn / MARK...TUPLE run builds (regex-checked)."""
    out: list[int] = []
    pos = 1 if raw[:1] == b"(" else 0
    while raw[pos] in (0x4B, 0x4D, 0x4A):
        width = 2 if raw[pos] == 0x4B else 3 if raw[pos] == 0x4D else 5
        out.append(_int_op(raw[pos : pos + width]))
        pos += width
    return tuple(out)


def _text(raw: bytes | bytearray) -> str | None:
    """A BINUNICODE argument as the loop decodes it (UTF-8, lone surrogates kept); None if it
    does not decode (the loop's finding)."""
    try:
        return raw.decode()  # strict UTF-8 first: the codec's fast path
    except UnicodeDecodeError:
        pass
    try:
        return str(raw, "utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None


class _Fetched:
    """What the memo GETs of a record fetched (`key`: their opcodes), checked: it holds for
    the next records with the same GETs while no memo store of the run touches `indices` (a
    store there ends the run)."""

    __slots__ = ("indices", "key", "location", "ordered", "storage_class", "word")

    def __init__(
        self, key: tuple[bytes | None, ...], indices: list[int], values: tuple[object, ...]
    ) -> None:
        self.key = key
        self.indices = frozenset(indices)
        self.word, self.storage_class, self.location, self.ordered = values


class TensorRecords:
    """The fast path over one walk: `run` builds records into the walk's memo and stack."""

    __slots__ = ("built", "compiled", "data", "max_key", "max_memo_index", "memo", "numbers")

    def __init__(self, data: Buffer, memo: dict[int, object], limits: PickleLimits) -> None:
        self.data = data
        self.memo = memo
        # a larger LONG_BINPUT is the loop's finding; -1: no index the regex takes is larger
        self.max_memo_index = limits.max_memo_index
        if self.max_memo_index >= _FAST_MEMO_INDEX:
            self.max_memo_index = -1
        self.max_key = min(KEY_MAX, limits.max_kept_string_chars)  # longer: a LongText
        self.built = 0  # records the last `run` built
        self.compiled = 0  # layout patterns this walk compiled (`_special`)
        # (numel, offset, size, stride) opcodes -> their values, parsed once
        self.numbers: dict[tuple[bytes, ...], tuple[int, int, tuple[int, ...], tuple[int, ...]]]
        self.numbers = {}

    def run(self, pos: int, end: int, rebuild: Global, stack: list[object], room: int) -> int:
        """After the loop's BINGET of `rebuild` (ending at `pos`): push the record there, then
        up to `room` more state-dict entries (key, record), reading no further than `end`.
        Where the walk goes on (`built`: how many records), or -1 when the first record is
        anything else (nothing changed).

        One flat loop, for the reason the walker's loop is one (a call per record costs what
        a tenth of the record does). Every check comes before the first change an entry makes."""
        if not rebuild.plain:
            return -1
        data, memo, max_index = self.data, self.memo, self.max_memo_index
        match = _ENTRY.match
        new = object.__new__
        fetched: _Fetched | None = None
        built = 0
        tail = pos  # where the regex starts: the record, or the PUT after an entry's key
        key_at = 0
        special: _Match | None = None  # the layout's own pattern (`_special`), once seen
        memoizing = False  # its stores are MEMOIZEs (else LONG_BINPUTs)
        while True:
            found = special(data, tail, end) if special is not None else None
            if found is not None:  # the layout of the last record: only the variable parts
                groups = found.groups()
                if memoizing:  # eight MEMOIZEs: the memo's size, then one more each
                    key = groups[2]
                    if (groups[0] or groups[1])[0] != len(key) or fetched is None:
                        break
                    filled = len(memo)
                    puts = tuple(range(filled, filled + 8))
                    if not memo.keys().isdisjoint(puts):
                        break  # a slot filled ahead: `_memoized` refuses it too
                else:
                    key = groups[3]
                    if (groups[1] or groups[2])[0] != len(key) or fetched is None:
                        break
                    puts = _LONG_PUT_INDICES(b"".join((groups[0], *groups[4:])))
                i_entry, i_key, i_storage, i_size, i_stride, i_od_put, i_args, i_result = puts
            else:
                found = match(data, tail, end)
                if found is None:
                    break
                (put_entry, get_rebuild, get_word, get_cls, len_x, len_c, key, put_key, get_loc,
                 numel, legacy, put_storage, offset, size_raw, put_size, stride_raw, put_stride,
                 grad, get_od, put_od, put_args, put_result) = found.groups()  # fmt: skip
                if (len_x or len_c)[0] != len(key):
                    break
                if put_result is None:  # a cut or odd memo store after the last REDUCE is the
                    after = found.end()  # loop's to report (at the REDUCE, where it folds it)
                    if after >= end or data[after] in _STORES:
                        break
                if (put_entry is None) != (built == 0):  # an entry has its key's PUT and a GET
                    break
                gets = (get_rebuild, get_word, get_cls, get_loc, get_od)
                if fetched is None or fetched.key != gets:
                    fetched = self._fetch(gets, rebuild)
                    if fetched is None:
                        break
                special = None
                if put_key == _MEMOIZE:  # protocol 4+: every store of the record a MEMOIZE
                    stores = (put_entry, put_key, put_storage, put_size, put_stride, put_od,
                              put_args, put_result)  # fmt: skip
                    memoized = _memoized(memo, stores)
                    if memoized is None:
                        break
                    puts = memoized
                    i_entry, i_key, i_storage, i_size, i_stride, i_od_put, i_args, i_result = puts
                    if None not in stores:  # an entry with its eight stores: the next ones too
                        layout = (get_rebuild, get_word, get_cls, get_loc, numel, legacy, offset,
                                  size_raw, stride_raw, grad, get_od, _MEMOIZE)  # fmt: skip
                        special, memoizing = self._special(layout), True
                elif len(joined := _join_stores(found.group(1, 8, 12, 15, 17, 20, 21, 22))) == 40:
                    # eight LONG_BINPUTs (a state dict past 256 memo slots): read in one go, and
                    # the next records of this layout matched by its own pattern
                    puts = _LONG_PUTS(joined)
                    i_entry, i_key, i_storage, i_size, i_stride, i_od_put, i_args, i_result = puts
                    layout = (get_rebuild, get_word, get_cls, get_loc, numel, legacy, offset,
                              size_raw, stride_raw, grad, get_od, b"")  # fmt: skip
                    special, memoizing = self._special(layout), False
                else:
                    i_entry = _from_bytes(put_entry, "little") >> 8 if put_entry else -1
                    i_key = _from_bytes(put_key, "little") >> 8
                    i_storage = _from_bytes(put_storage, "little") >> 8
                    i_size = _from_bytes(put_size, "little") >> 8 if put_size else -1
                    i_stride = _from_bytes(put_stride, "little") >> 8 if put_stride else -1
                    i_od_put = _from_bytes(put_od, "little") >> 8
                    i_args = _from_bytes(put_args, "little") >> 8
                    i_result = _from_bytes(put_result, "little") >> 8 if put_result else -1
                    puts = (i_entry, i_key, i_storage, i_size, i_stride, i_od_put, i_args,
                            i_result)  # fmt: skip
                numbers = self.numbers.get((numel, offset, size_raw, stride_raw))
                if numbers is None:
                    numbers = self._numbers(numel, offset, size_raw, stride_raw)
                numel_v, offset_v, size_v, stride_v = numbers
                storage_class = fetched.storage_class
            # a store where this record or a later one fetches from changes what is fetched:
            # the loop does it
            if not fetched.indices.isdisjoint(puts):
                break
            if 0 <= max_index < max(puts):
                break
            entry_key: str | None = None
            if built:
                try:  # strict UTF-8 first (the codec's fast path), else as `_text`
                    entry_key = data[key_at:tail].decode()
                except UnicodeDecodeError:
                    entry_key = _text(data[key_at:tail])
                    if entry_key is None:
                        break
            # every check passed: build what the loop would build, in its order
            # a new tuple per record, as the loop makes: the measure counts tuples by identity
            size, stride = (*size_v,), (*stride_v,)
            if entry_key is not None:
                memo[i_entry] = entry_key
                stack.append(entry_key)
            text = key.decode("ascii")
            word, location = fetched.word, fetched.location
            storage = (word, storage_class, text, location, numel_v, None) if legacy else (
                word, storage_class, text, location, numel_v
            )  # fmt: skip
            memo[i_key] = text
            memo[i_storage] = storage
            if i_size >= 0:
                memo[i_size] = size
            if i_stride >= 0:
                memo[i_stride] = stride
            # `Made(origin, args)` without the call to `__init__` (a third of a record's cost)
            made_od = new(Made)
            made_od.origin, made_od.args, made_od.kids = fetched.ordered, (), None
            memo[i_od_put] = made_od
            persistent = new(Made)
            persistent.origin, persistent.args, persistent.kids = "persistent", storage, None
            args = (persistent, offset_v, size, stride, grad == b"\x88", made_od)
            memo[i_args] = args
            result = new(Record)
            result.origin, result.args, result.kids = rebuild, args, None
            if i_result >= 0:
                memo[i_result] = result
            stack.append(result)
            built += 1
            pos = found.end()
            if built > room or end - pos < 16:
                break
            # the next entry's key: BINUNICODE or SHORT_BINUNICODE
            op = data[pos]
            if op == 0x58:
                length = _U32(data, pos + 1)[0]
                key_at = pos + 5
            elif op == 0x8C:
                length = data[pos + 1]
                key_at = pos + 2
            else:
                break
            if length > self.max_key:
                break
            tail = key_at + length
        self.built = built
        return pos if built else -1

    def _special(self, layout: tuple[bytes, ...]) -> _Match | None:
        """The pattern of `layout` (`_special_pattern`): kept across walks, compiled at most
        `SPECIALS_PER_WALK` times per walk; None past that (`_ENTRY` alone goes on)."""
        found = _specials.get(layout)
        if found is None and self.compiled < SPECIALS_PER_WALK:
            self.compiled += 1
            found = _special_pattern(layout)
            if len(_specials) >= _SPECIALS_KEPT:
                _specials.pop(next(iter(_specials)), None)
            _specials[layout] = found
        return found

    def _fetch(self, gets: tuple[bytes | None, ...], rebuild: Global) -> _Fetched | None:
        """What a record's GETs fetch, if it is what a plain record fetches: the rebuild
        function (unless the loop fetched it), 'storage', a storage class, a location string
        and a plain OrderedDict. A Record is a leaf of known shape only when what it fetched
        holds no container."""
        indices = [_from_bytes(raw, "little") >> 8 for raw in gets if raw is not None]
        if gets[0] is not None and self.memo.get(indices.pop(0)) is not rebuild:
            return None  # the loop's BINGET fetched the first record's; an entry has its own
        try:
            values = word, storage_class, location, ordered = tuple(self.memo[i] for i in indices)
        except KeyError:
            return None
        if word.__class__ is not str or location.__class__ is not str:
            return None
        if storage_class.__class__ is not Global:
            return None
        if ordered.__class__ is not Global or not ordered.plain:
            return None
        if gets[0] is not None:
            indices.append(_from_bytes(gets[0], "little") >> 8)
        return _Fetched(gets, indices, values)

    def _numbers(
        self, numel: bytes, offset: bytes, size: bytes, stride: bytes
    ) -> tuple[int, int, tuple[int, ...], tuple[int, ...]]:
        value = (_int_op(numel), _int_op(offset), _tuple_op(size), _tuple_op(stride))
        if len(self.numbers) < _CACHED_VALUES:
            self.numbers[(numel, offset, size, stride)] = value
        return value
