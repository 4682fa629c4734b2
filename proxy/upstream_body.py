"""An upstream file body as our own type, and the one translation of aiohttp's errors.

`Upstream.open_file` hands out an `UpstreamBody`: its bytes are read with `read_chunk` or
`chunks`, and a body that breaks off raises `UpstreamUnavailable`, so no aiohttp type or
exception reaches the ingest (issue 9, item 6). `unavailable` is the one function that turns an
aiohttp or asyncio network error into our own, for metadata calls and file bodies alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from proxy.errors import UpstreamRejected, UpstreamUnavailable

# What aiohttp and asyncio raise when the upstream cannot be reached or a body breaks off
# (a parser error of a broken chunked body is an HttpProcessingError, no ClientError).
FOREIGN_ERRORS: tuple[type[Exception], ...] = (
    aiohttp.ClientError,
    aiohttp.http_exceptions.HttpProcessingError,
    TimeoutError,
    OSError,
)


def unavailable(exc: Exception, *, mid_body: bool = False) -> UpstreamUnavailable:
    """The one translation of a foreign network error (`FOREIGN_ERRORS`) into our own: 504 for a
    timeout, 502 otherwise. The caller raises it `from exc`."""
    if mid_body:
        return UpstreamUnavailable(f"upstream body broke off: {exc!r}")
    return UpstreamUnavailable(
        f"the upstream Hub could not be reached ({type(exc).__name__}); retry later",
        status=504 if isinstance(exc, TimeoutError) else 502,
    )


class UpstreamBody:
    """An open upstream file response: `status` 200 or 206, `content_length`, and its bytes,
    read with `read_chunk` or iterated with `chunks`. A body that breaks off raises
    UpstreamUnavailable: nothing of aiohttp leaves this module."""

    __slots__ = ("_reader", "content_length", "first_byte", "location", "status", "total_size")

    def __init__(
        self,
        status: int,
        content_length: int | None,
        reader: aiohttp.StreamReader,
        location: FileLocation,
        content_range: tuple[int | None, int | None] = (0, None),
    ) -> None:
        self.status = status
        self.content_length = content_length
        self.location = location
        # Where the body starts in the file (0 for a 200, None when a 206 says no usable
        # Content-Range) and the file's size a 206 tells: a lie about it is tampering.
        self.first_byte, self.total_size = content_range
        self._reader = reader

    async def read_chunk(self, max_bytes: int) -> bytes:
        """The next bytes of the body, at most `max_bytes`; b"" at its end. Raises
        UpstreamUnavailable when the body breaks off or stays silent past the read timeout."""
        try:
            return await self._reader.read(max_bytes)
        except FOREIGN_ERRORS as exc:
            raise unavailable(exc, mid_body=True) from exc

    async def chunks(self, max_bytes: int) -> AsyncIterator[bytes]:
        """The body as chunks of at most `max_bytes`; raises as `read_chunk`."""
        while chunk := await self.read_chunk(max_bytes):
            yield chunk

    async def read(self, limit: int) -> bytes:
        """The whole body; raises UpstreamRejected past `limit` bytes, else as `read_chunk`."""
        parts: list[bytes] = []
        total = 0
        async for chunk in self.chunks(1 << 20):
            total += len(chunk)
            if total > limit:
                raise UpstreamRejected(f"upstream body exceeds {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class FileLocation:
    """Where a file's bytes were served from after the redirects (the CDN for LFS files), so
    that further Range requests go there directly; `on_origin`: the upstream origin, where a
    token may go (DESIGN.md rule 9)."""

    url: str
    on_origin: bool
