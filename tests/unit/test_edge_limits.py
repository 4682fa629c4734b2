"""The edge's pure pieces: log lines rate-limited per cause, and the cursors we sign."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from aiohttp.http_exceptions import BadStatusLine

from proxy.config import load_settings
from proxy.errors import InvalidInput
from proxy.hub.cursors import KEY_FILE, Cursors, key_of
from proxy.logs import LogLimits, RateLimitFilter
from proxy.repos import RepoRef, RepoType

REPO = RepoRef.parse(RepoType.MODEL, "org/a")
OTHER = RepoRef.parse(RepoType.MODEL, "org/b")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(
    message: str, cause: str | None = None, exc: BaseException | None = None
) -> logging.LogRecord:
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, message, (), None)
    if exc is not None:
        record.exc_info = (type(exc), exc, None)
    if cause is not None:
        record.cause = cause
    return record


def test_rate_limit_filter_passes_a_burst_per_cause_then_drops() -> None:
    limiter = RateLimitFilter(LogLimits(burst=3, window_s=10), Clock())
    passed = [limiter.filter(_record("x", "status 400")) for _ in range(5)]
    assert passed == [True, True, True, False, False]
    assert limiter.filter(_record("y", "status 404"))


def test_rate_limit_filter_next_window_says_how_many_were_dropped() -> None:
    clock = Clock()
    limiter = RateLimitFilter(LogLimits(burst=1, window_s=10), clock)
    for _ in range(4):
        limiter.filter(_record("bad request", "status 400"))
    clock.now = 10.0
    record = _record("bad request", "status 400")
    assert limiter.filter(record)
    assert record.getMessage() == "bad request (3 more like this were not logged)"


def test_rate_limit_filter_malformed_request_traceback_becomes_one_warning_line() -> None:
    record = _record("Error handling request from 1.2.3.4", exc=BadStatusLine("GARBAGE\r\n"))
    assert RateLimitFilter(LogLimits(), Clock()).filter(record)
    assert record.exc_info is None
    assert record.levelno == logging.WARNING
    assert "BadStatusLine" in record.getMessage()
    assert "\n" not in record.getMessage()


def test_rate_limit_filter_other_exceptions_keep_their_traceback() -> None:
    record = _record("Unhandled exception", exc=RuntimeError("bug"))
    assert RateLimitFilter(LogLimits(), Clock()).filter(record)
    assert record.exc_info is not None


def test_rate_limit_filter_record_without_cause_is_untouched() -> None:
    limiter = RateLimitFilter(LogLimits(burst=1), Clock())
    assert all(limiter.filter(_record("access line")) for _ in range(100))


def test_cursors_round_trip_for_the_same_listing() -> None:
    cursors = Cursors(b"k" * 32)
    cursor = cursors.issue("commits", REPO, "main", "cD0y")
    assert cursors.verify("commits", REPO, "main", cursor) == "cD0y"


@pytest.mark.parametrize(
    ("kind", "repo", "revision"),
    [("tree ", REPO, "main"), ("commits", OTHER, "main"), ("commits", REPO, "dev")],
)
def test_cursors_refuse_a_cursor_of_another_listing(
    kind: str, repo: RepoRef, revision: str
) -> None:
    cursors = Cursors(b"k" * 32)
    cursor = cursors.issue("commits", REPO, "main", "cD0y")
    with pytest.raises(InvalidInput, match="was not issued by this mirror"):
        cursors.verify(kind, repo, revision, cursor)


def test_cursors_refuse_an_edited_value() -> None:
    cursors = Cursors(b"k" * 32)
    _, mac = cursors.issue("commits", REPO, "main", "cD0y").split(".")
    with pytest.raises(InvalidInput, match="cursor"):
        cursors.verify("commits", REPO, "main", f"cD0z.{mac}")


def test_cursor_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    settings = load_settings(None, {}, {"data_dir": str(tmp_path)})
    first, second = key_of(settings), key_of(settings)
    assert first == second
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_cursor_key_from_the_shared_secret_is_the_same_everywhere(tmp_path: Path) -> None:
    one = load_settings(None, {}, {"data_dir": str(tmp_path / "a"), "cursor_secret": "s3cret"})
    two = load_settings(None, {}, {"data_dir": str(tmp_path / "b"), "cursor_secret": "s3cret"})
    assert key_of(one) == key_of(two)
    assert not (tmp_path / "a" / KEY_FILE).exists()
