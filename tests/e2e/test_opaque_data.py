"""Data is not code (DESIGN.md rule 10): shards of raw numbers are released as opaque data,
while a pickle behind the same kind of name stays held."""

from __future__ import annotations

import random
from pathlib import Path

import huggingface_hub as hf
import numpy as np
import pytest
from huggingface_hub.errors import HfHubHTTPError

from proxy.hub.context import SERVICES
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

DATASET = "org/raw-shards"
# A protocol-0 pickle that would call os.system if anyone loaded it (never done).
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."


def _shards() -> dict[str, bytes]:
    """Random bytes and raw float arrays (`ndarray.tofile` layout), as `.bin` shards."""
    rng = random.Random(7)  # noqa: S311 - reproducible test bytes, not a secret
    shards = {f"data/shard-{n:02d}.bin": rng.randbytes(64 * 1024 + n) for n in range(4)}
    floats = np.random.default_rng(3).standard_normal(20_000).astype(np.float32)
    shards["data/embeddings.bin"] = floats.tobytes()
    shards["README.md"] = b"# raw shards\n"
    return shards


async def test_snapshot_of_random_bin_shards_succeeds_as_opaque_data(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    files = _shards()
    fake_hub.create_repo(DATASET, repo_type="dataset", files=files)
    folder = await proxy.call(
        hf.snapshot_download,
        DATASET,
        repo_type="dataset",
        endpoint=proxy.url,
        cache_dir=proxy.cache_dir,
        token=False,
    )
    for path, content in files.items():
        assert (Path(folder) / path).read_bytes() == content
    released = await proxy.app[SERVICES].repository.list_audit("blob.released")
    assert {e.details["format"] for e in released if str(e.details["path"]).endswith(".bin")} == {
        "opaque"
    }


async def test_pickle_behind_a_bin_name_is_held_next_to_opaque_shards(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    files = {**_shards(), "data/shard-99.bin": MALICIOUS_PICKLE}
    fake_hub.create_repo(DATASET, repo_type="dataset", files=files)
    shard = await proxy.download(DATASET, "data/shard-00.bin", repo_type="dataset")
    assert shard.read_bytes() == files["data/shard-00.bin"]
    with pytest.raises(HfHubHTTPError, match=r"held in quarantine: data/shard-99\.bin"):
        await proxy.download(DATASET, "data/shard-99.bin", repo_type="dataset")


async def test_opaque_data_hold_policy_holds_random_shards(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.create_repo(DATASET, repo_type="dataset", files=_shards())
    settings = proxy_settings(fake_hub, tmp_path / "data", **{"policy.opaque_data": "hold"})
    proxy, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        with pytest.raises(HfHubHTTPError, match="policy rule opaque_data"):
            await proxy.download(DATASET, "data/shard-01.bin", repo_type="dataset")
    finally:
        await runner.cleanup()
