"""The review queue at scale (issue 12): filtered, paginated lists; bulk decisions; the audit log's
filters, stream and who-from-where; waivers that end and send what they let through back to
quarantine. Through the running server's API and CLI, with the real client downloading."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from huggingface_hub.errors import HfHubHTTPError
from sqlalchemy import update

from proxy.admin.identity import Role
from proxy.app import ENGINE
from proxy.cli import main
from proxy.hub.context import SERVICES
from proxy.store import db
from proxy.store.models import Waiver
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import RunningProxy

MODEL = "org/tiny-model"
OTHER = "org/other-model"
STRANGER = "elsewhere/model"
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."


def _unknown_pickle(name: str) -> bytes:
    """A pickle importing a module no allow-list knows: held for review, not malicious."""
    return f"cacme_tools\n{name}\n(tR.".encode()


async def _token(proxy: RunningProxy, role: Role, name: str) -> str:
    _, token = await proxy.app[SERVICES].identities.create(name, role, None, "test")
    return token


async def _api(
    proxy: RunningProxy, method: str, path: str, token: str | None, body: object = None
) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{proxy.url}/admin/api{path}", headers=headers, json=body) as r,
    ):
        return r.status, await r.json()


async def _hold(proxy: RunningProxy, repo: str, filename: str) -> int:
    with pytest.raises(HfHubHTTPError, match="held in quarantine") as caught:
        await proxy.download(repo, filename, cache_dir=proxy.cache_dir / repo)
    found = re.search(r"review (\d+)", str(caught.value))
    assert found is not None
    return int(found.group(1))


async def _cli(proxy: RunningProxy, *argv: str) -> int:
    return await asyncio.to_thread(main, [*argv, "--data-dir", str(proxy.settings.data_dir)])


@pytest.fixture
async def queue(proxy: RunningProxy, fake_hub: FakeHub) -> dict[str, int]:
    """Five held files in three repos of two organisations (path → review id), one rejected."""
    fake_hub.create_repo(MODEL, files={f"l{i}.pkl": _unknown_pickle(f"M{i}") for i in range(3)})
    fake_hub.create_repo(OTHER, files={"o.pkl": _unknown_pickle("O"), "evil.pkl": MALICIOUS_PICKLE})
    fake_hub.create_repo(STRANGER, files={"s.pkl": _unknown_pickle("S")})
    held = {f"{MODEL}:l{i}.pkl": await _hold(proxy, MODEL, f"l{i}.pkl") for i in range(3)}
    held[f"{OTHER}:o.pkl"] = await _hold(proxy, OTHER, "o.pkl")
    held[f"{STRANGER}:s.pkl"] = await _hold(proxy, STRANGER, "s.pkl")
    with pytest.raises(HfHubHTTPError, match=r"evil\.pkl \(the pickle imports os\.system"):
        await proxy.download(OTHER, "evil.pkl", cache_dir=proxy.cache_dir / "evil")
    return held


async def test_quarantine_list_pages_with_a_cursor_and_filters_by_repo_state_and_severity(
    proxy: RunningProxy, queue: dict[str, int]
) -> None:
    viewer = await _token(proxy, Role.VIEWER, "v")
    seen: list[int] = []
    cursor = ""
    for _ in range(10):
        status, page = await _api(proxy, "GET", f"/quarantine?limit=2{cursor}", viewer)
        assert status == 200 and isinstance(page, dict)
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert sorted(seen) == seen and len(seen) == len(set(seen)) == 6  # 5 held + 1 rejected

    status, page = await _api(proxy, "GET", "/quarantine?repo=org/&state=quarantined", viewer)
    assert status == 200 and isinstance(page, dict)
    assert {i["repo"] for i in page["items"]} == {MODEL, OTHER}
    assert sorted(i["id"] for i in page["items"]) == sorted(
        v for k, v in queue.items() if k.startswith("org/")
    )
    item = page["items"][0]
    assert item["format"] == "pickle" and item["worst_finding"]["severity"]
    assert item["revision"] == "main" and len(item["commit"]) == 40 and item["age_s"] >= 0

    status, page = await _api(proxy, "GET", "/quarantine?state=rejected", viewer)
    assert isinstance(page, dict) and [i["path"] for i in page["items"]] == ["evil.pkl"]
    assert page["items"][0]["worst_finding"]["severity"] == "critical"
    status, page = await _api(proxy, "GET", "/quarantine?severity=critical", viewer)
    assert isinstance(page, dict) and [i["path"] for i in page["items"]] == ["evil.pkl"]
    status, page = await _api(proxy, "GET", "/quarantine?since=1h&format=pickle", viewer)
    assert isinstance(page, dict) and len(page["items"]) == 6
    status, page = await _api(proxy, "GET", "/quarantine?since=2999-01-01", viewer)
    assert isinstance(page, dict) and page["items"] == []


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("severity=urgent", "severity"),
        ("state=released", "state"),
        ("since=yesterday", "since"),
        ("since=99999999999999d", "since"),
        ("since=0001-01-01T00:00%2B01:00", "since"),
        ("since=9999-12-31T23:59-01:00", "since"),
        ("repo=../etc", "repo"),
        ("cursor=-1", "cursor"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ],
)
async def test_quarantine_list_bad_filter_is_a_400_naming_it(
    proxy: RunningProxy, query: str, named: str
) -> None:
    viewer = await _token(proxy, Role.VIEWER, "v")
    status, body = await _api(proxy, "GET", f"/quarantine?{query}", viewer)
    assert status == 400 and isinstance(body, dict)
    assert named in body["detail"] and body["hint"], body


async def test_bulk_release_of_a_repo_serves_each_file_and_audits_each_decision(
    proxy: RunningProxy, queue: dict[str, int]
) -> None:
    reviewer = await _token(proxy, Role.REVIEWER, "alice")
    body = {"decision": "release", "comment": "internal tools", "filter": {"repo": MODEL}}
    status, result = await _api(proxy, "POST", "/quarantine/bulk", reviewer, body)
    assert status == 200 and isinstance(result, dict)
    assert sorted(result["decided"]) == sorted(v for k, v in queue.items() if k.startswith(MODEL))
    assert result["failed"] == [] and result["more"] is False
    for i in range(3):
        path = await proxy.download(MODEL, f"l{i}.pkl", cache_dir=proxy.cache_dir / "after")
        assert path.read_bytes() == _unknown_pickle(f"M{i}")
    with pytest.raises(HfHubHTTPError, match="held in quarantine"):  # another repo: untouched
        await proxy.download(OTHER, "o.pkl", cache_dir=proxy.cache_dir / "after")
    events = await proxy.app[SERVICES].repository.list_audit("review.released")
    assert len(events) == 3
    assert {(e.actor, e.details["comment"], e.details["role"]) for e in events} == {
        ("token:alice", "internal tools", "reviewer")
    }


async def test_bulk_refuses_a_viewer_an_empty_filter_and_never_releases_a_rejected_file(
    proxy: RunningProxy, queue: dict[str, int]
) -> None:
    viewer = await _token(proxy, Role.VIEWER, "v")
    reviewer = await _token(proxy, Role.REVIEWER, "r")
    body: dict[str, object] = {"decision": "release", "comment": "x", "filter": {"repo": OTHER}}
    assert (await _api(proxy, "POST", "/quarantine/bulk", viewer, body))[0] == 403
    for bad in (
        {"decision": "release", "comment": "x", "filter": {}},  # everything, by accident
        {"decision": "release", "comment": "x"},
        {"decision": "approve", "comment": "x", "filter": {"repo": OTHER}},
        {"decision": "release", "comment": "", "filter": {"repo": OTHER}},
        {"decision": "release", "comment": "x", "filter": {"repo": ["a", "b"]}},
        {"decision": "release", "comment": "x", "filter": {"severity": "huge"}},
    ):
        status, answer = await _api(proxy, "POST", "/quarantine/bulk", reviewer, bad)
        assert status == 400 and isinstance(answer, dict) and answer["hint"], (bad, answer)
    assert await proxy.app[SERVICES].repository.list_audit("review.released") == []
    status, result = await _api(proxy, "POST", "/quarantine/bulk", reviewer, body)
    assert status == 200 and isinstance(result, dict)
    assert result["decided"] == [queue[f"{OTHER}:o.pkl"]]  # evil.pkl is rejected: not in it
    with pytest.raises(HfHubHTTPError, match=r"evil\.pkl \(the pickle imports os\.system"):
        await proxy.download(OTHER, "evil.pkl", cache_dir=proxy.cache_dir / "again")


async def test_audit_filters_stream_and_record_role_and_remote(
    proxy: RunningProxy, queue: dict[str, int]
) -> None:
    alice = await _token(proxy, Role.REVIEWER, "alice")
    admin = await _token(proxy, Role.ADMIN, "boss")
    await _api(proxy, "POST", f"/quarantine/{queue[f'{MODEL}:l0.pkl']}/release", alice,
               {"comment": "fine"})  # fmt: skip
    await _api(proxy, "POST", f"/repos/models/{STRANGER}/block", admin, {"comment": "unknown"})
    status, events = await _api(proxy, "GET", "/audit?actor=token:alice", admin)
    assert status == 200 and isinstance(events, list)
    assert [e["action"] for e in events] == ["review.released"]
    details = events[0]["details"]
    assert (details["role"], details["remote"], details["comment"]) == ("reviewer", "127.0.0.1",
                                                                        "fine")  # fmt: skip
    assert (details["before"], details["after"]) == ("quarantined", "released")
    status, events = await _api(proxy, "GET", f"/audit?repo={MODEL}", admin)
    assert isinstance(events, list) and "review.released" in [e["action"] for e in events]
    status, events = await _api(proxy, "GET", f"/audit?repo={STRANGER}", admin)
    assert isinstance(events, list) and "repo.blocked" in [e["action"] for e in events]
    blocked = next(e for e in events if e["action"] == "repo.blocked")
    assert blocked["actor"] == "token:boss" and blocked["details"]["after"] == "blocked"
    status, events = await _api(proxy, "GET", "/audit?action=review.released&since=1h", admin)
    assert isinstance(events, list) and len(events) == 1
    assert (await _api(proxy, "GET", "/audit?since=tomorrow", admin))[0] == 400

    everything = await proxy.app[SERVICES].review.audit(limit=10_000)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{proxy.url}/admin/api/audit", headers={
            "Authorization": f"Bearer {admin}", "Accept": "application/x-ndjson"}) as response,
    ):  # fmt: skip
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        lines = (await response.text()).splitlines()
    assert [json.loads(line)["id"] for line in lines] == [e.pk for e in everything]
    assert len(lines) > 7  # held files, a rejection, a release, a block


async def test_bulk_and_filtered_list_from_the_cli(
    proxy: RunningProxy, queue: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert await _cli(proxy, "quarantine", "list", "--repo", "elsewhere/", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["id"] for item in listed] == [queue[f"{STRANGER}:s.pkl"]]
    assert await _cli(proxy, "quarantine", "list", "--severity", "critical") == 0
    table = capsys.readouterr().out
    assert "evil.pkl" in table and "l0.pkl" not in table
    assert await _cli(proxy, "quarantine", "bulk", "reject", "-m", "no") == 1  # no filter
    assert "--all" in capsys.readouterr().err
    assert await _cli(proxy, "quarantine", "bulk", "reject", "--repo", OTHER, "-m", "no") == 0
    assert f"1 file rejected: {queue[f'{OTHER}:o.pkl']}" in capsys.readouterr().out
    with pytest.raises(HfHubHTTPError, match="rejected by os:"):
        await proxy.download(OTHER, "o.pkl", cache_dir=proxy.cache_dir / "later")
    assert await _cli(proxy, "audit", "--action", "review.rejected", "--json") == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(events) == 1 and events[0]["actor"].startswith("os:")
    assert events[0]["details"]["role"] == "os-user" and events[0]["details"]["remote"] == "local"


async def test_audit_follow_prints_the_decision_made_meanwhile(
    proxy: RunningProxy, queue: dict[str, int]
) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "audit", "--follow", "--json", "--limit", "1",
        "--data-dir", str(proxy.settings.data_dir),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        first = await asyncio.wait_for(follower.stdout.readline(), 30)
        assert json.loads(first)["action"]  # the newest event, then it waits
        reviewer = await _token(proxy, Role.REVIEWER, "late")
        review_id = queue[f"{STRANGER}:s.pkl"]
        await _api(proxy, "POST", f"/quarantine/{review_id}/reject", reviewer, {"comment": "n"})
        for _ in range(20):  # the token's creation may come first
            line = await asyncio.wait_for(follower.stdout.readline(), 30)
            event = json.loads(line)
            if event["action"] == "review.rejected":
                break
        assert event["actor"] == "token:late" and event["blob_pk"] == review_id
    finally:
        follower.terminate()
        await follower.wait()


async def _end_waiver(proxy: RunningProxy, waiver_id: int) -> None:
    """Move a waiver's expiry into the past (as time would)."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    async with db.session_maker(proxy.app[ENGINE])() as session:
        await session.execute(update(Waiver).where(Waiver.id == waiver_id).values(expires_at=past))
        await session.commit()


async def test_expired_waiver_sends_the_files_it_let_through_back_to_quarantine(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    files = {"a.pkl": _unknown_pickle("A"), "b.pkl": _unknown_pickle("B")}
    fake_hub.create_repo(MODEL, files=files)
    review_id = await _hold(proxy, MODEL, "a.pkl")
    reviewer = await _token(proxy, Role.REVIEWER, "r")
    release = {"comment": "ours", "scope": "repo", "expires_in_days": 30}
    status, answer = await _api(
        proxy, "POST", f"/quarantine/{review_id}/release", reviewer, release
    )
    assert status == 200 and isinstance(answer, dict)
    waived = await proxy.download(MODEL, "b.pkl", cache_dir=proxy.cache_dir / "1")
    assert waived.read_bytes() == files["b.pkl"]  # let through by the waiver
    status, listed = await _api(proxy, "GET", "/waivers?status=active", reviewer)
    assert isinstance(listed, list) and [w["id"] for w in listed] == [answer["waiver"]]

    await _end_waiver(proxy, answer["waiver"])
    assert await proxy.app[SERVICES].review.sweep_waivers() == 1  # what the server does each minute
    with pytest.raises(HfHubHTTPError, match=r"held in quarantine: b\.pkl"):
        await proxy.download(MODEL, "b.pkl", cache_dir=proxy.cache_dir / "2")
    # The file a reviewer looked at stays released; the sweep is done once.
    a = await proxy.download(MODEL, "a.pkl", cache_dir=proxy.cache_dir / "3")
    assert a.read_bytes() == files["a.pkl"]
    assert await proxy.app[SERVICES].review.sweep_waivers() == 0
    status, listed = await _api(proxy, "GET", "/waivers?status=expired", reviewer)
    assert isinstance(listed, list) and [w["status"] for w in listed] == ["expired"]
    events = await proxy.app[SERVICES].repository.list_audit("blob.quarantined")
    assert any("expired" in str(e.details.get("reason")) for e in events)
    assert (await _api(proxy, "GET", "/waivers?status=soon", reviewer))[0] == 400


async def test_revoked_waiver_holds_again_what_no_other_waiver_covers(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo(
        MODEL, files={"a.pkl": _unknown_pickle("A"), "b.pkl": _unknown_pickle("B")}
    )
    fake_hub.create_repo(
        OTHER, files={"y.pkl": _unknown_pickle("Y"), "x.pkl": _unknown_pickle("X")}
    )
    reviewer = await _token(proxy, Role.REVIEWER, "r")
    a = await _hold(proxy, MODEL, "a.pkl")
    _, repo_waiver = await _api(proxy, "POST", f"/quarantine/{a}/release", reviewer,
                                {"comment": "our repo", "scope": "repo"})  # fmt: skip
    y = await _hold(proxy, OTHER, "y.pkl")
    _, org_waiver = await _api(proxy, "POST", f"/quarantine/{y}/release", reviewer,
                               {"comment": "our org", "scope": "org"})  # fmt: skip
    assert isinstance(repo_waiver, dict) and isinstance(org_waiver, dict)
    await proxy.download(MODEL, "b.pkl", cache_dir=proxy.cache_dir / "1")  # waived
    await proxy.download(OTHER, "x.pkl", cache_dir=proxy.cache_dir / "1")  # waived by the org's

    status, _ = await _api(proxy, "DELETE", f"/waivers/{org_waiver['waiver']}", reviewer,
                           {"comment": "too wide"})  # fmt: skip
    assert status == 200
    with pytest.raises(HfHubHTTPError, match=r"held in quarantine: x\.pkl"):
        await proxy.download(OTHER, "x.pkl", cache_dir=proxy.cache_dir / "2")
    b = await proxy.download(MODEL, "b.pkl", cache_dir=proxy.cache_dir / "2")  # the repo's waiver
    assert b.read_bytes() == _unknown_pickle("B")
    for released in ("a.pkl", "y.pkl"):  # looked at by a person: stay released
        repo = MODEL if released == "a.pkl" else OTHER
        await proxy.download(repo, released, cache_dir=proxy.cache_dir / "3")
    events = await proxy.app[SERVICES].repository.list_audit("waiver.revoked")
    assert [(e.details["before"], e.details["after"]) for e in events] == [("active", "revoked")]
    again = await _api(proxy, "DELETE", f"/waivers/{org_waiver['waiver']}", reviewer,
                       {"comment": "again"})  # fmt: skip
    assert again[0] == 404


@pytest.mark.parametrize(
    "argv", [("quarantine", "list"), ("audit",), ("waivers", "list"), ("doctor",)]
)
def test_review_commands_with_a_missing_data_dir_exit_1_and_create_nothing(
    tmp_path: Path, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "not-here"
    assert main([*argv, "--data-dir", str(missing)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()


async def test_rescan_comment_is_audited_under_the_repo(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo(MODEL, files={"a.pkl": _unknown_pickle("A")})
    review_id = await _hold(proxy, MODEL, "a.pkl")
    reviewer = await _token(proxy, Role.REVIEWER, "r")
    status, answer = await _api(proxy, "POST", f"/quarantine/{review_id}/rescan", reviewer,
                                {"comment": "new scanners"})  # fmt: skip
    assert status == 200 and isinstance(answer, dict) and answer["state"] == "quarantined"
    status, events = await _api(proxy, "GET", f"/audit?repo={MODEL}&action=review.rescanned",
                                reviewer)  # fmt: skip
    assert isinstance(events, list) and len(events) == 1
    assert events[0]["details"]["comment"] == "new scanners"


async def test_org_waiver_on_a_repo_without_an_organisation_is_refused(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo("solo", files={"a.pkl": _unknown_pickle("A")})
    review_id = await _hold(proxy, "solo", "a.pkl")
    reviewer = await _token(proxy, Role.REVIEWER, "r")
    status, answer = await _api(proxy, "POST", f"/quarantine/{review_id}/release", reviewer,
                                {"comment": "ok", "scope": "org"})  # fmt: skip
    assert status == 409 and isinstance(answer, dict), answer
    assert "belongs to no organisation" in answer["detail"]
    status, listed = await _api(proxy, "GET", "/waivers", reviewer)
    assert listed == []
    with pytest.raises(HfHubHTTPError, match="held in quarantine"):  # still held
        await proxy.download("solo", "a.pkl", cache_dir=proxy.cache_dir / "again")
