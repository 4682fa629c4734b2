"""What dependencies print, warn and log while they look at a file, kept out of our output.

fickling prints `Warning: malformed pickle file.` on stdout, numpy and h5py warn, libraries log:
on `hubwarden scan --json` any of it before the document breaks every script that parses it
(issue 13), and in the proxy's worker it could corrupt the report pipe. `capture()` collects it
instead (Python-level stdout and stderr, warnings, log records of loggers outside `scanners`)
so a scanner can attach it to its finding's details.

Redirecting `sys.stdout` and the warnings filters is process-wide: a capture also takes what
another thread prints meanwhile (the scanners run one per worker process). Output written
straight to file descriptor 1 by C code is not seen here; `scanners.cli` moves fd 1 aside for
that while it scans.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

from scanners.report import JsonValue, cut_text

MAX_CHARS = 2000  # of each stream kept in the details


@dataclass(slots=True)
class ForeignOutput:
    """What was caught during one `capture()`."""

    stdout: io.StringIO = field(default_factory=io.StringIO)
    stderr: io.StringIO = field(default_factory=io.StringIO)
    warnings: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def details(self) -> dict[str, JsonValue]:
        """The non-empty parts, cut, for a finding's details (empty when nothing was caught)."""
        out: dict[str, JsonValue] = {}
        for key, text in (("stdout", self.stdout.getvalue()), ("stderr", self.stderr.getvalue())):
            if text.strip():
                out[key] = cut_text(text, MAX_CHARS)
        if self.warnings:
            out["warnings"] = [cut_text(w, 300) for w in self.warnings[:20]]
        if self.logs:
            out["logs"] = [cut_text(line, 300) for line in self.logs[:20]]
        return out


class _Collector(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "scanners" or record.name.startswith("scanners."):
            return  # ours: it goes where our logging is configured to go
        with contextlib.suppress(Exception):  # a record that cannot format is dropped
            self._into.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@contextlib.contextmanager
def capture() -> Iterator[ForeignOutput]:
    """Collect stdout, stderr, warnings and foreign log records until the block ends."""
    caught = ForeignOutput()
    handler = _Collector(caught.logs)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with (
            contextlib.redirect_stdout(caught.stdout),
            contextlib.redirect_stderr(caught.stderr),
            warnings.catch_warnings(record=True) as seen,
        ):
            warnings.simplefilter("always")
            try:
                yield caught
            finally:
                caught.warnings.extend(
                    f"{w.category.__name__}: {w.message}" for w in seen if w is not None
                )
    finally:
        root.removeHandler(handler)
