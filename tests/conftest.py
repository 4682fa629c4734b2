"""Fixtures shared by every test: the fake Hub, databases, and a running Hubwarden."""

from __future__ import annotations

pytest_plugins = ["tests.fakehub.plugin", "tests.dbplugin", "tests.proxyplugin"]
