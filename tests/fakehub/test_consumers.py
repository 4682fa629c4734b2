"""datasets and transformers load the factories' repos from the fake Hub (in a subprocess,
because both read ``HF_ENDPOINT`` once, at import)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.fakehub import FakeHub
from tests.fakehub.plugin import make_parquet_dataset, make_tiny_model

LOAD_DATASET = """
import sys, datasets
rows = datasets.load_dataset("org/tiny-dataset", split="train", cache_dir=sys.argv[1])
print(rows.num_rows, rows[0]["text"])
"""
LOAD_TOKENIZER = """
import sys, transformers
config = transformers.AutoConfig.from_pretrained("org/tiny-model", cache_dir=sys.argv[1])
tokenizer = transformers.AutoTokenizer.from_pretrained("org/tiny-model", cache_dir=sys.argv[1])
print(config.model_type, tokenizer("hello world")["input_ids"])
"""


async def _run_client(hub: FakeHub, script: str, home: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(home),
        HF_HUB_DISABLE_XET="1",
        HF_UPDATE_DOWNLOAD_COUNTS="0",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        str(home / "cache"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode().strip()


async def test_load_dataset_parquet_factory_gives_rows(fake_hub: FakeHub, tmp_path: Path) -> None:
    make_parquet_dataset(fake_hub)

    assert await _run_client(fake_hub, LOAD_DATASET, tmp_path) == "4 hello world"


async def test_auto_tokenizer_tiny_model_factory_tokenizes(
    fake_hub: FakeHub, tmp_path: Path, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)

    assert await _run_client(fake_hub, LOAD_TOKENIZER, tmp_path) == "bert [5, 6]"
    assert fake_hub.count("*/tree/main/additional_chat_templates") == 1
