"""The admin REST API on a running Hubwarden: authentication on every route, roles, decisions
that take effect for the real client, the OpenAPI document matching the routes."""

from __future__ import annotations

import datetime as dt
import re

import aiohttp
import pytest
from huggingface_hub.errors import HfHubHTTPError

from proxy.admin.api import ROUTES, openapi_document
from proxy.admin.identity import Action, Role
from proxy.hub.context import SERVICES
from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model
from tests.proxyplugin import RunningProxy

MODEL = "org/tiny-model"
UNKNOWN_PICKLE = b"cacme_tools\nLabels\n(tR."


def _concrete(path: str) -> str:
    """A route path with example values in its placeholders."""
    values = {"id": "1", "type": "models", "namespace": "org", "name": "tiny-model", "ref": "main"}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


async def _token(proxy: RunningProxy, role: Role, name: str | None = None) -> str:
    identities = proxy.app[SERVICES].identities
    _, token = await identities.create(name or f"t-{role.value}", role, None, "test")
    return token


async def _call(
    proxy: RunningProxy, method: str, path: str, token: str | None, body: object = None
) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, f"{proxy.url}/admin/api{path}", headers=headers, json=body
        ) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
async def test_admin_api_every_route_refuses_a_missing_unknown_revoked_or_expired_token(
    proxy: RunningProxy, route: object
) -> None:
    method, path = route.method, _concrete(route.path)  # type: ignore[attr-defined]
    identities = proxy.app[SERVICES].identities
    revoked = await _token(proxy, Role.ADMIN, "gone")
    await identities.revoke("gone", "test")
    _, expired = await identities.create("old", Role.ADMIN, dt.timedelta(microseconds=1), "t")
    for token in (None, "hwa_not-a-real-token", revoked, expired):
        status, body = await _call(proxy, method, path, token, {"comment": "x"})
        assert status == 401, (token, body)
        assert isinstance(body, dict) and body["error"] == "unauthenticated" and body["hint"]


@pytest.mark.parametrize(
    "route",
    [r for r in ROUTES if r.action is not Action.VIEW],
    ids=lambda r: f"{r.method} {r.path}",
)
async def test_admin_api_every_changing_route_refuses_a_viewer(
    proxy: RunningProxy, route: object
) -> None:
    method, path = route.method, _concrete(route.path)  # type: ignore[attr-defined]
    viewer = await _token(proxy, Role.VIEWER, "v")
    sent = {"comment": "x", "decision": "reject", "filter": {"repo": "org/x"}}
    status, body = await _call(proxy, method, path, viewer, sent)
    assert status == 403, body
    assert isinstance(body, dict) and body["error"] == "forbidden"
    assert await proxy.app[SERVICES].repository.list_audit("review.rejected") == []


async def test_admin_api_revoked_and_expired_tokens_are_refused(proxy: RunningProxy) -> None:
    identities = proxy.app[SERVICES].identities
    revoked = await _token(proxy, Role.ADMIN, "gone")
    await identities.revoke("gone", "test")
    _, expired = await identities.create("old", Role.ADMIN, dt.timedelta(microseconds=1), "t")
    for token in (revoked, expired):
        status, _ = await _call(proxy, "GET", "/quarantine", token)
        assert status == 401


async def test_admin_api_viewer_may_read_but_not_decide(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo(MODEL, files={"labels.pkl": UNKNOWN_PICKLE})
    with pytest.raises(HfHubHTTPError):
        await proxy.download(MODEL, "labels.pkl")
    viewer = await _token(proxy, Role.VIEWER)
    status, listed = await _call(proxy, "GET", "/quarantine", viewer)
    assert status == 200 and isinstance(listed, dict) and len(listed["items"]) == 1
    review_id = listed["items"][0]["id"]
    status, body = await _call(
        proxy, "POST", f"/quarantine/{review_id}/release", viewer, {"comment": "fine"}
    )
    assert status == 403 and isinstance(body, dict) and body["error"] == "forbidden"


async def test_admin_api_reviewer_release_serves_the_client_and_is_audited(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    fake_hub.create_repo(MODEL, files={"labels.pkl": UNKNOWN_PICKLE})
    with pytest.raises(HfHubHTTPError, match=r"review (\d+)") as caught:
        await proxy.download(MODEL, "labels.pkl")
    found = re.search(r"review (\d+)", str(caught.value))
    assert found is not None
    reviewer = await _token(proxy, Role.REVIEWER, "alice")
    status, _ = await _call(proxy, "POST", f"/quarantine/{found.group(1)}/release", reviewer, {})
    assert status == 400  # a decision needs a comment
    status, _ = await _call(
        proxy, "POST", f"/quarantine/{found.group(1)}/release", reviewer, {"comment": "ours"}
    )
    assert status == 200
    path = await proxy.download(MODEL, "labels.pkl")
    assert path.read_bytes() == UNKNOWN_PICKLE
    events = await proxy.app[SERVICES].repository.list_audit("review.released")
    assert [(e.actor, e.details["comment"]) for e in events] == [("token:alice", "ours")]


async def test_admin_api_reviewer_may_not_block_but_admin_may(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    make_tiny_model(fake_hub, tiny_model_files)
    path = "/repos/models/org/tiny-model/block"
    reviewer = await _token(proxy, Role.REVIEWER)
    assert (await _call(proxy, "POST", path, reviewer, {"comment": "x"}))[0] == 403
    admin = await _token(proxy, Role.ADMIN)
    assert (await _call(proxy, "POST", path, admin, {"comment": "incident"}))[0] == 200
    with pytest.raises(HfHubHTTPError, match=r"blocked: org/tiny-model \(admin: incident\)"):
        await proxy.download(MODEL, "config.json")


async def test_admin_api_openapi_lists_exactly_the_routes_and_each_answers(
    proxy: RunningProxy,
) -> None:
    status, document = await _call(proxy, "GET", "/openapi.json", None)
    assert status == 200 and document == openapi_document()
    assert isinstance(document, dict) and document["openapi"] == "3.1.0"
    listed = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert listed == {(r.method, f"/admin/api{r.path}") for r in ROUTES}
    admin = await _token(proxy, Role.ADMIN)
    for method, path in sorted(listed):
        status, body = await _call(
            proxy, method, _concrete(path.removeprefix("/admin/api")), admin, {"comment": "c"}
        )
        assert status < 500, (method, path, body)
        assert status in (200, 400, 404, 409), (method, path, body)


async def test_admin_api_unknown_route_is_a_json_404(proxy: RunningProxy) -> None:
    admin = await _token(proxy, Role.ADMIN)
    status, body = await _call(proxy, "GET", "/nothing/here", admin)
    assert status == 404 and isinstance(body, dict) and body["error"] == "not_found"


async def test_admin_api_summary_counts_a_held_file(proxy: RunningProxy, fake_hub: FakeHub) -> None:
    fake_hub.create_repo(MODEL, files={"labels.pkl": UNKNOWN_PICKLE})
    with pytest.raises(HfHubHTTPError):
        await proxy.download(MODEL, "labels.pkl")
    viewer = await _token(proxy, Role.VIEWER)
    status, body = await _call(proxy, "GET", "/summary", viewer)
    assert status == 200 and isinstance(body, dict)
    assert (body["quarantined"], body["rejected"], body["blocked"]) == (1, 0, 0)
    status, pins = await _call(proxy, "GET", "/pins?repo=org/tiny-model", viewer)
    assert status == 200 and pins == []
    status, _ = await _call(proxy, "GET", "/pins?repo=bad%20id", viewer)
    assert status == 400
