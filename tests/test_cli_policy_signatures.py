"""`hubwarden policy check` and model signatures (issue 11, item 1): against the fake Hub, the
signature a repo carries (or lacks, under `require_signature`) is judged as the mirror will
judge it at fetch, from the file list and the signature file alone. An LFS file's outcome is
known from its advertised sha256; a regular file's "needs verification at fetch". The attacker
(a tampered, extra or re-signed file, a broken signature) and the unlucky colleague (a signature
upstream cannot serve now) each get the right prediction, never a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save

from tests.fakehub.hub import FakeHub
from tests.signing import SIGNATURE_FILE, KeyPair, make_key, sign_with_key
from tests.test_cli_policy import _check, _clean_environment

clean_environment = _clean_environment  # the autouse fixture, shared

REPO = "acme/signed"
WEIGHTS = save({"w": np.arange(16, dtype=np.float32).reshape(4, 4)})


def _files() -> dict[str, bytes]:
    return {
        "config.json": b'{"model_type": "bert"}',
        "model.safetensors": WEIGHTS,
        "README.md": b"# signed\n",
    }


def _config(tmp_path: Path, hub: FakeHub, key: KeyPair | None, *, required: bool) -> Path:
    lines = [f'upstream = "{hub.url}"', "", "[signing]"]
    if required:
        lines.append('require_signature = ["acme/*"]')
    if key is not None:
        lines += ["[[signing.trusted]]", 'name = "ACME release key"', 'repos = ["acme/*"]',
                  f'public_key = "{key.public}"']  # fmt: skip
    path = tmp_path / "hubwarden.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _publish(hub: FakeHub, files: dict[str, bytes], signature: bytes | None) -> None:
    content = dict(files)
    if signature is not None:
        content[SIGNATURE_FILE] = signature
    hub.create_repo(REPO, files=content, lfs=["model.safetensors"])


async def _plan(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = await _check(REPO, "--json", "--config", str(config))
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return code, document


def _by_path(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in document["files"]}


async def test_policy_check_verified_signature_predicts_each_file(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = make_key(tmp_path / "keys")
    _publish(fake_hub, _files(), sign_with_key(tmp_path / "sign", _files(), key))
    code, document = await _plan(_config(tmp_path, fake_hub, key, required=True), capsys)
    assert code == 0 and document["exit_code"] == 0
    assert document["signature"] == {
        "file": SIGNATURE_FILE, "present": True, "required": True, "status": "verified",
        "signer": "ACME release key", "summary": "verified by ACME release key",
    }  # fmt: skip
    files = _by_path(document)
    assert files["model.safetensors"]["signature"] == "covered (verified by ACME release key)"
    assert files["config.json"]["signature"] == (
        "needs verification at fetch (signed by ACME release key)"
    )
    assert files[SIGNATURE_FILE]["signature"] == "the signature file"
    assert files[".gitattributes"]["signature"] == (
        "left out by the signer (verified by ACME release key)"
    )
    assert {f["action"] for f in document["files"]} == {"serve"}
    capsys.readouterr()
    config = _config(tmp_path, fake_hub, key, required=True)
    assert await _check(REPO, "--config", str(config)) == 0
    text = capsys.readouterr().out
    assert "signature (model.sig): verified by ACME release key" in text
    assert "[signature: covered (verified by ACME release key)]" in text


async def test_policy_check_tampered_lfs_file_is_held_before_any_fetch(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = make_key(tmp_path / "keys")
    signature = sign_with_key(tmp_path / "sign", _files(), key)
    tampered = {**_files(), "model.safetensors": save({"w": np.zeros((4, 4), np.float32)})}
    _publish(fake_hub, tampered, signature)
    code, document = await _plan(_config(tmp_path, fake_hub, key, required=False), capsys)
    assert code == 1
    held = _by_path(document)["model.safetensors"]
    assert (held["action"], held["rule"]) == ("hold", "signature_invalid")
    assert held["signature"] == "differs from the signed sha256 (verified by ACME release key)"
    assert "differs from the sha256" in held["reason"]
    assert _by_path(document)["config.json"]["action"] == "serve"


async def test_policy_check_extra_file_is_not_covered_and_held(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = make_key(tmp_path / "keys")
    signature = sign_with_key(tmp_path / "sign", _files(), key)
    _publish(fake_hub, {**_files(), "extra.json": b"{}"}, signature)
    code, document = await _plan(_config(tmp_path, fake_hub, key, required=False), capsys)
    extra = _by_path(document)["extra.json"]
    assert code == 1 and (extra["action"], extra["rule"]) == ("hold", "uncovered_files")
    assert extra["signature"] == "not covered by the signature (verified by ACME release key)"


@pytest.mark.parametrize("required", [True, False])
async def test_policy_check_wrong_signer_holds_only_when_required(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], required: bool
) -> None:
    key = make_key(tmp_path / "keys")
    intruder = make_key(tmp_path / "intruder", "intruder")
    _publish(fake_hub, _files(), sign_with_key(tmp_path / "sign", _files(), intruder))
    code, document = await _plan(_config(tmp_path, fake_hub, key, required=required), capsys)
    assert document["signature"]["status"] == "untrusted_signer"
    model = _by_path(document)["model.safetensors"]
    assert model["signature"].startswith("untrusted signer")
    if required:
        assert code == 1 and (model["action"], model["rule"]) == ("hold", "require_signature")
        assert _by_path(document)[SIGNATURE_FILE]["action"] == "serve"
    else:
        assert code == 0 and model["action"] == "serve"


async def test_policy_check_required_but_unsigned_holds_every_file(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _publish(fake_hub, _files(), None)
    code, document = await _plan(_config(tmp_path, fake_hub, None, required=True), capsys)
    assert code == 1
    assert document["signature"]["status"] == "unsigned"
    assert {(f["action"], f["rule"], f["signature"]) for f in document["files"]} == {
        ("hold", "require_signature", "unsigned")
    }
    assert "carries no signature" in document["files"][0]["reason"]


async def test_policy_check_unsigned_and_not_required_says_nothing_of_signatures(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _publish(fake_hub, _files(), None)
    code, document = await _plan(_config(tmp_path, fake_hub, None, required=False), capsys)
    assert code == 0 and document["signature"] is None
    assert {f["signature"] for f in document["files"]} == {""}


@pytest.mark.parametrize(
    "broken", [b"{not json", b'{"mediaType": "x"}', b"\x00" * 64], ids=["json", "bundle", "bytes"]
)
async def test_policy_check_broken_signature_is_invalid_and_holds(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], broken: bytes
) -> None:
    key = make_key(tmp_path / "keys")
    _publish(fake_hub, _files(), broken)
    code, document = await _plan(_config(tmp_path, fake_hub, key, required=False), capsys)
    assert code == 1 and document["signature"]["status"] == "invalid"
    model = _by_path(document)["model.safetensors"]
    assert (model["action"], model["rule"]) == ("hold", "signature_invalid")


async def test_policy_check_signature_upstream_cannot_serve_needs_verification_at_fetch(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = make_key(tmp_path / "keys")
    _publish(fake_hub, _files(), sign_with_key(tmp_path / "sign", _files(), key))
    fake_hub.inject(f"*/{SIGNATURE_FILE}", status=503, times=50)
    code, document = await _plan(_config(tmp_path, fake_hub, key, required=True), capsys)
    assert document["signature"]["status"] == "needs verification at fetch"
    assert "could not be read" in document["signature"]["summary"]
    model = _by_path(document)["model.safetensors"]
    assert model["signature"].startswith("needs verification at fetch")
    assert code == 0 and model["action"] == "serve"  # not known to be held: told, not guessed
