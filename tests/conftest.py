"""Fixtures shared by every test: the fake Hub, databases, and a running Hubwarden."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from proxy.logs import QUIET_LOGGERS

pytest_plugins = ["tests.fakehub.plugin", "tests.dbplugin", "tests.proxyplugin", "tests.s3plugin"]

# The logging state of the session before any test ran.
_ROOT_LEVEL = logging.getLogger().level
_QUIET_LEVELS = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}


def _reset_logging(handlers: list[logging.Handler]) -> None:
    root = logging.getLogger()
    root.setLevel(_ROOT_LEVEL)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for name, level in _QUIET_LEVELS.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Undo what a command run in-process (`main([...])` calls configure_logging) did to the
    root logger — in a test, or in a module- or session-scoped fixture that ran before it — so
    that every test's caplog sees the warnings it expects."""
    handlers = [h for h in logging.getLogger().handlers if not _ours(h)]
    _reset_logging(handlers)
    yield
    _reset_logging(handlers)


def _ours(handler: logging.Handler) -> bool:
    """A handler `proxy.logs.configure_logging` installed."""
    from proxy.logs import StderrHandler

    return isinstance(handler, StderrHandler)
