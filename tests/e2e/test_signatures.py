"""Issue 11 item 1: OpenSSF model signatures. Fake-Hub repos signed with model-signing's own
signers (a local P-256 key, a certificate chain made with `cryptography`) are verified against
the hashes the mirror computed itself: valid ones verify; a tampered, missing or extra file, a
wrong signer and a malformed signature file each give their outcome and hold the files under
`require_signature`; the status shows in the admin API and `hubwarden signature`."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from huggingface_hub.errors import HfHubHTTPError
from safetensors.numpy import save

from proxy.admin.identity import Role
from proxy.cli import main
from proxy.hub.context import SERVICES
from tests.e2e import test_offline
from tests.e2e.test_offline import SocketGuard
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy
from tests.signing import (
    SIGNATURE_FILE,
    KeyPair,
    LocalSigstore,
    make_certificate_chain,
    make_key,
    sign_with_certificate,
    sign_with_key,
)

socket_guard = test_offline.socket_guard  # the fixture, shared

REPO = "acme/signed-model"


def model_files() -> dict[str, bytes]:
    """A small model that every scanner releases: config, safetensors weights (LFS), a card."""
    weights = save({"weight": np.arange(64, dtype=np.float32).reshape(8, 8)})
    return {
        "config.json": json.dumps({"architectures": ["TinyModel"], "hidden_size": 8}).encode(),
        "model.safetensors": weights,
        "README.md": b"# A signed model\n",
    }


@asynccontextmanager
async def mirror(
    fake_hub: FakeHub, tmp_path: Path, *, offline: bool = False, **signing: object
) -> AsyncIterator[RunningProxy]:
    """A Hubwarden in front of the fake Hub with `[signing]` settings (dotted keys)."""
    overrides: dict[str, object] = {f"signing.{key}": value for key, value in signing.items()}
    settings = proxy_settings(fake_hub, tmp_path / "data", offline=offline, **overrides)
    running, runner = await start_proxy(settings, tmp_path / "client-cache")
    try:
        yield running
    finally:
        await runner.cleanup()


def trusted_key(key: KeyPair, repos: str = "acme/*") -> list[dict[str, Any]]:
    return [{"name": "ACME release key", "repos": [repos], "public_key": str(key.public)}]


def publish(fake_hub: FakeHub, files: dict[str, bytes], signature: bytes | None) -> None:
    content = dict(files)
    if signature is not None:
        content[SIGNATURE_FILE] = signature
    fake_hub.create_repo(REPO, files=content, lfs=["model.safetensors"])


async def signature_api(proxy: RunningProxy, revision: str = "main") -> dict[str, Any]:
    name = f"sig-{secrets.token_hex(4)}"
    _, token = await proxy.app[SERVICES].identities.create(name, Role.VIEWER, None, "t")
    url = f"{proxy.url}/admin/api/repos/models/{REPO}/signature?revision={revision}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        assert response.status == 200, await response.text()
        found: dict[str, Any] = await response.json()
        return found


async def download_all(proxy: RunningProxy, paths: list[str]) -> dict[str, str]:
    """Each path → "ok" or the held message the client shows."""
    results: dict[str, str] = {}
    for path in paths:
        try:
            await proxy.download(REPO, path)
            results[path] = "ok"
        except HfHubHTTPError as exc:
            results[path] = str(exc)
    return results


# -- valid signatures ----------------------------------------------------------------------


async def test_signature_by_a_trusted_key_verifies_and_serves_every_file(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = make_key(tmp_path / "keys")
    files = model_files()
    publish(fake_hub, files, sign_with_key(tmp_path / "sign", files, key))
    async with mirror(fake_hub, tmp_path, trusted=trusted_key(key),
                      require_signature=["acme/*"]) as proxy:  # fmt: skip
        assert await download_all(proxy, list(files)) == dict.fromkeys(files, "ok")
        report = await signature_api(proxy)
        assert (report["status"], report["summary"]) == ("verified", "verified by ACME release key")
        standings = {f["path"]: f["standing"] for f in report["files"]}
        assert standings == {**dict.fromkeys(files, "covered"), ".gitattributes": "ignored",
                             SIGNATURE_FILE: "signature"}  # fmt: skip
        assert report["findings"] == [] and report["required"] is True
        config = tmp_path / "hubwarden.toml"  # the server's [signing], as an admin runs it
        config.write_text(
            f'data_dir = "{proxy.settings.data_dir}"\n[signing]\nrequire_signature = ["acme/*"]\n'
            f'[[signing.trusted]]\nname = "ACME release key"\nrepos = ["acme/*"]\n'
            f'public_key = "{key.public}"\n'
        )
        argv = ["signature", REPO, "--config", str(config)]
        capsys.readouterr()
        assert await asyncio.to_thread(main, argv) == 0
        assert "verified by ACME release key" in capsys.readouterr().out


async def test_signature_by_a_trusted_certificate_chain_verifies(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    chain = make_certificate_chain(tmp_path / "pki")
    files = model_files()
    publish(fake_hub, files, sign_with_certificate(tmp_path / "sign", files, chain))
    trusted = [{"repos": ["acme/*"], "certificate_chain": [str(chain.root)]}]
    async with mirror(fake_hub, tmp_path, trusted=trusted, require_signature=["acme/*"]) as proxy:
        assert await download_all(proxy, list(files)) == dict.fromkeys(files, "ok")
        report = await signature_api(proxy)
        assert report["status"] == "verified"
        assert report["signer"] == "certificates corp-root.pem"


# -- what holds -------------------------------------------------------------------------------

Case = Callable[[Path, KeyPair], tuple[dict[str, bytes], bytes]]


def tampered_file(folder: Path, key: KeyPair) -> tuple[dict[str, bytes], bytes]:
    files = model_files()
    signature = sign_with_key(folder, files, key)
    return {**files, "config.json": b'{"architectures": ["Evil"]}'}, signature


def missing_file(folder: Path, key: KeyPair) -> tuple[dict[str, bytes], bytes]:
    files = model_files()
    signature = sign_with_key(folder, {**files, "tokenizer.json": b"{}"}, key)
    return files, signature


def extra_file(folder: Path, key: KeyPair) -> tuple[dict[str, bytes], bytes]:
    files = model_files()
    signature = sign_with_key(folder, files, key)
    return {**files, "extra.json": b'{"added": "after signing"}'}, signature


def wrong_signer(folder: Path, key: KeyPair) -> tuple[dict[str, bytes], bytes]:
    files = model_files()
    return files, sign_with_key(folder, files, make_key(folder / "other", "intruder"))


def malformed(folder: Path, key: KeyPair) -> tuple[dict[str, bytes], bytes]:
    signature = json.loads(sign_with_key(folder, model_files(), key))
    signature["dsseEnvelope"]["payload"] = "bm90IGEgc3RhdGVtZW50"  # "not a statement"
    return model_files(), json.dumps(signature).encode()


def truncated(folder: Path, key: KeyPair) -> tuple[dict[str, bytes], bytes]:
    return model_files(), sign_with_key(folder, model_files(), key)[:100]


@pytest.mark.parametrize(
    ("case", "status", "held", "finding"),
    [
        (tampered_file, "invalid", {"config.json"}, "SIGNATURE_FILE_MISMATCH"),
        (missing_file, "invalid", {"config.json", "model.safetensors", "README.md"},
         "SIGNATURE_INVALID"),
        (extra_file, "verified", {"extra.json"}, "SIGNATURE_FILE_UNCOVERED"),
        (wrong_signer, "untrusted_signer", {"config.json", "model.safetensors", "README.md"},
         "SIGNATURE_UNTRUSTED_SIGNER"),
        (malformed, "invalid", {"config.json", "model.safetensors", "README.md"},
         "SIGNATURE_INVALID"),
        (truncated, "invalid", {"config.json", "model.safetensors", "README.md"},
         "SIGNATURE_INVALID"),
    ],
)  # fmt: skip
async def test_signature_problem_gives_its_outcome_and_holds_under_require_signature(
    fake_hub: FakeHub, tmp_path: Path, case: Case, status: str, held: set[str], finding: str
) -> None:
    key = make_key(tmp_path / "keys")
    files, signature = case(tmp_path / "sign", key)
    publish(fake_hub, files, signature)
    async with mirror(fake_hub, tmp_path, trusted=trusted_key(key),
                      require_signature=["acme/*"]) as proxy:  # fmt: skip
        results = await download_all(proxy, sorted(files))
        assert {path for path, result in results.items() if result != "ok"} == held
        assert all("held in quarantine" in results[path] for path in held)
        report = await signature_api(proxy)
        assert report["status"] == status
        assert finding in {f["code"] for f in report["findings"]}


async def test_signature_tampered_file_is_held_even_when_no_signature_is_required(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    key = make_key(tmp_path / "keys")
    files, signature = tampered_file(tmp_path / "sign", key)
    publish(fake_hub, files, signature)
    async with mirror(fake_hub, tmp_path, trusted=trusted_key(key)) as proxy:
        results = await download_all(proxy, sorted(files))
        assert [path for path, result in results.items() if result != "ok"] == ["config.json"]
        assert "policy rule signature_invalid" in results["config.json"]
        assert "differs from the sha256" in results["config.json"]


async def test_signature_by_an_untrusted_signer_is_served_when_not_required(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    key = make_key(tmp_path / "keys")
    files, signature = wrong_signer(tmp_path / "sign", key)
    publish(fake_hub, files, signature)
    async with mirror(fake_hub, tmp_path, trusted=trusted_key(key)) as proxy:
        assert await download_all(proxy, sorted(files)) == dict.fromkeys(sorted(files), "ok")
        report = await signature_api(proxy)
        assert report["status"] == "untrusted_signer"
        assert report["signer"].startswith("key sha256:")


async def test_signature_absent_holds_only_repos_that_require_one(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    files = model_files()
    publish(fake_hub, files, None)
    async with mirror(fake_hub, tmp_path, require_signature=["other/*"]) as proxy:
        assert await download_all(proxy, ["config.json"]) == {"config.json": "ok"}
        assert (await signature_api(proxy))["status"] == "unsigned"
    async with mirror(fake_hub, tmp_path / "second", require_signature=["ACME/*"]) as proxy:
        results = await download_all(proxy, ["config.json"])
        assert "policy rule require_signature" in results["config.json"]
        assert "carries no signature" in results["config.json"]


# -- Sigstore, against a trust config made for the test, and offline ---------------------------

IDENTITY, ISSUER = "release@acme.example", "https://issuer.acme.example"
TRUSTED_IDENTITY = [{"name": "ACME CI", "repos": ["acme/*"], "identity": IDENTITY,
                     "issuer": ISSUER}]  # fmt: skip


def allow_mirror_and_hub(guard: SocketGuard, fake_hub: FakeHub) -> None:
    guard.allow(fake_hub.url)
    guard.allow(fake_hub.cdn_url)


async def test_sigstore_signature_verifies_with_the_trust_config_and_no_other_network(
    fake_hub: FakeHub, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    sigstore = LocalSigstore()
    files = model_files()
    publish(fake_hub, files, sigstore.sign(tmp_path / "sign", files, IDENTITY, ISSUER))
    trust = sigstore.trust_config(tmp_path / "trust.json")
    allow_mirror_and_hub(socket_guard, fake_hub)
    socket_guard.arm()  # the mirror may reach the fake Hub and itself, nothing else (no TUF)
    async with mirror(fake_hub, tmp_path, trusted=TRUSTED_IDENTITY, require_signature=["acme/*"],
                      sigstore_trust_config=str(trust)) as proxy:  # fmt: skip
        socket_guard.allow(proxy.url)
        assert await download_all(proxy, sorted(files)) == dict.fromkeys(sorted(files), "ok")
        report = await signature_api(proxy)
    socket_guard.disarm()
    assert (report["status"], report["summary"]) == ("verified", "verified by ACME CI")


async def test_sigstore_signature_is_judged_offline_from_the_store_without_any_network(
    fake_hub: FakeHub, tmp_path: Path, socket_guard: SocketGuard
) -> None:
    sigstore = LocalSigstore()
    files = model_files()
    publish(fake_hub, files, sigstore.sign(tmp_path / "sign", files, IDENTITY, ISSUER))
    async with mirror(fake_hub, tmp_path) as online:  # nobody trusted yet: all served
        assert await download_all(online, sorted(files)) == dict.fromkeys(sorted(files), "ok")
        assert (await signature_api(online))["status"] == "untrusted_signer"
    trust = sigstore.trust_config(tmp_path / "trust.json")
    fake_hub.reset_requests()
    socket_guard.arm()
    async with mirror(fake_hub, tmp_path, offline=True, trusted=TRUSTED_IDENTITY,
                      sigstore_trust_config=str(trust)) as offline:  # fmt: skip
        socket_guard.allow(offline.url)
        verified = await signature_api(offline)
    async with mirror(fake_hub, tmp_path, offline=True, trusted=TRUSTED_IDENTITY) as offline:
        socket_guard.allow(offline.url)
        refused = await signature_api(offline)
    socket_guard.disarm()
    assert fake_hub.requests == []
    assert verified["status"] == "verified"
    assert verified["files"] == [
        {"path": name, "standing": "covered"} for name in sorted(files)
    ] + [{"path": SIGNATURE_FILE, "standing": "signature"}]
    assert refused["status"] == "unverifiable"
    assert "offline, and no [signing] sigstore_trust_config" in refused["summary"]
