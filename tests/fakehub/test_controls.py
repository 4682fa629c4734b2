"""The test controls: tampering, faults, stalls, throttles and the request counters."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fakehub import FakeHub, Origin, Repo
from tests.fakehub.traffic import Throttle

WEIGHTS = bytes(range(256)) * 64


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def repo(fake_hub: FakeHub) -> Repo:
    return fake_hub.create_repo("org/m", files={"config.json": b"{}", "w.bin": WEIGHTS})


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[aiohttp.ClientResponse, bytes]:
    async with session.get(url) as response:
        return response, await response.read()


async def test_tamper_lfs_file_serves_other_bytes_under_same_advertised_hash(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    served = repo.tamper("w.bin")

    response, body = await _get(session, f"{fake_hub.url}/org/m/resolve/main/w.bin")

    assert body == served != WEIGHTS
    assert repo.file("w.bin").sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert response.history[0].headers["X-Linked-Etag"] == f'"{repo.file("w.bin").sha256}"'


async def test_tamper_keep_size_regular_file_changes_bytes_not_length(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    repo.tamper("config.json", keep_size=True)

    response, body = await _get(session, f"{fake_hub.url}/org/m/resolve/main/config.json")

    assert len(body) == 2
    assert body != b"{}"
    assert response.headers["ETag"] == f'"{repo.file("config.json").sha1}"'


async def test_inject_429_answers_twice_then_the_real_answer(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    fake_hub.inject("*/config.json", status=429, headers={"Retry-After": "1"}, times=2)
    url = f"{fake_hub.url}/org/m/resolve/main/config.json"

    answers = [(await _get(session, url))[0] for _ in range(3)]

    assert [r.status for r in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "1"


async def test_inject_hang_stays_silent_until_released(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    fault = fake_hub.inject("/api/models/org/m", status=503, hang=True)
    request = asyncio.create_task(_get(session, f"{fake_hub.url}/api/models/org/m"))
    await fault.reached.wait()
    assert not request.done()

    fault.release()
    response, _ = await request

    assert response.status == 503


async def test_stall_holds_body_after_bytes_until_released(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    stall = fake_hub.stall("*/w.bin", after_bytes=1000)

    async with session.get(f"{fake_hub.url}/org/m/resolve/main/w.bin") as response:
        head = await response.content.readexactly(1000)
        await stall.reached.wait()
        stall.release()
        rest = await response.read()

    assert head + rest == WEIGHTS


async def test_stall_cut_ends_the_body_early(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    stall = fake_hub.stall("*/w.bin", after_bytes=100)

    async with session.get(f"{fake_hub.url}/org/m/resolve/main/w.bin") as response:
        await stall.reached.wait()
        stall.cut()
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_throttled_body_arrives_whole(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    fake_hub.throttle(4_000_000, "*/w.bin")

    _, body = await _get(session, f"{fake_hub.url}/org/m/resolve/main/w.bin")

    assert body == WEIGHTS


async def test_cancel_throttle_mid_body_lets_the_rest_through(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    throttle = fake_hub.throttle(2048, "*/w.bin")

    async with session.get(f"{fake_hub.url}/org/m/resolve/main/w.bin") as response:
        head = await response.content.readexactly(100)
        fake_hub.cancel(throttle)
        rest = await asyncio.wait_for(response.read(), timeout=60)

    assert head + rest == WEIGHTS


def test_throttle_shared_reserves_consecutive_slots() -> None:
    throttle = Throttle(1000, shared=True)

    first = throttle.delay_s(now_s=10.0, started_s=10.0, sent=0, chunk=500)
    second = throttle.delay_s(now_s=10.0, started_s=10.0, sent=0, chunk=500)

    assert (first, second) == (0.5, 1.0)


def test_throttle_per_connection_paces_by_bytes_already_sent() -> None:
    throttle = Throttle(1000)

    assert throttle.delay_s(now_s=11.0, started_s=10.0, sent=1500, chunk=500) == 1.0


async def test_counters_split_by_method_and_origin(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    token = fake_hub.add_user("alice")
    auth = {"Authorization": f"Bearer {token}"}

    async with session.get(f"{fake_hub.url}/org/m/resolve/main/w.bin", headers=auth) as response:
        await response.read()

    assert fake_hub.count("/org/m/resolve/main/w.bin", method="GET", origin=Origin.HUB) == 1
    assert fake_hub.count("*/w.bin", origin=Origin.CDN) == 1
    assert fake_hub.bytes_served("*/w.bin") == len(WEIGHTS)
    assert fake_hub.counter[("GET", Origin.HUB, "/org/m/resolve/main/w.bin")] == 1
    assert [r.has_auth for r in fake_hub.requests] == [True, False]
    assert fake_hub.cdn_requests_with_auth() == []


async def test_reset_requests_empties_log_and_counts(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    await _get(session, f"{fake_hub.url}/api/models/org/m")

    fake_hub.reset_requests()

    assert fake_hub.requests == []
    assert fake_hub.count() == 0


async def test_close_releases_a_stalled_body() -> None:
    async with FakeHub() as hub, aiohttp.ClientSession() as client:
        hub.create_repo("org/m", files={"w.bin": WEIGHTS})
        stall = hub.stall("*/w.bin", after_bytes=10)
        response = await client.get(f"{hub.url}/org/m/resolve/main/w.bin")
        await stall.reached.wait()
        await hub.close()
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
        response.release()
