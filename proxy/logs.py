"""Logging set-up for the command line: one line per event on stderr, UTC timestamps.

Only `proxy/cli.py` calls `configure_logging`; modules just use `logging.getLogger(__name__)`.
The formatter escapes control characters in the message (a CR/LF smuggled in a repo id or an
upstream header must not forge a log line); tracebacks keep their lines.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Libraries whose INFO lines are noise next to ours.
QUIET_LOGGERS = ("asyncio", "aiosqlite", "sqlalchemy.engine", "alembic.runtime")


def _utc(seconds: float | None) -> time.struct_time:
    return time.gmtime(seconds)


class OneLineFormatter(logging.Formatter):
    """Formats the record's message with control characters escaped, times in UTC."""

    def __init__(self, fmt: str = FORMAT, datefmt: str = DATE_FORMAT) -> None:
        super().__init__(fmt, datefmt)
        self.converter = _utc

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        if line.isprintable():  # the common case, checked in C: one access line per request
            return line
        return "".join(
            ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in line
        )


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time of each record (so tests that swap
    stderr, and daemons that reopen it, keep working)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """Ignored: the stream is always the current sys.stderr."""


def configure_logging(level: str) -> None:
    """Send every logger's records at `level` and above to stderr, one line each.

    Calling it again replaces the handler it installed before (nothing else is touched).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, StderrHandler):
            root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(OneLineFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
