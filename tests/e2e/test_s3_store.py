"""Hubwarden with `[store] kind = "s3"` against a real S3 API server (moto, its own process on
loopback), the real huggingface_hub client on the other side: cold and warm downloads, Range,
presigned redirects, and a held file that never reaches the released key."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from huggingface_hub.errors import HfHubHTTPError

from proxy.cli import main
from proxy.config import StoreSettings
from proxy.store.s3 import s3_client
from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy
from tests.s3plugin import TEST_KEY_ID, TEST_SECRET, new_bucket

MODEL = "org/tiny-model"
WEIGHTS = "model.safetensors"
# A pickle importing a module no allow-list knows: held for review (never loaded).
UNKNOWN_PICKLE = b"cacme_tools\nLabels\n(tR."
COLD_TRIES = 20


@asynccontextmanager
async def _running(
    fake_hub: FakeHub, tmp_path: Path, s3_endpoint: str, *, presign: bool
) -> AsyncIterator[tuple[RunningProxy, StoreSettings]]:
    store = await new_bucket(s3_endpoint, prefix="mirror/")
    settings = proxy_settings(
        fake_hub,
        tmp_path / "data",
        **{
            "store.kind": "s3",
            "store.bucket": store.bucket,
            "store.prefix": store.prefix,
            "store.endpoint_url": s3_endpoint,
            "store.region": store.region,
            "store.access_key_id": TEST_KEY_ID,
            "store.secret_access_key": TEST_SECRET,
            "store.presign": presign,
        },
    )
    running, runner = await start_proxy(settings, tmp_path / "client-cache")
    try:
        yield running, store
    finally:
        await runner.cleanup()


@pytest.fixture
async def s3_proxy(
    fake_hub: FakeHub, tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[tuple[RunningProxy, StoreSettings]]:
    async with _running(fake_hub, tmp_path, s3_endpoint, presign=False) as running:
        yield running


@pytest.fixture
async def presigning_proxy(
    fake_hub: FakeHub, tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[tuple[RunningProxy, StoreSettings]]:
    async with _running(fake_hub, tmp_path, s3_endpoint, presign=True) as running:
        yield running


async def _keys(store: StoreSettings) -> list[str]:
    async with s3_client(store) as client:
        listed = await client.list_objects_v2(Bucket=store.bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def _no_xet(headers: aiohttp.typedefs.LooseHeaders) -> bool:
    return not any(str(name).lower().startswith("x-xet") for name in dict(headers))


async def test_s3_store_cold_then_warm_download_keeps_one_upstream_fetch(
    s3_proxy: tuple[RunningProxy, StoreSettings],
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    tmp_path: Path,
) -> None:
    proxy, store = s3_proxy
    make_tiny_model(fake_hub, tiny_model_files)
    cold = await proxy.download(MODEL, WEIGHTS)
    warm = await proxy.download(MODEL, WEIGHTS, cache_dir=tmp_path / "other-cache")
    expected = tiny_model_files[WEIGHTS]
    assert cold.read_bytes() == expected and warm.read_bytes() == expected
    assert fake_hub.body_fetches(f"*{WEIGHTS}") == 1
    assert f"mirror/blobs/{hashlib.sha256(expected).hexdigest()}" in await _keys(store)
    assert not any((proxy.settings.data_dir / "blobs").rglob("*"))  # nothing kept locally


async def test_s3_store_range_request_answers_206_and_etag_rules(
    s3_proxy: tuple[RunningProxy, StoreSettings],
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
) -> None:
    proxy, _ = s3_proxy
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await proxy.download(MODEL, WEIGHTS)
    expected = tiny_model_files[WEIGHTS]
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/{WEIGHTS}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Range": "bytes=100-1099"}) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes 100-1099/{len(expected)}"
            assert await response.read() == expected[100:1100]
            assert _no_xet(response.headers)
            etag = response.headers["ETag"]
        async with session.get(url, headers={"If-None-Match": etag}) as response:
            assert response.status == 304
        async with session.get(url, headers={"Range": f"bytes={len(expected)}-"}) as response:
            assert response.status == 416


async def test_s3_store_presign_redirects_a_released_file_to_a_signed_url(
    presigning_proxy: tuple[RunningProxy, StoreSettings],
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    proxy, _ = presigning_proxy
    repo = make_tiny_model(fake_hub, tiny_model_files)
    expected = tiny_model_files[WEIGHTS]
    await proxy.download(MODEL, WEIGHTS)  # cold: streamed while it is ingested
    warm = await proxy.download(MODEL, WEIGHTS, cache_dir=tmp_path / "other-cache")
    assert warm.read_bytes() == expected
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/{WEIGHTS}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, allow_redirects=False) as response:
            assert response.status == 302
            location = response.headers["Location"]
            assert location.startswith(f"{s3_endpoint}/")
            assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in location
            assert response.headers["X-Linked-Etag"] == f'"{hashlib.sha256(expected).hexdigest()}"'
            assert _no_xet(response.headers)
        async with session.get(url, headers={"Range": "bytes=0-99"}) as response:
            assert response.status == 206
            assert await response.read() == expected[:100]


async def test_s3_store_held_file_is_never_under_the_released_key(
    presigning_proxy: tuple[RunningProxy, StoreSettings], fake_hub: FakeHub
) -> None:
    proxy, store = presigning_proxy
    fake_hub.create_repo(MODEL, files={"labels.pkl": UNKNOWN_PICKLE})
    with pytest.raises(HfHubHTTPError, match="held in quarantine"):
        await proxy.download(MODEL, "labels.pkl")
    sha256 = hashlib.sha256(UNKNOWN_PICKLE).hexdigest()
    assert await _keys(store) == [f"mirror/quarantine/{sha256}"]


def test_s3_store_doctor_refuses_to_judge_a_bucket_by_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUBWARDEN_STORE_KIND", "s3")
    monkeypatch.setenv("HUBWARDEN_STORE_BUCKET", "hubwarden")
    assert main(["doctor", "--repair", "--data-dir", str(tmp_path)]) == 2
    assert "works on a local blob store only" in capsys.readouterr().err


async def test_s3_store_rescan_from_the_shell_releases_a_held_file_into_the_bucket(
    s3_proxy: tuple[RunningProxy, StoreSettings], fake_hub: FakeHub, tmp_path: Path
) -> None:
    proxy, store = s3_proxy
    source = b"import torch\n\n\nclass TinyModel(torch.nn.Module):\n    pass\n"
    fake_hub.create_repo(MODEL, files={"modeling_tiny.py": source})
    with pytest.raises(HfHubHTTPError, match=r"review (\d+)") as caught:
        await proxy.download(MODEL, "modeling_tiny.py")  # remote_code = "hold" by default
    review_id = re.findall(r"review (\d+)", str(caught.value))[0]
    config = tmp_path / "rescan.toml"
    config.write_text(
        '[policy]\nremote_code = "allow"\n[store]\nkind = "s3"\n'
        f'bucket = "{store.bucket}"\nprefix = "{store.prefix}"\n'
        f'endpoint_url = "{store.endpoint_url}"\nregion = "{store.region}"\n'
        f'access_key_id = "{TEST_KEY_ID}"\nsecret_access_key = "{TEST_SECRET}"\n'
    )
    config.chmod(0o600)  # it holds a secret
    argv = ["quarantine", "rescan", review_id, "-m", "x", "--config", str(config)]
    argv += ["--data-dir", str(proxy.settings.data_dir)]
    assert await asyncio.to_thread(main, argv) == 0
    path = await proxy.download(MODEL, "modeling_tiny.py")
    assert path.read_bytes() == source
    assert await _keys(store) == [f"mirror/blobs/{hashlib.sha256(source).hexdigest()}"]


async def test_s3_store_cold_range_waits_for_the_verdict_then_answers_from_the_bucket(
    s3_proxy: tuple[RunningProxy, StoreSettings],
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
) -> None:
    proxy, _ = s3_proxy
    repo = make_tiny_model(fake_hub, tiny_model_files)
    expected = tiny_model_files[WEIGHTS]
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/{WEIGHTS}"
    status, headers, body = 0, {}, b""
    async with aiohttp.ClientSession() as session:
        for _ in range(COLD_TRIES):  # 429 + Retry-After while it is scanned, as clients see it
            async with session.get(url, headers={"Range": "bytes=-500"}) as response:
                status, headers, body = (
                    response.status,
                    dict(response.headers),
                    await response.read(),
                )
            if status != 429:
                break
            await asyncio.sleep(float(headers["Retry-After"]))
    size = len(expected)
    assert status == 206
    assert headers["Content-Range"] == f"bytes {size - 500}-{size - 1}/{size}"
    assert body == expected[-500:]
