"""`/metrics`: Prometheus text that prometheus_client parses, whose counters move as the real
huggingface_hub client downloads through Hubwarden from the fake Hub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from huggingface_hub.errors import HfHubHTTPError

from proxy.ops.metrics import MAX_FORMATS, Metrics
from scanners.report import ScanReport
from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model
from tests.ops.scrape import parse, scrape
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

MODEL = "org/tiny-model"
RESOLVE = "/{namespace}/{name}/resolve/{rev}/{path}"
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."  # never loaded: scanned only


async def _get(url: str, method: str = "GET") -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        return response.status, await response.read()


async def test_metrics_requests_by_route_and_status_move_with_real_downloads(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    before = await scrape(proxy.url)
    await proxy.download(MODEL, "config.json")
    after = await scrape(proxy.url)
    name = "hubwarden_http_requests_total"
    for method in ("HEAD", "GET"):
        moved = after.total(name, route=RESOLVE, method=method) - before.total(
            name, route=RESOLVE, method=method
        )
        assert moved >= 1, method
    got = after.value(name, route=RESOLVE, method="GET", status="200")
    assert got - before.value(name, route=RESOLVE, method="GET", status="200") == 1
    assert after.value("hubwarden_http_request_duration_seconds_count", route=RESOLVE) >= 2


async def test_metrics_route_label_is_the_pattern_never_the_path(proxy: RunningProxy) -> None:
    for path in ("/nowhere-q7x/deeper", "/api/models/someone/model-q7x/tree/main/a/b"):
        await _get(proxy.url + path)
    routes = (await scrape(proxy.url)).label_values("hubwarden_http_requests_total", "route")
    assert not [route for route in routes if "q7x" in route]
    assert "/{tail}" in routes
    assert "/api/{type}/{namespace}/{name}/tree/{rev}/{path}" in routes


async def test_metrics_unknown_method_is_counted_as_other(proxy: RunningProxy) -> None:
    status, _ = await _get(proxy.url + "/healthz", method="PROPFIND")  # WebDAV: parsed, not ours
    after = await scrape(proxy.url)
    methods = after.label_values("hubwarden_http_requests_total", "method")
    assert "PROPFIND" not in methods
    assert after.total("hubwarden_http_requests_total", method="other", status=str(status)) == 1


async def test_metrics_bytes_served_cold_then_warm_count_the_file_size(
    patient: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    proxy = patient
    repo = make_tiny_model(fake_hub, tiny_model_files)
    size = len(tiny_model_files["model.safetensors"])
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/model.safetensors"
    assert await _get(url) == (200, tiny_model_files["model.safetensors"])  # while ingesting
    middle = await scrape(proxy.url)
    assert await _get(url) == (200, tiny_model_files["model.safetensors"])  # released: sendfile
    after = await scrape(proxy.url)
    served = "hubwarden_served_bytes_total"
    assert (middle.value(served, source="cold"), middle.value(served, source="warm")) == (size, 0)
    assert (after.value(served, source="cold"), after.value(served, source="warm")) == (size, size)


async def test_metrics_small_range_counts_its_length_as_warm(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/model.safetensors"
    await proxy.download(MODEL, "model.safetensors")
    before = await scrape(proxy.url)
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Range": "bytes=8-107"}) as response,
    ):
        assert response.status == 206
        assert len(await response.read()) == 100
    after = await scrape(proxy.url)
    served = "hubwarden_served_bytes_total"
    assert after.value(served, source="warm") - before.value(served, source="warm") == 100


async def test_metrics_upstream_requests_move_and_5xx_count_as_errors(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    before = await scrape(proxy.url)
    fake_hub.inject("/api/models/org/broken*", status=503, times=10)
    status, _ = await _get(f"{proxy.url}/api/models/org/broken")
    assert status >= 500
    await proxy.download(MODEL, "config.json")
    after = await scrape(proxy.url)
    requests = "hubwarden_upstream_requests_total"
    assert after.total(requests, status="2xx") > before.total(requests, status="2xx")
    assert after.total(requests, status="5xx") > before.total(requests, status="5xx")
    errors = "hubwarden_upstream_errors_total"
    assert after.value(errors, kind="status_5xx") > before.value(errors, kind="status_5xx")


async def test_metrics_upstream_connection_failure_counts_as_error(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    settings = proxy_settings(fake_hub, tmp_path / "data", upstream=await _closed_port_url())
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        status, _ = await _get(f"{running.url}/api/models/org/anything")
        assert status >= 500
        after = await scrape(running.url)
    finally:
        await runner.cleanup()
    assert after.value("hubwarden_upstream_errors_total", kind="connection") >= 1
    assert after.total("hubwarden_upstream_requests_total", status="error") >= 1


async def test_metrics_scans_by_format_and_outcome_and_held_queue(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    fake_hub.create_repo("org/evil", files={"pytorch_model.bin": MALICIOUS_PICKLE * 50})
    await proxy.download(MODEL, "model.safetensors")
    with pytest.raises(HfHubHTTPError, match="held in quarantine"):
        await proxy.download("org/evil", "pytorch_model.bin")
    after = await scrape(proxy.url)
    scans = "hubwarden_scans_total"
    assert after.value(scans, format="safetensors", outcome="clean") == 1
    assert after.total(scans, outcome="malicious") == 1
    assert after.value("hubwarden_scan_duration_seconds_count", format="safetensors") == 1
    assert after.value("hubwarden_held_blobs") == 1
    assert after.value("hubwarden_blobs", state="released") == 1


async def test_metrics_blocked_repos_counts_a_block(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await proxy.download(MODEL, "config.json")
    repo.force_push({"config.json": b'{"model_type": "evil"}'})
    with pytest.raises(HfHubHTTPError, match="history_rewritten"):
        await proxy.download(MODEL, "config.json")
    assert (await scrape(proxy.url)).value("hubwarden_blocked_repos") == 1


async def test_metrics_ingests_in_flight_shows_a_stalled_fetch(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    stall = fake_hub.stall("*model.safetensors", after_bytes=100)
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/model.safetensors"
    assert (await _get(url, method="HEAD"))[0] == 200  # starts the ingest in the background
    during = await _poll_in_flight(proxy.url, lambda n: n == 1)
    fake_hub.cancel(stall)
    after = await _poll_in_flight(proxy.url, lambda n: n == 0)
    assert (during, after) == (1, 0)


async def _poll_in_flight(url: str, done: object) -> float:
    """The in-flight gauge once `done(value)` holds, polled for at most 10 s."""
    assert callable(done)
    value = -1.0
    for _ in range(100):
        value = (await scrape(url)).value("hubwarden_ingests_in_flight")
        if done(value):
            return value
        await asyncio.sleep(0.1)
    return value


@pytest.fixture
async def patient(fake_hub: FakeHub, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    """A proxy whose first GET of a file waits for its first bytes as long as it takes (the
    stream scan workers may be slow to start on a loaded machine): it is always streamed."""
    settings = proxy_settings(fake_hub, tmp_path / "data", **{"ingest.first_byte_wait_s": 60.0})
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        yield running
    finally:
        await runner.cleanup()


@pytest.fixture
async def guarded(fake_hub: FakeHub, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    settings = proxy_settings(fake_hub, tmp_path / "data", **{"metrics.token": "s3cret-scrape"})
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        yield running
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-scrape"}],
    ids=["none", "wrong", "not-bearer"],
)
async def test_metrics_with_token_refuses_a_scrape_without_it(
    guarded: RunningProxy, headers: dict[str, str]
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{guarded.url}/metrics", headers=headers) as response,
    ):
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "hubwarden_" not in await response.text()


async def test_metrics_with_token_serves_the_scraper_that_sends_it(guarded: RunningProxy) -> None:
    found = await scrape(guarded.url, headers={"Authorization": "Bearer s3cret-scrape"})
    assert found.value("hubwarden_ingests_in_flight") == 0


async def test_metrics_disabled_is_not_served(fake_hub: FakeHub, tmp_path: Path) -> None:
    settings = proxy_settings(fake_hub, tmp_path / "data", **{"metrics.enabled": False})
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        status, body = await _get(f"{running.url}/metrics")
    finally:
        await runner.cleanup()
    assert status == 404
    assert b"hubwarden_" not in body


def test_metrics_two_apps_in_one_process_keep_separate_registries() -> None:
    first, second = Metrics(), Metrics()  # the default registry would refuse the second
    first.request_done("/healthz", "GET", 200, 0.001)
    counts = [
        parse(m.render(0, None).decode()).value(
            "hubwarden_http_requests_total", route="/healthz", method="GET", status="200"
        )
        for m in (first, second)
    ]
    assert counts == [1, 0]


@pytest.mark.parametrize("file_format", ["EVIL", "a\nb", "x" * 40, ""])
def test_metrics_scan_format_label_outside_the_vocabulary_is_other(file_format: str) -> None:
    metrics = Metrics()
    metrics.scanned(_report(file_format), 0.5)
    found = parse(metrics.render(0, None).decode())
    assert found.label_values("hubwarden_scans_total", "format") == {"other"}


def test_metrics_scan_formats_are_bounded_in_number() -> None:
    metrics = Metrics()
    for n in range(MAX_FORMATS + 10):
        metrics.scanned(_report(f"fmt{n}"), 0.1)
    formats = parse(metrics.render(0, None).decode()).label_values(
        "hubwarden_scans_total", "format"
    )
    assert len(formats) == MAX_FORMATS + 1
    assert "other" in formats


def _report(file_format: str) -> ScanReport:
    return ScanReport(
        path="x", file_format=file_format, size=1, findings=(), scanners={}, elapsed_s=0.1
    )


async def _closed_port_url() -> str:
    """An http URL on loopback where nothing listens."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return f"http://127.0.0.1:{port}"
