"""Issue 8 item 2: a chained upstream. Hubwarden B's upstream is Hubwarden A, whose upstream is
the fake Hub. B verifies and scans for itself, passes its client's token through, and shows A's
held message when A holds a file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import huggingface_hub as hf
import pytest
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

from proxy.hub.context import SERVICES
from proxy.store.models import BlobState
from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_gated_repo, make_tiny_model
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

MODEL = "org/tiny-model"
GATED = "org/gated-model"
WEIGHTS = "model.safetensors"
# A protocol-0 pickle that would call os.system("echo pwned") if anyone loaded it (never done).
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
REMOTE_CODE = b"import os\n\nclass TinyModel:\n    def __init__(self):\n        os.getcwd()\n"


@asynccontextmanager
async def chain(
    fake_hub: FakeHub, tmp_path: Path, a_settings: dict[str, object] | None = None
) -> AsyncIterator[tuple[RunningProxy, RunningProxy]]:
    """A in front of the fake Hub, B in front of A: each its own data directory."""
    a, a_runner = await start_proxy(
        proxy_settings(fake_hub, tmp_path / "a", **(a_settings or {})), tmp_path / "a-client"
    )
    try:
        b, b_runner = await start_proxy(
            proxy_settings(fake_hub, tmp_path / "b", upstream=a.url), tmp_path / "b-client"
        )
        try:
            yield a, b
        finally:
            await b_runner.cleanup()
    finally:
        await a_runner.cleanup()


async def _state(proxy: RunningProxy, etag: str) -> BlobState | None:
    blob = await proxy.app[SERVICES].repository.get_blob(etag)
    return None if blob is None else blob.state


async def test_chained_mirror_serves_what_its_upstream_mirror_serves_after_its_own_checks(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    sha256 = repo.file(WEIGHTS).sha256
    async with chain(fake_hub, tmp_path) as (a, b):
        snapshot = await b.call(
            hf.snapshot_download, MODEL, endpoint=b.url, cache_dir=b.cache_dir, token=False
        )
        states = (await _state(a, sha256), await _state(b, sha256))
        b_path = b.app[SERVICES].store.released_file(sha256)
        assert b_path is not None  # B's own verified copy
        assert b_path.read_bytes() == tiny_model_files[WEIGHTS]
    for name, data in tiny_model_files.items():
        assert (Path(snapshot) / name).read_bytes() == data
    assert states == (BlobState.RELEASED, BlobState.RELEASED)
    assert fake_hub.body_fetches(f"*/{WEIGHTS}") == 1  # B fetched from A, A from the Hub
    assert fake_hub.xet_token_requests() == 0


async def test_chained_mirror_scans_for_itself_and_holds_what_its_upstream_released(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.create_repo(MODEL, files={"config.json": b"{}", "modeling_tiny.py": REMOTE_CODE})
    async with chain(fake_hub, tmp_path, {"policy.remote_code": "allow"}) as (a, b):
        released = await a.download(MODEL, "modeling_tiny.py")
        with pytest.raises(HfHubHTTPError, match="held in quarantine") as refused:
            await b.download(MODEL, "modeling_tiny.py")
    assert released.read_bytes() == REMOTE_CODE
    assert refused.value.response.status_code == 403
    assert "upstream mirror" not in (refused.value.server_message or "")  # B's own verdict


async def test_chained_mirror_verifies_for_itself_the_bytes_its_upstream_sends(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    sha256 = repo.file(WEIGHTS).sha256
    async with chain(fake_hub, tmp_path) as (a, b):
        await a.download(MODEL, WEIGHTS)
        stored = a.app[SERVICES].store.released_file(sha256)  # A's copy rots on its disk
        assert stored is not None
        data = bytearray(stored.read_bytes())
        data[-1] ^= 0xFF
        stored.chmod(0o600)
        stored.write_bytes(bytes(data))
        with pytest.raises(HfHubHTTPError, match="sha256 mismatch") as refused:
            await b.download(MODEL, WEIGHTS)
        state = await _state(b, sha256)
    assert state is not BlobState.RELEASED
    assert "tampered" in (refused.value.server_message or "")  # B blocked the repo itself
    assert not list((tmp_path / "b-client").rglob(WEIGHTS))


async def test_chained_mirror_passes_its_clients_token_through(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    alice = fake_hub.add_user("alice")
    make_gated_repo(fake_hub, granted=["alice"])
    async with chain(fake_hub, tmp_path) as (_, b):
        served = await b.download(GATED, WEIGHTS, token=alice)
        with pytest.raises(GatedRepoError):
            await b.download(GATED, WEIGHTS, cache_dir=tmp_path / "anonymous")
    assert served.stat().st_size > 0
    file_heads = [r for r in fake_hub.requests if r.method == "HEAD" and "/resolve/" in r.path]
    assert any(r.has_auth for r in file_heads)  # alice's token reached the Hub through A


async def test_chained_mirror_shows_the_held_message_of_its_upstream(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    repo = fake_hub.create_repo(
        MODEL, files={"config.json": b"{}", "pytorch_model.bin": MALICIOUS_PICKLE}
    )
    async with chain(fake_hub, tmp_path) as (a, b):
        with pytest.raises(HfHubHTTPError, match="held") as held_by_a:
            await a.download(MODEL, "pytorch_model.bin")
        url = f"{b.url}/{MODEL}/resolve/{repo.head()}/pytorch_model.bin"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            status, message = response.status, response.headers["X-Error-Message"]
        async with aiohttp.ClientSession() as session:
            async with session.head(url, allow_redirects=False) as head:
                assert head.status == 200  # a HEAD answers from metadata (hub-protocol §6.3)
            await asyncio.sleep(0.5)  # the HEAD's background fetch is refused by A meanwhile
            async with session.get(url) as again:
                assert again.status == 403  # within B's backoff too: a refusal, not a 503
                assert again.headers["X-Error-Message"] == message
        with pytest.raises(HfHubHTTPError) as shown_to_client:
            await b.download(MODEL, "pytorch_model.bin")
    upstream_message = held_by_a.value.server_message or ""
    assert upstream_message.startswith("held in quarantine")
    assert status == 403
    assert message.startswith("the upstream mirror refuses pytorch_model.bin: held in quarantine")
    assert upstream_message in message
    assert upstream_message in (shown_to_client.value.server_message or "")
