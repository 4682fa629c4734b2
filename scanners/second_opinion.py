"""Fickling's decompiled view of a pickle that raised a finding: a second opinion that makes the
finding readable (`from os import system` / `_var0 = system('id')`), never a verdict.

It runs only when our walker already raised a finding on the pickle, never on a clean file:
fickling is slow on opcode-dense state dicts (and calls some benign ones expansion attacks), and
the speed path is ours. It is bounded (`FicklingLimits`): pickles larger than a limit are not
decompiled, the text is cut, and the decompilation stops at a deadline (checked on every Python
call fickling makes, so a pickle built to make its decompiled form explode stops too). Fickling
only parses the opcodes (`Pickled.load`); nothing is ever unpickled.

The hook is injectable (`SecondOpinion`): `scan_file(..., second_opinion=None)` turns it off, and
tests count its calls through their own hook.
"""

from __future__ import annotations

import ast
import re
import sys
import time
from collections.abc import Callable
from functools import cache
from importlib import metadata
from types import FrameType
from typing import Any

from scanners.foreign_output import capture
from scanners.limits import FicklingLimits
from scanners.report import JsonValue

SCANNER = "fickling"

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

SecondOpinion = Callable[[bytes, FicklingLimits], dict[str, JsonValue]]


class _Deadline(Exception):  # control flow: the time budget ran out
    pass


@cache
def version() -> str:
    try:
        return metadata.version("fickling")
    except metadata.PackageNotFoundError:
        return "unavailable"


def fickling_view(data: bytes, limits: FicklingLimits) -> dict[str, JsonValue]:
    """Fickling's decompiled form of the pickle `data`: `{"decompiled": text, "cut": bool}`,
    or `{"error": why}` when fickling cannot read it or runs out of time."""
    try:
        from fickling.fickle import Pickled  # imported only when a finding needs it
    except ImportError:
        return {"error": "fickling is not installed"}
    deadline = time.monotonic() + limits.max_seconds

    def stop_at_deadline(frame: FrameType, event: str, arg: object) -> None:
        if time.monotonic() > deadline:
            raise _Deadline

    with capture() as caught:  # fickling prints "Warning: malformed pickle file." on stdout
        view = _decompiled(Pickled.load, data, limits, stop_at_deadline)
    said = caught.details()
    if said:
        view["output"] = said
    return view


def _decompiled(
    load: Callable[[bytes], Any],
    data: bytes,
    limits: FicklingLimits,
    tracer: Callable[[FrameType, str, object], None],
) -> dict[str, JsonValue]:
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        text = ast.unparse(load(data).ast)
    except _Deadline:
        return {"error": f"fickling did not finish within {limits.max_seconds:g} s"}
    except Exception as exc:  # noqa: BLE001 - a foreign decompiler on hostile bytes: any failure is reported in the finding, never fatal
        why = _ADDRESS.sub("", f"{type(exc).__name__}: {exc}")  # reports are reproducible
        return {"error": f"fickling could not decompile it ({why})"[:300]}
    finally:
        sys.settrace(previous)
    cut = len(text) > limits.max_chars
    return {"decompiled": text[: limits.max_chars], "cut": cut}
