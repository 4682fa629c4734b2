"""Pausing the cyclic garbage collector while a scan builds tens of thousands of small objects.

Issue 13's profile: the pickle walk makes an object per opcode and a zip listing one per member;
none of them form cycles, yet each automatic collection meanwhile traverses every one of them (and,
for a full collection, the whole process). Reference counting still frees them as usual; only the
cycle detector waits until the scan is done.
"""

from __future__ import annotations

import gc
from types import TracebackType


class GcPause:
    """`with GcPause():` the cyclic garbage collector is off for the block (left as it was if
    already off). A class, not a generator: nested scans enter it thousands of times."""

    __slots__ = ("_resume",)

    def __init__(self) -> None:
        self._resume = False

    def __enter__(self) -> None:
        self._resume = gc.isenabled()
        if self._resume:
            gc.disable()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._resume:
            gc.enable()


def gc_paused() -> GcPause:
    """The cyclic garbage collector off for a `with` block."""
    return GcPause()
