"""Readiness (`GET /readyz`): can this replica serve? Each check names one dependency: the
database answers; the blob store's temp directory takes a write and gives it back, and the store
answers a lookup; the upstream answers (or the mirror is offline and needs none).

Checks run concurrently, each bounded by `timeout_s`; the result is kept `max_age_s` so that load
balancers (and anyone else) polling fast cost one round of checks per interval. A failed check
says which dependency and the kind of failure (an exception class, an errno name), never an
error text that could carry a URL with a password or a path: those go to the log.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.ops.snapshots import Snapshot
from proxy.store.blob_protocol import BlobPlace, BlobStore, StoreUnavailable

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 3.0
MAX_AGE_S = 2.0
PROBE_BYTES = b"hubwarden readiness probe\n"
PROBE_SHA256 = "0" * 64  # a blob no one stores: its lookup only proves the store answers

# A check returns a short detail on success and raises CheckFailed (or anything the factory of
# the check lists) on failure.
Check = Callable[[], Awaitable[str]]


class CheckFailed(Exception):
    """One dependency is not usable; `detail` is safe to show to whoever asks."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    elapsed_ms: float


@dataclass(frozen=True, slots=True)
class Readiness:
    checks: tuple[CheckResult, ...]

    @property
    def ready(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[str]:
        return [check.name for check in self.checks if not check.ok]

    def to_json(self) -> dict[str, object]:
        return {
            "status": "ready" if self.ready else "not ready",
            "failed": self.failed,
            "checks": {
                c.name: {"ok": c.ok, "detail": c.detail, "ms": round(c.elapsed_ms, 1)}
                for c in self.checks
            },
        }


class ReadinessProbe:
    """Runs the named checks (at most once per `max_age_s`, each within `timeout_s`)."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        timeout_s: float = CHECK_TIMEOUT_S,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self._checks = dict(checks)
        self._timeout_s = timeout_s
        self._snapshot: Snapshot[Readiness] = Snapshot(self._run_all, max_age_s)

    async def readiness(self) -> Readiness:
        return await self._snapshot.read()

    async def close(self) -> None:
        await self._snapshot.close()

    async def _run_all(self) -> Readiness:
        results = await asyncio.gather(
            *(self._run(name, check) for name, check in self._checks.items())
        )
        return Readiness(tuple(results))

    async def _run(self, name: str, check: Check) -> CheckResult:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                detail, ok = await check(), True
        except TimeoutError:
            detail, ok = f"no answer within {self._timeout_s:g} s", False
        except CheckFailed as exc:
            detail, ok = exc.detail, False
        if not ok:
            logger.warning("readiness check %s failed: %s", name, detail)
        return CheckResult(name, ok, detail, (time.monotonic() - started) * 1000)


def database_check(engine: AsyncEngine) -> Check:
    """The database answers a trivial query."""

    async def check() -> str:
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("readiness: database: %r", exc)
            raise CheckFailed(f"database unreachable ({type(exc).__name__})") from exc
        return "answers"

    return check


def directory_check(directory: Path) -> Check:
    """A file can be written in `directory`, read back identical, and removed (the store's
    temp directory: every ingest writes there first)."""

    async def check() -> str:
        try:
            await asyncio.to_thread(_write_read_remove, directory)
        except OSError as exc:
            logger.warning("readiness: store directory %s: %r", directory, exc)
            code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            raise CheckFailed(f"store not writable and readable ({code})") from exc
        return "writable and readable"

    return check


def store_check(store: BlobStore) -> Check:
    """The blob store: its local temp directory takes a file (`directory_check`), the store
    itself is there (`BlobStore.probe`: on S3 a HEAD of the bucket, which a lookup of a missing
    key cannot tell from a deleted bucket) and answers a lookup (reachability and rights)."""
    temp_dir = directory_check(store.tmp_dir)

    async def check() -> str:
        detail = await temp_dir()
        try:
            there = await store.probe()
            await store.contains(PROBE_SHA256, BlobPlace.RELEASED)
        except (StoreUnavailable, OSError) as exc:
            logger.warning("readiness: blob store: %r", exc)
            reason = type(exc).__name__
            if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None:
                reason = f"{reason}: {type(exc.__cause__).__name__}"
            raise CheckFailed(f"blob store not usable ({reason})") from exc
        return f"{detail}; {there}; lookups answer"

    return check


def _write_read_remove(directory: Path) -> None:
    path = directory / f".readyz-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        path.write_bytes(PROBE_BYTES)
        if path.read_bytes() != PROBE_BYTES:
            raise OSError(errno.EIO, "probe file read back different bytes")
    finally:
        path.unlink(missing_ok=True)


def upstream_check(session: aiohttp.ClientSession, base_url: str, timeout_s: float) -> Check:
    """The upstream answers HTTP below 500 on its base URL (any page: reachability only; no
    token is sent)."""

    async def check() -> str:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with session.head(base_url, allow_redirects=False, timeout=timeout) as answer:
                status = answer.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise CheckFailed(f"upstream unreachable ({type(exc).__name__})") from exc
        if status >= 500:
            raise CheckFailed(f"upstream answers HTTP {status}")
        return f"answers HTTP {status}"

    return check


def offline_check() -> Check:
    """Offline mode: no upstream is needed."""

    async def check() -> str:
        return "offline mode: not used"

    return check
