"""The admin pages in a real headless Chromium, as a reviewer uses them: sign in, filter the
quarantine list by severity and format, open the held file, read its findings, release it with a
comment and a repo-wide waiver, find the decision in the audit log, watch the waiver let a later
file through and revoke it on the waivers page, then read the summary; the real client downloads
the released file and is refused the one the ended waiver had let through.

The browser is Debian's `chromium` (`.ci/run` installs it, and Playwright's Python package from
the test extra); Playwright never downloads one. Without it these tests fail, never skip.
Screenshots of the list (whole, filtered), item, waivers and summary pages go to
`tests/output/` (git-ignored).
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from huggingface_hub.errors import HfHubHTTPError
from playwright.async_api import Browser, Page, async_playwright, expect

from proxy.admin.identity import Role
from proxy.hub.context import SERVICES
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import RunningProxy

CHROMIUM = "/usr/bin/chromium"
OUTPUT = Path(__file__).resolve().parents[1] / "output"
UNKNOWN_PICKLE = b"cacme_tools\nLabels\n(tR."
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
TIMEOUT_MS = 15_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def _held(
    proxy: RunningProxy, fake_hub: FakeHub, repo: str, name: str, data: bytes = UNKNOWN_PICKLE
) -> int:
    fake_hub.create_repo(repo, files={name: data})
    with pytest.raises(HfHubHTTPError, match=r"review (\d+)") as caught:
        await proxy.download(repo, name)
    found = re.search(r"review (\d+)", str(caught.value))
    assert found is not None
    return int(found.group(1))


async def _sign_in(page: Page, proxy: RunningProxy, path: str, role: Role, name: str) -> None:
    """Open `path`, land on the sign-in page, sign in, and come back to `path`."""
    _, token = await proxy.app[SERVICES].identities.create(name, role, None, "test")
    await page.goto(proxy.url + path)
    await expect(page).to_have_url(re.compile(r"/admin/signin\?next="))
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(proxy.url + path)
    await expect(page.get_by_text(f"Signed in as {name} ({role.value})")).to_be_visible()


def _torch_zip() -> bytes:
    """A PyTorch zip checkpoint whose pickle imports an unknown class: held, format pytorch-zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02cacme_tools\nLabels\n)R.")
        archive.writestr("archive/version", b"3\n")
    return buffer.getvalue()


async def _filter_quarantine(page: Page, **choices: str) -> None:
    """Fill the quarantine list's filter form (labels as shown) and send it."""
    for label, value in choices.items():
        field = page.get_by_label(label)
        if await field.evaluate("field => field.tagName") == "SELECT":
            await field.select_option(value)
        else:
            await field.fill(value)
    await page.get_by_role("button", name="Filter").click()


async def test_reviewer_releases_a_held_file_with_a_waiver_and_revokes_it_in_the_browser(
    proxy: RunningProxy, fake_hub: FakeHub, page: Page
) -> None:
    review_id = await _held(proxy, fake_hub, "org/m", "labels.pkl")
    zip_id = await _held(proxy, fake_hub, "org/zipped", "model.bin", _torch_zip())
    other_id = await _held(proxy, fake_hub, "acme/other", "weights.pkl", MALICIOUS_PICKLE)
    await _sign_in(page, proxy, "/admin/quarantine", Role.REVIEWER, "alice")

    rows = page.locator("table.held tbody tr")
    await expect(rows).to_have_count(3)
    await expect(rows.filter(has_text="weights.pkl")).to_contain_text("critical")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=OUTPUT / "admin-quarantine-list.png", full_page=True)
    await _filter_quarantine(page, **{"Worst finding at least": "critical"})
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("weights.pkl")
    await _filter_quarantine(
        page,
        **{"State": "quarantined", "Repo (org/name or org/)": "org/", "Format": "pickle",
           "Worst finding at least": "medium"},
    )  # fmt: skip
    await expect(page).to_have_url(
        re.compile(r"state=quarantined&repo=org%2F&format=pickle&severity=medium")
    )
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("labels.pkl")
    for hidden in (zip_id, other_id):
        await expect(page.get_by_role("link", name=f"#{hidden}")).to_have_count(0)
    await page.screenshot(path=OUTPUT / "admin-quarantine-filtered.png", full_page=True)

    await page.get_by_role("link", name="labels.pkl").click()
    await expect(page).to_have_url(f"{proxy.url}/admin/quarantine/{review_id}")
    await expect(page).to_have_title(re.compile(r"Review \d+: labels\.pkl"))
    findings = page.locator("table.findings tbody tr")
    await expect(findings.first).to_contain_text("PICKLE_GLOBAL")
    await expect(findings.first).to_contain_text("acme_tools.Labels")
    await expect(page.locator("dl.facts")).to_contain_text("main")  # the revision
    await page.screenshot(path=OUTPUT / "admin-quarantine-item.png", full_page=True)

    await page.get_by_label("Release these bytes").fill("our own labels class; checked")
    await page.get_by_label("This repo").check()
    await page.get_by_label("Waiver ends").select_option("30d")
    await page.get_by_role("button", name="Release").click()
    flash = page.get_by_role("status")
    await expect(flash).to_contain_text(f"Review {review_id} released")
    await expect(flash).to_contain_text("lets later held files of repo model/org/m through")
    await expect(page.locator("dl.facts")).to_contain_text("released")

    await page.get_by_role("link", name="Audit log").click()
    await expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    decision = page.locator("table.audit tbody tr", has_text="review.released")
    await expect(decision).to_contain_text("token:alice")
    await expect(decision).to_contain_text("our own labels class; checked")
    await expect(page.locator("table.audit tbody tr", has_text="waiver.created")).to_have_count(1)

    # A later file of the repo, held on its own, is let through by the waiver...
    fake_hub.repo("org/m").commit({"extra.pkl": b"cacme_tools\nExtra\n(tR."})
    await proxy.download("org/m", "extra.pkl")
    await page.get_by_role("link", name="Waivers").click()
    waiver = page.locator("table.waivers tbody tr", has_text="repo model/org/m")
    await expect(waiver).to_contain_text("active")
    await expect(waiver).to_contain_text("our own labels class; checked")
    await expect(waiver.locator("td.num")).to_have_text("1")  # files let through
    await page.screenshot(path=OUTPUT / "admin-waivers.png", full_page=True)
    # ... until it is revoked: that file, which no person looked at, is held again.
    await waiver.get_by_label(re.compile(r"Why revoke waiver")).fill("publisher compromised")
    await waiver.get_by_role("button", name="Revoke").click()
    await expect(page.get_by_role("status")).to_contain_text("revoked")
    await expect(waiver).to_contain_text("revoked")
    await expect(waiver.get_by_role("button", name="Revoke")).to_have_count(0)

    await page.get_by_role("link", name="← Back to the summary").click()
    await expect(page.get_by_role("heading", name="What Hubwarden holds")).to_be_visible()
    await expect(page.locator(".card", has_text="held for review").first).to_contain_text("2")
    await page.screenshot(path=OUTPUT / "admin-summary.png", full_page=True)

    path = await proxy.download("org/m", "labels.pkl")
    assert path.read_bytes() == UNKNOWN_PICKLE
    with pytest.raises(HfHubHTTPError, match=r"held in quarantine"):
        await proxy.download("org/m", "extra.pkl", force_download=True)


async def test_a_page_opened_without_a_session_leads_to_sign_in_and_back(
    proxy: RunningProxy, page: Page
) -> None:
    await _sign_in(page, proxy, "/admin/waivers?status=active", Role.VIEWER, "vera")
    await expect(page.get_by_role("heading", name="Waivers")).to_be_visible()
    await expect(page.get_by_label("Status")).to_have_value("active")


async def test_a_form_sent_without_its_csrf_token_is_refused_in_the_browser(
    proxy: RunningProxy, fake_hub: FakeHub, page: Page
) -> None:
    review_id = await _held(proxy, fake_hub, "org/m", "labels.pkl")
    await _sign_in(page, proxy, f"/admin/quarantine/{review_id}", Role.REVIEWER, "bob")
    release = page.locator(f"form[action='/admin/quarantine/{review_id}/release']")
    await release.locator("input[name=csrf]").evaluate("field => field.remove()")
    await release.get_by_label("Release these bytes").fill("no token")
    await release.get_by_role("button", name="Release").click()
    await expect(page.get_by_role("heading", name="This form was refused")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("CSRF")
    item = await proxy.app[SERVICES].review.item(review_id)
    assert item.blob.state.value == "quarantined"
