"""Logging set-up for the command line: one line per event on stderr, UTC timestamps.

Only `proxy/cli.py` calls `configure_logging`; modules just use `logging.getLogger(__name__)`.
The formatter escapes control characters in the message (a CR/LF smuggled in a repo id or an
upstream header must not forge a log line); tracebacks keep their lines.

With `log_format = "json"` each record is one JSON object per line (`JsonFormatter`), carrying the
id of the request being handled when it was emitted (`REQUEST_ID`, set by the request middleware
of `proxy.hub.monitoring`), with anything shaped like a token masked.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from aiohttp.http_exceptions import HttpProcessingError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Libraries whose INFO lines are noise next to ours.
QUIET_LOGGERS = ("asyncio", "aiosqlite", "sqlalchemy.engine", "alembic.runtime")
LOG_FORMATS = ("text", "json")
# The id of the request whose handling emitted a record. A context variable, not state: aiohttp
# runs each request in its own task (a copy of the context), so a value set by the middleware
# stays with that request, its access line and the tasks it starts, and never leaks to another.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "hubwarden_request_id", default=None
)
# An X-Request-Id a client may choose: short, and only characters that cannot forge a log line,
# a header or a JSON field. Anything else is replaced by one of ours.
MAX_REQUEST_ID_CHARS = 128
_SANE_REQUEST_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_REQUEST_ID_CHARS - 1}}}")
# Shapes of secrets that must never reach a log line, even inside a message that quotes input:
# Hub tokens, bearer credentials, and key=value pairs naming a token, password or cookie.
_SECRETS = re.compile(
    r"(\bhf_)[A-Za-z0-9]{6,}"
    r"|((?i:\b(?:bearer|basic))\s+)[A-Za-z0-9._~+/=-]{6,}"
    r"|((?i:\b(?:token|password|passwd|secret|cookie|authorization))\s*=\s*)[^\s,;&\"']+"
)
# A line holding none of these cannot match _SECRETS (its case-insensitive words need a "=",
# "bearer" and "basic" are looked for in their usual spellings).
_SECRET_HINTS = ("hf_", "=", "Bearer", "bearer", "BEARER", "Basic", "basic", "BASIC")


def _utc(seconds: float | None) -> time.struct_time:
    return time.gmtime(seconds)


class OneLineFormatter(logging.Formatter):
    """Formats the record's message with control characters escaped and token-like values
    masked, times in UTC."""

    def __init__(self, fmt: str = FORMAT, datefmt: str = DATE_FORMAT) -> None:
        super().__init__(fmt, datefmt)
        self.converter = _utc

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        if any(hint in line for hint in _SECRET_HINTS):  # substring tests first: cheap
            line = mask_secrets(line)
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


def mask_secrets(text: str) -> str:
    """`text` with whatever looks like a token, password or cookie value replaced by `***`."""
    return _SECRETS.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "***", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record and line: time (UTC), level, logger, message, the request id
    when a request was being handled, the exception's traceback as one string. `json.dumps`
    escapes every control character, so no input can split a record in two."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = mask_secrets(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = mask_secrets(record.exc_text)
        return json.dumps(entry, ensure_ascii=True)


def _iso_utc(seconds: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds % 1 * 1000):03d}Z"


class RequestIds:
    """Request ids: the client's `X-Request-Id` when it is sane, else a new one. Ours are a
    random prefix (distinct per process and replica) and a counter: unique, and cheaper than
    a fresh random value on every request of the warm path."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._next = itertools.count(1)

    def accept(self, offered: str | None) -> str:
        if offered is not None and _SANE_REQUEST_ID.fullmatch(offered):
            return offered
        return f"{self._prefix}-{next(self._next):x}"


def current_request_id() -> str | None:
    """The id of the request being handled by the current task, if any."""
    return REQUEST_ID.get()


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send every logger's records at `level` and above to stderr, one line each: as text, or as
    one JSON object (`log_format = "json"`).

    Calling it again replaces the handler it installed before (nothing else is touched).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, StderrHandler):
            root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else OneLineFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


# -- rate limits per cause -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogLimits:
    """At most `burst` lines per cause in each `window_s`; the next line let through says how many
    were dropped. `max_causes` bounds the memory a flood of distinct causes can take."""

    burst: int = 10
    window_s: float = 60.0
    max_causes: int = 256


@dataclass(slots=True)
class _Window:
    started: float
    lines: int = 0
    dropped: int = 0


class RateLimitFilter(logging.Filter):
    """Rate-limits records per cause, on the logger it is attached to.

    A record's cause is its `cause` attribute (`extra={"cause": ...}`); a record that carries an
    exception gets one from the exception's type, and when the exception is a malformed request
    (aiohttp's HttpProcessingError: a bad request line, header or body framing, which any client
    can send at will) its traceback becomes one line. Records with neither pass untouched.
    """

    def __init__(
        self, limits: LogLimits = LogLimits(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._limits = limits
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        cause = getattr(record, "cause", None)
        if cause is None and record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            cause = type(error).__name__
            if isinstance(error, HttpProcessingError):
                record.msg = f"{record.getMessage()}: {cause}: {_one_line(error)}"
                record.args = ()
                record.exc_info = record.exc_text = None
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        if cause is None:
            return True
        return self._admit(str(cause), record)

    def _admit(self, cause: str, record: logging.LogRecord) -> bool:
        now = self._clock()
        window = self._windows.get(cause)
        if window is None or now - window.started >= self._limits.window_s:
            dropped = window.dropped if window is not None else 0
            if window is None and len(self._windows) >= self._limits.max_causes:
                self._windows.clear()
            window = self._windows[cause] = _Window(now)
            if dropped:
                record.msg = f"{record.getMessage()} ({dropped} more like this were not logged)"
                record.args = ()
        window.lines += 1
        if window.lines > self._limits.burst:
            window.dropped += 1
            return False
        return True


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def install_rate_limits(*loggers: logging.Logger, limits: LogLimits = LogLimits()) -> None:
    """Attach a RateLimitFilter to each logger that has none yet (idempotent)."""
    for target in loggers:
        if not any(isinstance(f, RateLimitFilter) for f in target.filters):
            target.addFilter(RateLimitFilter(limits))
