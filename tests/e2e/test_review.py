"""The admins' review from the server's shell (`hubwarden quarantine|repos|changes`), with the
real client on the other side: decisions take effect on the next download and are audited."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import huggingface_hub as hf
import numpy as np
import pytest
from huggingface_hub.errors import HfHubHTTPError
from safetensors.numpy import save

from proxy.cli import main
from proxy.hub.context import SERVICES
from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model
from tests.proxyplugin import RunningProxy

MODEL = "org/tiny-model"
# A pickle importing a module no allow-list knows: held for review, not malicious.
UNKNOWN_PICKLE = b"cacme_tools\nLabels\n(tR."
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."


async def _cli(proxy: RunningProxy, *argv: str) -> int:
    """`hubwarden ARGV --data-dir <the proxy's>`, in-process (it runs its own event loop)."""
    args = [*argv, "--data-dir", str(proxy.settings.data_dir)]
    return await asyncio.to_thread(main, args)


async def _held_id(proxy: RunningProxy, filename: str) -> int:
    with pytest.raises(HfHubHTTPError, match="held in quarantine") as caught:
        await proxy.download(MODEL, filename)
    found = re.search(r"review (\d+)", str(caught.value))
    assert found is not None
    return int(found.group(1))


async def test_review_release_of_held_pickle_serves_the_next_download(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo(MODEL, files={"labels.pkl": UNKNOWN_PICKLE})
    review_id = await _held_id(proxy, "labels.pkl")
    assert await _cli(proxy, "quarantine", "release", str(review_id), "-m", "internal tool") == 0
    path = await proxy.download(MODEL, "labels.pkl")
    assert path.read_bytes() == UNKNOWN_PICKLE
    events = await proxy.app[SERVICES].repository.list_audit("review.released")
    assert [(e.details["comment"], e.actor.startswith("os:")) for e in events] == [
        ("internal tool", True)
    ]


async def test_review_reject_keeps_403_and_a_rejected_file_cannot_be_released(
    proxy: RunningProxy, fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_hub.create_repo(MODEL, files={"labels.pkl": UNKNOWN_PICKLE})
    review_id = await _held_id(proxy, "labels.pkl")
    assert await _cli(proxy, "quarantine", "reject", str(review_id), "-m", "not ours") == 0
    with pytest.raises(HfHubHTTPError, match="rejected by os:"):
        await proxy.download(MODEL, "labels.pkl")
    assert await _cli(proxy, "quarantine", "release", str(review_id), "-m", "oops") == 1
    assert "rejected files stay rejected" in capsys.readouterr().err


async def test_review_malicious_pickle_is_rejected_and_cannot_be_released(
    proxy: RunningProxy, fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_hub.create_repo(MODEL, files={"evil.pkl": MALICIOUS_PICKLE})
    review_id = await _held_id(proxy, "evil.pkl")
    assert await _cli(proxy, "quarantine", "release", str(review_id), "-m", "trust me") == 1
    assert "not quarantined" in capsys.readouterr().err


async def test_review_list_and_show_as_json_name_the_held_file(
    proxy: RunningProxy, fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_hub.create_repo(MODEL, files={"labels.pkl": UNKNOWN_PICKLE})
    review_id = await _held_id(proxy, "labels.pkl")
    capsys.readouterr()
    assert await _cli(proxy, "quarantine", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(i["id"], i["path"], i["state"]) for i in listed] == [
        (review_id, "labels.pkl", "quarantined")
    ]
    assert await _cli(proxy, "quarantine", "show", str(review_id), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert {f["code"] for f in shown["findings"]} >= {"PICKLE_GLOBAL_UNKNOWN"}


async def test_review_approved_pinned_change_moves_main_for_every_route(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await proxy.download(MODEL, "model.safetensors")
    retrained = save({"weight": np.ones((4, 4), dtype=np.float32)})
    new = repo.commit({"model.safetensors": retrained})
    api = hf.HfApi(endpoint=proxy.url, token=False)
    assert (await proxy.call(api.model_info, MODEL)).sha != new  # held: the approved commit
    assert await _cli(proxy, "changes", "approve", MODEL, "main", "-m", "retrained") == 0
    await asyncio.sleep(1.1)  # the server's caches of pins last at most a second
    assert (await proxy.call(api.model_info, MODEL)).sha == new
    refs = await proxy.call(api.list_repo_refs, MODEL)
    assert [b.target_commit for b in refs.branches if b.name == "main"] == [new]
    path = await proxy.download(MODEL, "model.safetensors", force_download=True)
    assert path.read_bytes() == retrained


async def test_review_unblocked_repo_serves_again(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    assert await _cli(proxy, "repos", "block", MODEL, "-m", "incident 42") == 0
    with pytest.raises(HfHubHTTPError, match=r"blocked: org/tiny-model \(admin: incident 42\)"):
        await proxy.download(MODEL, "config.json")
    assert await _cli(proxy, "repos", "unblock", MODEL, "-m", "resolved") == 0
    await asyncio.sleep(1.1)  # blocks are cached for at most a second by the server
    path = await proxy.download(MODEL, "config.json")
    assert path.read_bytes() == tiny_model_files["config.json"]
    actions = [e.action for e in await proxy.app[SERVICES].repository.list_audit()]
    assert {"repo.blocked", "repo.unblocked"} <= set(actions)


def test_review_cli_requires_a_comment(tmp_path: Path) -> None:
    assert main(["quarantine", "release", "1", "--data-dir", str(tmp_path)]) == 2


async def test_held_page_tells_a_refused_user_why_and_takes_a_request(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo(MODEL, files={"labels.pkl": UNKNOWN_PICKLE})
    with pytest.raises(HfHubHTTPError, match=r"see /held/\d+") as caught:
        await proxy.download(MODEL, "labels.pkl")
    found = re.search(r"see (/held/\d+)", str(caught.value))
    assert found is not None
    link = proxy.url + found.group(1)
    async with aiohttp.ClientSession() as session:
        async with session.get(link) as page:
            html = await page.text()
            assert page.status == 200 and "labels.pkl" in html and "PICKLE_GLOBAL" in html
        form = {"justification": "we need <our> labels"}
        async with session.post(link + "/requests", data=form, allow_redirects=False) as sent:
            assert sent.status == 303 and sent.headers["Location"] == found.group(1)
        async with session.get(link, headers={"Accept": "application/json"}) as as_json:
            view = await as_json.json()
    assert view["requests"] == 1 and view["state"] == "quarantined"
    review_id = found.group(1).rsplit("/", 1)[1]
    assert await _cli(proxy, "quarantine", "release", review_id, "-m", "granted for team A") == 0
    async with aiohttp.ClientSession() as session, session.get(link) as page:
        html = await page.text()
    assert "granted for team A" in html and "released" in html
    assert "&lt;our&gt;" not in html  # justifications are for reviewers, not shown publicly


async def test_held_page_never_names_a_clean_file_or_an_unknown_id(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    await proxy.download(MODEL, "config.json")
    async with aiohttp.ClientSession() as session:
        for review_id in ("1", "999", "abc"):
            async with session.get(f"{proxy.url}/held/{review_id}") as page:
                assert page.status in (400, 404)
                assert "config.json" not in await page.text()


async def test_held_page_of_a_private_repo_names_nothing(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    token = fake_hub.add_user("alice")
    fake_hub.create_repo(
        "org/secret-model", files={"labels.pkl": UNKNOWN_PICKLE}, private=True, readers=["alice"]
    )
    with pytest.raises(HfHubHTTPError, match=r"see /held/\d+") as caught:
        await proxy.download("org/secret-model", "labels.pkl", token=token)
    found = re.search(r"see (/held/\d+)", str(caught.value))
    assert found is not None
    async with aiohttp.ClientSession() as session, session.get(proxy.url + found.group(1)) as page:
        html = await page.text()
    assert page.status == 200
    assert "secret-model" not in html and "labels.pkl" not in html and "PICKLE" not in html


async def test_review_rescan_under_a_changed_policy_releases_the_file(
    proxy: RunningProxy, fake_hub: FakeHub, tmp_path: Path
) -> None:
    source = b"import torch\n\n\nclass TinyModel(torch.nn.Module):\n    pass\n"
    fake_hub.create_repo(MODEL, files={"modeling_tiny.py": source})
    review_id = await _held_id(proxy, "modeling_tiny.py")  # remote_code = "hold" by default
    config = tmp_path / "policy.toml"
    config.write_text('[policy]\nremote_code = "allow"\n')
    assert await _cli(proxy, "quarantine", "rescan", str(review_id), "-m", "x", "--config",
                      str(config)) == 0  # fmt: skip
    path = await proxy.download(MODEL, "modeling_tiny.py")
    assert path.read_bytes() == source
    events = await proxy.app[SERVICES].repository.list_audit("review.rescanned")
    assert [(e.details["before"], e.details["after"]) for e in events] == [
        ("quarantined", "released")
    ]


async def test_review_rescan_with_the_same_policy_keeps_the_file_held(
    proxy: RunningProxy, fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_hub.create_repo(MODEL, files={"labels.pkl": UNKNOWN_PICKLE})
    review_id = await _held_id(proxy, "labels.pkl")
    capsys.readouterr()
    assert await _cli(proxy, "quarantine", "rescan", str(review_id), "-m", "again") == 0
    assert "quarantined" in capsys.readouterr().out
    with pytest.raises(HfHubHTTPError, match="held in quarantine"):
        await proxy.download(MODEL, "labels.pkl")


async def test_review_release_with_repo_scope_waives_a_later_held_file_of_the_repo(
    proxy: RunningProxy, fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    other_pickle = b"cacme_tools\nOther\n(tR."
    fake_hub.create_repo(MODEL, files={"labels.pkl": UNKNOWN_PICKLE, "other.pkl": other_pickle})
    fake_hub.create_repo("org/neighbour", files={"labels.pkl": b"cacme_tools\nNeighbour\n(tR."})
    review_id = await _held_id(proxy, "labels.pkl")
    code = await _cli(proxy, "quarantine", "release", str(review_id), "-m", "our tools",
                      "--scope", "repo", "--expires", "30d")  # fmt: skip
    assert code == 0
    assert "covers repo model/org/tiny-model" in capsys.readouterr().out
    other = await proxy.download(MODEL, "other.pkl")  # held findings, released by the waiver
    assert other.read_bytes() == other_pickle
    with pytest.raises(HfHubHTTPError, match="held in quarantine"):
        await proxy.download("org/neighbour", "labels.pkl", cache_dir=proxy.cache_dir / "n")
    applied = await proxy.app[SERVICES].repository.list_audit("waiver.applied")
    assert [e.details["path"] for e in applied] == ["other.pkl"]


async def test_review_waiver_never_releases_a_malicious_file_and_ends_when_revoked(
    proxy: RunningProxy, fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {"labels.pkl": UNKNOWN_PICKLE, "evil.pkl": MALICIOUS_PICKLE,
             "later.pkl": b"cacme_tools\nLater\n(tR."}  # fmt: skip
    fake_hub.create_repo(MODEL, files=files)
    review_id = await _held_id(proxy, "labels.pkl")
    assert await _cli(proxy, "quarantine", "release", str(review_id), "-m", "ok", "--scope",
                      "org") == 0  # fmt: skip
    with pytest.raises(HfHubHTTPError, match=r"held in quarantine: evil\.pkl"):
        await proxy.download(MODEL, "evil.pkl")
    capsys.readouterr()
    assert await _cli(proxy, "waivers", "list", "--json") == 0
    (waiver,) = json.loads(capsys.readouterr().out)
    assert waiver["covers"] == "org model/org"
    assert await _cli(proxy, "waivers", "revoke", str(waiver["id"]), "-m", "too wide") == 0
    with pytest.raises(HfHubHTTPError, match=r"held in quarantine: later\.pkl"):
        await proxy.download(MODEL, "later.pkl")


async def test_review_pins_and_summary_show_what_was_approved_and_held(
    proxy: RunningProxy,
    fake_hub: FakeHub,
    tiny_model_files: dict[str, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await proxy.download(MODEL, "model.safetensors")
    capsys.readouterr()
    assert await _cli(proxy, "pins", "list", MODEL, "--json") == 0
    pins = json.loads(capsys.readouterr().out)
    assert [(p["path"], p["commit"]) for p in pins] == [("model.safetensors", repo.head())]
    summary = await proxy.app[SERVICES].review.summary()
    assert (summary.quarantined, summary.rejected, summary.blocked) == (0, 0, 0)


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2]", b'{"justification": 5}', b'{"justification": "  "}']
)
async def test_held_request_with_a_hostile_body_is_refused_without_a_500(
    proxy: RunningProxy, fake_hub: FakeHub, body: bytes
) -> None:
    fake_hub.create_repo(MODEL, files={"labels.pkl": UNKNOWN_PICKLE})
    review_id = await _held_id(proxy, "labels.pkl")
    headers = {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{proxy.url}/held/{review_id}/requests", data=body, headers=headers) as sent,
    ):
        assert sent.status in (400, 409)
