"""The URL map's edges: unknown routes are a 404 that says what this server is, writes anywhere are
refused as read-only, and the catch-alls never shadow a real route."""

from __future__ import annotations

import aiohttp
import huggingface_hub as hf
import pytest
from huggingface_hub.errors import HfHubHTTPError

from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model
from tests.proxyplugin import RunningProxy

MODEL = "org/tiny-model"
MIRROR_HINT = "is not a route of this server: it is a Hugging Face Hub mirror (Hubwarden)"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/org/model"),
        ("GET", "/datasets/org/data"),
        ("GET", "/api/models/org/model/no-such-route"),
        ("OPTIONS", "/healthz"),
    ],
)
async def test_unknown_route_is_404_saying_hub_mirror_and_hf_endpoint(
    proxy: RunningProxy, method: str, path: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, proxy.url + path) as response,
    ):
        assert response.status == 404
        message = response.headers["X-Error-Message"]
        assert await response.json() == {"error": message}
    assert message.startswith(f"{method} {path} {MIRROR_HINT}")
    assert message.endswith(f"HF_ENDPOINT={proxy.url}")
    assert "X-Error-Code" not in response.headers


async def test_unknown_route_head_is_404_with_message_and_no_body(proxy: RunningProxy) -> None:
    async with aiohttp.ClientSession() as session, session.head(f"{proxy.url}/org/model") as answer:
        assert answer.status == 404
        assert MIRROR_HINT in answer.headers["X-Error-Message"]
        assert await answer.read() == b""


async def test_unknown_route_message_reaches_the_client_user(proxy: RunningProxy) -> None:
    """A client given the mirror's URL plus a path (a common HF_ENDPOINT mistake) shows why."""
    api = hf.HfApi(endpoint=f"{proxy.url}/hub", token=False)
    with pytest.raises(HfHubHTTPError, match="Hugging Face Hub mirror") as caught:
        await proxy.call(api.model_info, MODEL)
    assert caught.value.response.status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/"),
        ("PUT", "/org/model"),
        ("PATCH", "/api/models/org/model/settings"),
        ("DELETE", "/api/repos/delete"),
        ("POST", "/api/models/org/model/commit/main"),
    ],
)
async def test_write_anywhere_is_403_read_only(proxy: RunningProxy, method: str, path: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, proxy.url + path) as response,
    ):
        assert response.status == 403
        assert "read-only mirror" in response.headers["X-Error-Message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz"),
        ("GET", "/api/whoami-v2"),
        ("GET", "/api/models"),
        ("GET", f"/api/models/{MODEL}"),
        ("GET", f"/api/models/{MODEL}/revision/main"),
        ("GET", f"/api/models/{MODEL}/tree/main"),
        ("POST", f"/api/models/{MODEL}/paths-info/main"),
        ("GET", f"/api/models/{MODEL}/refs"),
        ("GET", f"/api/models/{MODEL}/discussions"),
        ("HEAD", f"/{MODEL}/resolve/main/config.json"),
        ("GET", "/api/agent-harnesses"),
    ],
)
async def test_known_route_still_answers_200(
    proxy: RunningProxy,
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    method: str,
    path: str,
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    headers = {}
    if path.endswith("whoami-v2"):
        headers["Authorization"] = f"Bearer {fake_hub.add_user('alice')}"
    form = {"paths": "config.json"} if method == "POST" else None
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, proxy.url + path, data=form, headers=headers, allow_redirects=True
        ) as response,
    ):
        assert response.status == 200, response.headers.get("X-Error-Message")
