"""Pagination cursors we issue: opaque to clients, signed by us, verified before any use.

A cursor in one of our `Link` URLs is `<value>.<mac>`: the value (a tree offset, or the upstream's
own cursor for the next commits page) and an HMAC-SHA256 over the route kind, the repo, the
revision and the value. A cursor that a client made up, edited or carried to another repo or
revision fails verification and is a 400: its text is never parsed further, and never forwarded
upstream. The key is `cursor_secret` when set (replicas share it), else a random key kept in
`<data_dir>/cursor.key`, created once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from proxy.config import Settings
from proxy.errors import InvalidInput
from proxy.repos import RepoRef

KEY_FILE = "cursor.key"
KEY_BYTES = 32
MAC_BYTES = 16  # 128 bits: forging one is out of reach, and the URL stays short
MAX_CURSOR_CHARS = 4096
_VALUE = re.compile(r"[A-Za-z0-9_-]{0,4000}")
_DERIVATION = b"hubwarden pagination cursor v1\n"


@dataclass(frozen=True, slots=True)
class Cursors:
    """Signs and verifies cursors with one key."""

    key: bytes

    def issue(self, kind: str, repo: RepoRef, revision: str, value: str) -> str:
        """The cursor for `value` (URL-safe text: base64url or digits) on this repo and revision."""
        if not _VALUE.fullmatch(value):
            raise ValueError("a cursor value must be URL-safe base64 text, at most 4000 characters")
        return f"{value}.{self._mac(kind, repo, revision, value)}"

    def verify(self, kind: str, repo: RepoRef, revision: str, cursor: str) -> str:
        """The value of a cursor we issued for this repo and revision. Raises InvalidInput."""
        value, dot, mac = cursor.rpartition(".")
        if (
            len(cursor) > MAX_CURSOR_CHARS
            or not dot
            or not _VALUE.fullmatch(value)
            or not hmac.compare_digest(mac, self._mac(kind, repo, revision, value))
        ):
            raise InvalidInput(
                "cursor",
                cursor,
                "was not issued by this mirror for this listing; follow the Link URL as given",
            )
        return value

    def _mac(self, kind: str, repo: RepoRef, revision: str, value: str) -> str:
        message = "\n".join((kind, repo.repo_type.value, repo.repo_id, revision, value)).encode()
        digest = hmac.new(self.key, message, hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def key_of(settings: Settings) -> bytes:
    """The signing key: derived from `cursor_secret`, else read (or first made) in the data dir."""
    if settings.cursor_secret is not None:
        return hashlib.sha256(_DERIVATION + settings.cursor_secret.reveal().encode()).digest()
    return _key_file(settings.data_dir / KEY_FILE)


def _key_file(path: Path) -> bytes:
    """A key only the server's user may read. Two processes starting at once agree: the file
    appears whole (written aside, then linked into place, which fails if one is already there)."""
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise InvalidKeyFile(path)
    return key


class InvalidKeyFile(OSError):
    """The cursor key file exists but is not a key (an OSError: start-up reports it as a file
    under the data directory that cannot be used)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is not a {KEY_BYTES}-byte key; remove it to have a new one made")
        self.filename = str(path)
        self.strerror = f"not a {KEY_BYTES}-byte key; remove it to have a new one made"


CURSORS = web.AppKey("cursors", Cursors)


def cursor_signer(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's cleanup context that makes the signer (the key file is read once, at start)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[CURSORS] = Cursors(await asyncio.to_thread(key_of, settings))
        yield

    return ctx


def cursors_of(request: web.Request) -> Cursors:
    return request.app[CURSORS]
