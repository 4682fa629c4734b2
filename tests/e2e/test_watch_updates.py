"""What the upstream watch surfaces (issue 11, items 3 and 5), on a running Hubwarden in front of
the fake Hub: when it sees a new commit it reads the Hub's own scan of the changed files and
records it beside ours (a finding of scanner "hub" on each blob prefetched, the verdict beside
each changed file), never deciding by it; the updates page and API list the watched refs, last
check, new commits, what changed (our state and the Hub's), prefetch and the new head's
signature; `hubwarden watch status --json` gives exactly the API's JSON. A Hub whose scan
endpoint fails or answers nonsense changes nothing but what is shown."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save

from proxy.admin.identity import Role
from proxy.cli import main
from proxy.errors import UpstreamUnavailable
from proxy.hub.context import SERVICES
from proxy.upstream_facts import UpstreamFacts
from tests.admin.test_pages import Answer, browserless
from tests.e2e.test_watch import (
    MALICIOUS_PICKLE,
    MODEL,
    _api,
    _eventually,
    _repo,
    _settings,
    watching,
)
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import RunningProxy, start_proxy

watching_fixture = watching  # the fixture, shared
NEW_WEIGHTS = save({"w": np.full((4, 4), 3.0, dtype=np.float32)})


async def _update(proxy: RunningProxy, *, files: bool = True) -> dict[str, Any]:
    """The watch's update of MODEL once prefetched and (`files`) its changed files carry the
    Hub's verdict."""

    async def ready() -> Any:
        found = [u for u in await _api(proxy, "/updates") if u["repo"] == MODEL]
        if not found or not found[0]["prefetched"]:
            return None
        if files and not any("hub" in c for c in found[0]["changed"]):
            return None
        return found[0]

    found: dict[str, Any] = await _eventually(ready, "the update with the Hub's scan")
    return found


async def _page(proxy: RunningProxy, path: str) -> Answer:
    name = f"updates-{secrets.token_hex(4)}"
    _, token = await proxy.app[SERVICES].identities.create(name, Role.VIEWER, None, "t")
    async with browserless(proxy) as client:
        assert (await client.sign_in(token)).status == 303
        return await client.get(path)


async def test_watch_records_the_hubs_scan_of_a_new_commit_beside_ours(
    watching: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = _repo(fake_hub)
    await watching.download(MODEL, "config.json")
    repo.file_security["extra.safetensors"] = {
        "status": "unsafe", "avScan": {"virusFound": True, "virusNames": ["Evil.Test"]},
    }  # fmt: skip
    repo.file_security["evil.pkl"] = {"status": "safe"}
    repo.security_repo_status = {"scansDone": True, "filesWithIssues": ["extra.safetensors"]}
    head = repo.commit({"extra.safetensors": NEW_WEIGHTS, "evil.pkl": MALICIOUS_PICKLE})
    update = await _update(watching)
    assert update["upstream_head"] == head and update["new_commits"] in (1, None)
    changed = {c["path"]: c for c in update["changed"]}
    flagged = changed["extra.safetensors"]
    assert (flagged["hub"], flagged["state"]) == ("unsafe", "released")  # ours decides
    assert flagged["hub_detail"] == "antivirus: Evil.Test"
    assert flagged["disagreement"].startswith("extra.safetensors: the Hub reports it unsafe")
    safe = changed["evil.pkl"]
    assert (safe["hub"], safe["state"]) == ("safe", "rejected")
    assert safe["disagreement"] == (
        "evil.pkl: the Hub reports it safe; this mirror holds it (rejected)"
    )
    repository = watching.app[SERVICES].repository
    blob = await repository.get_blob(repo.file("extra.safetensors").sha256)
    assert blob is not None and blob.state.value == "released"
    hub = [f for f in await repository.list_findings(blob.pk) if f.scanner == "hub"]
    assert [(f.code, f.outcome.value, f.details["commit"]) for f in hub] == [
        ("HUB_UNSAFE", "clean", head)
    ]
    page = await _page(watching, "/admin/updates")
    assert page.status == 200
    assert "Hub: unsafe" in page.shown and "the Hub reports it unsafe" in page.shown
    assert "1 released" in page.shown and "1 held" in page.shown


async def test_watch_updates_page_lists_refs_and_is_linked_from_the_navigation(
    watching: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = _repo(fake_hub)
    await watching.download(MODEL, "config.json")
    repo.commit({"README.md": b"# v2\n"})
    await _update(watching, files=False)
    summary = await _page(watching, "/admin/")
    assert '<a href="/admin/updates"' in summary.text
    page = await _page(watching, "/admin/updates")
    assert page.status == 200 and MODEL in page.shown and "update available" in page.shown
    assert "every 0.3 s (prefetch on)" in page.shown and "README.md" in page.shown
    assert re.search(r'<span class="badge sig-none">unsigned</span>', page.text)
    every = await _page(watching, "/admin/updates?all=true")
    assert every.status == 200 and MODEL in every.shown
    bad = await _page(watching, "/admin/updates?all=maybe")
    assert bad.status == 400


async def test_watch_status_json_is_the_apis_json(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(fake_hub)
    other = fake_hub.create_repo("org/quiet", files={"config.json": b"{}"})
    running, runner = await start_proxy(
        _settings(fake_hub, tmp_path, **{"watch.prefetch": True}), tmp_path / "c"
    )
    try:
        await running.download(MODEL, "config.json")
        await running.download("org/quiet", "config.json")
        repo.commit({"model.safetensors": NEW_WEIGHTS})
        await _update(running, files=False)
    finally:
        await runner.cleanup()
    # The same data directory, the watch off: what the API says cannot move under the CLI.
    still, runner = await start_proxy(
        _settings(fake_hub, tmp_path, **{"watch.interval_s": 0}), tmp_path / "c2"
    )
    config = tmp_path / "cli.toml"
    config.write_text(f'upstream = "{fake_hub.url}"\ndata_dir = "{tmp_path / "data"}"\n')
    try:
        changed_api, every_api = (
            await _api(still, "/updates"),
            await _api(still, "/updates?all=true"),
        )
    finally:
        await runner.cleanup()
    argv = ["watch", "status", "--json", "--config", str(config)]
    assert await asyncio.to_thread(main, argv) == 0
    every_cli = json.loads(capsys.readouterr().out)
    assert await asyncio.to_thread(main, [*argv, "--changed"]) == 0
    changed_cli = json.loads(capsys.readouterr().out)
    assert every_cli == every_api and changed_cli == changed_api
    assert {u["repo"] for u in every_api} == {MODEL, "org/quiet"}
    assert [u["repo"] for u in changed_api] == [MODEL]
    assert changed_api[0]["changed"][0]["path"] == "model.safetensors"
    assert changed_api[0]["changed"][0]["state"] == "released"
    assert other.head() in {u["upstream_head"] for u in every_api}
    assert await asyncio.to_thread(main, ["watch", "status", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "model.safetensors" in table and "ours:" in table  # the table folds its cells


async def test_watch_goes_on_when_the_hubs_scan_cannot_be_read(
    watching: RunningProxy, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*args: object) -> None:
        raise UpstreamUnavailable("the upstream Hub answered 500")

    monkeypatch.setattr(UpstreamFacts, "hub_security", down)
    repo = _repo(fake_hub)
    await watching.download(MODEL, "config.json")
    head = repo.commit({"README.md": b"# v2\n"})
    update = await _update(watching, files=False)
    assert update["upstream_head"] == head and update["status"] == "update available"
    assert update["changed"] == [
        {"path": "README.md", "change": "added", "state": "released", "disagreement": ""}
    ]


async def test_watch_records_a_hostile_hub_answer_as_plain_text(
    watching: RunningProxy, fake_hub: FakeHub
) -> None:
    repo = _repo(fake_hub)
    await watching.download(MODEL, "config.json")
    repo.file_security["notes.txt"] = {
        "status": ["not", "a", "string"],
        "avScan": {"virusFound": True, "virusNames": ["<script>alert(1)</script>"] * 50},
        "pickleImportScan": {"highestSafetyLevel": "x" * 5000},
    }  # fmt: skip
    repo.commit({"notes.txt": b"plain text\n"})
    update = await _update(watching)
    (notes,) = [c for c in update["changed"] if c["path"] == "notes.txt"]
    assert notes["hub"] == "unknown" and len(notes["hub_detail"]) <= 200
    page = await _page(watching, "/admin/updates")
    assert "<script>alert(1)" not in page.text  # escaped wherever it is shown
