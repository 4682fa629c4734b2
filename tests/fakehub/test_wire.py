"""Raw answers of the fake Hub and CDN: the headers and redirects hub-protocol.md §3.2 gives."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from tests.fakehub import FakeHub, Repo

CONFIG = b'{"model_type": "bert"}'
WEIGHTS = bytes(range(256)) * 16


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def repo(fake_hub: FakeHub) -> Repo:
    return fake_hub.create_repo("org/m", files={"config.json": CONFIG, "w.bin": WEIGHTS})


async def _head(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    async with session.head(url, allow_redirects=False) as response:
        return response


async def _cdn_location(session: aiohttp.ClientSession, hub: FakeHub) -> str:
    response = await _head(session, f"{hub.url}/org/m/resolve/main/w.bin")
    return response.headers["Location"]


async def test_resolve_regular_file_redirects_relative_to_resolve_cache(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    response = await _head(session, f"{fake_hub.url}/org/m/resolve/main/config.json")

    sha1 = repo.file("config.json").sha1
    assert response.status == 307
    assert response.headers["Location"].startswith(
        f"/api/resolve-cache/models/org/m/{repo.head()}/"
    )
    assert response.headers["X-Linked-Etag"] == f'"{sha1}"'
    assert response.headers["X-Repo-Commit"] == repo.head()
    assert "ETag" not in response.headers


async def test_resolve_cache_regular_file_answers_git_sha1_etag(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{fake_hub.url}/org/m/resolve/main/config.json") as response:
        body = await response.read()

    assert response.status == 200
    assert body == CONFIG
    assert response.headers["ETag"] == f'"{repo.file("config.json").sha1}"'
    assert response.headers["X-Repo-Commit"] == repo.head()
    assert response.headers["Content-Disposition"].startswith("inline; filename*=UTF-8''config")


async def test_resolve_lfs_file_redirects_to_cdn_with_xet_signals(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    response = await _head(session, f"{fake_hub.url}/org/m/resolve/main/w.bin")

    blob = repo.file("w.bin")
    assert response.status == 302
    assert response.headers["Location"].startswith(f"{fake_hub.cdn_url}/")
    assert URL(response.headers["Location"]).query["Signature"]
    assert response.headers["X-Linked-Etag"] == f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
    assert response.headers["X-Linked-Size"] == str(len(WEIGHTS))
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Xet-Hash"] == blob.xet_hash
    assert 'rel="xet-auth"' in response.headers["Link"]
    assert 'rel="xet-reconstruction-info"' in response.headers["Link"]


async def test_cdn_get_answers_bytes_with_etag_other_than_sha256(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    async with session.get(await _cdn_location(session, fake_hub)) as response:
        body = await response.read()

    assert body == WEIGHTS
    assert response.headers["ETag"].strip('"') != hashlib.sha256(WEIGHTS).hexdigest()


async def test_cdn_range_answers_206_with_content_range(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    location = await _cdn_location(session, fake_hub)

    async with session.get(location, headers={"Range": "bytes=10-19"}) as response:
        body = await response.read()

    assert response.status == 206
    assert body == WEIGHTS[10:20]
    assert response.headers["Content-Range"] == f"bytes 10-19/{len(WEIGHTS)}"


async def test_cdn_suffix_range_answers_the_tail(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    location = await _cdn_location(session, fake_hub)

    async with session.get(location, headers={"Range": "bytes=-5"}) as response:
        assert await response.read() == WEIGHTS[-5:]


async def test_cdn_range_past_end_answers_416(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    location = await _cdn_location(session, fake_hub)

    async with session.get(location, headers={"Range": f"bytes={len(WEIGHTS)}-"}) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == f"bytes */{len(WEIGHTS)}"


async def test_cdn_bad_signature_answers_403(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    location = URL(await _cdn_location(session, fake_hub)).update_query(Signature="0" * 64)

    async with session.get(location) as response:
        assert response.status == 403


async def test_resolve_unencoded_pr_ref_answers_pr_commit(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    repo.open_pr({"config.json": b"{}"})

    response = await _head(session, f"{fake_hub.url}/org/m/resolve/refs/pr/1/config.json")

    assert response.headers["X-Repo-Commit"] == repo.resolve("refs/pr/1").sha


async def test_resolve_renamed_repo_redirects_relative_to_new_id(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    fake_hub.rename_repo("org/m", "org/new")

    response = await _head(session, f"{fake_hub.url}/org/m/resolve/main/config.json")

    assert response.status == 307
    assert response.headers["Location"] == "/org/new/resolve/main/config.json"


async def test_tree_link_is_absolute_and_leads_to_the_next_page(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    repo.commit({"z.txt": b"z"})
    url = f"{fake_hub.url}/api/models/org/m/tree/main?recursive=true&expand=false"
    async with session.get(url) as first:
        next_url = first.links["next"]["url"]
        first_page = await first.json()
    async with session.get(next_url) as second:
        second_page = await second.json()

    assert str(next_url).startswith(f"{fake_hub.url}/api/models/org/m/tree/main?")
    paths = [e["path"] for e in first_page + second_page]
    assert paths == [".gitattributes", "config.json", "w.bin", "z.txt"]
    assert "next" not in second.links


async def test_paths_info_json_body_gives_entries(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    url = f"{fake_hub.url}/api/models/org/m/paths-info/main"

    async with session.post(url, json={"paths": ["w.bin", "gone"], "expand": True}) as response:
        entries = await response.json()

    blob = repo.file("w.bin")
    assert [e["path"] for e in entries] == ["w.bin"]
    assert entries[0]["lfs"] == {"oid": blob.sha256, "size": blob.size, "pointerSize": 129}
    assert entries[0]["xetHash"] == blob.xet_hash
    assert entries[0]["lastCommit"]["id"] == repo.head()


async def test_xet_read_token_answers_xet_headers(
    fake_hub: FakeHub, repo: Repo, session: aiohttp.ClientSession
) -> None:
    url = f"{fake_hub.url}/api/models/org/m/xet-read-token/{repo.head()}"

    async with session.get(url) as response:
        assert response.headers["X-Xet-Cas-Url"].startswith(fake_hub.cdn_url)
        assert response.headers["X-Xet-Access-Token"]

    assert fake_hub.xet_token_requests() == 1
