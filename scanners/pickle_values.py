"""The symbolic values the pickle walker pushes (`scanners.pickles`).

Strings, numbers and small tuples are real; a global is a `Global`; anything a call would build is
a `Made` naming what built it; containers are `ListV`, `SetV`, `DictV`, which keep only the
containers put in them (`kids`, for `scanners.pickle_shape`). The walker's loop and its fast path
for torch tensor records (`scanners.pickle_records`) build the same values from the same bytes.
"""

from __future__ import annotations

import mmap

from scanners.allowlist import GlobalVerdict, canonical_global

Buffer = bytes | bytearray | mmap.mmap  # indexable, sliceable, with find()

LOAD_FROM_BYTES = ("torch.storage", "_load_from_bytes")
# Allowed functions that call one of their arguments: position of the callable argument.
# `_rebuild_from_type_v2(func, type, args, state)` runs `func(*args)`; numpy's RNG constructors
# run `bit_generator_ctor(name)`; `__bit_generator_ctor(cls)` runs `cls()`. Handing them
# `_load_from_bytes` (or any call's result) would run what the walker never sees called.
CALLS_ARGUMENT: dict[tuple[str, str], int] = {
    ("torch._tensor", "_rebuild_from_type_v2"): 0,
    ("torch._tensor", "_rebuild_from_type"): 0,
    ("numpy.random._pickle", "__randomstate_ctor"): 1,
    ("numpy.random._pickle", "__generator_ctor"): 1,
    ("numpy.random._pickle", "__bit_generator_ctor"): 0,
}
# allowed globals whose calls are checked argument by argument (`PickleWalker._note_call`)
CHECKED_CALLS = frozenset(
    {("_codecs", "encode"), ("copyreg", "_reconstructor"), LOAD_FROM_BYTES, *CALLS_ARGUMENT}
)


class Global:
    """A global the pickle imports: `module.name`, at `offset` of the stream."""

    __slots__ = ("module", "name", "offset", "pair", "plain", "verdict")

    def __init__(self, module: str, name: str, offset: int, verdict: GlobalVerdict) -> None:
        self.module = module
        self.name = name
        self.offset = offset
        self.verdict = verdict
        # what the unpickler really imports (`copy_reg` -> `copyreg`...): checks compare this
        self.pair = canonical_global(module, name)
        # calls need no check: allowed, and not one of those allowed only with some arguments
        self.plain = verdict == GlobalVerdict.ALLOWED and self.pair not in CHECKED_CALLS

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


class Made:
    """Whatever a call (REDUCE, NEWOBJ, OBJ, INST) or a persistent id would build at load time.
    `kids`: the containers BUILD, APPENDS or SETITEMS put in it later (`scanners.pickle_shape`)."""

    __slots__ = ("args", "kids", "origin")

    def __init__(self, origin: object, args: object) -> None:
        self.origin = origin
        self.args = args
        self.kids: list[object] | None = None


class Record(Made):
    """A torch tensor record built by the fast path: a fixed subtree of strings, ints, plain
    globals and tuples of ints (`scanners.pickle_records` checks it), so its shape is known."""

    __slots__ = ()


class LongText:
    """A string or bytes too long to keep: its length, and where binary ones start
    (`text`: UTF-8 bytes of a str, which `_codecs.encode(s, "latin1")` turns into bytes)."""

    __slots__ = ("length", "offset", "text")

    def __init__(self, length: int, offset: int = -1, text: bool = False) -> None:
        self.length = length
        self.offset = offset
        self.text = text


class ListV:
    """A list; `kids`: the containers put in it (`scanners.pickle_shape`)."""

    __slots__ = ("kids",)

    def __init__(self) -> None:
        self.kids: list[object] | None = None


class SetV(ListV):
    __slots__ = ()


class DictV:
    """A dict, keeping its first few items (enough for joblib's array wrapper state) and the
    containers put in it."""

    __slots__ = ("items", "kids")

    def __init__(self) -> None:
        self.items: dict[object, object] = {}
        self.kids: list[object] | None = None
