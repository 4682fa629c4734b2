"""The admin web pages on a running Hubwarden, through plain HTTP (no browser): sign-in and the
session cookie, CSRF, roles, escaping of hostile names and messages, decisions that take effect."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import huggingface_hub as hf
import numpy as np
import pytest
from cryptography.fernet import Fernet
from huggingface_hub.errors import HfHubHTTPError
from safetensors.numpy import save

from proxy.admin import pages
from proxy.admin.identity import Role
from proxy.admin.sessions import COOKIE_NAME, KEY_FILE, SessionKeyUnusable, load_or_create_key
from proxy.hub.context import SERVICES
from tests.fakehub.hub import FakeHub
from tests.fakehub.plugin import make_tiny_model
from tests.proxyplugin import RunningProxy

MODEL = "org/m"
TINY = "org/tiny-model"  # make_tiny_model's
UNKNOWN_PICKLE = b"cacme_tools\nLabels\n(tR."
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Answer:
    status: int
    location: str
    text: str
    set_cookie: list[str]

    @property
    def shown(self) -> str:
        """The text as a browser shows it (entities such as &#34; decoded)."""
        return html.unescape(self.text)


def csrf_of(page: Answer) -> str:
    found = _CSRF.search(page.text)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


class Browserless:
    """An HTTP client that keeps cookies (loopback included) and never follows redirects."""

    def __init__(self, proxy: RunningProxy, session: aiohttp.ClientSession) -> None:
        self.proxy = proxy
        self.session = session

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return await self.request("GET", path, headers=headers)

    async def post(self, path: str, form: dict[str, str] | list[tuple[str, str]]) -> Answer:
        return await self.request("POST", path, data=form)

    async def request(
        self,
        method: str,
        path: str,
        *,
        data: dict[str, str] | list[tuple[str, str]] | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        async with self.session.request(
            method, self.proxy.url + path, data=data, headers=headers, allow_redirects=False
        ) as response:
            return Answer(
                response.status,
                response.headers.get("Location", ""),
                await response.text(),
                response.headers.getall("Set-Cookie", []),
            )

    async def csrf(self, path: str = "/admin/signin") -> str:
        """The CSRF token of the forms on a page."""
        return csrf_of(await self.get(path))

    async def sign_in(self, token: str, next_page: str = "") -> Answer:
        form = {"csrf": await self.csrf(), "token": token, "next": next_page}
        return await self.post("/admin/signin", form)

    async def sign_in_as(self, role: Role, name: str | None = None) -> None:
        answer = await self.sign_in(await admin_token(self.proxy, role, name))
        assert answer.status == 303, answer.text

    async def send(self, path: str, form: dict[str, str], *, page: str = "/admin/") -> Answer:
        """POST `form` with the session's CSRF token, read from `page` as a browser would."""
        return await self.post(path, {"csrf": await self.csrf(page), **form})


@asynccontextmanager
async def browserless(proxy: RunningProxy) -> AsyncIterator[Browserless]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield Browserless(proxy, session)


async def admin_token(proxy: RunningProxy, role: Role, name: str | None = None) -> str:
    identities = proxy.app[SERVICES].identities
    _, token = await identities.create(name or f"t-{role.value}", role, None, "test")
    return token


async def held_file(
    proxy: RunningProxy, fake_hub: FakeHub, *, repo: str = MODEL, name: str = "labels.pkl",
    data: bytes = UNKNOWN_PICKLE,
) -> int:  # fmt: skip
    """A file of a new repo asked for and held: its review id."""
    fake_hub.create_repo(repo, files={name: data})
    with pytest.raises(HfHubHTTPError, match=r"review (\d+)") as caught:
        await proxy.download(repo, name)
    found = re.search(r"review (\d+)", str(caught.value))
    assert found is not None
    return int(found.group(1))


async def test_pages_without_a_session_redirect_to_sign_in_and_back(proxy: RunningProxy) -> None:
    token = await admin_token(proxy, Role.VIEWER)
    async with browserless(proxy) as client:
        answer = await client.get("/admin/quarantine?state=quarantined")
        assert answer.status == 303
        location = urlsplit(answer.location)
        assert location.path == "/admin/signin"
        assert parse_qs(location.query) == {"next": ["/admin/quarantine?state=quarantined"]}
        signed = await client.sign_in(token, "/admin/quarantine?state=quarantined")
        assert (signed.status, signed.location) == (303, "/admin/quarantine?state=quarantined")
        page = await client.get("/admin/quarantine?state=quarantined")
        assert page.status == 200 and "<title>Quarantine · Hubwarden admin</title>" in page.text


async def test_pages_sign_in_never_leads_to_another_site(proxy: RunningProxy) -> None:
    token = await admin_token(proxy, Role.VIEWER)
    for hostile in ("https://evil.example/", "//evil.example/admin/", "/admin/\\evil"):
        async with browserless(proxy) as client:
            signed = await client.sign_in(token, hostile)
            assert (signed.status, signed.location) == (303, "/admin/")


async def test_pages_refuse_an_unknown_token_on_the_sign_in_page(proxy: RunningProxy) -> None:
    async with browserless(proxy) as client:
        answer = await client.sign_in("hwa_not-a-real-token")
        assert answer.status == 403
        assert "unknown, revoked or expired" in answer.text and 'name="token"' in answer.text
        assert (await client.get("/admin/")).status == 303  # still signed out


async def test_pages_refuse_a_client_token(proxy: RunningProxy) -> None:
    token = await admin_token(proxy, Role.CLIENT)
    async with browserless(proxy) as client:
        answer = await client.sign_in(token)
        assert answer.status == 403 and "client token cannot sign in" in answer.text


async def test_pages_refuse_a_post_without_the_csrf_token(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    review_id = await held_file(proxy, fake_hub)
    async with browserless(proxy) as client:
        await client.sign_in(await admin_token(proxy, Role.REVIEWER))
        path = f"/admin/quarantine/{review_id}/release"
        for form in ({"comment": "fine"}, {"comment": "fine", "csrf": "forged"}):
            answer = await client.post(path, form)
            assert answer.status == 403
            assert "<h1>This form was refused</h1>" in answer.text and "CSRF" in answer.text
    item = await proxy.app[SERVICES].review.item(review_id)
    assert item.blob.state.value == "quarantined"


async def test_pages_sign_in_form_needs_the_csrf_token_too(proxy: RunningProxy) -> None:
    token = await admin_token(proxy, Role.ADMIN)
    async with browserless(proxy) as client:
        answer = await client.post("/admin/signin", {"token": token})
        assert answer.status == 403 and "CSRF" in answer.text


async def test_pages_viewer_reads_but_cannot_release(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    review_id = await held_file(proxy, fake_hub)
    async with browserless(proxy) as client:
        await client.sign_in(await admin_token(proxy, Role.VIEWER))
        page = await client.get(f"/admin/quarantine/{review_id}")
        assert page.status == 200 and "PICKLE_" in page.text
        assert "/release" not in page.text  # the form is hidden from a viewer
        csrf = await client.csrf(f"/admin/quarantine/{review_id}")
        answer = await client.post(
            f"/admin/quarantine/{review_id}/release", {"csrf": csrf, "comment": "fine"}
        )
        assert answer.status == 403 and "Your role, viewer, may not release" in answer.text
    item = await proxy.app[SERVICES].review.item(review_id)
    assert item.blob.state.value == "quarantined"


async def test_pages_reviewer_cannot_unblock_and_sees_no_form(proxy: RunningProxy) -> None:
    async with browserless(proxy) as client:
        await client.sign_in(await admin_token(proxy, Role.REVIEWER))
        page = await client.get("/admin/repos")
        assert (
            "Only an admin blocks or unblocks" in page.text
            and "/admin/repos/block" not in page.text
        )
        csrf = await client.csrf("/admin/repos")
        form = {"csrf": csrf, "type": "model", "repo": MODEL, "comment": "x"}
        for verb in ("block", "unblock"):
            answer = await client.post(f"/admin/repos/{verb}", form)
            assert answer.status == 403 and "may not block or unblock" in answer.text
    assert await proxy.app[SERVICES].review.blocked() == []


async def test_pages_admin_blocks_and_unblocks_a_repo(proxy: RunningProxy) -> None:
    async with browserless(proxy) as client:
        await client.sign_in(await admin_token(proxy, Role.ADMIN))
        csrf = await client.csrf("/admin/repos")
        form = {"csrf": csrf, "type": "model", "repo": MODEL, "comment": "incident 42"}
        assert (await client.post("/admin/repos/block", form)).location == "/admin/repos"
        page = await client.get("/admin/repos")
        assert "incident 42" in page.text and "blocked: every route of it is refused" in page.text
        form["comment"] = "resolved"
        assert (await client.post("/admin/repos/unblock", form)).status == 303
    assert await proxy.app[SERVICES].review.blocked() == []


async def test_pages_session_cookie_is_httponly_and_samesite_strict(proxy: RunningProxy) -> None:
    token = await admin_token(proxy, Role.VIEWER)
    async with browserless(proxy) as client:
        answer = await client.sign_in(token)
    (cookie,) = [c for c in answer.set_cookie if c.startswith(COOKIE_NAME + "=")]
    flags = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")[1:]}
    assert "httponly" in flags and flags["samesite"].strip() == "SameSite=Strict"
    assert flags["path"].strip() == "Path=/admin/"
    assert "secure" not in flags  # plain HTTP: a Secure cookie would never come back


async def test_pages_session_cookie_is_secure_behind_an_https_proxy(proxy: RunningProxy) -> None:
    async with browserless(proxy) as client:
        answer = await client.get("/admin/signin", headers={"X-Forwarded-Proto": "https"})
    (cookie,) = [c for c in answer.set_cookie if c.startswith(COOKIE_NAME + "=")]
    assert "secure" in cookie.lower().split("; ")


async def test_pages_sign_out_ends_the_session(proxy: RunningProxy) -> None:
    async with browserless(proxy) as client:
        await client.sign_in(await admin_token(proxy, Role.VIEWER))
        csrf = await client.csrf("/admin/")
        answer = await client.post("/admin/signout", {"csrf": csrf})
        assert (answer.status, answer.location) == (303, "/admin/signin")
        assert (await client.get("/admin/")).status == 303


async def test_pages_session_ends_when_its_token_is_revoked(proxy: RunningProxy) -> None:
    async with browserless(proxy) as client:
        await client.sign_in(await admin_token(proxy, Role.ADMIN, "leaver"))
        assert (await client.get("/admin/")).status == 200
        await proxy.app[SERVICES].identities.revoke("leaver", "test")
        assert (await client.get("/admin/")).status == 303


async def test_pages_session_expires_after_eight_idle_hours(proxy: RunningProxy) -> None:
    """A cookie sealed 8 h ago (with the server's own key) no longer signs anyone in."""
    await admin_token(proxy, Role.ADMIN, "sleeper")
    key = (proxy.settings.data_dir / KEY_FILE).read_bytes()
    then = int(time.time()) - 8 * 3600 - 60
    data = {"created": then, "session": {"who": "sleeper", "since": then, "seen": then}}
    cookie = Fernet(key).encrypt_at_time(json.dumps(data).encode(), then).decode()
    async with browserless(proxy) as client:
        answer = await client.get("/admin/", headers={"Cookie": f"{COOKIE_NAME}={cookie}"})
        assert answer.status == 303 and answer.location.startswith("/admin/signin")
        fresh = Fernet(key).encrypt(json.dumps(data).encode()).decode()  # sealed now, seen 8 h ago
        answer = await client.get("/admin/", headers={"Cookie": f"{COOKIE_NAME}={fresh}"})
        assert answer.status == 303


async def test_pages_escape_hostile_file_names_and_finding_messages(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    name = "<script>alert(1)</script>.pkl"
    hostile = b"c<img src=x onerror=alert(2)>\nLabels\n(tR."
    review_id = await held_file(proxy, fake_hub, name=name, data=hostile)
    async with browserless(proxy) as client:
        await client.sign_in(await admin_token(proxy, Role.REVIEWER))
        listing = (await client.get("/admin/quarantine")).text
        page = (await client.get(f"/admin/quarantine/{review_id}")).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.pkl" in listing
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    for text in (listing, page):
        assert "<script>" not in text and "<img" not in text


async def test_pages_release_needs_a_comment(proxy: RunningProxy, fake_hub: FakeHub) -> None:
    review_id = await held_file(proxy, fake_hub)
    async with browserless(proxy) as client:
        await client.sign_in(await admin_token(proxy, Role.REVIEWER))
        csrf = await client.csrf(f"/admin/quarantine/{review_id}")
        answer = await client.post(
            f"/admin/quarantine/{review_id}/release", {"csrf": csrf, "comment": "  "}
        )
    assert answer.status == 400 and "comment" in answer.text and "is required" in answer.text


async def test_pages_reviewer_release_serves_the_client_and_is_audited(
    proxy: RunningProxy, fake_hub: FakeHub
) -> None:
    review_id = await held_file(proxy, fake_hub)
    async with browserless(proxy) as client:
        await client.sign_in(await admin_token(proxy, Role.REVIEWER, "alice"))
        csrf = await client.csrf(f"/admin/quarantine/{review_id}")
        answer = await client.post(
            f"/admin/quarantine/{review_id}/release", {"csrf": csrf, "comment": "our labels"}
        )
        assert (answer.status, answer.location) == (303, f"/admin/quarantine/{review_id}")
        assert "released: the next download is served" in (await client.get(answer.location)).text
        audit = (await client.get("/admin/audit?action=review.released")).text
        assert "token:alice" in audit and "our labels" in audit
        summary = (await client.get("/admin/")).text
        assert "review.released" in summary and "our labels" in summary
    path = await proxy.download(MODEL, "labels.pkl")
    assert path.read_bytes() == UNKNOWN_PICKLE


async def test_pages_unknown_page_and_item_answer_404_pages(proxy: RunningProxy) -> None:
    async with browserless(proxy) as client:
        await client.sign_in(await admin_token(proxy, Role.VIEWER))
        for path in ("/admin/nowhere", "/admin/quarantine/999"):
            answer = await client.get(path)
            assert answer.status == 404 and "<h1>" in answer.text and "Back to" in answer.text


async def test_pages_forbid_framing_scripts_and_caching(proxy: RunningProxy) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(proxy.url + "/admin/signin") as response,
    ):
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src" not in csp  # no script at all: default-src 'none' covers it
        assert response.headers["Cache-Control"] == "no-store"


def test_session_key_is_made_private_and_kept(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    path = tmp_path / KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(tmp_path) == key
    path.chmod(0o644)
    with pytest.raises(SessionKeyUnusable, match=r"may be read or written by other users"):
        load_or_create_key(tmp_path)


async def test_pages_approve_a_pinned_change_moves_main(
    proxy: RunningProxy, fake_hub: FakeHub, tiny_model_files: dict[str, bytes]
) -> None:
    repo = make_tiny_model(fake_hub, tiny_model_files)
    await proxy.download(TINY, "model.safetensors")
    new = repo.commit({"model.safetensors": save({"weight": np.ones((4, 4), dtype=np.float32)})})
    api = hf.HfApi(endpoint=proxy.url, token=False)
    assert (await proxy.call(api.model_info, TINY)).sha != new  # held: the approved commit
    async with browserless(proxy) as client:
        await client.sign_in(await admin_token(proxy, Role.REVIEWER))
        page = await client.get("/admin/changes")
        assert new in page.text and "model.safetensors" in page.text
        form = {"csrf": csrf_of(page), "type": "model", "repo": TINY, "ref": "main",
                "comment": "retrained"}  # fmt: skip
        answer = await client.post("/admin/changes/approve", form)
        assert (answer.status, answer.location) == (303, "/admin/changes")
        assert "No pinned change is waiting" in (await client.get("/admin/changes")).text
    await asyncio.sleep(1.1)  # the server's caches of pins last at most a second
    assert (await proxy.call(api.model_info, TINY)).sha == new


async def test_pages_admin_without_slash_leads_to_the_front_page(proxy: RunningProxy) -> None:
    async with browserless(proxy) as client:
        answer = await client.get("/admin")
    assert (answer.status, answer.location) == (303, "/admin/")


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (f"{FORM}; charset=foo", b"comment=fine", 'charset "foo" is not supported'),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="comment"\r\n\r\nfine\r\n--x--\r\n',
            "is not accepted here",
        ),
        (FORM, b"comment=%ED%A0%80", "not UTF-8 text"),
        (FORM, b"&".join([b"a=b"] * 60), "more than 50 fields"),
        (FORM, b"comment=" + b"x" * 70_000, "is larger than 65536 bytes"),
    ],
    ids=["unknown-charset", "multipart", "bad-utf8", "too-many-fields", "too-large"],
)
async def test_pages_post_with_a_body_we_cannot_read_is_a_400_page(
    proxy: RunningProxy, content_type: str, body: bytes, message: str
) -> None:
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.REVIEWER)
        answer = await client.request(
            "POST", "/admin/quarantine/1/release", data=body,
            headers={"Content-Type": content_type},
        )  # fmt: skip
    assert answer.status == 400
    assert "<h1>That cannot be used</h1>" in answer.text and message in answer.shown


async def test_pages_sign_in_with_an_unknown_charset_is_a_400_page(proxy: RunningProxy) -> None:
    async with browserless(proxy) as client:
        answer = await client.request(
            "POST",
            "/admin/signin",
            data=b"token=x",
            headers={"Content-Type": f"{FORM}; charset=foo"},
        )
    assert answer.status == 400 and 'charset "foo" is not supported' in answer.shown


async def test_pages_refuse_a_form_carrying_two_csrf_tokens(proxy: RunningProxy) -> None:
    async with browserless(proxy) as client:
        await client.sign_in_as(Role.ADMIN)
        token = await client.csrf("/admin/")
        answer = await client.post(
            "/admin/repos/block",
            [("csrf", token), ("csrf", "forged"), ("type", "model"), ("repo", MODEL),
             ("comment", "x")],
        )  # fmt: skip
    assert answer.status == 403 and "CSRF" in answer.text
    assert await proxy.app[SERVICES].review.blocked() == []


def test_pages_docstring_route_table_lists_every_route_with_its_role() -> None:
    documented: set[tuple[str, str, str]] = set()
    for line in (pages.__doc__ or "").splitlines():
        found = re.fullmatch(r"\s+(GET|POST)\s+(/admin/\S*)\s.*\s(\S+)", line)
        if found is None:
            continue
        method, path, role = found.groups()
        head, _, last = path.rpartition("/")
        documented |= {(method, f"{head}/{verb}", role) for verb in last.split("|")}
    routes = {
        (p.method, f"{pages.PREFIX}{p.path}", p.action.value if p.action else "-")
        for p in pages.PAGES
    }
    assert documented == routes
