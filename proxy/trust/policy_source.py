"""Where the policy comes from: the `[policy]` section, overlaid by `[policy] file` when set.

The file is re-read when it changes (its size, modification time or inode), checked at most once
per `CHECK_INTERVAL_S` of the injected clock, so a policy change applies to the next request
without a restart. A file that becomes invalid (bad TOML, unknown key, bad value, unreadable,
deleted) never loosens the policy: the last good one stays in force and one ERROR line per change
names the problem. A file invalid at start raises ConfigError (the server refuses to start).

The check is a `stat` (and, on change, a read of a file of at most 1 MiB) on the caller's thread:
cheap enough for once a second on the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.config import ConfigError, PolicySettings, load_policy_file
from proxy.errors import shown
from proxy.trust.rules import Policy

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class _Signature:
    """What tells one version of the file from another without reading it."""

    mtime_ns: int
    size: int
    inode: int


def _signature(path: Path) -> _Signature:
    """Raises OSError when the file cannot be stat'ed."""
    status = path.stat()
    return _Signature(status.st_mtime_ns, status.st_size, status.st_ino)


def _load(path: Path, base: PolicySettings) -> Policy:
    """The policy of `base` overlaid by the file. Raises ConfigError."""
    return Policy(load_policy_file(path, base))


class PolicySource:
    """The policy in force: `current()` before each decision."""

    def __init__(self, base: PolicySettings, clock: Clock = time.monotonic) -> None:
        """Raises ConfigError when `base.file` is set and cannot be read or is invalid."""
        self._base = base
        self._clock = clock
        self._path = base.file
        self._checked_at = clock()
        self._seen: _Signature | None = None
        if self._path is None:
            self._policy = Policy(base)
            return
        try:
            self._seen = _signature(self._path)
        except OSError as exc:
            raise ConfigError(
                f"policy file {self._path}: cannot be read ({exc.strerror}); check [policy] file "
                "or HUBWARDEN_POLICY_FILE",
                source=str(self._path),
                key="policy.file",
            ) from exc
        self._policy = _load(self._path, base)

    @property
    def path(self) -> Path | None:
        """The policy file, or None when the `[policy]` section alone is the policy."""
        return self._path

    def current(self) -> Policy:
        """The policy in force, re-read first when the file changed (checked at most once per
        CHECK_INTERVAL_S)."""
        if self._path is not None:
            now = self._clock()
            if now - self._checked_at >= CHECK_INTERVAL_S:
                self._checked_at = now
                self._refresh(self._path)
        return self._policy

    def _refresh(self, path: Path) -> None:
        try:
            signature = _signature(path)
        except OSError as exc:
            if self._seen is not None:  # report a vanished file once, not every second
                self._seen = None
                self._complain(path, f"cannot be read ({exc.strerror})")
            return
        if signature == self._seen:
            return
        self._seen = signature  # this version is judged once, whatever the outcome
        try:
            self._policy = _load(path, self._base)
        except ConfigError as exc:
            self._complain(path, exc.message)
            return
        logger.info("policy file %s changed: the new policy applies from now on", path)

    @staticmethod
    def _complain(path: Path, problem: str) -> None:
        logger.error(
            "policy file %s is not usable, the last good policy stays in force: %s; fix the file",
            path,
            shown(problem),
        )
