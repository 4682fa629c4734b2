"""`[policy] max_risk` (issue 11, item 2) on a running Hubwarden in front of the fake Hub: the
files of a repo whose risk card rates it above the limit are held, the client's 403 naming the
rating, the dimensions behind it and what an admin can do; a reviewer's release or a repo waiver
lets them through; files not scanned yet, licence files and files max_risk held itself never
hold a repo; weights renamed LICENSE are judged like any file; a bad value is refused at start;
offline the card comes from recorded facts without a single upstream call."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from safetensors.numpy import save

from proxy.admin.identity import Role
from proxy.cli import main
from proxy.config import ConfigError, load_settings
from proxy.hub.context import SERVICES
from proxy.trust.policy_source import CHECK_INTERVAL_S
from tests.e2e.test_risk import SAFE, _files, _publishers, _recent
from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Repo
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

OTHER_WEIGHTS = save({"w": np.zeros((4, 4), dtype=np.float32)})
THIRD_WEIGHTS = save({"w": np.full((4, 4), 2.0, dtype=np.float32)})
NC_LICENCE = b"Attribution-NonCommercial 4.0 International\n\nCreative Commons Corporation\n"


async def _proxy(hub: FakeHub, tmp_path: Path, **overrides: object) -> tuple[RunningProxy, Any]:
    return await start_proxy(
        proxy_settings(hub, tmp_path / "data", **overrides), tmp_path / "client-cache"
    )


def _repo(hub: FakeHub, repo_id: str, **options: Any) -> Repo:
    _recent(hub)
    _publishers(hub)
    files = options.pop("files", _files())
    card = options.pop("card_data", {"license": "apache-2.0"})
    repo = hub.create_repo(repo_id, files=files, card_data=card, **options)
    repo.file_security.update(dict.fromkeys(files, SAFE))
    return repo


async def _get(proxy: RunningProxy, repo_id: str, path: str, **kwargs: Any) -> str:
    """ "ok", or the message the client shows for a refusal."""
    try:
        await proxy.download(repo_id, path, **kwargs)
    except HfHubHTTPError as exc:
        return str(exc)
    return "ok"


async def _api(
    proxy: RunningProxy, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    _, token = await proxy.app[SERVICES].identities.create(
        f"r-{secrets.token_hex(4)}", Role.REVIEWER, None, "t"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, f"{proxy.url}/admin/api{path}", json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):  # fmt: skip
        return response.status, await response.json()


def _review_id(message: str) -> int:
    found = re.search(r"review (\d+)", message)
    assert found is not None, message
    return int(found.group(1))


async def test_max_risk_holds_the_files_of_a_repo_rated_above_it_naming_why(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    files = _files()
    del files["LICENSE"]
    _repo(fake_hub, "acme/nc", files=files, card_data={"license": "cc-by-nc-4.0"})
    clean_files = _files(**{"model.safetensors": THIRD_WEIGHTS})
    _repo(fake_hub, "acme/clean", files=clean_files)
    proxy, runner = await _proxy(fake_hub, tmp_path, **{"policy.max_risk": "medium"})
    try:
        refused = await _get(proxy, "acme/nc", "model.safetensors")
        assert "403" in refused and "held in quarantine: model.safetensors" in refused
        assert "policy rule max_risk" in refused
        assert 'model "acme/nc" is rated high on its risk card, above max_risk medium' in refused
        assert "licence high (cc-by-nc-4.0: custom-restricted (CC-BY-NC-4.0))" in refused
        assert "release the file, or waive the repo" in refused and "raise [policy] max_risk" in (
            refused
        )
        assert "ask " in refused and f"/held/{_review_id(refused)}" in refused
        # Text and JSON are shared byte for byte across repos (this config.json is the clean
        # repo's too): never held by max_risk, or one repo's rating would hold the other's.
        assert await _get(proxy, "acme/nc", "config.json") == "ok"
        for path in clean_files:  # the clean repo is low in every dimension: all of it served
            assert await _get(proxy, "acme/clean", path) == "ok", path
        status, card = await _api(proxy, "GET", "/repos/models/acme/nc/risk")
        assert status == 200 and card["max_risk"] == "medium" and card["held_for"] == ["licence"]
        status, item = await _api(proxy, "GET", f"/quarantine/{_review_id(refused)}")
        assert status == 200 and item["reason"].startswith("policy rule max_risk:")
    finally:
        await runner.cleanup()


async def test_max_risk_release_and_repo_waiver_let_the_files_through(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    files = _files(**{"second.safetensors": OTHER_WEIGHTS, "third.safetensors": THIRD_WEIGHTS})
    del files["LICENSE"]
    _repo(fake_hub, "acme/nc", files=files, card_data={"license": "cc-by-nc-4.0"})
    proxy, runner = await _proxy(fake_hub, tmp_path, **{"policy.max_risk": "medium"})
    try:
        first = _review_id(await _get(proxy, "acme/nc", "model.safetensors"))
        status, _ = await _api(proxy, "POST", f"/quarantine/{first}/release",
                               {"comment": "licence accepted by legal, ticket 7"})  # fmt: skip
        assert status == 200
        assert await _get(proxy, "acme/nc", "model.safetensors") == "ok"
        second = _review_id(await _get(proxy, "acme/nc", "second.safetensors"))  # a blob only
        status, body = await _api(proxy, "POST", f"/quarantine/{second}/release",
                                  {"comment": "whole repo accepted", "scope": "repo"})  # fmt: skip
        assert status == 200 and body["waiver"] is not None
        assert await _get(proxy, "acme/nc", "second.safetensors") == "ok"
        assert await _get(proxy, "acme/nc", "third.safetensors") == "ok"  # the waiver
        repository = proxy.app[SERVICES].repository
        (applied,) = await repository.list_audit("waiver.applied")
        assert str(applied.details["held_for"]).startswith("policy rule max_risk:")
    finally:
        await runner.cleanup()


async def test_max_risk_judges_the_settled_rating_not_files_waiting_for_their_scan(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    """max_risk = low on a clean repo: its model file is unscanned until asked for (the card is
    medium meanwhile), yet nothing is held; once one file is held by max_risk elsewhere, that
    hold does not count as a held file of its repo's card."""
    _repo(fake_hub, "acme/clean")
    proxy, runner = await _proxy(fake_hub, tmp_path, **{"policy.max_risk": "low"})
    try:
        api = HfApi(endpoint=proxy.url, token=False)
        listed = await proxy.call(api.list_repo_files, "acme/clean")  # the whole tree recorded
        assert "model.safetensors" in listed
        assert await _get(proxy, "acme/clean", "config.json") == "ok"
        _, card = await _api(proxy, "GET", "/repos/models/acme/clean/risk")
        formats = next(d for d in card["dimensions"] if d["name"] == "file-format safety")
        assert (formats["rating"], formats["settled_rating"]) == ("medium", "low")
        assert card["exceeds_policy"] is True and card["held_for"] == []
        assert await _get(proxy, "acme/clean", "model.safetensors") == "ok"
    finally:
        await runner.cleanup()


async def test_max_risk_low_holds_a_user_account_repo_for_its_publisher_only(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.add_user("solo", created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=800))
    _repo(fake_hub, "solo/model")
    proxy, runner = await _proxy(fake_hub, tmp_path, **{"policy.max_risk": "low"})
    try:
        refused = await _get(proxy, "solo/model", "model.safetensors")
        assert "rated medium on its risk card, above max_risk low" in refused
        assert "publisher traceability medium (a user account, not an organisation)" in refused
        assert "licence" not in refused.split("above max_risk low")[1].split("; a reviewer")[0]
        assert await _get(proxy, "solo/model", "LICENSE") == "ok"  # the card reads it
        _, card = await _api(proxy, "GET", "/repos/models/solo/model/risk")
        assert card["held_for"] == ["publisher traceability"]
        formats = next(d for d in card["dimensions"] if d["name"] == "file-format safety")
        assert formats["facts"]["held_files"] == []  # held by max_risk: not a held file
        assert formats["facts"]["held_by_max_risk"] == ["model.safetensors"]
    finally:
        await runner.cleanup()


async def test_max_risk_reads_a_licence_file_before_judging_the_first_model_file(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    """No licence in the card, a LICENSE file nobody asked for yet: the card fetches it, so the
    model file is judged by the licence's text, not by its absence."""
    _repo(fake_hub, "acme/apache", card_data={})
    files = _files(**{"LICENSE": NC_LICENCE, "model.safetensors": OTHER_WEIGHTS})
    _repo(fake_hub, "acme/noncommercial", files=files, card_data={})
    proxy, runner = await _proxy(fake_hub, tmp_path, **{"policy.max_risk": "medium"})
    try:
        assert await _get(proxy, "acme/apache", "model.safetensors") == "ok"
        refused = await _get(proxy, "acme/noncommercial", "model.safetensors")
        assert "licence high (no licence in the card; LICENSE reads as custom-restricted)" in (
            refused
        )
        repository = proxy.app[SERVICES].repository
        blob = await repository.get_blob(fake_hub.repo("acme/apache").file("LICENSE").sha1)
        assert blob is not None and blob.state.value == "released"  # fetched by the card
    finally:
        await runner.cleanup()


async def test_max_risk_attacker_cannot_ship_weights_as_licence_or_dodge_by_commit(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    """What max_risk leaves alone is text and JSON, whatever the name: weights named
    LICENSE.safetensors, and code, are held; the hold is on the bytes, so asking by commit
    instead of branch changes nothing."""
    files = _files(**{"LICENSE.safetensors": OTHER_WEIGHTS, "modeling_evil.py": b"import os\n"})
    repo = _repo(fake_hub, "acme/sneaky", files=files)
    proxy, runner = await _proxy(fake_hub, tmp_path, **{"policy.max_risk": "medium",
                                                        "policy.remote_code": "allow"})  # fmt: skip
    try:
        refused = await _get(proxy, "acme/sneaky", "LICENSE.safetensors")
        assert "policy rule max_risk" in refused and "file-format safety high" in refused
        assert "remote code: modeling_evil.py" in refused
        assert "policy rule max_risk" in await _get(proxy, "acme/sneaky", "modeling_evil.py")
        by_commit = await _get(proxy, "acme/sneaky", "model.safetensors", revision=repo.head())
        assert "policy rule max_risk" in by_commit
        assert "policy rule max_risk" in await _get(proxy, "acme/sneaky", "model.safetensors")
        assert await _get(proxy, "acme/sneaky", "LICENSE") == "ok"  # text: the card reads it
    finally:
        await runner.cleanup()


async def test_max_risk_in_audit_mode_records_and_serves(fake_hub: FakeHub, tmp_path: Path) -> None:
    files = _files()
    del files["LICENSE"]
    _repo(fake_hub, "acme/nc", files=files, card_data={"license": "cc-by-nc-4.0"})
    proxy, runner = await _proxy(
        fake_hub, tmp_path, **{"policy.max_risk": "medium", "policy.audit_rules": "max_risk"}
    )
    try:
        assert await _get(proxy, "acme/nc", "model.safetensors") == "ok"
        (event,) = await proxy.app[SERVICES].repository.list_audit("policy.audited")
        assert event.details["rule"] == "max_risk"
        assert "licence high" in str(event.details["message"])
    finally:
        await runner.cleanup()


async def test_max_risk_judged_again_by_rescan_after_the_policy_changes(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    """A held file stays held when the policy is loosened (a verdict is not revisited on its
    own), and a rescan applies the policy in force: an admin who raises max_risk rescans."""
    files = _files()
    del files["LICENSE"]
    _repo(fake_hub, "acme/nc", files=files, card_data={"license": "cc-by-nc-4.0"})
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('max_risk = "medium"\n')
    proxy, runner = await _proxy(fake_hub, tmp_path, **{"policy.file": str(policy_file)})
    try:
        review = _review_id(await _get(proxy, "acme/nc", "model.safetensors"))
        policy_file.write_text('max_risk = "high"\n')
        assert "held in quarantine" in await _get(proxy, "acme/nc", "model.safetensors")
        await _wait_for_reload()
        status, body = await _api(proxy, "POST", f"/quarantine/{review}/rescan",
                                  {"comment": "max_risk raised"})  # fmt: skip
        assert status == 200 and body["state"] == "released", body
        assert await _get(proxy, "acme/nc", "model.safetensors") == "ok"
    finally:
        await runner.cleanup()


async def _wait_for_reload() -> None:
    await asyncio.sleep(CHECK_INTERVAL_S + 0.2)


async def test_max_risk_offline_judges_from_recorded_facts_without_upstream(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    _repo(fake_hub, "acme/clean")
    proxy, runner = await _proxy(fake_hub, tmp_path)
    try:
        assert await _get(proxy, "acme/clean", "model.safetensors") == "ok"
    finally:
        await runner.cleanup()
    fake_hub.reset_requests()
    offline, runner = await start_proxy(
        proxy_settings(fake_hub, tmp_path / "data", offline=True, **{"policy.max_risk": "low"}),
        tmp_path / "offline-cache",
    )
    try:
        assert await _get(offline, "acme/clean", "model.safetensors") == "ok"  # released
        status, card = await _api(offline, "GET", "/repos/models/acme/clean/risk?revision=main")
        assert status == 200 and card["offline"] is True
        assert card["held_for"] == ["publisher traceability"]  # the account: unknown offline
    finally:
        await runner.cleanup()
    assert fake_hub.requests == []


def test_max_risk_unknown_value_is_refused_naming_key_value_and_choices(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[policy]\nmax_risk = "severe"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {}, {})
    assert caught.value.key == "policy.max_risk"
    assert caught.value.message == (
        f'{config}: key "policy.max_risk" is "severe"; expected one of off, low, medium, high'
    )


async def test_max_risk_rescan_from_the_shell_judges_the_card_as_hubwarden_risk_does(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reviewer rescanning from the shell gets the server's judgement: held while the card is
    above max_risk (the card computed online, the publisher known), released once it is raised."""
    fake_hub.add_user("solo", created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=800))
    _repo(fake_hub, "solo/model")
    proxy, runner = await _proxy(fake_hub, tmp_path, **{"policy.max_risk": "low"})
    try:
        review = _review_id(await _get(proxy, "solo/model", "model.safetensors"))
        config = tmp_path / "shell.toml"
        base = f'upstream = "{fake_hub.url}"\ndata_dir = "{proxy.settings.data_dir}"\n'
        config.write_text(base + '[policy]\nmax_risk = "low"\n')
        argv = ["quarantine", "rescan", str(review), "-m", "again", "--config", str(config)]
        capsys.readouterr()
        assert await asyncio.to_thread(main, argv) == 0
        assert "quarantined" in capsys.readouterr().out
        _, item = await _api(proxy, "GET", f"/quarantine/{review}")
        assert "publisher traceability medium (a user account" in item["reason"]
        config.write_text(base + '[policy]\nmax_risk = "medium"\n')
        assert await asyncio.to_thread(main, argv) == 0
        assert "released" in capsys.readouterr().out
        assert await _get(proxy, "solo/model", "model.safetensors") == "ok"
    finally:
        await runner.cleanup()
