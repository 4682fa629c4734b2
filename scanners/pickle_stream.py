"""`PickleStream`: the pickle walk of a raw pickle, legacy torch file or joblib dump, done on the
bytes as they arrive, so that what it has cleared can go out before the last byte.

The walk is `pickle_scan.scan_pickle`'s, step for step: the first pickle; then, if it loads to
torch's legacy magic number, the four other legacy pickles (the raw storages after them are never
unpickled); otherwise pickle after pickle until the stream ends or a non-pickle byte follows.
`PickleWalker.step` walks as far as the bytes allow and returns a `Frame` to resume from; resumed,
it does exactly what a whole-file walk does (same opcodes, same batches, same findings, same
offsets), which is why `finish` can hand the walk to `dispatch.scan_stream` and get the report
`scan_file` gives for the same bytes.

**How far the walk reads.** It walks `data` up to `end` = the bytes received minus `MARGIN`, and
only starts a batch of 4,096 opcodes before `end`. Within a batch, an opcode with a length
(strings, bytes, lines, a run of torch tensor records, a skipped joblib array) never passes `end`
(it pauses instead, before changing anything, or skips bytes it need not read; a run waits until
it has all the bytes a run may read), and any other opcode reads at most 14 bytes (1 opcode + 8
argument + a folded 5-byte memo store): so a batch reads no further than
`end` + 5 + 4,096 x 14 < `end` + `MARGIN`, the bytes that are there.

**What is cleared** (`cleared`): the offset the walk has reached, while it has found nothing at
all: any finding (a global off the allow-list, a misused allowed call, a malformed stream...)
freezes clearance before the opcode that raised it, and so does a nested torch load (its payload
is scanned by `finish` only), a suspended walk, or the first zip signature (`PK\\x03\\x04`...): the
zip-polyglot check runs in `finish`. A loader given the cleared prefix runs only opcodes the
walker saw and found harmless. After the last legacy pickle the raw storages are cleared as they
arrive; the proxy holds back the tail of every file anyway.

**What is kept** for `finish` (no copy of the whole file, unlike other held formats):
- the window the walk still needs: `MARGIN` plus at most `MAX_PENDING` bytes of an argument that
  has not fully arrived (beyond that the walk suspends, below), and the current pickle from its
  start while it is no longer than fickling's `max_pickle_bytes` (a finding in it gets fickling's
  decompiled view of it, `scanners.second_opinion`);
- the first `detect_prefix_bytes` (format detection) and the last `ZIP_TAIL_BYTES` (the
  zip-polyglot check looks for an end-of-central-directory record there);
- everything from the first *trigger* on, in a spooled temp file (memory, then disk). Triggers:
  the first zip signature (a zip polyglot's members and directory are read from there; torch zips
  embedded for `torch.storage._load_from_bytes` start with one), the first string or bytes too
  long for the walker to keep (a nested torch load's payload is read from there), and the point
  where the walk suspended, and the start of the pickle of the first finding. Common raw pickles,
  legacy torch files and joblib dumps of plain arrays have no trigger, and keep nothing but the
  window, the prefix and the tail.

**Suspension.** What needs bytes far ahead (a joblib object array's own pickle, a joblib array
that also reads as opcodes, an argument longer than `MAX_PENDING` still arriving) stops the
streaming walk; clearance freezes, every byte from there is kept, and `finish` walks the rest.

`finish` reads the bytes it was not given as zeros: only the zip reader reaches them, at offsets
before the first zip signature, where the real bytes hold no signature either, so it fails the
same way on both.
"""

from __future__ import annotations

import enum
import io
import mmap
import tempfile
from typing import IO

from scanners import torch
from scanners.archives import ZIP_SIGNATURE, ZIP_TAIL_BYTES
from scanners.limits import ScanLimits
from scanners.pickles import OPCODE_BYTES, Buffer, Frame, PickleWalker, Walked, pickle_span
from scanners.report import Outcome
from scanners.scan_context import IN_MEMORY_BYTES

MARGIN = 64 * 1024 + 512  # > 5 + 4,096 x 14 bytes: see above
MAX_PENDING = 1024 * 1024
_SIGNATURE_OVERLAP = 3
_BAD = (Outcome.MALICIOUS, Outcome.ERROR)


class _Phase(enum.Enum):
    FIRST = "first pickle"
    RAW = "more pickles"
    LEGACY = "legacy torch pickles"
    DONE = "done"


class PickleStream:
    """Walks a pickle-family stream of `size` bytes as `feed` gives them (see the module doc)."""

    def __init__(self, size: int, limits: ScanLimits) -> None:
        self._size = size
        self._limits = limits
        self._walker = PickleWalker(b"", 0, limits.pickle, joblib=True)
        too_large = size > IN_MEMORY_BYTES and size > limits.max_pickle_bytes
        self._walking = not too_large  # `_scan_pickle` refuses it unwalked: so does `finish`
        self._phase = _Phase.DONE if too_large else _Phase.FIRST
        self._legacy = False
        self._legacy_left = 0
        self._raw_first = True
        self._pos = 0  # absolute: the next pickle, or where `_frame` resumes
        self._frame: Frame | None = None
        self._paused_end = -1
        self._received = 0
        self._window = bytearray()  # the bytes from `_base` to `_received`
        self._base = 0
        self._searched = 0  # zip signatures looked for up to here
        self._first_signature = -1
        self._prefix = bytearray()
        self._tail = bytearray()
        self._keep_from = -1
        self._kept: IO[bytes] | None = None
        self._cleared = 0
        self._finished = False

    # ---- what the incremental scan reads ---------------------------------------------------
    @property
    def cleared(self) -> int:
        return self._cleared

    @property
    def alarmed(self) -> bool:
        return any(f.outcome in _BAD for f in self._walker.result.findings)

    @property
    def kept_bytes(self) -> int:
        """Bytes held for `finish` beyond the window, the prefix and the tail (tests, bench)."""
        return self._received - self._keep_from if self._keep_from >= 0 else 0

    def feed(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if len(self._prefix) < self._limits.detect_prefix_bytes:
            self._prefix += chunk[: self._limits.detect_prefix_bytes - len(self._prefix)]
        self._tail += chunk[-ZIP_TAIL_BYTES:]
        del self._tail[:-ZIP_TAIL_BYTES]
        if self._kept is not None:
            self._kept.write(chunk)
        self._window += chunk
        self._search_signatures()
        self._advance(final=False)
        self._update_clearance()
        self._drop()

    def finish(self) -> tuple[Walked | None, _KeptView]:
        """Walk what is left; the walk and a reader of the stream as far as it was kept."""
        self._finished = True
        if self._walk_on():
            self._finish_walk()
        walked = Walked(self._walker.result, self._legacy) if self._walking else None
        parts = ((0, bytes(self._prefix)), (self._base, bytes(self._window)))
        view = _KeptView(
            (*parts, (self._received - len(self._tail), bytes(self._tail))),
            self._kept,
            self._keep_from,
            self._received,
        )
        return walked, view

    def close(self) -> None:
        self._window = bytearray()
        if self._kept is not None:
            self._kept.close()

    # ---- the walk ---------------------------------------------------------------------------
    def _walk_on(self) -> bool:
        return self._walking and self._phase != _Phase.DONE

    def _advance(self, *, final: bool) -> None:
        if not self._walk_on():
            return
        if self._frame is not None and self._frame.suspended and not final:
            return
        end = self._received if final else self._received - MARGIN
        limit = self._received if final else self._size
        self._walker.rebase(bytes(self._window), self._base, end, limit, final=final)
        while self._walk_on():
            frame = self._frame
            if frame is not None:
                if not final and (frame.pos >= end or end <= self._paused_end):
                    return
            elif not self._at_boundary(self._window, self._base, end, limit, final=final):
                return
            found = self._walker.step(self._pos, frame)
            if isinstance(found, Frame):
                self._pause(found, end)
                return
            self._frame = None
            if found is None:  # malformed: a finding; the whole-file walk stops there too
                self._phase = _Phase.DONE
                return
            self._pos = found
            self._next_phase()

    def _at_boundary(
        self, data: Buffer | bytearray, base: int, end: int, limit: int, *, final: bool
    ) -> bool:
        """Between two pickles: decide as `walk_all` / `walk_legacy_rest` do (`data` holds the
        stream from `base`); False when done, or to wait for bytes."""
        phase = self._phase
        if (phase == _Phase.LEGACY and self._legacy_left == 0) or (
            phase == _Phase.RAW and self._pos >= limit
        ):
            self._walker.result.complete = True
            self._phase = _Phase.DONE
            return False
        if not final and self._pos >= end:
            return False
        if (
            phase == _Phase.RAW
            and not self._raw_first
            and data[self._pos - base] not in OPCODE_BYTES
        ):
            self._walker.trailing(self._pos - base)
            self._phase = _Phase.DONE
            return False
        return True

    def _next_phase(self) -> None:
        if self._phase == _Phase.FIRST:
            if self._walker.last_value == torch.LEGACY_MAGIC_NUMBER:
                self._legacy = True
                self._phase = _Phase.LEGACY
                self._legacy_left = torch.LEGACY_PICKLES - 1
            else:
                self._phase = _Phase.RAW
        elif self._phase == _Phase.LEGACY:
            self._legacy_left -= 1
        else:
            self._raw_first = False

    def _pause(self, frame: Frame, end: int) -> None:
        self._frame = frame
        self._pos = frame.pos
        self._paused_end = end
        if not frame.suspended and self._received - frame.pos > MAX_PENDING + MARGIN:
            frame.suspended = True  # an argument that long is still arriving: see the module doc
        if frame.suspended:
            self._trigger(self._retained_from())

    def _finish_walk(self) -> None:
        frame = self._frame
        if frame is not None and frame.suspended:
            frame.suspended = False
            self._walk_kept()
        else:
            self._advance(final=True)

    def _walk_kept(self) -> None:
        """The rest of a suspended walk, over every byte kept from the suspension on."""
        kept = self._kept
        if kept is None:  # a suspension always starts keeping
            raise RuntimeError("suspended pickle walk kept no bytes")
        kept.flush()
        length = self._received - self._keep_from
        if length <= IN_MEMORY_BYTES:
            kept.seek(0)
            self._walk_rest(kept.read(length))
            return
        with mmap.mmap(kept.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            self._walk_rest(mapped)

    def _walk_rest(self, data: Buffer) -> None:
        self._window = bytearray()
        self._base = self._keep_from
        self._walker.rebase(data, self._keep_from, self._received, self._received, final=True)
        end = self._received
        while self._walk_on():
            if self._frame is None and not self._at_boundary(
                data, self._keep_from, end, end, final=True
            ):
                return
            found = self._walker.step(self._pos, self._frame)
            self._frame = None
            if not isinstance(found, int):  # malformed (a final walk never pauses)
                self._phase = _Phase.DONE
                return
            self._pos = found
            self._next_phase()

    # ---- clearance and what is kept ----------------------------------------------------------
    def _update_clearance(self) -> None:
        result = self._walker.result
        if not self._walking or result.findings or result.nested:
            return
        if self._frame is not None and self._frame.suspended:
            return
        reached = self._received if self._phase == _Phase.DONE else min(self._pos, self._received)
        if self._first_signature >= 0:
            reached = min(reached, self._first_signature)
        self._cleared = max(self._cleared, reached)

    def _search_signatures(self) -> None:
        if self._first_signature >= 0:
            return
        start = max(self._searched - _SIGNATURE_OVERLAP, self._base)
        found = ZIP_SIGNATURE.search(self._window, start - self._base)
        if found is not None:
            self._first_signature = self._base + found.start()
        self._searched = self._received

    def _needed_from(self) -> int:
        """The first byte the walk (or fickling, on a finding) may still need."""
        if not self._walking or self._phase == _Phase.DONE:
            return self._received
        if self._frame is not None and self._frame.suspended:
            return self._received
        return self._retained_from()

    def _retained_from(self) -> int:
        starts = self._walker.result.starts
        if starts and self._pos - starts[-1] <= self._limits.fickling.max_pickle_bytes:
            return min(self._pos, starts[-1])
        return self._pos

    def _finding_trigger(self) -> int:
        """Where the pickle of the first finding with an offset starts (fickling reads it)."""
        result = self._walker.result
        for finding in result.findings:
            offset = finding.details.get("offset")
            if type(offset) is int:
                return max(pickle_span(result, offset, self._received)[0], self._base)
        return -1

    def _drop(self) -> None:
        """Forget the window's bytes the walk is past (after keeping them if a trigger says so)."""
        drop_to = min(self._needed_from(), self._received - _SIGNATURE_OVERLAP)
        if drop_to <= self._base:
            return
        if self._keep_from < 0:
            triggers = [self._first_signature, self._walker.first_payload, self._finding_trigger()]
            hit = [t for t in triggers if 0 <= t < drop_to]
            if hit:
                self._trigger(min(hit))
        del self._window[: drop_to - self._base]
        self._base = drop_to

    def _trigger(self, offset: int) -> None:
        """Keep every byte from `offset` (in the window) on."""
        if self._keep_from >= 0:
            return
        self._keep_from = offset
        self._kept = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed in close()
            max_size=self._limits.stream_memory_bytes
        )
        self._kept.write(self._window[offset - self._base :])


class _KeptView(io.RawIOBase):
    """The stream as far as `PickleStream` kept it: prefix, window, tail (`parts`: offset and
    bytes) and everything from `keep_from`; zeros elsewhere (see the module doc for why only the
    zip reader goes there)."""

    def __init__(
        self,
        parts: tuple[tuple[int, bytes], ...],
        kept: IO[bytes] | None,
        keep_from: int,
        size: int,
    ) -> None:
        super().__init__()
        self._parts = parts
        self._kept = kept
        self._keep_from = keep_from if kept is not None else size
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        stop = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if stop <= self._pos:
            return b""
        out = bytearray(stop - self._pos)
        for part_from, part in self._parts:
            self._copy(out, self._pos, part, part_from)
        if self._kept is not None and stop > self._keep_from:
            start = max(self._pos, self._keep_from)
            self._kept.seek(start - self._keep_from)
            data = self._kept.read(stop - start)
            out[start - self._pos : start - self._pos + len(data)] = data
        self._pos = stop
        return bytes(out)

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    @staticmethod
    def _copy(out: bytearray, pos: int, part: bytes, part_from: int) -> None:
        lo = max(pos, part_from)
        hi = min(pos + len(out), part_from + len(part))
        if lo < hi:
            out[lo - pos : hi - pos] = part[lo - part_from : hi - part_from]
