"""The AI-BOM (issue 11, item 4): a CycloneDX 1.6 ML-BOM of mirrored revisions, through the admin
API and the CLI, accepted by cyclonedx-python-lib's strict validator, listing each file with the
sha256 the mirror verified itself (never the hash upstream only advertised)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from typing import Any

import aiohttp
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from proxy.admin.identity import Role
from proxy.cli import main
from proxy.hub.context import SERVICES
from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_parquet_dataset, make_tiny_model
from tests.proxyplugin import RunningProxy

MODEL = "org/tiny-model"
EVIL = "org/evil-model"
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."


async def _bom(proxy: RunningProxy, path: str, query: str = "") -> tuple[int, str, str]:
    name = f"bom-{secrets.token_hex(4)}"
    _, token = await proxy.app[SERVICES].identities.create(name, Role.VIEWER, None, "t")
    url = f"{proxy.url}/admin/api/repos/{path}/bom{query}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status, response.content_type, await response.text()


def _valid(text: str) -> dict[str, Any]:
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    document: dict[str, Any] = json.loads(text)
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.6"
    return document


def _props(component: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for prop in component.get("properties", []):
        found.setdefault(prop["name"], []).append(prop["value"])
    return found


async def test_bom_of_a_model_lists_every_file_with_the_verified_sha256(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    for name in ("config.json", "model.safetensors"):
        await proxy.download(MODEL, name)
    status, content_type, text = await _bom(proxy, f"models/{MODEL}")
    assert status == 200 and content_type == "application/vnd.cyclonedx+json"
    partial = _valid(text)["metadata"]["component"]
    assert _props(partial)["hubwarden:file-list"][0].startswith("partial")
    assert {c["name"] for c in partial["components"]} == {"config.json", "model.safetensors"}
    api = HfApi(endpoint=proxy.url, token=False)
    await proxy.call(lambda: list(api.list_repo_tree(MODEL, recursive=True)))  # the whole tree
    status, _, text = await _bom(proxy, f"models/{MODEL}")
    model = _valid(text)["metadata"]["component"]
    assert _props(model)["hubwarden:file-list"] == ["complete"]
    assert (model["type"], model["name"], model["version"]) == (
        "machine-learning-model",
        MODEL,
        repo.head(),
    )
    assert model["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    assert model["publisher"] == "org"
    assert _props(model)["hubwarden:signature"] == ["unsigned"]
    files = {c["name"]: c for c in model["components"]}
    assert set(files) == set(tiny_model_files) | {".gitattributes"}  # the whole tree
    for name in ("config.json", "model.safetensors"):
        (digest,) = files[name]["hashes"]
        verified = hashlib.sha256(tiny_model_files[name]).hexdigest()
        assert digest == {"alg": "SHA-256", "content": verified}
        props = _props(files[name])
        assert props["hubwarden:state"] == ["released"] and props["hubwarden:verdict"] == ["clean"]
    never = files["README.md"]
    assert "hashes" not in never  # never fetched: no hash claimed
    assert _props(never)["hubwarden:state"] == ["not fetched"]


async def test_bom_of_a_held_file_carries_its_findings(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo(EVIL, files={"evil.pkl": MALICIOUS_PICKLE, "README.md": b"# x\n"})
    with pytest.raises(HfHubHTTPError):
        await proxy.download(EVIL, "evil.pkl")
    status, _, text = await _bom(proxy, f"models/{EVIL}")
    assert status == 200
    files = {c["name"]: c for c in _valid(text)["metadata"]["component"]["components"]}
    props = _props(files["evil.pkl"])
    assert props["hubwarden:state"] == ["rejected"] and props["hubwarden:verdict"] == ["malicious"]
    assert any("os.system" in f and f.startswith("critical") for f in props["hubwarden:finding"])
    assert files["evil.pkl"]["hashes"][0]["content"] == hashlib.sha256(MALICIOUS_PICKLE).hexdigest()


async def test_bom_of_a_dataset_by_commit_and_from_the_cli(
    proxy: RunningProxy, fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_parquet_dataset(fake_hub)
    await proxy.call(
        hf_hub_download, "org/tiny-dataset", "README.md",
        repo_type="dataset", endpoint=proxy.url, cache_dir=proxy.cache_dir, token=False,
    )  # fmt: skip
    status, _, text = await _bom(proxy, "datasets/org/tiny-dataset", f"?revision={repo.head()}")
    assert status == 200
    dataset = _valid(text)["metadata"]["component"]
    assert dataset["type"] == "data" and dataset["version"] == repo.head()
    argv = ["bom", f"org/tiny-dataset@{repo.head()}", "--type", "dataset",
            "--data-dir", str(proxy.settings.data_dir)]  # fmt: skip
    capsys.readouterr()
    assert await asyncio.to_thread(main, argv) == 0
    from_cli = _valid(capsys.readouterr().out)["metadata"]["component"]
    assert from_cli["components"] == dataset["components"]


@pytest.mark.parametrize(
    ("path", "query", "status"),
    [
        ("models/org/never-mirrored", "", 404),
        (f"models/{MODEL}", "?revision=no-such-branch", 404),
        (f"models/{MODEL}", "?revision=" + "0" * 40, 404),
        (f"models/{MODEL}", "?revision=..%2F..%2Fetc", 400),
        ("buckets/org/x", "", 400),
    ],
)
async def test_bom_of_what_was_never_mirrored_is_refused(
    proxy: RunningProxy,
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    path: str,
    query: str,
    status: int,
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    await proxy.download(MODEL, "config.json")
    answer, _, text = await _bom(proxy, path, query)
    assert answer == status, text
    assert json.loads(text)["hint"]
