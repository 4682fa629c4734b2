"""Policy as code through the real client: each rule refuses what it should, naming itself;
audit mode records and refuses nothing; a policy file change applies to the next request."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import huggingface_hub as hf
import pytest
import torch
from huggingface_hub.errors import HfHubHTTPError

from proxy.hub.context import SERVICES
from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

MODEL = "org/tiny-model"
WEIGHTS = "model.safetensors"


@asynccontextmanager
async def _proxy(
    fake_hub: FakeHub, tmp_path: Path, **overrides: object
) -> AsyncIterator[RunningProxy]:
    settings = proxy_settings(fake_hub, tmp_path / "data", **overrides)
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        yield running
    finally:
        await runner.cleanup()


def _torch_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(4, 4)}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"policy.deny_publishers": ["org/*"]}, "deny_publishers"),
        ({"policy.allow_publishers": ["google/*", "meta-llama/*"]}, "allow_publishers"),
    ],
)
async def test_policy_publisher_rule_refuses_files_and_metadata(
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    tmp_path: Path,
    overrides: dict[str, object],
    rule: str,
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    async with _proxy(fake_hub, tmp_path, **overrides) as proxy:
        with pytest.raises(HfHubHTTPError, match=f"policy rule {rule}: model .org/tiny-model"):
            await proxy.download(MODEL, "config.json")
        api = hf.HfApi(endpoint=proxy.url, token=False)
        with pytest.raises(HfHubHTTPError, match=f"policy rule {rule}"):
            await proxy.call(api.model_info, MODEL)
    assert fake_hub.body_fetches() == 0


async def test_policy_deny_beats_allow_for_the_same_publisher(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    overrides = {"policy.allow_publishers": ["org/*"], "policy.deny_publishers": ["org/tiny-*"]}
    async with _proxy(fake_hub, tmp_path, **overrides) as proxy:
        with pytest.raises(HfHubHTTPError, match="policy rule deny_publishers"):
            await proxy.download(MODEL, "config.json")


async def test_policy_pull_requests_refused_by_name_and_by_hash(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    pr = repo.open_pr({"config.json": b'{"model_type": "bert", "stranger": true}'})
    async with _proxy(fake_hub, tmp_path, **{"policy.allow_pull_requests": False}) as proxy:
        with pytest.raises(HfHubHTTPError, match="policy rule allow_pull_requests"):
            await proxy.download(MODEL, "config.json", revision=pr)
        with pytest.raises(HfHubHTTPError, match="policy rule allow_pull_requests"):
            await proxy.download(MODEL, "config.json", revision=repo.resolve(pr).sha)
        api = hf.HfApi(endpoint=proxy.url, token=False)
        with pytest.raises(HfHubHTTPError, match="policy rule allow_pull_requests"):
            await proxy.call(api.list_repo_files, MODEL, revision=pr)
        main = await proxy.download(MODEL, "config.json")
        assert main.read_bytes() == tiny_model_files["config.json"]


async def test_policy_max_file_bytes_refuses_large_files_only(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    limit = len(tiny_model_files["config.json"]) + 1
    async with _proxy(fake_hub, tmp_path, **{"policy.max_file_bytes": limit}) as proxy:
        with pytest.raises(HfHubHTTPError, match=r"policy rule max_file_bytes: .model.safetensors"):
            await proxy.download(MODEL, WEIGHTS)
        path = await proxy.download(MODEL, "config.json")
        assert path.read_bytes() == tiny_model_files["config.json"]
    assert fake_hub.body_fetches(f"*/{WEIGHTS}") == 0


async def test_policy_allowed_formats_refuses_a_pickle_checkpoint(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    make_tiny_model(fake_hub, {**tiny_model_files, "pytorch_model.bin": _torch_checkpoint()})
    async with _proxy(fake_hub, tmp_path, **{"policy.allowed_formats": ["safetensors"]}) as proxy:
        with pytest.raises(
            HfHubHTTPError, match=r"policy rule allowed_formats: .pytorch_model.bin"
        ):
            await proxy.download(MODEL, "pytorch_model.bin")
        weights = await proxy.download(MODEL, WEIGHTS)
        assert weights.read_bytes() == tiny_model_files[WEIGHTS]
        config = await proxy.download(MODEL, "config.json")
        assert config.read_bytes() == tiny_model_files["config.json"]


@pytest.mark.parametrize(
    ("action", "served"), [("reject", False), ("hold", False), ("allow", True)]
)
async def test_policy_remote_code_follows_its_action(
    fake_hub: FakeHub, tmp_path: Path, action: str, served: bool
) -> None:
    source = b"import torch\n\n\nclass TinyModel(torch.nn.Module):\n    pass\n"
    fake_hub.create_repo(MODEL, files={"modeling_tiny.py": source})
    async with _proxy(fake_hub, tmp_path, **{"policy.remote_code": action}) as proxy:
        if served:
            path = await proxy.download(MODEL, "modeling_tiny.py")
            assert path.read_bytes() == source
        else:
            with pytest.raises(HfHubHTTPError, match="policy rule remote_code"):
                await proxy.download(MODEL, "modeling_tiny.py")


async def test_policy_scanner_errors_reject_refuses_an_unparseable_pickle(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    broken = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94("
    fake_hub.create_repo(MODEL, files={"state.pkl": broken})
    async with _proxy(fake_hub, tmp_path, **{"policy.scanner_errors": "reject"}) as proxy:
        with pytest.raises(HfHubHTTPError, match="policy rule scanner_errors"):
            await proxy.download(MODEL, "state.pkl")
        rejected = await proxy.app[SERVICES].repository.list_audit("blob.rejected")
        assert [e.details["path"] for e in rejected] == ["state.pkl"]


async def test_policy_new_repos_review_holds_the_first_files(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    async with _proxy(fake_hub, tmp_path, **{"policy.new_repos": "review"}) as proxy:
        with pytest.raises(HfHubHTTPError, match=r"held in quarantine: .*policy rule new_repos"):
            await proxy.download(MODEL, "config.json")


async def test_policy_audit_mode_records_and_serves(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    overrides = {"policy.max_file_bytes": 10, "policy.audit_rules": ["max_file_bytes"]}
    async with _proxy(fake_hub, tmp_path, **overrides) as proxy:
        path = await proxy.download(MODEL, WEIGHTS)
        assert path.read_bytes() == tiny_model_files[WEIGHTS]
        audited = await proxy.app[SERVICES].repository.list_audit("policy.audited")
    assert {e.details["rule"] for e in audited} == {"max_file_bytes"}
    assert any(e.details["path"] == WEIGHTS for e in audited)


async def test_policy_file_change_applies_to_the_next_request(
    fake_hub: FakeHub, tiny_model_files: dict[str, bytes], tmp_path: Path
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    policy = tmp_path / "policy.toml"
    policy.write_text("max_file_bytes = 0\n")
    async with _proxy(fake_hub, tmp_path, **{"policy.file": str(policy)}) as proxy:
        first = await proxy.download(MODEL, "config.json")
        assert first.read_bytes() == tiny_model_files["config.json"]
        policy.write_text('[policy]\ndeny_publishers = ["org/*"]\n')
        stat = policy.stat()
        os.utime(policy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        await asyncio.sleep(1.1)  # the file is looked at at most once a second
        with pytest.raises(HfHubHTTPError, match="policy rule deny_publishers"):
            await proxy.download(MODEL, "tokenizer.json")


@pytest.mark.parametrize(("action", "served"), [("reject", False), ("allow", True)])
async def test_policy_unknown_formats_follows_its_action(
    fake_hub: FakeHub, tmp_path: Path, action: str, served: bool
) -> None:
    # An ELF header: a structure a loader (the system's) could open, so not opaque data.
    binary = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 40
    fake_hub.create_repo(MODEL, files={"libcustom_op.bin": binary})
    async with _proxy(fake_hub, tmp_path, **{"policy.unknown_formats": action}) as proxy:
        if served:
            path = await proxy.download(MODEL, "libcustom_op.bin")
            assert path.read_bytes() == binary
        else:
            with pytest.raises(HfHubHTTPError, match="policy rule unknown_formats"):
                await proxy.download(MODEL, "libcustom_op.bin")
