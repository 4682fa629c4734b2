"""The pickle walker's checks: the globals a pickle imports and the calls it makes, graded.

`WalkChecks` is the part of `PickleWalker` that judges: each global against the allow-list
(once per global), each call to an allowed global against how ML files call it (numpy's
callables, `_codecs.encode`, `copyreg._reconstructor`, torch's nested loads), stores into
imported objects, and what the loaded value's shape costs whoever walks it. The opcode loop
(`scanners.pickle_loop`) calls them; each problem becomes one finding in `result`.
"""

from __future__ import annotations

import copyreg

from scanners.allowlist import GlobalVerdict, judge_global
from scanners.limits import PickleLimits
from scanners.pickle_grading import describe, describe_call
from scanners.pickle_shape import link, measure, within_limits
from scanners.pickle_state import (
    EXPANSION_RESOURCE,
    NESTING_RESOURCE,
    SCANNER,
    Malformed,
    WalkResult,
)
from scanners.pickle_values import (
    CALLS_ARGUMENT,
    LOAD_FROM_BYTES,
    Buffer,
    DictV,
    Global,
    ListV,
    LongText,
    Made,
    Record,
    SetV,
)
from scanners.report import Finding, JsonValue, Outcome, Severity

_JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
_BIT_GENERATOR_CTOR = ("numpy.random._pickle", "__bit_generator_ctor")
_NUMPY_ITEMSIZE = {"b": 1, "i": 0, "u": 0, "f": 0, "c": 0, "m": 0, "M": 0, "S": 0, "a": 0, "V": 0}
_EXPANSION_FACTOR = 64  # a benign value shares parts; one built to explode shares exponentially


class WalkChecks:
    """The judging half of `PickleWalker` (which sets these attributes up)."""

    data: Buffer
    base: int
    limits: PickleLimits
    result: WalkResult
    _judged: dict[tuple[str, str], GlobalVerdict]
    _reported: dict[tuple[str, str], Finding]
    _flagged_codes: set[str]

    def flag(
        self, code: str, severity: Severity, outcome: Outcome, message: str, **details: JsonValue
    ) -> None:
        """Add one structural finding (once per code: the first offset is the useful one)."""
        if code in self._flagged_codes:
            return
        self._flagged_codes.add(code)
        self.result.findings.append(Finding(SCANNER, code, severity, outcome, message, details))

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
            raise Malformed(f"unregistered extension code {code}", offset)
        return self._new_global(str(pair[0]), str(pair[1]), offset)

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
        raise Malformed("STACK_GLOBAL requires two strings", at)

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


def numpy_itemsize(descr: str) -> int | None:
    """Bytes per element of a simple numpy dtype string ('<f8', '|b1', '<U5'...); None if not."""
    body = descr.lstrip("<>|=")
    if not body or body[0] not in _NUMPY_ITEMSIZE or not body[1:].isdigit():
        return None
    count = int(body[1:])
    if body[0] == "U":
        return count * 4
    return count if count > 0 else None
