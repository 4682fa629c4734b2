"""Webhooks from a running Hubwarden (issue 12, item 9): the real client downloads through it from
the fake Hub, a receiver on loopback records what Hubwarden tells it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from huggingface_hub.errors import HfHubHTTPError
from pytest_aiohttp import AiohttpServer

from scanners.report import JsonValue
from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

SECRET = "s3cret"
MODEL = "org/tiny-model"
EVIL = "org/evil-model"
# A protocol-0 pickle that would call os.system("echo pwned") if anyone loaded it (never done).
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
WAIT_S = 5.0


@dataclass
class Receiver:
    """A webhook endpoint that checks each signature and keeps the events it was sent."""

    url: str = ""
    events: list[dict[str, JsonValue]] = field(default_factory=list)
    bad_signatures: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Hubwarden-Signature", ""), expected):
            self.bad_signatures += 1
            return web.Response(status=400)
        event = json.loads(body)
        assert event["event"] == request.headers["X-Hubwarden-Event"]
        self.events.append(event)
        return web.Response(status=204)

    async def wait_for(self, kind: str) -> dict[str, JsonValue]:
        """The first event of `kind`, polling for up to WAIT_S."""
        for _ in range(int(WAIT_S / 0.02)):
            for event in self.events:
                if event["event"] == kind:
                    return event
            await asyncio.sleep(0.02)
        pytest.fail(f"no {kind} webhook in {WAIT_S} s; got {self.events}")


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> Receiver:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    receiver.url = str(server.make_url("/hook"))
    return receiver


@pytest.fixture
async def proxy(
    fake_hub: FakeHub, tmp_path: Path, receiver: Receiver
) -> AsyncIterator[RunningProxy]:
    """Hubwarden in front of `fake_hub`, telling `receiver` (stopped before it)."""
    settings = proxy_settings(
        fake_hub,
        tmp_path / "data",
        **{"notify.webhook_urls": [receiver.url], "notify.secret": SECRET},
    )
    running, runner = await start_proxy(settings, tmp_path / "client-cache")
    try:
        yield running
    finally:
        await runner.cleanup()


async def test_notify_malicious_pickle_sends_blob_rejected_naming_repo_and_path(
    proxy: RunningProxy, fake_hub: FakeHub, receiver: Receiver
) -> None:
    fake_hub.create_repo(EVIL, files={"pytorch_model.bin": MALICIOUS_PICKLE})
    with pytest.raises(HfHubHTTPError):
        await proxy.download(EVIL, "pytorch_model.bin")
    event = await receiver.wait_for("blob.rejected")
    assert event["repo"] == f"model/{EVIL}"
    details = event["details"]
    assert isinstance(details, dict)
    assert details["path"] == "pytorch_model.bin"
    assert receiver.bad_signatures == 0


async def test_notify_tampered_file_sends_repo_blocked(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes], receiver: Receiver
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    repo.tamper("config.json")
    with pytest.raises(HfHubHTTPError, match="tampered"):
        await proxy.download(MODEL, "config.json")
    event = await receiver.wait_for("repo.blocked")
    assert event["repo"] == f"model/{MODEL}"
    details = event["details"]
    assert isinstance(details, dict)
    assert details["reason"] == "tampered"


async def test_notify_clean_download_sends_nothing(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes], receiver: Receiver
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    for filename in ("config.json", "model.safetensors", "README.md"):
        await proxy.download(MODEL, filename)
    # A later event as a barrier: one task sends in audit order, so whatever the clean
    # downloads had caused would have arrived before it.
    fake_hub.create_repo(EVIL, files={"pytorch_model.bin": MALICIOUS_PICKLE})
    with pytest.raises(HfHubHTTPError):
        await proxy.download(EVIL, "pytorch_model.bin")
    await receiver.wait_for("blob.rejected")
    assert [(e["event"], e["repo"]) for e in receiver.events] == [
        ("blob.rejected", f"model/{EVIL}")
    ]
