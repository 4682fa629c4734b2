"""Hostile input at the edge: every route fed hostile bodies and headers answers without a 5xx
and without a traceback in the log; paths-info bodies that broke the parsers are 400s that say
why; pagination links never carry a Host header we do not trust; cursors are ours or refused."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from huggingface_hub import HfApi

from proxy.admin.identity import Role
from proxy.hub.context import SERVICES
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy

MODEL = "org/hostile"
OTHER = "org/other"
FILES = {f"f{n}.txt": f"{n}".encode() for n in range(10)} | {"config.json": b"{}"}
FORM = "application/x-www-form-urlencoded"

# (Content-Type, body): each broke a parser once, or would have.
HOSTILE_BODIES: list[tuple[str, bytes]] = [
    (f"{FORM}; charset=foo", b"paths=config.json"),
    (f"{FORM}; charset=utf-16", b"paths=config.json"),
    (f"{FORM}; charset=rot13", b"paths=config.json"),
    (FORM, b"paths=%ED%A0%80"),  # a lone surrogate, percent-encoded
    (FORM, b"paths=%FF%FE"),
    (FORM, b"paths=\xff\xfe"),
    (FORM, b"&".join([b"paths=a"] * 5000)),
    (FORM, b"paths=" + b"a/" * 20000),
    (FORM, b"paths=../../etc/passwd&paths=/abs&paths=a\\b&paths=%00"),
    ("multipart/form-data", b"--x\r\nContent-Disposition: form-data; name=paths\r\n\r\na\r\n--x--"),
    ("multipart/form-data; boundary=x", b"garbage with no parts"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Type: text/plain; charset=foo\r\n\r\n"),
    ("application/json", b'{"paths": ["\\ud800"]}'),
    ("application/json", b'{"paths": ["config.json", "\\udfff\\ud800"]}'),
    ("application/json", b'{"\\ud800": ["x"]}'),
    ("application/json", b"[" * 100_000),
    ("application/json", b'{"paths": ' * 5000 + b"1" + b"}" * 5000),
    ("application/json", b'{"paths": "config.json"}'),
    ("application/json", b'{"paths": [1, null, {"a": []}, ["x"]]}'),
    ("application/json", b"\xff\xfe{\x00}\x00"),
    ("application/json", b"NaN"),
    ("application/json; charset=latin-1", b'{"paths": ["config.json"]}'),
    ("application/json", b'{"paths": ["' + b"a" * 2_000_000 + b'"]}'),
    ("text/plain", b"paths=config.json"),
    ("application/octet-stream", b"\x00" * 1000),
    ("", b"paths=config.json"),
]

# Headers a client controls, each hostile in its own way.
HOSTILE_HEADERS: list[dict[str, str]] = [
    {"Host": "evil.example"},
    {"Host": "a" * 300},
    {"Host": "evil.example/x?y#z"},
    {"Authorization": "Bearer " + "x" * 5000},
    {"Authorization": "Basic Zm9vOmJhcg=="},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer a b c"},
    {"Authorization": "Bearer \u00ff\u00fe"},
    {"Range": "bytes=99999999999999999999999999999-"},
    {"Range": "bytes=abc-def"},
    {"Range": "bytes=0-1,2-3,4-5"},
    {"Range": "bytes=-0"},
    {"If-None-Match": '"' * 4000},
    {"Cookie": "AIOHTTP_SESSION=" + "A" * 4000},
    {"Cookie": "hubwarden_session=garbage; other=%%%; =; ;;"},
    {"Content-Type": "application/json; charset=foo"},
    {"Content-Type": "multipart/form-data"},
    {"Accept": "text/html," * 500},
    {"Accept-Encoding": "br;q=2, gzip;q=-1, *;q=nan"},
    {"X-Forwarded-For": "1.2.3.4, evil"},
    {"X-Forwarded-Host": "evil.example"},
]

ROUTES: list[object] = [
    ("GET", f"/{MODEL}/resolve/main/config.json"),
    ("HEAD", f"/{MODEL}/resolve/main/config.json"),
    ("GET", f"/api/models/{MODEL}/tree/main"),
    ("GET", f"/api/models/{MODEL}/tree/main?cursor=../../x&recursive=maybe"),
    ("POST", f"/api/models/{MODEL}/paths-info/main"),
    ("GET", f"/api/models/{MODEL}/commits/main"),
    ("GET", f"/api/models/{MODEL}/commits/main?cursor=%00%ff"),
    ("GET", f"/api/models/{MODEL}/refs"),
    ("GET", f"/api/models/{MODEL}"),
    ("GET", f"/api/models/{MODEL}/revision/main"),
    ("GET", "/api/whoami-v2"),
    ("GET", "/held/1"),
    ("POST", "/held/1/requests"),
    ("GET", "/admin/api/summary"),
    ("POST", "/admin/api/quarantine/1/release"),
    ("POST", f"/admin/api/repos/models/{MODEL}/block"),
    ("GET", "/admin/"),
]


def _route_id(value: object) -> str:
    return str(value)


@pytest.fixture
async def hostile_proxy(
    proxy: RunningProxy, fake_hub: FakeHub
) -> AsyncIterator[tuple[RunningProxy, str]]:
    """The proxy with MODEL mirrored (one file fetched) and an admin token."""
    fake_hub.create_repo(MODEL, files=FILES)
    await proxy.download(MODEL, "config.json")
    identities = proxy.app[SERVICES].identities
    _, token = await identities.create("hostile-test", Role.ADMIN, None, "test")
    yield proxy, token


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    method: str,
    headers: dict[str, str],
    body: bytes | None = None,
) -> int:
    async with session.request(
        method,
        url,
        headers=headers,
        data=None if body is None else io.BytesIO(body),
        allow_redirects=False,
        skip_auto_headers=["Content-Type"],
    ) as response:
        await response.read()
        return response.status


def _no_trace(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()[:200]}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info is not None
    ]


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=_route_id)
async def test_hostile_edge_route_answers_hostile_bodies_and_headers_without_5xx(
    hostile_proxy: tuple[RunningProxy, str],
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
) -> None:
    proxy, token = hostile_proxy
    caplog.clear()
    caplog.set_level(logging.INFO)
    url = f"{proxy.url}{path}"
    failures: list[str] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for content_type, body in HOSTILE_BODIES:
            for auth in ({}, {"Authorization": f"Bearer {token}"}):
                headers = {"Content-Type": content_type, **auth} if content_type else auth
                status = await _send(session, url, method, headers, body)
                if status >= 500:
                    failures.append(f"{status} for body {content_type!r} {body[:40]!r}")
        for headers in HOSTILE_HEADERS:
            status = await _send(session, url, method, headers)
            if status >= 500:
                failures.append(f"{status} for headers {str(headers)[:80]}")
    assert failures == []
    assert _no_trace(caplog) == []


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (f"{FORM}; charset=foo", b"paths=config.json", 'charset "foo" is not supported'),
        ("multipart/form-data", b"--x\r\n\r\n--x--", "is not accepted here"),
        ("multipart/form-data; boundary=x", b"--x\r\n\r\n--x--", "is not accepted here"),
        ("application/json", b'{"paths": ["\\ud800"]}', "lone surrogate"),
        (FORM, b"paths=%ED%A0%80", "not UTF-8 text"),
        ("application/json", b"[" * 100_000, "nested too deeply"),
        ("application/json", b"{", "is not JSON"),
        (FORM, b"&".join([b"paths=a"] * 5000), "more than 2000 fields"),
    ],
)
async def test_hostile_edge_paths_info_malformed_body_is_400_saying_why(
    hostile_proxy: tuple[RunningProxy, str], content_type: str, body: bytes, message: str
) -> None:
    proxy, _ = hostile_proxy
    url = f"{proxy.url}/api/models/{MODEL}/paths-info/main"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, data=io.BytesIO(body), headers={"Content-Type": content_type}
        ) as response,
    ):
        answer = await response.json()
    assert response.status == 400
    assert message in answer["error"]
    assert message in response.headers["X-Error-Message"]


async def test_hostile_edge_paths_info_form_from_the_real_client_still_works(
    hostile_proxy: tuple[RunningProxy, str],
) -> None:
    proxy, _ = hostile_proxy
    api = HfApi(endpoint=proxy.url, token=False)
    infos = await proxy.call(api.get_paths_info, MODEL, ["config.json", "f1.txt", "nope"])
    assert sorted(i.path for i in infos) == ["config.json", "f1.txt"]


async def _tree_link(url: str, host: str | None) -> str:
    headers = {"Host": host} if host else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 200
        return response.headers["Link"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", None])
async def test_hostile_edge_tree_link_never_copies_an_untrusted_host(
    hostile_proxy: tuple[RunningProxy, str], host: str | None
) -> None:
    proxy, _ = hostile_proxy
    link = await _tree_link(f"{proxy.url}/api/models/{MODEL}/tree/main", host)
    assert link.startswith(f"<{proxy.url}/api/models/{MODEL}/tree/main?")
    assert "evil" not in link


async def test_hostile_edge_tree_link_uses_a_trusted_host(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.create_repo(MODEL, files=FILES)
    settings = proxy_settings(fake_hub, tmp_path / "data", trusted_hosts=["mirror.example"])
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        url = f"{running.url}/api/models/{MODEL}/tree/main"
        trusted = await _tree_link(url, "mirror.example:9")
        untrusted = await _tree_link(url, "evil.example")
    finally:
        await runner.cleanup()
    assert trusted.startswith(f"<http://mirror.example:9/api/models/{MODEL}/tree/main?")
    assert untrusted.startswith(f"<{running.url}/")


async def test_hostile_edge_tree_link_uses_public_url_first(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.create_repo(MODEL, files=FILES)
    settings = proxy_settings(
        fake_hub,
        tmp_path / "data",
        public_url="https://hub.example/mirror",
        trusted_hosts=["mirror.example"],
    )
    running, runner = await start_proxy(settings, tmp_path / "cache")
    try:
        link = await _tree_link(f"{running.url}/api/models/{MODEL}/tree/main", "mirror.example")
    finally:
        await runner.cleanup()
    assert link.startswith(f"<https://hub.example/mirror/api/models/{MODEL}/tree/main?")


async def test_hostile_edge_real_client_walks_every_tree_page(
    hostile_proxy: tuple[RunningProxy, str],
) -> None:
    proxy, _ = hostile_proxy
    api = HfApi(endpoint=proxy.url, token=False)
    listed = await proxy.call(lambda: [e.path for e in api.list_repo_tree(MODEL, recursive=True)])
    assert len(listed) == len(set(listed))
    assert set(FILES) <= set(listed)


def _forged(query: str) -> str:
    return base64.urlsafe_b64encode(query.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _forged("p=../../x&limit=-1"),
        _forged("p=1"),
        _forged("p=1") + ".AAAAAAAAAAAAAAAAAAAAAA",
        "",
        ".",
        "a" * 5000,
        "%ff.%00",
    ],
)
async def test_hostile_edge_commits_cursor_we_did_not_issue_is_400_and_never_forwarded(
    hostile_proxy: tuple[RunningProxy, str], fake_hub: FakeHub, cursor: str
) -> None:
    proxy, _ = hostile_proxy
    url = f"{proxy.url}/api/models/{MODEL}/commits/main"
    before = len(fake_hub.requests)
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params={"cursor": cursor}) as response,
    ):
        await response.read()
    assert response.status == 400
    assert "was not issued by this mirror" in response.headers["X-Error-Message"]
    assert [r for r in fake_hub.requests[before:] if "/commits/" in r.path] == []


async def _next_cursor(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        link = response.headers["Link"]
    return link[link.index("cursor=") + len("cursor=") : link.index(">")]


async def test_hostile_edge_commits_cursor_of_another_repo_is_400(
    hostile_proxy: tuple[RunningProxy, str], fake_hub: FakeHub
) -> None:
    proxy, _ = hostile_proxy
    other = fake_hub.create_repo(OTHER, files={"a.txt": b"a"})
    for n in range(60):  # more than one upstream page of history
        other.commit({"a.txt": f"{n}".encode()}, message=f"c{n}")
    cursor = await _next_cursor(f"{proxy.url}/api/models/{OTHER}/commits/main")
    url = f"{proxy.url}/api/models/{MODEL}/commits/main?cursor={cursor}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        await response.read()
    assert response.status == 400
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{proxy.url}/api/models/{OTHER}/commits/main?cursor={cursor}") as response,
    ):
        assert response.status == 200


@pytest.mark.parametrize("cursor", ["4", "999999999", "-1", "4.AAAA"])
async def test_hostile_edge_tree_cursor_we_did_not_issue_is_400(
    hostile_proxy: tuple[RunningProxy, str], cursor: str
) -> None:
    proxy, _ = hostile_proxy
    url = f"{proxy.url}/api/models/{MODEL}/tree/main"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params={"cursor": cursor}) as response,
    ):
        await response.read()
    assert response.status == 400
