"""Sending a released blob that lives in a remote store (S3): a redirect to a presigned URL
(`[store] presign = true`), or the bytes streamed from the store, whole or one Range.

Only released blobs come here (`Delivery` decided that); the answer carries the same metadata as
the local sendfile path and, like it, never an `X-Xet-*` header or a `Link` (hub-protocol.md §5).
"""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.delivery import ReleasedBlob
from proxy.hub.monitoring import SERVED_FROM
from proxy.store.blob_protocol import BlobStore, StoreUnavailable

logger = logging.getLogger(__name__)

# hub-protocol.md §3.2: what the Hub puts on its own 302 to the CDN; the client follows it
# (dropping Authorization, the URL's host being another origin) and reads no body from us.
_REDIRECT_HEADERS = ("X-Repo-Commit", "ETag", "X-Linked-Etag", "X-Linked-Size")


async def send_from_store(
    request: web.Request,
    store: BlobStore,
    found: ReleasedBlob,
    headers: dict[str, str],
    span: tuple[int, int] | None,
) -> web.StreamResponse:
    """Redirect to a presigned URL when the store hands those out; else stream `span`
    ([start, end); None: the whole blob) from the store. Raises StoreUnavailable before the
    first byte; after it, a failure cuts the connection (the client retries with a Range)."""
    url = await store.presigned_url(found.sha256, headers["Content-Disposition"])
    if url is not None:
        redirect = {name: headers[name] for name in _REDIRECT_HEADERS if name in headers}
        redirect |= {"Location": url, "Cache-Control": "no-store"}
        return web.Response(status=302, headers=redirect)
    try:
        return await _stream(request, store, found, headers, span)
    except FileNotFoundError as exc:  # the database says released, the store has nothing
        raise StoreUnavailable(
            f"read {found.target.entry.path}", "the released blob is missing from the store"
        ) from exc


async def _stream(
    request: web.Request,
    store: BlobStore,
    found: ReleasedBlob,
    headers: dict[str, str],
    span: tuple[int, int] | None,
) -> web.StreamResponse:
    size = found.target.entry.size
    start, end = span if span is not None else (0, size)
    async with store.read_released(found.sha256, start, end) as chunks:
        response = web.StreamResponse(status=200 if span is None else 206, headers=headers)
        response[SERVED_FROM] = "warm"
        response.content_length = end - start
        if span is not None:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        await response.prepare(request)
        sent = 0
        try:
            async for chunk in chunks:
                await response.write(chunk)
                sent += len(chunk)
        except StoreUnavailable as exc:
            logger.error("cutting %s: %s", found.target.entry.path, exc.message)
        except ConnectionResetError:
            logger.info("client went away during %s", found.target.entry.path)
            return response
        if sent != end - start:
            _cut(request)  # short or broken: never let a truncated body look complete
            return response
    await response.write_eof()
    return response


def _cut(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()
