"""`hubwarden policy check` against the fake Hub: what the policy would do with each file of a
repo, from metadata alone. `main` runs its own event loop, so the async tests (whose loop runs
the fake Hub) call it in a thread."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.cli import main
from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Repo
from tests.fakehub.plugin import make_tiny_model


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No Hubwarden setting or HF token from the real environment; the root logger given back
    as it was (the CLI configures logging)."""
    for variable in list(os.environ):
        if variable == "HF_TOKEN" or (
            variable.startswith("HUBWARDEN_") and not variable.startswith("HUBWARDEN_TEST_")
        ):
            monkeypatch.delenv(variable)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _config(tmp_path: Path, hub: FakeHub, policy: str = "") -> Path:
    path = tmp_path / "hubwarden.toml"
    path.write_text(f'upstream = "{hub.url}"\n\n[policy]\n{policy}', encoding="utf-8")
    return path


async def _check(*args: str) -> int:
    return await asyncio.to_thread(main, ["policy", "check", *args])


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _pickled_repo(hub: FakeHub) -> Repo:
    return hub.create_repo(
        "org/pickled",
        files={
            "config.json": b'{"model_type": "bert"}',
            "pytorch_model.bin": pickle.dumps({"weight": [0.0, 1.0]}),
        },
    )


async def test_policy_check_clean_repo_exits_0_and_lists_every_file(
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    assert await _check("org/tiny-model", "--upstream", fake_hub.url) == 0
    out = capsys.readouterr().out
    for path in (*tiny_model_files, ".gitattributes"):
        assert path in out
    assert out.rstrip().endswith("6 files: 6 served, 0 held, 0 refused")


async def test_policy_check_pickle_outside_allowed_formats_shows_rule_and_exits_1(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pickled_repo(fake_hub)
    config = _config(tmp_path, fake_hub, 'allowed_formats = ["safetensors"]\n')
    assert await _check("org/pickled@main", "--config", str(config)) == 1
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if "pytorch_model.bin" in line]
    assert row.split()[:3] == ["refuse", "after", "scan"]
    assert 'policy rule allowed_formats: "pytorch_model.bin" is pickle' in row
    assert out.rstrip().endswith("3 files: 2 served, 0 held, 1 refused")


async def test_policy_check_json_has_the_documented_shape(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _pickled_repo(fake_hub)
    config = _config(tmp_path, fake_hub, 'allowed_formats = ["safetensors"]\n')
    assert await _check("org/pickled", "--json", "--config", str(config)) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["schema"] == 1
    assert document["repo"] == {"type": "model", "id": "org/pickled"}
    assert document["revision"] is None
    assert document["commit"] == repo.head()
    assert document["summary"] == {"files": 3, "serve": 2, "hold": 0, "refuse": 1}
    assert document["exit_code"] == 1
    refused = next(f for f in document["files"] if f["path"] == "pytorch_model.bin")
    assert refused["action"] == "refuse"
    assert refused["stage"] == "after_scan"
    assert refused["rule"] == "allowed_formats"
    assert refused["format"] == "pickle-bearing"
    assert refused["lfs"] is True


async def test_policy_check_denied_publisher_is_refused_before_fetch(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pickled_repo(fake_hub)
    config = _config(tmp_path, fake_hub, 'deny_publishers = ["org/*"]\n')
    assert await _check("org/pickled", "--json", "--config", str(config)) == 1
    document = json.loads(capsys.readouterr().out)
    assert {(f["action"], f["stage"], f["rule"]) for f in document["files"]} == {
        ("refuse", "before_fetch", "deny_publishers")
    }
    assert [hit["rule"] for hit in document["repo_rules"]] == ["deny_publishers"]


async def test_policy_check_remote_code_is_held_by_default(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_hub.create_repo("org/custom", files={"modeling_custom.py": b"def f():\n    return 1\n"})
    assert await _check("org/custom", "--json", "--upstream", fake_hub.url) == 1
    document = json.loads(capsys.readouterr().out)
    held = next(f for f in document["files"] if f["path"] == "modeling_custom.py")
    assert (held["action"], held["rule"]) == ("hold", "remote_code")


async def test_policy_check_unknown_repo_exits_1_with_one_line(
    fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _check("org/nope", "--upstream", fake_hub.url) == 1
    assert _error_line(capsys) == (
        f'hubwarden: error: model "org/nope" was not found at {fake_hub.url} (or it is '
        "private); check the repo id and --type, or set HF_TOKEN to a token that can see it"
    )


async def test_policy_check_unknown_revision_exits_1_naming_it(
    fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    _pickled_repo(fake_hub)
    assert await _check("org/pickled@nobranch", "--upstream", fake_hub.url) == 1
    assert 'revision "nobranch" is not a branch, tag or commit' in _error_line(capsys)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("a/b/c", 'repo id "a/b/c" must be "namespace/name"'),
        ("org/model@", 'revision "" is empty'),
        ("org/model@main/../x", 'revision "main/../x"'),
    ],
)
def test_policy_check_bad_target_exits_2_with_one_line(
    target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "check", target]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"hubwarden: error: {message}")
    assert line.endswith("give REPO[@REV], e.g. google/gemma-2b@main")


def test_policy_check_bad_policy_setting_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hubwarden.toml"
    config.write_text('[policy]\nallowed_formats = ["safetensor"]\n', encoding="utf-8")
    assert main(["policy", "check", "org/model", "--config", str(config)]) == 2
    assert '"allowed_formats" holds "safetensor"' in _error_line(capsys)


def test_policy_check_offline_settings_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUBWARDEN_OFFLINE", "true")
    assert main(["policy", "check", "org/model"]) == 2
    assert "offline = true" in _error_line(capsys)


def test_policy_check_bad_type_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", "org/model", "--type", "modle"]) == 2
    assert "invalid choice: 'modle'" in capsys.readouterr().err
