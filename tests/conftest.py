"""Fixtures shared by every test: the fake Hub, databases, and a running Hubwarden."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from proxy.logs import QUIET_LOGGERS

pytest_plugins = ["tests.fakehub.plugin", "tests.dbplugin", "tests.proxyplugin"]


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Undo what a command run in-process (`main([...])` calls configure_logging) did to the
    root logger, so that a later test's caplog sees the warnings it expects."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)
