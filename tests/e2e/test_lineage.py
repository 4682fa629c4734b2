"""Pins follow lineage, history rewrites and tampering block, blocked repos answer every route
(DESIGN.md rules 3 to 5), through the real huggingface_hub client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import huggingface_hub as hf
import numpy as np
import pytest
from huggingface_hub.errors import HfHubHTTPError
from safetensors.numpy import save

from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Repo
from tests.fakehub.plugin import make_tiny_model
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

MODEL = "org/tiny-model"
WEIGHTS = "model.safetensors"


def retrain(files: dict[str, bytes], tag: str) -> bytes:
    """Other real weights (a safetensors file made by the library), one per `tag`."""
    seed = sum(tag.encode()) % 251
    return save({"weight": np.full((8, 8), seed, dtype=np.float32)}, metadata={"tag": tag})


async def _proxy(
    fake_hub: FakeHub, tmp_path: Path, **overrides: object
) -> tuple[RunningProxy, object]:
    name = "-".join(f"{k}={v}" for k, v in overrides.items()) or "default"
    return await start_proxy(
        proxy_settings(fake_hub, tmp_path / f"data-{name}", **overrides), tmp_path / f"cache-{name}"
    )


async def _model_with_history(fake_hub: FakeHub, files: dict[str, bytes]) -> tuple[Repo, str]:
    """A model whose v1.0 tag holds older weights than main; returns (repo, v1.0 commit)."""
    repo = make_tiny_model(fake_hub, files)
    old = repo.tag("v1.0")
    repo.commit({WEIGHTS: retrain(files, "v2")}, message="Retrain")
    return repo, old


async def test_older_tag_after_main_is_served_and_blocks_nothing(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo, _ = await _model_with_history(fake_hub, tiny_model_files)
    new = await proxy.download(MODEL, WEIGHTS)
    old = await proxy.download(MODEL, WEIGHTS, revision="v1.0")
    assert old.read_bytes() == tiny_model_files[WEIGHTS]
    assert new.read_bytes() == retrain(tiny_model_files, "v2")
    again = await proxy.download(MODEL, WEIGHTS, force_download=True)
    assert again.read_bytes() == retrain(tiny_model_files, "v2")
    config = await proxy.download(MODEL, "config.json", revision=repo.head())
    assert config.read_bytes() == tiny_model_files["config.json"]


async def test_older_tag_before_main_does_not_hold_main(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo, _ = await _model_with_history(fake_hub, tiny_model_files)
    old = await proxy.download(MODEL, WEIGHTS, revision="v1.0")
    assert old.read_bytes() == tiny_model_files[WEIGHTS]
    new = await proxy.download(MODEL, WEIGHTS)  # main was newer before the mirror saw either
    assert new.read_bytes() == retrain(tiny_model_files, "v2")
    repo.commit({WEIGHTS: retrain(tiny_model_files, "v3")})  # a change after the pin: held
    again = await proxy.download(MODEL, WEIGHTS, force_download=True)
    assert again.read_bytes() == retrain(tiny_model_files, "v2")


async def test_pull_request_changing_weights_is_served_and_main_keeps_its_pin(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await proxy.download(MODEL, WEIGHTS)
    pr = repo.open_pr({WEIGHTS: retrain(tiny_model_files, "stranger")})
    from_pr = await proxy.download(MODEL, WEIGHTS, revision=pr)
    assert from_pr.read_bytes() == retrain(tiny_model_files, "stranger")
    main = await proxy.download(MODEL, WEIGHTS, force_download=True)
    assert main.read_bytes() == tiny_model_files[WEIGHTS]
    readme = await proxy.download(MODEL, "README.md")
    assert readme.read_bytes() == tiny_model_files["README.md"]


async def test_pull_request_commit_asked_by_hash_is_served_and_blocks_nothing(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await proxy.download(MODEL, WEIGHTS)
    pr_commit = repo.resolve(repo.open_pr({WEIGHTS: retrain(tiny_model_files, "pr")})).sha
    path = await proxy.download(MODEL, WEIGHTS, revision=pr_commit)
    assert path.read_bytes() == retrain(tiny_model_files, "pr")
    config = await proxy.download(MODEL, "config.json", force_download=True)
    assert config.read_bytes() == tiny_model_files["config.json"]


async def test_new_commit_changing_pin_is_held_and_main_serves_the_approved_commit(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    approved = repo.head()
    await proxy.download(MODEL, WEIGHTS)
    new = repo.commit({WEIGHTS: retrain(tiny_model_files, "hijack"), "extra.txt": b"new\n"})
    api = hf.HfApi(endpoint=proxy.url, token=False)
    assert (await proxy.call(api.model_info, MODEL)).sha == approved
    files = await proxy.call(api.list_repo_files, MODEL)
    assert "extra.txt" not in files
    refs = await proxy.call(api.list_repo_refs, MODEL)
    assert [b.target_commit for b in refs.branches if b.name == "main"] == [approved]
    path = await proxy.download(MODEL, WEIGHTS, force_download=True)
    assert path.read_bytes() == tiny_model_files[WEIGHTS]
    snapshot = await proxy.call(
        hf.snapshot_download,
        MODEL,
        endpoint=proxy.url,
        cache_dir=proxy.cache_dir / "s",
        token=False,
    )
    assert Path(snapshot).name == approved
    assert (Path(snapshot) / WEIGHTS).read_bytes() == tiny_model_files[WEIGHTS]
    async with aiohttp.ClientSession() as session:
        url = f"{proxy.url}/{MODEL}/resolve/main/{WEIGHTS}"
        async with session.head(url, allow_redirects=False) as head:
            assert head.headers["X-Repo-Commit"] == approved
            assert "awaits review" in head.headers["X-HF-Warning"]
        async with session.get(f"{proxy.url}/{MODEL}/resolve/{new}/{WEIGHTS}") as direct:
            assert direct.status == 403
            assert "awaits review" in direct.headers["X-Error-Message"]


async def test_pinned_change_under_block_policy_blocks_the_repo(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    proxy, runner = await _proxy(fake_hub, tmp_path, **{"policy.pinned_change": "block"})
    try:
        await proxy.download(MODEL, WEIGHTS)
        repo.commit({WEIGHTS: retrain(tiny_model_files, "hijack")})
        with pytest.raises(HfHubHTTPError, match=r"blocked: org/tiny-model \(pinned_changed"):
            await proxy.download(MODEL, "config.json", force_download=True)
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


async def test_pinned_change_under_allow_policy_serves_and_repins_the_new_weights(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    proxy, runner = await _proxy(fake_hub, tmp_path, **{"policy.pinned_change": "allow"})
    try:
        await proxy.download(MODEL, WEIGHTS)
        repo.commit({WEIGHTS: retrain(tiny_model_files, "v2")})
        path = await proxy.download(MODEL, WEIGHTS, force_download=True)
        assert path.read_bytes() == retrain(tiny_model_files, "v2")
        old = await proxy.download(MODEL, WEIGHTS, revision=repo.history("main")[1].sha)
        assert old.read_bytes() == tiny_model_files[WEIGHTS]  # history now, not a block
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


@pytest.mark.parametrize("pinned_change", ["hold", "block", "allow"])
@pytest.mark.parametrize("asked_by", ["hash", "branch"])
async def test_force_push_blocks_the_repo_as_history_rewritten(
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    tmp_path: Path,
    pinned_change: str,
    asked_by: str,
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    proxy, runner = await _proxy(fake_hub, tmp_path, **{"policy.pinned_change": pinned_change})
    try:
        await proxy.download(MODEL, WEIGHTS)
        rewritten = repo.force_push({**tiny_model_files, WEIGHTS: retrain(tiny_model_files, "x")})
        revision = rewritten if asked_by == "hash" else "main"
        with pytest.raises(HfHubHTTPError, match="history_rewritten") as caught:
            await proxy.download(MODEL, WEIGHTS, revision=revision, force_download=True)
        assert "org/tiny-model" in str(caught.value)
        assert not list((proxy.cache_dir).rglob(f"{rewritten}/{WEIGHTS}"))
        with pytest.raises(HfHubHTTPError, match="history_rewritten"):
            await proxy.download(MODEL, "README.md", revision=rewritten, force_download=True)
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


async def test_fast_forward_of_main_without_pinned_change_is_served(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await proxy.download(MODEL, WEIGHTS)
    new = repo.commit({"notes.txt": b"more\n"})
    path = await proxy.download(MODEL, "notes.txt", revision=new)
    assert path.read_bytes() == b"more\n"
    again = await proxy.download(MODEL, WEIGHTS, force_download=True)
    assert again.read_bytes() == tiny_model_files[WEIGHTS]


async def test_tampered_regular_file_blocks_the_repo_and_its_readme(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    repo.tamper("config.json", keep_size=True)
    with pytest.raises(HfHubHTTPError, match="tampered"):
        await proxy.download(MODEL, "config.json")
    with pytest.raises(
        HfHubHTTPError, match=r"blocked: org/tiny-model \(tampered: .*; since .*; review \d+; ask "
    ):
        await proxy.download(MODEL, "README.md")


async def test_blocked_repo_answers_every_metadata_route_with_the_message(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    repo.tamper("config.json")
    with pytest.raises(HfHubHTTPError):
        await proxy.download(MODEL, "config.json")
    sha = repo.head()
    async with aiohttp.ClientSession() as session:
        for method, path in (
            ("GET", f"/api/models/{MODEL}"),
            ("GET", f"/api/models/{MODEL}/revision/{sha}"),
            ("GET", f"/api/models/{MODEL}/tree/main?recursive=true&expand=false"),
            ("POST", f"/api/models/{MODEL}/paths-info/{sha}"),
            ("GET", f"/api/models/{MODEL}/refs"),
            ("GET", f"/api/models/{MODEL}/commits/main"),
            ("GET", f"/{MODEL}/resolve/{sha}/{WEIGHTS}"),
        ):
            async with session.request(method, proxy.url + path, data={"paths": WEIGHTS}) as r:
                assert r.status == 403, path
                assert r.headers["X-Error-Message"].startswith("blocked: org/tiny-model (tampered")


async def test_range_during_ingest_of_tampered_file_gets_no_byte(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    # Larger than the held-back tail (1 MiB) and slow, so the ranges arrive mid-ingest, when
    # the first bytes have long been received but not verified.
    weights = save({"weight": np.arange(1 << 20, dtype=np.float32)})
    repo = fake_hub.create_repo(MODEL, files={WEIGHTS: weights})
    repo.tamper(WEIGHTS, keep_size=True)
    fake_hub.throttle(1024 * 1024, f"*/{WEIGHTS}")
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/{WEIGHTS}"
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(40):
            async with session.get(url, headers={"Range": "bytes=0-99"}) as ranged:
                await ranged.read()
                statuses.append(ranged.status)
                if ranged.status == 403:
                    break
                assert ranged.status == 429, ranged.status
                assert int(ranged.headers["Retry-After"]) >= 1
            await asyncio.sleep(0.25)
    assert statuses[0] == 429
    assert statuses[-1] == 403
    assert 206 not in statuses


async def test_range_during_clean_ingest_waits_then_gets_verified_bytes(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/{WEIGHTS}"
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            async with session.get(url, headers={"Range": "bytes=8-15"}) as ranged:
                if ranged.status == 206:
                    assert await ranged.read() == tiny_model_files[WEIGHTS][8:16]
                    return
                assert ranged.status == 429
            await asyncio.sleep(0.2)
    pytest.fail("the range was never answered")


async def test_no_stream_before_release_full_get_waits_for_the_verdict(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    weights = save({"weight": np.arange(1 << 20, dtype=np.float32)})
    repo = fake_hub.create_repo(MODEL, files={WEIGHTS: weights})
    fake_hub.throttle(1024 * 1024, f"*/{WEIGHTS}")
    proxy, runner = await _proxy(fake_hub, tmp_path, **{"ingest.stream_before_release": False})
    try:
        url = f"{proxy.url}/{MODEL}/resolve/{repo.head()}/{WEIGHTS}"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as first:
                assert first.status == 429  # streaming would have started a 200 by now
                assert await first.read() != weights
            for _ in range(40):
                await asyncio.sleep(0.25)
                async with session.get(url) as later:
                    if later.status == 200:
                        assert await later.read() == weights
                        return
                    assert later.status == 429
        pytest.fail("the file was never released")
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]
