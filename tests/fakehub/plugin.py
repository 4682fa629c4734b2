"""pytest fixtures and repo factories for the fake Hub.

Use them from a conftest with ``from tests.fakehub.plugin import fake_hub, ...  # noqa: F401``
(or ``pytest_plugins = ["tests.fakehub.plugin"]`` in the root conftest). Factories are plain
functions with keyword defaults: call them with the ``fake_hub`` to populate typical repos.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Collection

import pytest

from tests.fakehub.gitobjects import Content
from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Gated, Repo, RepoType

TINY_VOCAB = (
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "the", "quick", "brown",
    "fox", "jumps", "over", "lazy", "dog", ".",
)  # fmt: skip
TINY_HIDDEN, TINY_INTERMEDIATE, TINY_POSITIONS = 8, 16, 32
DATASET_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-00000-of-00001.parquet
---
# Tiny dataset

Four rows of text with a label, for tests.
"""


@pytest.fixture
async def fake_hub() -> AsyncIterator[FakeHub]:
    """A started `FakeHub` (Hub and CDN on free loopback ports), closed after the test."""
    async with FakeHub() as hub:
        yield hub


@pytest.fixture(scope="session")
def tiny_model_files() -> dict[str, bytes]:
    """The files of `make_tiny_model`, built once per session (torch is slow to import)."""
    return build_tiny_model_files()


def build_tiny_model_files() -> dict[str, bytes]:
    """A real tiny BERT: config, WordLevel tokenizer, safetensors weights, README, no pickles."""
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": len(TINY_VOCAB),
        "hidden_size": TINY_HIDDEN,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": TINY_INTERMEDIATE,
        "max_position_embeddings": TINY_POSITIONS,
        "type_vocab_size": 2,
        "pad_token_id": 0,
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
        "model_max_length": TINY_POSITIONS,
    }
    return {
        "config.json": _json_bytes(config),
        "tokenizer.json": _tiny_tokenizer_json(),
        "tokenizer_config.json": _json_bytes(tokenizer_config),
        "model.safetensors": _tiny_bert_safetensors(),
        "README.md": b"---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# Tiny BERT\n",
    }


def make_tiny_model(
    hub: FakeHub,
    files: dict[str, bytes],
    *,
    repo_id: str = "org/tiny-model",
    private: bool = False,
    gated: Gated = False,
    readers: Collection[str] = (),
    granted: Collection[str] = (),
) -> Repo:
    """A model repo holding ``files`` (from ``tiny_model_files``): one commit after the initial."""
    return hub.create_repo(
        repo_id,
        files=files,
        private=private,
        gated=gated,
        readers=readers,
        granted=granted,
        card_data={"license": "apache-2.0", "library_name": "transformers"},
    )


def make_parquet_dataset(hub: FakeHub, *, repo_id: str = "org/tiny-dataset") -> Repo:
    """A dataset laid out like the Hub's: ``data/train-00000-of-00001.parquet`` + YAML configs."""
    import pyarrow as pa  # heavy: paid only by tests that build a dataset
    import pyarrow.parquet as pq

    table = pa.table(
        {"text": ["hello world", "the quick brown fox", "jumps over", "the lazy dog"],
         "label": [0, 1, 1, 0]}
    )  # fmt: skip
    sink = io.BytesIO()
    pq.write_table(table, sink)
    files: dict[str, Content] = {
        "README.md": DATASET_README.encode(),
        "data/train-00000-of-00001.parquet": sink.getvalue(),
    }
    card = {"configs": [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-00000-of-00001.parquet"}]}]}  # fmt: skip
    return hub.create_repo(repo_id, repo_type=RepoType.DATASET, files=files, card_data=card)


def make_gated_repo(
    hub: FakeHub, *, repo_id: str = "org/gated-model", granted: Collection[str] = ()
) -> Repo:
    """A manually gated model: metadata readable by all, files only for ``granted`` users."""
    files = {"config.json": b'{"model_type": "bert"}', "model.safetensors": _small_safetensors()}
    return hub.create_repo(repo_id, files=files, gated="manual", granted=granted)


def make_private_repo(
    hub: FakeHub, *, repo_id: str = "org/private-model", readers: Collection[str] = ()
) -> Repo:
    """A private model: it exists only for ``readers``; others get RepoNotFound."""
    files = {"config.json": b'{"model_type": "bert"}', "model.safetensors": _small_safetensors()}
    return hub.create_repo(repo_id, files=files, private=True, readers=readers)


def make_wide_repo(
    hub: FakeHub,
    *,
    repo_id: str = "org/wide-model",
    depth: int = 3,
    width: int = 2,
    files_per_folder: int = 2,
) -> Repo:
    """A tree ``depth`` folders deep, ``width`` wide, with small text and LFS ``.bin`` files.

    With the default page size of 3 its listings span many pages.
    """
    files: dict[str, Content] = {}
    folders = [""]
    for _ in range(depth):
        folders = [f"{parent}d{i}/" for parent in folders for i in range(width)]
        for folder in folders:
            for n in range(files_per_folder):
                files[f"{folder}f{n}.txt"] = f"{folder}{n}\n".encode()
            files[f"{folder}weights.bin"] = f"binary {folder}".encode() * 8
    files["README.md"] = b"# wide\n"
    return hub.create_repo(repo_id, files=files)


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"


def _tiny_tokenizer_json() -> bytes:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {word: index for index, word in enumerate(TINY_VOCAB)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str(pretty=True).encode()


def _tiny_bert_safetensors() -> bytes:
    import torch  # slow import: paid once per session
    from safetensors.torch import save

    h, i = TINY_HIDDEN, TINY_INTERMEDIATE
    layer = "encoder.layer.0."
    square = ("self.query", "self.key", "self.value", "output.dense")
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (len(TINY_VOCAB), h),
        "embeddings.position_embeddings.weight": (TINY_POSITIONS, h),
        "embeddings.token_type_embeddings.weight": (2, h),
        "pooler.dense.weight": (h, h),
        "pooler.dense.bias": (h,),
        f"{layer}intermediate.dense.weight": (i, h),
        f"{layer}intermediate.dense.bias": (i,),
        f"{layer}output.dense.weight": (h, i),
        f"{layer}output.dense.bias": (h,),
    }
    for name in square:
        shapes[f"{layer}attention.{name}.weight"] = (h, h)
        shapes[f"{layer}attention.{name}.bias"] = (h,)
    for norm in ("embeddings.", f"{layer}attention.output.", f"{layer}output."):
        shapes[f"{norm}LayerNorm.weight"] = shapes[f"{norm}LayerNorm.bias"] = (h,)
    generator = torch.Generator().manual_seed(0)
    tensors = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    return save(tensors, metadata={"format": "pt"})


def _small_safetensors() -> bytes:
    """A valid safetensors file with one F32 tensor of 4 values, written by hand."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + bytes(16)
