"""`Upstream` against the fake Hub on loopback: metadata, files, redirects, errors, bounds."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from proxy.errors import (
    AccessDenied,
    EntryNotFound,
    GatedRepo,
    RepoNotFound,
    RevisionNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)
from proxy.metadata import EntryType
from proxy.repos import RepoRef, RepoType
from proxy.upstream import Upstream, UpstreamConfig
from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Repo
from tests.fakehub.plugin import make_gated_repo, make_private_repo, make_wide_repo
from tests.fakehub.traffic import Origin

MODEL = RepoRef(RepoType.MODEL, "org/m")
WEIGHTS = b"\x00\x01weights" * 300  # LFS by suffix
CONFIG = b'{"model_type": "bert"}\n'  # a regular (git) file


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client


def _config(base_url: str, **overrides: object) -> UpstreamConfig:
    config = UpstreamConfig(
        base_url=base_url,
        service_token=None,
        connect_timeout_s=5.0,
        read_timeout_s=5.0,
        retries=0,
        max_json_bytes=1024 * 1024,
        max_tree_entries=10_000,
    )
    return dataclasses.replace(config, **overrides)  # type: ignore[arg-type]  # test overrides


@pytest.fixture
def upstream(fake_hub: FakeHub, session: aiohttp.ClientSession) -> Upstream:
    return Upstream(_config(fake_hub.url), session)


@pytest.fixture
def repo(fake_hub: FakeHub) -> Repo:
    return fake_hub.create_repo(
        "org/m", files={"model.safetensors": WEIGHTS, "config.json": CONFIG, "sub/a.txt": b"a"}
    )


def _upstream_with(
    fake_hub: FakeHub, session: aiohttp.ClientSession, **overrides: object
) -> Upstream:
    return Upstream(_config(fake_hub.url, **overrides), session)


# -- metadata -------------------------------------------------------------------------------------


async def test_upstream_repo_info_default_branch_is_its_head(
    upstream: Upstream, repo: Repo
) -> None:
    info = await upstream.repo_info(MODEL, None, None)
    assert (info.repo_id, info.sha, info.private, info.gated) == (
        "org/m",
        repo.head(),
        False,
        False,
    )


async def test_upstream_repo_info_drops_xet_keys(upstream: Upstream, repo: Repo) -> None:
    info = await upstream.repo_info(MODEL, None, None)
    assert "xetEnabled" not in info.raw
    assert "xet" not in str(info.raw).lower()


async def test_upstream_repo_info_special_ref_is_sent_encoded(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    pr = repo.open_pr({"extra.txt": b"x"})
    info = await upstream.repo_info(MODEL, pr, None)
    assert info.sha == repo.resolve(pr).sha
    assert fake_hub.count("/api/models/org/m/revision/refs/pr/1") == 1


async def test_upstream_list_tree_follows_every_page(upstream: Upstream, fake_hub: FakeHub) -> None:
    wide = make_wide_repo(fake_hub, repo_id="org/m")
    commit = wide.resolve("main")
    entries = await upstream.list_tree(MODEL, commit.sha, None)
    expected = set(commit.files) | {d for d in commit.directories if d}
    assert {e.path for e in entries} == expected
    assert len(entries) == len(expected)
    assert fake_hub.count("/api/models/org/m/tree/*") > 5


async def test_upstream_list_tree_types_lfs_and_folders(upstream: Upstream, repo: Repo) -> None:
    entries = {e.path: e for e in await upstream.list_tree(MODEL, repo.head(), None)}
    assert entries["model.safetensors"].etag == repo.file("model.safetensors").sha256
    assert entries["config.json"].etag == repo.file("config.json").sha1
    assert entries["sub"].entry_type is EntryType.DIRECTORY


async def test_upstream_list_tree_beyond_max_entries_is_rejected(
    fake_hub: FakeHub, session: aiohttp.ClientSession
) -> None:
    wide = make_wide_repo(fake_hub, repo_id="org/m")
    upstream = _upstream_with(fake_hub, session, max_tree_entries=10)
    with pytest.raises(UpstreamRejected, match="more than 10"):
        await upstream.list_tree(MODEL, wide.head(), None)


@pytest.mark.parametrize(
    "link",
    [
        "http://evil.example/api/models/org/m/tree/x?cursor=1",
        "//evil.example/api/models/org/m/tree/x",
        "{hub}@evil.example/api/models/org/m/tree/x",
        "https://{hub_host}/api/models/org/m/tree/x",
        "http://127.0.0.1:1/api/models/org/m/tree/x",
    ],
)
async def test_upstream_pagination_link_to_another_host_is_rejected(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub, link: str
) -> None:
    target = link.format(hub=fake_hub.url, hub_host=fake_hub.url.removeprefix("http://"))
    fake_hub.inject(
        "/api/models/org/m/tree/*",
        status=200,
        body=b"[]",
        headers={"Content-Type": "application/json", "Link": f'<{target}>; rel="next"'},
    )
    with pytest.raises(UpstreamRejected, match="another host"):
        await upstream.list_tree(MODEL, repo.head(), None)


async def test_upstream_paths_info_leaves_unknown_paths_out(upstream: Upstream, repo: Repo) -> None:
    entries = await upstream.paths_info(MODEL, repo.head(), ["config.json", "sub", "nope"], None)
    assert {(e.path, e.entry_type) for e in entries} == {
        ("config.json", EntryType.FILE),
        ("sub", EntryType.DIRECTORY),
    }


async def test_upstream_refs_lists_branches_and_prs(upstream: Upstream, repo: Repo) -> None:
    repo.open_pr({"x.txt": b"x"})
    body = await upstream.refs(MODEL, None, include_prs=True)
    assert isinstance(body, dict)
    assert body["branches"] == [
        {"name": "main", "ref": "refs/heads/main", "targetCommit": repo.head()}
    ]
    assert isinstance(body["pullRequests"], list)
    assert len(body["pullRequests"]) == 1


async def test_upstream_commits_page_cursors_walk_the_whole_history(
    upstream: Upstream, repo: Repo
) -> None:
    for n in range(5):
        repo.commit({f"f{n}.txt": b"%d" % n})
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await upstream.commits_page(MODEL, "main", cursor, None)
        seen += [c.commit_id for c in page.items]
        pages += 1
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == [c.sha for c in repo.history("main")]
    assert pages == 3
    assert page.total == len(seen)


async def test_upstream_commits_page_cursor_is_opaque(upstream: Upstream, repo: Repo) -> None:
    page = await upstream.commits_page(MODEL, "main", None, None)
    assert page.cursor is None  # two commits fit on one page of three
    for n in range(3):
        repo.commit({f"f{n}.txt": b"x"})
    page = await upstream.commits_page(MODEL, "main", None, None)
    assert page.cursor is not None
    assert "p=" not in page.cursor and "127.0.0.1" not in page.cursor


# -- file metadata and bytes ----------------------------------------------------------------------


async def test_upstream_file_metadata_lfs_sha256_comes_from_the_linked_etag(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    meta = await upstream.file_metadata(MODEL, repo.head(), "model.safetensors", None)
    blob = repo.file("model.safetensors")
    assert (meta.etag, meta.size, meta.is_lfs, meta.commit) == (
        blob.sha256,
        len(WEIGHTS),
        True,
        repo.head(),
    )
    assert fake_hub.count(origin=Origin.CDN) == 0  # the CDN's ETag (a Xet hash) is never read


async def test_upstream_file_metadata_regular_file_is_its_git_sha1(
    upstream: Upstream, repo: Repo
) -> None:
    meta = await upstream.file_metadata(MODEL, repo.head(), "config.json", None)
    assert (meta.etag, meta.size, meta.is_lfs) == (
        repo.file("config.json").sha1,
        len(CONFIG),
        False,
    )


async def test_upstream_open_file_lfs_follows_the_cdn_redirect_without_the_token(
    fake_hub: FakeHub, session: aiohttp.ClientSession
) -> None:
    token = fake_hub.add_user("alice")
    private = fake_hub.create_repo(
        "org/m", files={"model.safetensors": WEIGHTS}, private=True, readers=["alice"]
    )
    upstream = _upstream_with(fake_hub, session)
    async with upstream.open_file(MODEL, private.head(), "model.safetensors", token) as body:
        data = await body.read(1 << 30)
    assert (body.status, body.content_length, data) == (200, len(WEIGHTS), WEIGHTS)
    assert fake_hub.count(origin=Origin.CDN) == 1
    assert fake_hub.cdn_requests_with_auth() == []
    assert all(r.has_auth for r in fake_hub.requests if r.origin is Origin.HUB)


async def test_upstream_open_file_service_token_never_reaches_the_cdn(
    fake_hub: FakeHub, session: aiohttp.ClientSession
) -> None:
    token = fake_hub.add_user("svc")
    private = fake_hub.create_repo(
        "org/m", files={"model.safetensors": WEIGHTS}, private=True, readers=["svc"]
    )
    upstream = _upstream_with(fake_hub, session, service_token=token)
    head = private.head()
    async with upstream.open_file(MODEL, head, "model.safetensors", upstream.service_token) as body:
        assert await body.read(1 << 30) == WEIGHTS
    assert fake_hub.cdn_requests_with_auth() == []


async def test_upstream_open_file_range_at_the_cdn_location_skips_the_redirect(
    fake_hub: FakeHub, session: aiohttp.ClientSession
) -> None:
    token = fake_hub.add_user("alice")
    private = fake_hub.create_repo(
        "org/m", files={"model.safetensors": WEIGHTS}, private=True, readers=["alice"]
    )
    upstream = _upstream_with(fake_hub, session)
    head = private.head()
    async with upstream.open_file(MODEL, head, "model.safetensors", token, end=10) as first:
        assert await first.read(1 << 30) == WEIGHTS[:10]
    assert not first.location.on_origin  # the CDN: no token may go there
    async with upstream.open_file(
        MODEL, head, "model.safetensors", token, start=100, end=200, location=first.location
    ) as body:
        data = await body.read(1 << 30)
    assert (body.status, body.first_byte, body.total_size) == (206, 100, len(WEIGHTS))
    assert data == WEIGHTS[100:200]
    assert fake_hub.count("/org/m/resolve/*", origin=Origin.HUB) == 1  # resolved once
    assert [r.range for r in fake_hub.requests if r.origin is Origin.CDN] == [
        "bytes=0-9",
        "bytes=100-199",
    ]
    assert fake_hub.cdn_requests_with_auth() == []


async def test_upstream_open_file_body_cut_short_raises_upstream_unavailable(
    fake_hub: FakeHub, upstream: Upstream, repo: Repo
) -> None:
    stall = fake_hub.stall("/models/*/model.safetensors", after_bytes=100)
    async with upstream.open_file(MODEL, repo.head(), "model.safetensors", None) as body:
        await stall.reached.wait()
        stall.cut()
        with pytest.raises(UpstreamUnavailable, match="broke off"):
            await body.read(1 << 30)


# -- which token goes upstream (DESIGN.md rules 8 and 9) ------------------------------------------


async def test_upstream_anonymous_call_carries_no_token_despite_a_service_token(
    fake_hub: FakeHub, session: aiohttp.ClientSession, repo: Repo
) -> None:
    upstream = _upstream_with(fake_hub, session, service_token=fake_hub.add_user("svc"))
    await upstream.repo_info(MODEL, None, None)
    await upstream.file_metadata(MODEL, repo.head(), "config.json", None)
    async with upstream.open_file(MODEL, repo.head(), "model.safetensors", None) as body:
        await body.read(1 << 30)
    assert fake_hub.requests
    assert [r.path for r in fake_hub.requests if r.has_auth] == []


async def test_upstream_anonymous_call_without_access_is_refused_despite_a_service_token(
    fake_hub: FakeHub, session: aiohttp.ClientSession
) -> None:
    token = fake_hub.add_user("svc")
    make_private_repo(fake_hub, repo_id="org/m", readers=["svc"])
    upstream = _upstream_with(fake_hub, session, service_token=token)
    with pytest.raises(RepoNotFound) as caught:
        await upstream.repo_info(MODEL, None, None)
    assert not caught.value.authenticated


async def test_upstream_anonymous_call_uses_the_service_token_when_the_admin_lends_it(
    fake_hub: FakeHub, session: aiohttp.ClientSession
) -> None:
    token = fake_hub.add_user("svc")
    private = make_private_repo(fake_hub, repo_id="org/m", readers=["svc"])
    upstream = _upstream_with(
        fake_hub, session, service_token=token, anonymous_uses_service_token=True
    )
    assert (await upstream.repo_info(MODEL, None, None)).sha == private.head()
    async with upstream.open_file(MODEL, private.head(), "model.safetensors", None) as body:
        await body.read(1 << 30)
    assert fake_hub.cdn_requests_with_auth() == []


async def test_upstream_service_token_is_explicit_and_hidden_from_repr(
    fake_hub: FakeHub, session: aiohttp.ClientSession
) -> None:
    config = _config(fake_hub.url, service_token="hf_service_secret")
    upstream = Upstream(config, session)
    assert upstream.service_token == "hf_service_secret"
    assert "hf_service_secret" not in repr(config)


async def test_upstream_json_redirect_to_another_origin_drops_the_token(
    fake_hub: FakeHub, session: aiohttp.ClientSession, repo: Repo
) -> None:
    token = fake_hub.add_user("alice")
    upstream = _upstream_with(fake_hub, session)
    fake_hub.inject(
        "/api/models/org/m", status=307, headers={"Location": f"{fake_hub.cdn_url}/elsewhere"}
    )
    with pytest.raises((RepoNotFound, UpstreamRejected)):
        await upstream.repo_info(MODEL, None, token)
    assert fake_hub.count(origin=Origin.CDN) == 1
    assert fake_hub.cdn_requests_with_auth() == []


async def test_upstream_open_file_regular_file_through_resolve_cache(
    upstream: Upstream, repo: Repo
) -> None:
    async with upstream.open_file(MODEL, repo.head(), "config.json", None) as body:
        assert await body.read(1 << 30) == CONFIG


async def test_upstream_open_file_from_an_offset_is_a_206_of_the_rest(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    async with upstream.open_file(MODEL, repo.head(), "model.safetensors", None, start=100) as body:
        data = await body.read(1 << 30)
    assert (body.status, data) == (206, WEIGHTS[100:])
    assert [r.range for r in fake_hub.requests if r.origin is Origin.CDN] == ["bytes=100-"]


async def test_upstream_open_file_redirect_loop_is_rejected(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    path = f"/org/m/resolve/{repo.head()}/config.json"
    fake_hub.inject(path, status=302, headers={"Location": path}, times=100)
    with pytest.raises(UpstreamRejected, match="too many redirects"):
        async with upstream.open_file(MODEL, repo.head(), "config.json", None):
            pass


# -- renamed repos --------------------------------------------------------------------------------


async def test_upstream_repo_info_of_a_renamed_repo_follows_to_the_new_id(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    fake_hub.rename_repo("org/m", "org/renamed")
    info = await upstream.repo_info(MODEL, None, None)
    assert (info.repo_id, info.sha) == ("org/renamed", repo.head())


async def test_upstream_file_metadata_of_a_renamed_repo_follows_to_the_new_id(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    fake_hub.rename_repo("org/m", "org/renamed")
    meta = await upstream.file_metadata(MODEL, repo.head(), "model.safetensors", None)
    assert meta.etag == repo.file("model.safetensors").sha256


async def test_upstream_open_file_of_a_renamed_repo_follows_to_the_new_id(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    fake_hub.rename_repo("org/m", "org/renamed")
    async with upstream.open_file(MODEL, repo.head(), "model.safetensors", None) as body:
        assert await body.read(1 << 30) == WEIGHTS


# -- the Hub's errors become domain exceptions ----------------------------------------------------


async def test_upstream_unknown_repo_anonymous_is_repo_not_found_unauthenticated(
    upstream: Upstream, fake_hub: FakeHub
) -> None:
    with pytest.raises(RepoNotFound) as caught:
        await upstream.repo_info(MODEL, None, None)
    assert not caught.value.authenticated


async def test_upstream_unknown_repo_with_a_token_is_repo_not_found_authenticated(
    upstream: Upstream, fake_hub: FakeHub
) -> None:
    token = fake_hub.add_user("alice")
    with pytest.raises(RepoNotFound) as caught:
        await upstream.repo_info(MODEL, None, token)
    assert caught.value.authenticated


async def test_upstream_private_repo_without_access_is_repo_not_found(
    upstream: Upstream, fake_hub: FakeHub
) -> None:
    make_private_repo(fake_hub, repo_id="org/m", readers=["bob"])
    with pytest.raises(RepoNotFound):
        await upstream.repo_info(MODEL, None, None)


async def test_upstream_unknown_token_is_repo_not_found_unauthenticated(
    upstream: Upstream, repo: Repo
) -> None:
    with pytest.raises(RepoNotFound) as caught:
        await upstream.repo_info(MODEL, None, "hf_not_a_known_token")
    assert not caught.value.authenticated


async def test_upstream_unknown_revision_is_revision_not_found(
    upstream: Upstream, repo: Repo
) -> None:
    with pytest.raises(RevisionNotFound) as caught:
        await upstream.repo_info(MODEL, "no-such-branch", None)
    assert caught.value.revision == "no-such-branch"


async def test_upstream_missing_file_is_entry_not_found_with_the_commit(
    upstream: Upstream, repo: Repo
) -> None:
    with pytest.raises(EntryNotFound) as caught:
        await upstream.file_metadata(MODEL, repo.head(), "nope.bin", None)
    assert caught.value.commit == repo.head()


async def test_upstream_gated_file_anonymous_is_gated_unauthenticated(
    upstream: Upstream, fake_hub: FakeHub
) -> None:
    gated = make_gated_repo(fake_hub, repo_id="org/m")
    with pytest.raises(GatedRepo) as caught:
        await upstream.file_metadata(MODEL, gated.head(), "config.json", None)
    assert (caught.value.authenticated, caught.value.repo, caught.value.kind) == (
        False,
        "org/m",
        "model",
    )


async def test_upstream_gated_file_with_a_token_without_grant_is_gated_authenticated(
    upstream: Upstream, fake_hub: FakeHub
) -> None:
    token = fake_hub.add_user("alice")
    gated = make_gated_repo(fake_hub, repo_id="org/m")
    with pytest.raises(GatedRepo) as caught:
        await upstream.file_metadata(MODEL, gated.head(), "config.json", token)
    assert caught.value.authenticated


async def test_upstream_disabled_repo_file_is_access_denied(upstream: Upstream, repo: Repo) -> None:
    repo.disabled = True
    with pytest.raises(AccessDenied, match="disabled"):
        await upstream.file_metadata(MODEL, repo.head(), "config.json", None)


@pytest.mark.parametrize(("status", "mapped"), [(500, 502), (502, 502), (503, 503), (504, 502)])
async def test_upstream_server_error_is_upstream_unavailable(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub, status: int, mapped: int
) -> None:
    fake_hub.inject("/api/models/org/m", status=status)
    with pytest.raises(UpstreamUnavailable) as caught:
        await upstream.repo_info(MODEL, None, None)
    assert caught.value.status == mapped


async def test_upstream_server_error_on_file_metadata_is_upstream_unavailable(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    fake_hub.inject("/org/m/resolve/*", status=500, method="HEAD")
    with pytest.raises(UpstreamUnavailable):
        await upstream.file_metadata(MODEL, repo.head(), "config.json", None)


async def test_upstream_server_error_on_the_cdn_is_upstream_unavailable(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    fake_hub.inject("*", status=503, origin=Origin.CDN)
    with pytest.raises(UpstreamUnavailable):
        async with upstream.open_file(MODEL, repo.head(), "model.safetensors", None):
            pass


async def test_upstream_other_client_error_is_upstream_rejected(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    fake_hub.inject("/api/models/org/m", status=418, headers={"X-Error-Message": "teapot"})
    with pytest.raises(UpstreamRejected, match=r"418.*teapot"):
        await upstream.repo_info(MODEL, None, None)


async def test_upstream_rate_limit_with_a_long_retry_after_is_raised_at_once(
    fake_hub: FakeHub, session: aiohttp.ClientSession, repo: Repo
) -> None:
    upstream = _upstream_with(fake_hub, session, retries=3)
    fake_hub.inject("/api/models/org/m", status=429, headers={"Retry-After": "30"}, times=5)
    with pytest.raises(UpstreamRateLimited) as caught:
        await upstream.repo_info(MODEL, None, None)
    assert caught.value.retry_after_s == 30
    assert fake_hub.count("/api/models/org/m") == 1


async def test_upstream_rate_limit_with_a_short_retry_after_is_retried(
    fake_hub: FakeHub, session: aiohttp.ClientSession, repo: Repo
) -> None:
    upstream = _upstream_with(fake_hub, session, retries=1)
    fake_hub.inject("/api/models/org/m", status=429, headers={"Retry-After": "1"})
    info = await upstream.repo_info(MODEL, None, None)
    assert info.sha == repo.head()


async def test_upstream_server_errors_are_retried_a_bounded_number_of_times(
    fake_hub: FakeHub, session: aiohttp.ClientSession, repo: Repo
) -> None:
    upstream = _upstream_with(fake_hub, session, retries=2)
    fake_hub.inject("/api/models/org/m", status=500, times=10)
    with pytest.raises(UpstreamUnavailable):
        await upstream.repo_info(MODEL, None, None)
    assert fake_hub.count("/api/models/org/m") == 3


async def test_upstream_server_error_then_success_recovers(
    fake_hub: FakeHub, session: aiohttp.ClientSession, repo: Repo
) -> None:
    upstream = _upstream_with(fake_hub, session, retries=1)
    fake_hub.inject("/api/models/org/m", status=502)
    assert (await upstream.repo_info(MODEL, None, None)).sha == repo.head()


async def test_upstream_silent_server_is_a_timeout(
    fake_hub: FakeHub, session: aiohttp.ClientSession, repo: Repo
) -> None:
    upstream = _upstream_with(fake_hub, session, read_timeout_s=0.2)
    fake_hub.inject("/api/models/org/m", hang=True)
    with pytest.raises(UpstreamUnavailable, match="could not be reached") as caught:
        await upstream.repo_info(MODEL, None, None)
    assert caught.value.status == 504


async def test_upstream_silent_server_on_file_metadata_is_a_timeout(
    fake_hub: FakeHub, session: aiohttp.ClientSession, repo: Repo
) -> None:
    upstream = _upstream_with(fake_hub, session, read_timeout_s=0.2)
    fake_hub.inject("/org/m/resolve/*", hang=True, method="HEAD")
    with pytest.raises(UpstreamUnavailable) as caught:
        await upstream.file_metadata(MODEL, repo.head(), "config.json", None)
    assert caught.value.status == 504


async def test_upstream_refused_connection_is_upstream_unavailable(
    session: aiohttp.ClientSession,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    upstream = Upstream(_config(f"http://127.0.0.1:{port}"), session)
    with pytest.raises(UpstreamUnavailable) as caught:
        await upstream.repo_info(MODEL, None, None)
    assert caught.value.status == 502


# -- hostile bodies -------------------------------------------------------------------------------


async def test_upstream_oversized_json_is_rejected(
    fake_hub: FakeHub, session: aiohttp.ClientSession, repo: Repo
) -> None:
    upstream = _upstream_with(fake_hub, session, max_json_bytes=256)
    with pytest.raises(UpstreamRejected, match="exceeds 256 bytes"):
        await upstream.repo_info(MODEL, None, None)


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"\xff\xfe\x00", b'{"sha": '])
async def test_upstream_body_that_is_not_json_is_rejected(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub, body: bytes
) -> None:
    fake_hub.inject("/api/models/org/m", status=200, body=body)
    with pytest.raises(UpstreamRejected, match="not JSON"):
        await upstream.repo_info(MODEL, None, None)


async def test_upstream_deeply_nested_json_is_rejected(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    fake_hub.inject("/api/models/org/m", status=200, body=b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(UpstreamRejected):
        await upstream.repo_info(MODEL, None, None)


@pytest.mark.parametrize(
    "body",
    [b"[]", b'{"sha": "main"}', b'{"id": "org/m"}', b'{"sha": "' + b"A" * 40 + b'"}'],
)
async def test_upstream_repo_info_without_a_valid_sha_is_rejected(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub, body: bytes
) -> None:
    fake_hub.inject("/api/models/org/m", status=200, body=body)
    with pytest.raises(UpstreamRejected):
        await upstream.repo_info(MODEL, None, None)


async def test_upstream_commit_listing_with_an_invalid_id_is_rejected(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    fake_hub.inject("/api/models/org/m/commits/main", status=200, body=b'[{"id": "../x"}]')
    with pytest.raises(UpstreamRejected, match="invalid item"):
        await upstream.commits_page(MODEL, "main", None, None)


async def test_upstream_tree_listing_that_is_not_a_list_is_rejected(
    upstream: Upstream, repo: Repo, fake_hub: FakeHub
) -> None:
    fake_hub.inject("/api/models/org/m/tree/*", status=200, body=b'{"entries": []}')
    with pytest.raises(UpstreamRejected, match="not a list"):
        await upstream.list_tree(MODEL, repo.head(), None)
