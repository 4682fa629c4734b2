"""File bodies as the Hub's resolve-cache and its CDN send them: one Range, 206/416, HEAD."""

from __future__ import annotations

import mimetypes
import re
from urllib.parse import quote

from aiohttp import web

from tests.fakehub.gitobjects import Content
from tests.fakehub.traffic import Traffic

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def content_size(content: Content) -> int:
    return len(content) if isinstance(content, bytes) else content.stat().st_size


def content_disposition(path: str) -> str:
    name = path.rpartition("/")[2]
    return f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"


def content_type(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    return guessed or "application/octet-stream"


def parse_range(header: str | None, size: int) -> range | None:
    """The byte span a single ``Range`` asks for; None when there is no Range header.

    Raises ValueError when the range cannot be satisfied (the caller answers 416).
    """
    if header is None:
        return None
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None or match[0] == "bytes=-":
        raise ValueError(header)
    first, last = match[1], match[2]
    if not first:
        start = max(0, size - int(last))
        stop = size
    else:
        start = int(first)
        stop = min(size, int(last) + 1) if last else size
    if start >= size or stop <= start:
        raise ValueError(header)
    return range(start, stop)


async def send_content(
    request: web.Request, traffic: Traffic, content: Content, headers: dict[str, str]
) -> web.StreamResponse:
    """Answer ``content`` (200, or 206 for a Range; 416 past the end); no body on HEAD."""
    size = content_size(content)
    asked = None if traffic.ignores_range(request) else request.headers.get("Range")
    try:
        span = parse_range(asked, size)
    except ValueError:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    headers = {**headers, "Accept-Ranges": "bytes"}
    if span is None:
        span, status = range(size), 200
    else:
        status = 206
        headers["Content-Range"] = f"bytes {span.start}-{span.stop - 1}/{size}"
    headers["Content-Length"] = str(len(span))
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    return await traffic.send_body(request, response, content, span)
