"""The fake upstream Hub in its own process, for the benchmarks, with a small control API.

    python bench/_upstream.py SPEC_JSON        (run from the repository root)

SPEC_JSON is ``{"repo": "bench/core", "files": {"name.safetensors": "/abs/path", ...}}``: the
files stay on disk (the fake reads them by range when it serves them). Once the Hub, its CDN and
the control server listen on loopback, the process prints one JSON line::

    {"hub": "http://127.0.0.1:P1", "cdn": "...", "control": "...", "commit": "<40 hex>"}

and runs until its stdin closes (the bench died or is done) or it gets SIGTERM/SIGINT.

Control API (loopback only, no auth: a bench tool):
    POST /throttle?bytes_per_s=N&glob=G   cap matching file bodies per connection
    POST /clear                           drop every throttle
    POST /reset                           forget the request log
    GET  /stats?glob=G                    {"body_fetches", "bytes_served", "requests"}

It runs apart from the bench's clients so the clients' CPU does not slow the upstream down (and
the other way round) more than two cores force anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.fakehub.hub import FakeHub  # noqa: E402 - needs the repository root on sys.path

MAX_FILES = 64
MAX_GLOB_CHARS = 500
HUB_KEY = web.AppKey("bench_hub", FakeHub)


def _glob(request: web.Request) -> str:
    glob = request.query.get("glob", "*")
    if len(glob) > MAX_GLOB_CHARS:
        raise web.HTTPBadRequest(text=f"glob longer than {MAX_GLOB_CHARS} characters")
    return glob


async def _throttle(request: web.Request) -> web.Response:
    try:
        rate = float(request.query["bytes_per_s"])
    except (KeyError, ValueError) as exc:
        raise web.HTTPBadRequest(text="bytes_per_s must be a number") from exc
    if not 1024 <= rate <= 1e12:
        raise web.HTTPBadRequest(text="bytes_per_s must be between 1024 and 1e12")
    request.app[HUB_KEY].throttle(rate, _glob(request))
    return web.json_response({"ok": True})


async def _clear(request: web.Request) -> web.Response:
    request.app[HUB_KEY].clear_misbehaviour()
    return web.json_response({"ok": True})


async def _reset(request: web.Request) -> web.Response:
    request.app[HUB_KEY].reset_requests()
    return web.json_response({"ok": True})


async def _stats(request: web.Request) -> web.Response:
    hub, glob = request.app[HUB_KEY], _glob(request)
    return web.json_response(
        {
            "body_fetches": hub.body_fetches(glob),
            "bytes_served": hub.bytes_served(glob),
            "requests": hub.count(glob),
        }
    )


def _control_app(hub: FakeHub) -> web.Application:
    app = web.Application()
    app[HUB_KEY] = hub
    app.router.add_post("/throttle", _throttle)
    app.router.add_post("/clear", _clear)
    app.router.add_post("/reset", _reset)
    app.router.add_get("/stats", _stats)
    return app


async def _wait_for_end() -> None:
    """Until stdin closes or SIGTERM/SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    eof = asyncio.ensure_future(reader.read())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({eof, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (eof, stopped):
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter


async def serve(spec: dict[str, object]) -> None:
    repo_id = str(spec["repo"])
    raw_files = spec["files"]
    if not isinstance(raw_files, dict) or not 0 < len(raw_files) <= MAX_FILES:
        raise SystemExit(f"spec.files must be an object of 1..{MAX_FILES} name -> path")
    files = {str(name): Path(str(path)) for name, path in raw_files.items()}
    async with FakeHub() as hub:
        # Hashing GiB-sized files blocks: keep the loop free meanwhile.
        repo = await asyncio.to_thread(hub.create_repo, repo_id, files=files)
        runner = web.AppRunner(_control_app(hub), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            ready = {
                "hub": hub.url,
                "cdn": hub.cdn_url,
                "control": f"http://{host}:{port}",
                "commit": repo.branches["main"],
            }
            sys.stdout.write(json.dumps(ready) + "\n")
            sys.stdout.flush()
            await _wait_for_end()
        finally:
            await runner.cleanup()


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    asyncio.run(serve(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
