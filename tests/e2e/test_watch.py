"""The upstream watch (issue 11, item 3) on a running Hubwarden in front of the fake Hub: a commit
pushed upstream is noticed within one interval and surfaced (admin API, CLI, webhook); with
prefetch its changed files are fetched and scanned, so that a malicious one waits in the review
queue before any client asks; a force-push found by the watch blocks the repo; offline there is
no watch and no connection."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from huggingface_hub.errors import HfHubHTTPError
from pytest_aiohttp import AiohttpServer
from safetensors.numpy import save

from proxy.admin.identity import Role
from proxy.cli import main
from proxy.hub.context import SERVICES
from proxy.repos import RepoRef, RepoType
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

MODEL = "org/watched"
INTERVAL_S = 0.3
WAIT_S = 10.0
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
WEIGHTS = save({"w": np.ones((4, 4), dtype=np.float32)})


def _settings(hub: FakeHub, tmp_path: Path, **overrides: object) -> Any:
    return proxy_settings(
        hub, tmp_path / "data", **{"watch.interval_s": INTERVAL_S, "watch.pause_s": 0,
                                   **overrides}
    )  # fmt: skip


@pytest.fixture
async def watching(fake_hub: FakeHub, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    """Hubwarden whose watch checks every INTERVAL_S and prefetches what changed."""
    running, runner = await start_proxy(
        _settings(fake_hub, tmp_path, **{"watch.prefetch": True}), tmp_path / "client"
    )
    try:
        yield running
    finally:
        await runner.cleanup()


async def _api(proxy: RunningProxy, path: str) -> Any:
    name = f"watch-{secrets.token_hex(4)}"
    _, token = await proxy.app[SERVICES].identities.create(name, Role.VIEWER, None, "t")
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{proxy.url}/admin/api{path}", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def _eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """`check()`'s first truthy answer within WAIT_S."""
    for _ in range(int(WAIT_S / 0.05)):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    pytest.fail(f"{what} did not happen within {WAIT_S} s")


def _repo(hub: FakeHub) -> Any:
    return hub.create_repo(
        MODEL, files={"config.json": b'{"model_type": "bert"}', "model.safetensors": WEIGHTS}
    )


async def test_watch_notices_a_pushed_commit_within_one_interval(
    watching: RunningProxy, fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(fake_hub)
    await watching.download(MODEL, "config.json")  # mirrored: main recorded
    before = repo.head()
    weights = save({"w": np.zeros((4, 4), dtype=np.float32)})
    after = repo.commit({"README.md": b"# new\n", "model.safetensors": weights})
    pushed = asyncio.get_running_loop().time()

    async def noticed() -> Any:
        return [u for u in await _api(watching, "/updates") if u["repo"] == MODEL]

    (update,) = await _eventually(noticed, "the watch noticing the commit")
    assert asyncio.get_running_loop().time() - pushed < INTERVAL_S + 4  # one interval, + slack
    assert (update["previous"], update["upstream_head"]) == (before, after)
    assert update["status"] == "update available"
    assert {(c["path"], c["change"]) for c in update["changed"]} == {
        ("README.md", "added"), ("model.safetensors", "modified"),
    }  # fmt: skip
    repository = watching.app[SERVICES].repository

    async def audited() -> Any:
        return await repository.list_audit("repo.update_available")

    (event,) = await _eventually(audited, "the update being audited")
    assert (event.details["from"], event.details["to"]) == (before, after)
    config = tmp_path / "cli.toml"
    config.write_text(f'upstream = "{fake_hub.url}"\ndata_dir = "{tmp_path / "data"}"\n')
    assert await asyncio.to_thread(main, ["watch", "status", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert MODEL in table and "update available" in table and after[:12] in table
    assert (
        await asyncio.to_thread(main, ["watch", "status", "--json", "--config", str(config)]) == 0
    )
    (listed,) = [w for w in json.loads(capsys.readouterr().out) if w["repo"] == MODEL]
    assert listed["checked_at"] is not None and listed["upstream_head"] == after


async def test_watch_prefetches_changed_files_and_holds_a_malicious_one_before_any_client(
    watching: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = _repo(fake_hub)
    await watching.download(MODEL, "config.json")
    repo.commit({"evil.pkl": MALICIOUS_PICKLE, "extra.json": b"{}"}, message="sneak it in")

    async def held() -> Any:
        listed = await _api(watching, "/quarantine")
        return [i for i in listed["items"] if i["path"] == "evil.pkl"]

    (item,) = await _eventually(held, "evil.pkl reaching the review queue")
    assert item["state"] == "rejected" and item["repo"] == MODEL
    assert item["commit"] == repo.head()

    async def prefetched() -> Any:
        updates = [u for u in await _api(watching, "/updates") if u["repo"] == MODEL]
        return updates and updates[0]["prefetched"]

    assert await _eventually(prefetched, "the prefetch being recorded") == {
        "released": 1, "held": 1,
    }  # fmt: skip
    extra = await watching.app[SERVICES].repository.get_blob(repo.file("extra.json").sha1)
    assert extra is not None and extra.state.value == "released"  # fetched ahead, verified
    with pytest.raises(HfHubHTTPError, match="403"):  # the first client is refused at once
        await watching.download(MODEL, "evil.pkl")


async def test_watch_change_of_a_pinned_file_is_held_for_review(
    watching: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = _repo(fake_hub)
    await watching.download(MODEL, "config.json")  # pinned when released
    approved = repo.head()
    repo.commit({"config.json": b'{"model_type": "gpt2"}'})

    async def noticed() -> Any:
        return [u for u in await _api(watching, "/updates") if u["prefetched"]]

    (update,) = await _eventually(noticed, "the pinned change being noticed and prefetched")
    assert update["status"] == "held for review" and update["prefetched"] == {"held": 1}
    (change,) = await _api(watching, "/changes")
    assert (change["served"], change["waiting"]) == (approved, repo.head())


async def test_watch_finds_a_force_push_and_blocks_the_repo(
    watching: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = _repo(fake_hub)
    await watching.download(MODEL, "model.safetensors")
    repo.force_push({"model.safetensors": WEIGHTS, "config.json": b"{}"})
    services = watching.app[SERVICES]

    async def noticed() -> Any:
        return [u for u in await _api(watching, "/updates") if u["repo"] == MODEL]

    (update,) = await _eventually(noticed, "the force-push being noticed")
    assert update["status"] == "blocked" and update["prefetched"] == {}
    assert update["detail"].startswith("history_rewritten: ")
    record = await services.repository.find_repo(RepoRef(RepoType.MODEL, MODEL))
    assert record is not None
    block = await services.repository.active_block(record.pk)
    assert block is not None and block.reason == "history_rewritten"
    with pytest.raises(HfHubHTTPError, match="403"):
        await watching.download(MODEL, "config.json")


async def test_watch_tells_the_webhooks_of_an_update(
    fake_hub: FakeHub, tmp_path: Path, aiohttp_server: AiohttpServer
) -> None:
    events: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        events.append(json.loads(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    server = await aiohttp_server(app)
    settings = _settings(
        fake_hub, tmp_path, **{"notify.webhook_urls": str(server.make_url("/hook"))}
    )
    running, runner = await start_proxy(settings, tmp_path / "client")
    try:
        repo = _repo(fake_hub)
        await running.download(MODEL, "config.json")
        head = repo.commit({"README.md": b"# v2\n"})

        async def told() -> Any:
            return [e for e in events if e["event"] == "repo.update_available"]

        (event,) = await _eventually(told, "the webhook being told")
    finally:
        await runner.cleanup()
    assert event["repo"] == f"model/{MODEL}" and event["details"]["to"] == head
    assert event["details"]["changed"] == [{"path": "README.md", "change": "added"}]


async def test_watch_is_off_offline_and_makes_no_connection(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _repo(fake_hub)
    online, runner = await start_proxy(_settings(fake_hub, tmp_path), tmp_path / "c")
    try:
        await online.download(MODEL, "config.json")
    finally:
        await runner.cleanup()
    fake_hub.reset_requests()
    _, runner = await start_proxy(_settings(fake_hub, tmp_path, offline=True), tmp_path / "o")
    try:
        await asyncio.sleep(5 * INTERVAL_S)
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "upstream-watch"]
    finally:
        await runner.cleanup()
    assert fake_hub.requests == []
    config = tmp_path / "cli.toml"
    config.write_text(f'offline = true\ndata_dir = "{tmp_path / "data"}"\n')
    assert await asyncio.to_thread(main, ["watch", "status", "--config", str(config)]) == 0
    assert "off (offline)" in capsys.readouterr().out
