"""`hubwarden prefetch` (issue 8, item 3) against the fake Hub: files are fetched, verified and
scanned by the server's own path before any client asks; a held file fails the run; a re-run, or
a run after an interruption (SIGINT, kill -9), fetches nothing already verified; a server on the
same data directory serves what prefetch fetched without asking upstream again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub.errors import HfHubHTTPError
from safetensors.numpy import save

from proxy.cli import main
from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_parquet_dataset
from tests.proxyplugin import proxy_settings, start_proxy

MODEL = "org/prefetched"
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
BIG = save({"w": np.arange(1 << 20, dtype=np.float32)})  # 4 MiB


def _config(hub: FakeHub, tmp_path: Path) -> Path:
    """Settings for a prefetch run (a subprocess or in-process), as the server would have them."""
    path = tmp_path / "hubwarden.toml"
    path.write_text(
        f'upstream = "{hub.url}"\ndata_dir = "{tmp_path / "data"}"\n'
        "[fetch]\nretries = 1\nmetadata_ttl_s = 0\n[scan]\nworkers = 2\n"
    )
    return path


async def _prefetch(config: Path, *argv: str) -> int:
    return await asyncio.to_thread(main, ["prefetch", *argv, "--config", str(config)])


def _model(hub: FakeHub) -> dict[str, bytes]:
    files = {
        "config.json": b'{"model_type": "bert"}',
        "model.safetensors": save({"w": np.ones((4, 4), dtype=np.float32)}),
        "evil.pkl": MALICIOUS_PICKLE,
        "README.md": b"# prefetched\n",
    }
    hub.create_repo(MODEL, files=files)
    return files


async def test_prefetch_fetches_scans_and_a_server_serves_it_without_upstream(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _model(fake_hub)
    make_parquet_dataset(fake_hub)
    config = _config(fake_hub, tmp_path)
    assert await _prefetch(config, MODEL, "--json") == 1  # evil.pkl is held
    report = json.loads(capsys.readouterr().out)
    verdicts = {f["path"]: f["verdict"] for f in report["files"]}
    assert verdicts == {"config.json": "released", "model.safetensors": "released",
                        "README.md": "released", ".gitattributes": "released",
                        "evil.pkl": "held"}  # fmt: skip
    held = next(f for f in report["files"] if f["path"] == "evil.pkl")
    assert "os.system" in held["detail"] and len(held["commit"]) == 40
    code = await _prefetch(config, "org/tiny-dataset", "--type", "dataset", "--json")
    assert code == 0
    dataset = {f["path"]: f["verdict"] for f in json.loads(capsys.readouterr().out)["files"]}
    assert dataset[".gitattributes"] == "already verified"  # the same bytes as the model's
    assert {v for p, v in dataset.items() if p != ".gitattributes"} == {"released"}

    fake_hub.reset_requests()
    settings = proxy_settings(fake_hub, tmp_path / "data")
    running, runner = await start_proxy(settings, tmp_path / "client")
    try:
        for name in ("config.json", "model.safetensors"):
            path = await running.download(MODEL, name)
            assert path.read_bytes() == files[name]
        with pytest.raises(HfHubHTTPError, match=r"evil\.pkl"):
            await running.download(MODEL, "evil.pkl")
    finally:
        await runner.cleanup()
    assert fake_hub.body_fetches() == 0  # every byte came from what prefetch verified


async def test_prefetch_again_fetches_nothing_and_patterns_choose_files(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _model(fake_hub)
    config = _config(fake_hub, tmp_path)
    code = await _prefetch(config, f"{MODEL}@main", "--include", "*.json", "--include", "*.md",
                           "--exclude", "README*", "--json")  # fmt: skip
    assert code == 0
    assert [f["path"] for f in json.loads(capsys.readouterr().out)["files"]] == ["config.json"]
    fake_hub.reset_requests()
    assert await _prefetch(config, MODEL, "--include", "*.json", "--json") == 0
    assert [f["verdict"] for f in json.loads(capsys.readouterr().out)["files"]] == [
        "already verified"
    ]
    assert fake_hub.body_fetches() == 0


async def test_prefetch_list_file_and_its_mistakes(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _model(fake_hub)
    make_parquet_dataset(fake_hub)
    config = _config(fake_hub, tmp_path)
    mirror = tmp_path / "mirror.toml"
    mirror.write_text(
        f'[[repo]]\nid = "{MODEL}"\nrevisions = ["main"]\nexclude = ["*.pkl"]\n\n'
        '[[repo]]\nid = "org/tiny-dataset"\ntype = "dataset"\n'
    )
    assert await _prefetch(config, "--list", str(mirror), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["released"] + report["counts"]["already verified"] == 7
    assert report["counts"]["already verified"] == 1  # .gitattributes: one blob, two repos
    assert {f["type"] for f in report["files"]} == {"model", "dataset"}
    for bad, says in (
        ('[[repo]]\nid = "../etc"\n', "repo id"),
        ('[[repo]]\nid = "org/x"\ntype = "bucket"\n', "must be model, dataset or space"),
        ('[[repo]]\nid = "org/x"\nbranch = "main"\n', "not known keys"),
        ("[[repo]\n", "not a TOML file"),
        ("", "no [[repo]] table"),
    ):
        mirror.write_text(bad)
        assert await _prefetch(config, "--list", str(mirror)) == 2, bad
        assert says in capsys.readouterr().err, bad
    assert await _prefetch(config) == 2  # neither repos nor --list
    assert await _prefetch(config, "org/missing", "--json") == 1
    missing = json.loads(capsys.readouterr().out)["files"]
    assert [f["verdict"] for f in missing] == ["failed"]


async def _interrupted_run(
    fake_hub: FakeHub, config: Path, how: signal.Signals, tmp_path: Path
) -> int:
    """Start prefetch in its own process, wait until the big file is being fetched, signal it;
    returns its exit status."""
    throttle = fake_hub.throttle(400_000, "*big.safetensors")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "prefetch", MODEL, "--json", "--config", str(config),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        for _ in range(300):
            if fake_hub.bytes_served("*big.safetensors") > 100_000:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the big file was never being fetched")
        process.send_signal(how)
        return await asyncio.wait_for(process.wait(), 60)
    finally:
        fake_hub.cancel(throttle)
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "kill-9"])
async def test_prefetch_interrupted_then_run_again_fetches_no_verified_file_twice(
    fake_hub: FakeHub, tmp_path: Path, how: signal.Signals, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {"config.json": b"{}", "small.safetensors": save({"s": np.zeros(3, np.float32)}),
             "big.safetensors": BIG}  # fmt: skip
    fake_hub.create_repo(MODEL, files=files)
    config = _config(fake_hub, tmp_path)
    # The small files first, alone, so that they are verified before the interruption.
    assert await _prefetch(config, MODEL, "--exclude", "big*", "--json") == 0
    capsys.readouterr()
    code = await _interrupted_run(fake_hub, config, how, tmp_path)
    assert code == (130 if how is signal.SIGINT else -signal.SIGKILL)
    assert await _prefetch(config, MODEL, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    verdicts = {f["path"]: f["verdict"] for f in report["files"]}
    already = "already verified"
    assert verdicts == {"config.json": already, "small.safetensors": already,
                        ".gitattributes": already, "big.safetensors": "released"}  # fmt: skip
    assert fake_hub.body_fetches("*small.safetensors") == 1
    assert fake_hub.body_fetches("*config.json") == 1
    leftovers = list((tmp_path / "data" / "tmp").iterdir())
    assert leftovers == []  # the interrupted fetch's temp file is gone


async def test_prefetch_beside_a_running_server_fetches_each_blob_once(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_hub.create_repo(MODEL, files={"config.json": b"{}", "big.safetensors": BIG})
    config = _config(fake_hub, tmp_path)
    settings = proxy_settings(fake_hub, tmp_path / "data")
    running, runner = await start_proxy(settings, tmp_path / "client")
    throttle = fake_hub.throttle(500_000, "*big.safetensors")  # ~8 s: outlasts the CLI start
    try:
        client = asyncio.create_task(running.download(MODEL, "big.safetensors"))
        for _ in range(200):  # the server has claimed the blob and is fetching it
            if fake_hub.bytes_served("*big.safetensors") > 0:
                break
            await asyncio.sleep(0.02)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "prefetch", MODEL, "--json", "--config", str(config),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, err.decode()
        verdicts = {f["path"]: f["verdict"] for f in json.loads(out)["files"]}
        assert verdicts["big.safetensors"] == "released"  # waited for the server's ingest
        assert (await client).read_bytes() == BIG
    finally:
        fake_hub.cancel(throttle)
        await runner.cleanup()
    assert fake_hub.body_fetches("*big.safetensors") == 1
