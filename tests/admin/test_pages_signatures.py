"""Model signatures on the admin pages (issue 11, item 1): wherever a held file or a repo is
shown (the quarantine list, a held file, the blocked repos, the risk card), its revision's
recorded signature is shown as verified (by whom), unsigned, invalid or untrusted signer, and a
file's standing against it; what was never checked says so. Signed fake-Hub repos, through a
running Hubwarden and plain HTTP."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from proxy.admin.identity import Role
from proxy.hub.context import SERVICES
from proxy.repos import RepoRef, RepoType
from tests.admin.test_pages import Answer, browserless
from tests.e2e.test_signatures import (
    REPO,
    extra_file,
    model_files,
    publish,
    tampered_file,
    trusted_key,
    wrong_signer,
)
from tests.fakehub.hub import FakeHub
from tests.proxyplugin import RunningProxy, proxy_settings, start_proxy
from tests.signing import make_key, sign_with_key

_BADGE = re.compile(r'<span class="badge (sig-[a-z]+)">([a-z ]+)</span>')


@asynccontextmanager
async def _mirror(fake_hub: FakeHub, tmp_path: Path, **signing: Any) -> AsyncIterator[RunningProxy]:
    overrides = {f"signing.{key}": value for key, value in signing.items()}
    running, runner = await start_proxy(
        proxy_settings(fake_hub, tmp_path / "data", **overrides), tmp_path / "client"
    )
    try:
        yield running
    finally:
        await runner.cleanup()


async def _held(proxy: RunningProxy, path: str) -> int:
    with pytest.raises(HfHubHTTPError, match=r"review (\d+)") as caught:
        await proxy.download(REPO, path)
    found = re.search(r"review (\d+)", str(caught.value))
    assert found is not None
    return int(found.group(1))


async def _page(proxy: RunningProxy, path: str) -> Answer:
    name = f"sig-{secrets.token_hex(4)}"
    _, token = await proxy.app[SERVICES].identities.create(name, Role.ADMIN, None, "t")
    async with browserless(proxy) as client:
        assert (await client.sign_in(token)).status == 303
        page = await client.get(path)
    assert page.status == 200, page.text
    return page


def _badges(page: Answer) -> list[tuple[str, str]]:
    return _BADGE.findall(page.text)


async def test_pages_show_a_verified_signature_and_a_file_it_does_not_cover(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    key = make_key(tmp_path / "keys")
    files, signature = extra_file(tmp_path / "sign", key)
    publish(fake_hub, files, signature)
    async with _mirror(fake_hub, tmp_path, trusted=trusted_key(key)) as proxy:
        await proxy.download(REPO, "config.json")  # verified, covered: served
        review = await _held(proxy, "extra.json")
        item = await _page(proxy, f"/admin/quarantine/{review}")
        assert ("sig-bad", "verified") in _badges(item)  # verified, but not for this file
        assert "verified by ACME release key" in item.shown
        assert "this file is not covered by the signature" in item.shown
        listing = await _page(proxy, "/admin/quarantine")
        assert ("sig-bad", "verified") in _badges(listing)
        assert "this file is not covered by the signature" in listing.shown
        card = await _page(proxy, f"/admin/repos/models/{REPO}/risk")
        assert ("sig-ok", "verified") in _badges(card)
        assert "verified by ACME release key" in card.shown


async def test_pages_show_a_file_that_differs_from_what_was_signed(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    key = make_key(tmp_path / "keys")
    files, signature = tampered_file(tmp_path / "sign", key)
    publish(fake_hub, files, signature)
    async with _mirror(fake_hub, tmp_path, trusted=trusted_key(key)) as proxy:
        review = await _held(proxy, "config.json")
        item = await _page(proxy, f"/admin/quarantine/{review}")
        assert "this file differs from what was signed" in item.shown
        assert ("sig-bad", "verified") in _badges(item)


async def test_pages_show_an_untrusted_signer_and_its_claimed_identity(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    key = make_key(tmp_path / "keys")
    files, signature = wrong_signer(tmp_path / "sign", key)
    publish(fake_hub, files, signature)
    async with _mirror(fake_hub, tmp_path, trusted=trusted_key(key),
                       require_signature=["acme/*"]) as proxy:  # fmt: skip
        review = await _held(proxy, "config.json")
        item = await _page(proxy, f"/admin/quarantine/{review}")
        assert ("sig-bad", "untrusted signer") in _badges(item)
        assert "untrusted signer (key sha256:" in item.shown
        listing = await _page(proxy, "/admin/quarantine")
        assert ("sig-bad", "untrusted signer") in _badges(listing)


async def test_pages_show_unsigned_for_a_repo_that_must_be_signed_and_on_blocked_repos(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    publish(fake_hub, model_files(), None)
    async with _mirror(fake_hub, tmp_path, require_signature=["acme/*"]) as proxy:
        review = await _held(proxy, "config.json")
        item = await _page(proxy, f"/admin/quarantine/{review}")
        assert ("sig-none", "unsigned") in _badges(item)
        review_service = proxy.app[SERVICES].review
        await review_service.block(RepoRef(RepoType.MODEL, REPO), "os:test", "incident 1")
        repos = await _page(proxy, "/admin/repos")
        assert ("sig-none", "unsigned") in _badges(repos)


async def test_pages_say_not_checked_for_a_revision_never_checked(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    """A repo blocked before any of its files was fetched: no signature was ever judged."""
    key = make_key(tmp_path / "keys")
    files = model_files()
    publish(fake_hub, files, sign_with_key(tmp_path / "sign", files, key))
    async with _mirror(fake_hub, tmp_path, trusted=trusted_key(key)) as proxy:
        info = await proxy.call(HfApi(endpoint=proxy.url, token=False).model_info, REPO)
        assert info.sha
        review = proxy.app[SERVICES].review
        await review.block(RepoRef(RepoType.MODEL, REPO), "os:test", "before any file")
        repos = await _page(proxy, "/admin/repos")
        assert ("sig-none", "not checked") in _badges(repos)
        assert "not checked yet" in repos.shown
