"""Parallel ranged upstream fetch (issue 9, item 4): a large cold file is fetched with K
concurrent Range requests to the CDN, written in place, verified as a whole and still streamed
to waiting clients in order; a range that breaks off is fetched again from where it stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from huggingface_hub.errors import HfHubHTTPError
from safetensors.numpy import save

from proxy.ranged_fetch import Span, split_spans
from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Repo
from tests.fakehub.traffic import Origin, RecordedRequest
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

pytestmark = pytest.mark.timeout(90)

MODEL = "org/large"
FILE = "model.safetensors"
MiB = 1024 * 1024
CONNECTIONS = 4


def safetensors_bytes(megabytes: int) -> bytes:
    rows = megabytes * MiB // (4 * 256)
    rng = np.random.default_rng(seed=megabytes)
    return save({"weight": rng.random((rows, 256), dtype=np.float32)})


@pytest.fixture
async def proxy(fake_hub: FakeHub, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    """Hubwarden fetching files of 1 MiB and more by 4 ranges."""
    settings = proxy_settings(
        fake_hub,
        tmp_path / "data",
        **{
            "fetch.parallel_threshold_bytes": MiB,
            "fetch.parallel_connections": CONNECTIONS,
            "ingest.hold_tail_bytes": 64 * 1024,
        },
    )
    running, runner = await start_proxy(settings, tmp_path / "client-cache")
    try:
        yield running
    finally:
        await runner.cleanup()


def make_large_model(hub: FakeHub, megabytes: int = 4) -> tuple[Repo, bytes]:
    data = safetensors_bytes(megabytes)
    repo = hub.create_repo(MODEL, files={FILE: data, "config.json": b"{}"})
    return repo, data


def cdn_ranges(hub: FakeHub) -> list[RecordedRequest]:
    """The ranged GETs of the file that reached the CDN, oldest first."""
    return [
        r
        for r in hub.requests
        if r.origin is Origin.CDN and r.method == "GET" and r.path.endswith(f"/{FILE}") and r.range
    ]


def requested(request: RecordedRequest) -> Span:
    assert request.range is not None
    first, _, last = request.range.removeprefix("bytes=").partition("-")
    return Span(int(first), int(last) + 1)


async def test_parallel_fetch_serves_identical_bytes_with_k_ranged_requests(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    _, data = make_large_model(fake_hub)
    path = await proxy.download(MODEL, FILE)
    assert path.read_bytes() == data
    spans = [requested(r) for r in cdn_ranges(fake_hub)]
    assert sorted(spans, key=lambda s: s.start) == split_spans(len(data), CONNECTIONS)
    assert not fake_hub.cdn_requests_with_auth()
    assert fake_hub.bytes_served(f"*/{FILE}") == len(data)


async def test_parallel_fetch_range_cut_mid_body_refetches_only_its_missing_part(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    _, data = make_large_model(fake_hub)
    stall = fake_hub.stall(f"/models/*/{FILE}", after_bytes=256 * 1024)  # CDN paths only
    download = asyncio.create_task(proxy.download(MODEL, FILE))
    await stall.reached.wait()
    stall.cut()
    path = await download
    assert path.read_bytes() == data
    spans = split_spans(len(data), CONNECTIONS)
    asked = [requested(r) for r in cdn_ranges(fake_hub)]
    assert len(asked) == CONNECTIONS + 1
    retry = asked[-1]
    cut = next(s for s in spans if s.start < retry.start < s.end)  # strictly inside one span
    assert retry.end == cut.end
    assert sorted(asked[:-1], key=lambda s: s.start) == spans


async def test_parallel_fetch_client_streaming_meanwhile_gets_bytes_in_order(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    repo, data = make_large_model(fake_hub, megabytes=8)
    # Per connection: about 4 s per range, so that a slow start of the scan workers on a busy
    # machine still leaves most bytes to come when the client gets its first.
    fake_hub.throttle(MiB // 2, f"/models/*/{FILE}")
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/{FILE}"
    received = bytearray()
    upstream_sent_at_first_byte: int | None = None
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        async for chunk in response.content.iter_any():
            if upstream_sent_at_first_byte is None:
                upstream_sent_at_first_byte = fake_hub.bytes_served(f"/models/*/{FILE}")
            received += chunk
    assert bytes(received) == data
    assert upstream_sent_at_first_byte is not None
    assert upstream_sent_at_first_byte < len(data)  # it streamed while the ranges were arriving
    assert len(cdn_ranges(fake_hub)) == CONNECTIONS
    assert time.monotonic() - started < 30


async def test_parallel_fetch_upstream_ignoring_ranges_is_fetched_whole_once(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    _, data = make_large_model(fake_hub)
    fake_hub.ignore_ranges(f"/models/*/{FILE}")
    path = await proxy.download(MODEL, FILE)
    assert path.read_bytes() == data
    gets = [
        r.range
        for r in fake_hub.requests
        if r.origin is Origin.CDN and r.method == "GET" and r.path.endswith(f"/{FILE}")
    ]
    assert len(gets) == 2  # the first range, answered whole; then one plain GET
    assert gets[0] is not None
    assert gets[1] is None


@pytest.mark.parametrize("keep_size", [True, False])
async def test_parallel_fetch_of_tampered_bytes_is_refused_and_blocks_the_repo(
    proxy: RunningProxy, fake_hub: FakeHub, keep_size: bool
) -> None:
    repo, _ = make_large_model(fake_hub)
    repo.tamper(FILE, keep_size=keep_size)
    with pytest.raises(HfHubHTTPError, match="tampered") as caught:
        await proxy.download(MODEL, FILE)
    assert caught.value.response.status_code == 403
    assert not list(proxy.cache_dir.rglob(FILE))
    assert cdn_ranges(fake_hub)  # the ranged path did the fetch
    with pytest.raises(HfHubHTTPError, match="blocked"):
        await proxy.download(MODEL, "config.json")
