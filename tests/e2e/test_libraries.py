"""datasets and transformers load through Hubwarden unchanged."""

from __future__ import annotations

import pytest

from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_parquet_dataset, make_tiny_model
from tests.proxyplugin import RunningProxy


async def test_load_dataset_of_a_parquet_repo_reads_its_rows(
    proxy: RunningProxy, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets.config

    make_parquet_dataset(fake_hub)
    # datasets keeps its own copy of HF_ENDPOINT, read at import (hub-protocol.md §1.1).
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", proxy.url)
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", proxy.url)
    monkeypatch.setattr(
        "huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE",
        proxy.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    dataset = await proxy.call(
        datasets.load_dataset,
        "org/tiny-dataset",
        split="train",
        cache_dir=str(proxy.cache_dir / "datasets"),
        token=False,
    )
    assert dataset["text"] == ["hello world", "the quick brown fox", "jumps over", "the lazy dog"]


async def test_auto_config_and_tokenizer_load_from_the_mirror(
    proxy: RunningProxy,
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import AutoConfig, AutoTokenizer

    make_tiny_model(fake_hub, tiny_model_files)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", proxy.url)
    monkeypatch.setattr(
        "huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE",
        proxy.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    config = await proxy.call(
        AutoConfig.from_pretrained, "org/tiny-model", cache_dir=proxy.cache_dir, token=False
    )
    tokenizer = await proxy.call(
        AutoTokenizer.from_pretrained, "org/tiny-model", cache_dir=proxy.cache_dir, token=False
    )
    assert config.model_type == "bert"
    assert tokenizer("hello world")["input_ids"][:2] == [5, 6]
