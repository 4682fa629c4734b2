"""The risk card (issue 11, item 2) of fake-Hub repos mirrored by a running Hubwarden: repos that
differ from a clean one in one dimension each get the expected rating and facts, through the
admin API, the CLI and the page; offline, the card comes from recorded facts without a single
upstream call; the Hub's own scan results are recorded beside ours and disagreements shown
(item 5)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import pickle
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from huggingface_hub import snapshot_download
from safetensors.numpy import save

from proxy.admin.identity import Role
from proxy.cli import main
from proxy.hub.context import SERVICES
from tests.admin.test_pages import browserless
from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Clock, Repo
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

NOW = dt.datetime.now(dt.UTC)
APACHE = b"                                 Apache License\n   Version 2.0, January 2004\n"
WEIGHTS = save({"w": np.ones((4, 4), dtype=np.float32)})
PICKLED_WEIGHTS = pickle.dumps({"w": [1.0, 2.0, 3.0]}, protocol=2)
SAFE = {"status": "safe", "avScan": {"virusFound": False}}


def _recent(hub: FakeHub) -> None:
    """Commits dated yesterday on: the clean repo's commit is fresh."""
    hub.state.clock = Clock(NOW - dt.timedelta(days=1))


def _files(**changes: bytes) -> dict[str, bytes]:
    files = {
        "config.json": b'{"model_type": "bert"}',
        "model.safetensors": WEIGHTS,
        "LICENSE": APACHE,
        "README.md": b"# m\n",
    }
    files.update(changes)
    return files


def _publishers(hub: FakeHub) -> None:
    hub.add_organization("acme", verified=True, created_at=NOW - dt.timedelta(days=1500))
    hub.add_user("newbie", created_at=NOW - dt.timedelta(days=5))


def _clean(hub: FakeHub, repo_id: str = "acme/clean", **options: Any) -> Repo:
    files = options.pop("files", _files())
    card = options.pop("card_data", {"license": "apache-2.0"})
    repo = hub.create_repo(repo_id, files=files, card_data=card, **options)
    repo.file_security.update(dict.fromkeys(files, SAFE))
    return repo


async def _mirror(proxy: RunningProxy, repo_id: str, token: str | bool = False) -> None:
    """The whole repo through the proxy (its tree listed, every file verified and scanned)."""
    await proxy.call(
        snapshot_download, repo_id, endpoint=proxy.url, cache_dir=proxy.cache_dir, token=token
    )


async def _api(proxy: RunningProxy, path: str) -> tuple[int, Any]:
    name = f"risk-{secrets.token_hex(4)}"
    _, token = await proxy.app[SERVICES].identities.create(name, Role.VIEWER, None, "t")
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{proxy.url}/admin/api{path}", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        return response.status, await response.json()


async def _card(proxy: RunningProxy, repo_id: str, query: str = "") -> dict[str, Any]:
    status, body = await _api(proxy, f"/repos/models/{repo_id}/risk{query}")
    assert status == 200, body
    assert isinstance(body, dict)
    card: dict[str, Any] = body
    return card


def _ratings(card: dict[str, Any]) -> dict[str, str]:
    return {d["name"]: d["rating"] for d in card["dimensions"]}


def _dimension(card: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [d for d in card["dimensions"] if d["name"] == name]
    assert len(found) == 1, name
    return found[0]


CLEAN_RATINGS = {
    "access control": "low",
    "licence": "low",
    "file-format safety": "low",
    "publisher traceability": "low",
    "version timeliness": "low",
}


async def test_risk_card_of_a_clean_repo_is_low_in_every_dimension(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    _recent(fake_hub)
    _publishers(fake_hub)
    repo = _clean(fake_hub)
    await _mirror(proxy, "acme/clean")
    card = await _card(proxy, "acme/clean")
    assert _ratings(card) == CLEAN_RATINGS and card["overall"] == "low"
    assert card["commit"] == repo.head() and card["offline"] is False
    licence = _dimension(card, "licence")["facts"]
    assert (licence["card"], licence["spdx"]) == ("apache-2.0", "Apache-2.0")
    assert licence["files"] == [{"path": "LICENSE", "class": "permissive", "spdx": "Apache-2.0"}]
    publisher = _dimension(card, "publisher traceability")["facts"]
    assert publisher["kind"] == "organisation" and publisher["verified"] is True
    assert publisher["account_age_days"] >= 1499
    formats = _dimension(card, "file-format safety")["facts"]
    assert formats["safe_format_files"] == ["model.safetensors"]
    assert formats["pickle_bearing_share_of_bytes"] == 0.0
    timeliness = _dimension(card, "version timeliness")["facts"]
    assert timeliness["upstream_head"] == repo.head() and timeliness["commits_not_mirrored"] == 0


async def _differs(proxy: RunningProxy, hub: FakeHub, repo_id: str, **options: Any) -> Repo:
    _recent(hub)
    _publishers(hub)
    return _clean(hub, repo_id, **options)


async def test_risk_card_gated_manual_repo_is_high_in_access_control_only(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    token = fake_hub.add_user("alice")
    await _differs(proxy, fake_hub, "acme/gated", gated="manual", granted=["alice"])
    await _mirror(proxy, "acme/gated", token)
    card = await _card(proxy, "acme/gated")
    assert _ratings(card) == {**CLEAN_RATINGS, "access control": "high"}
    assert _dimension(card, "access control")["facts"] == {"visibility": "public",
                                                          "gated": "manual"}  # fmt: skip


async def test_risk_card_non_commercial_licence_is_high_in_licence_only(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    files = _files()
    del files["LICENSE"]
    await _differs(proxy, fake_hub, "acme/nc", files=files, card_data={"license": "cc-by-nc-4.0"})
    await _mirror(proxy, "acme/nc")
    card = await _card(proxy, "acme/nc")
    assert _ratings(card) == {**CLEAN_RATINGS, "licence": "high"}
    facts = _dimension(card, "licence")["facts"]
    assert (facts["class"], facts["spdx"]) == ("custom-restricted", "CC-BY-NC-4.0")


async def test_risk_card_pickled_weights_are_high_in_file_format_safety_only(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    files = _files()
    del files["model.safetensors"]
    files["pytorch_model.bin"] = PICKLED_WEIGHTS
    await _differs(proxy, fake_hub, "acme/pickled", files=files)
    await _mirror(proxy, "acme/pickled")
    card = await _card(proxy, "acme/pickled")
    assert _ratings(card) == {**CLEAN_RATINGS, "file-format safety": "high"}
    facts = _dimension(card, "file-format safety")["facts"]
    assert facts["pickle_bearing_files"] == ["pytorch_model.bin"]
    assert facts["pickle_bearing_share_of_bytes"] == 1.0
    assert (
        "most model bytes are pickle-bearing" in _dimension(card, "file-format safety")["summary"]
    )


async def test_risk_card_young_user_account_is_high_in_publisher_traceability_only(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    await _differs(proxy, fake_hub, "newbie/model")
    await _mirror(proxy, "newbie/model")
    card = await _card(proxy, "newbie/model")
    assert _ratings(card) == {**CLEAN_RATINGS, "publisher traceability": "high"}
    facts = _dimension(card, "publisher traceability")["facts"]
    assert (facts["kind"], facts["account_age_days"]) == ("user", 5)


async def test_risk_card_upstream_commits_not_mirrored_make_timeliness_medium(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = await _differs(proxy, fake_hub, "acme/moving")
    await _mirror(proxy, "acme/moving")
    served = repo.head()
    repo.commit({"README.md": b"# v2\n"}, message="v2")
    card = await _card(proxy, "acme/moving")
    assert _ratings(card) == {**CLEAN_RATINGS, "version timeliness": "medium"}
    facts = _dimension(card, "version timeliness")["facts"]
    assert facts["served_commit"] == served and facts["upstream_head"] == repo.head()
    assert facts["commits_not_mirrored"] == 1


async def test_risk_card_from_the_cli_as_a_table_and_as_json(
    proxy: RunningProxy, fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _differs(proxy, fake_hub, "acme/gated", gated="auto")
    fake_hub.repo("acme/gated").granted.add("alice")
    token = fake_hub.add_user("alice")
    await _mirror(proxy, "acme/gated", token)
    config = tmp_path / "cli.toml"
    config.write_text(f'upstream = "{fake_hub.url}"\ndata_dir = "{tmp_path / "data"}"\n')
    argv = ["risk", "acme/gated", "--config", str(config)]
    assert await asyncio.to_thread(main, argv) == 0
    table = capsys.readouterr().out
    assert "overall medium" in table and "gated, automatic approval" in table
    assert "access control" in table and "publisher traceability" in table
    assert await asyncio.to_thread(main, [*argv, "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    assert _ratings(from_cli) == _ratings(await _card(proxy, "acme/gated"))
    assert _ratings(from_cli) == {**CLEAN_RATINGS, "access control": "medium"}
    assert await asyncio.to_thread(main, ["risk", "acme/never", "--config", str(config)]) == 1
    assert "was never mirrored here" in capsys.readouterr().err


async def test_risk_card_offline_comes_from_recorded_facts_without_upstream(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    _recent(fake_hub)
    _publishers(fake_hub)
    repo = _clean(fake_hub)
    running, runner = await start_proxy(proxy_settings(fake_hub, tmp_path / "d"), tmp_path / "c")
    try:
        await _mirror(running, "acme/clean")
    finally:
        await runner.cleanup()
    fake_hub.reset_requests()
    offline = proxy_settings(fake_hub, tmp_path / "d", offline=True)
    running, runner = await start_proxy(offline, tmp_path / "c2")
    try:
        card = await _card(running, "acme/clean")
    finally:
        await runner.cleanup()
    assert fake_hub.requests == []  # not one upstream call
    assert card["offline"] is True and card["commit"] == repo.head()
    assert _ratings(card) == {**CLEAN_RATINGS, "publisher traceability": "medium"}
    publisher = _dimension(card, "publisher traceability")
    assert publisher["facts"]["account"] == "unknown offline"
    assert _dimension(card, "version timeliness")["facts"]["upstream_head"] == "unknown offline"
    assert _dimension(card, "licence")["facts"]["spdx"] == "Apache-2.0"


async def test_risk_card_records_the_hubs_scan_beside_ours_and_shows_disagreements(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    _recent(fake_hub)
    _publishers(fake_hub)
    repo = _clean(fake_hub, "acme/flagged")
    repo.file_security["model.safetensors"] = {
        "status": "unsafe", "avScan": {"virusFound": False},
        "pickleImportScan": {"highestSafetyLevel": "dangerous", "imports": []},
    }  # fmt: skip
    repo.security_repo_status = {"scansDone": True, "filesWithIssues": ["model.safetensors"]}
    await _mirror(proxy, "acme/flagged")
    card = await _card(proxy, "acme/flagged")
    (text,) = card["hub_disagreements"]
    assert text.startswith("model.safetensors: the Hub reports it unsafe")
    assert "this mirror released it" in text
    formats = _dimension(card, "file-format safety")
    assert formats["rating"] == "medium" and formats["facts"]["hub_scans_done"] is True
    services = proxy.app[SERVICES]
    blob = await services.repository.get_blob(repo.file("model.safetensors").sha256)
    assert blob is not None and blob.state.value == "released"  # the Hub never decides
    findings = await services.repository.list_findings(blob.pk)
    hub = [f for f in findings if f.scanner == "hub"]
    assert [(f.code, f.outcome.value, f.severity.value) for f in hub] == [
        ("HUB_UNSAFE", "clean", "info")
    ]
    await _card(proxy, "acme/flagged")  # a second card records nothing twice
    assert len(await services.repository.list_findings(blob.pk)) == len(findings)


async def test_risk_card_page_shows_every_dimension(proxy: RunningProxy, fake_hub: FakeHub) -> None:
    _recent(fake_hub)
    _publishers(fake_hub)
    _clean(fake_hub)
    await _mirror(proxy, "acme/clean")
    _, token = await proxy.app[SERVICES].identities.create("page", Role.VIEWER, None, "t")
    async with browserless(proxy) as client:
        assert (await client.sign_in(token)).status == 303
        looked_up = await client.get("/admin/repos/risk?type=model&repo=acme/clean")
        assert looked_up.status == 303
        assert looked_up.location == "/admin/repos/models/acme/clean/risk?revision=main"
        page = await client.get(looked_up.location)
        assert page.status == 200
        for name in CLEAN_RATINGS:
            assert name in page.shown
        assert "Apache-2.0" in page.shown
        missing = await client.get("/admin/repos/models/acme/never/risk")
        assert missing.status == 404
