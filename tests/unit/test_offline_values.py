"""Offline mode's values: ref kinds and refs listing items, and the "not mirrored" errors on the
wire (the Hub's codes, so that the client raises its own exception classes)."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy.catalog import NotMirroredEntry, NotMirroredRevision
from proxy.errors import HubwardenError, OfflineMiss
from proxy.hub.errors import Handler, error_middleware
from proxy.metadata import RefKind, ref_item, ref_kinds
from proxy.repos import RepoRef, RepoType
from proxy.trust.access import OfflineRepoNotFound
from scanners.report import JsonValue

REPO = RepoRef(RepoType.MODEL, "org/m")
COMMIT = "c" * 40


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("", RefKind.DEFAULT),
        ("refs/pr/3", RefKind.PULL_REQUEST),
        ("refs/convert/parquet", RefKind.CONVERT),
        ("main", None),
        ("v1.0", None),
    ],
)
def test_ref_kind_of_name_tells_only_special_refs(name: str, kind: RefKind | None) -> None:
    assert RefKind.of_name(name) is kind


def test_ref_kinds_of_a_listing_names_refs_as_clients_ask_for_them() -> None:
    listing: JsonValue = {
        "branches": [{"name": "main"}, {"name": "both"}],
        "tags": [{"name": "v1"}, {"name": "both"}],
        "converts": [{"name": "parquet"}],
        "pullRequests": [{"name": "refs/pr/1"}],
    }
    assert ref_kinds(listing) == {
        "main": RefKind.BRANCH,
        "both": RefKind.BRANCH,  # the Hub resolves a name that is both as the branch
        "v1": RefKind.TAG,
        "refs/convert/parquet": RefKind.CONVERT,
        "refs/pr/1": RefKind.PULL_REQUEST,
    }


@pytest.mark.parametrize(
    "listing",
    [[], "x", {"branches": "main"}, {"branches": [1, None, {"name": 3}, {"name": ""}]}],
    ids=["list", "text", "not-a-list", "odd-items"],
)
def test_ref_kinds_of_a_hostile_listing_skips_what_it_cannot_read(listing: JsonValue) -> None:
    assert ref_kinds(listing) == {}


def test_ref_kinds_of_a_listing_skips_overlong_names() -> None:
    assert ref_kinds({"tags": [{"name": "v" * 257}, {"name": "ok"}]}) == {"ok": RefKind.TAG}


@pytest.mark.parametrize(
    ("kind", "name", "group", "item"),
    [
        (RefKind.BRANCH, "main", "branches", {"name": "main", "ref": "refs/heads/main"}),
        (RefKind.TAG, "v1", "tags", {"name": "v1", "ref": "refs/tags/v1"}),
        (RefKind.CONVERT, "refs/convert/parquet", "converts",
         {"name": "parquet", "ref": "refs/convert/parquet"}),
        (RefKind.PULL_REQUEST, "refs/pr/2", "pullRequests",
         {"name": "refs/pr/2", "ref": "refs/pr/2"}),
    ],
)  # fmt: skip
def test_ref_item_is_written_as_the_hub_writes_it(
    kind: RefKind, name: str, group: str, item: dict[str, str]
) -> None:
    assert ref_item(kind, name, COMMIT) == (group, {**item, "targetCommit": COMMIT})


def _raising(exc: HubwardenError) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc

    return handler


async def _answer(exc: HubwardenError, method: str = "HEAD") -> web.StreamResponse:
    request = make_mocked_request(method, "/org/m/resolve/main/x.bin")
    return await error_middleware(request, _raising(exc))


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (NotMirroredRevision(REPO, "v9"), 404, "RevisionNotFound"),
        (NotMirroredRevision(REPO, COMMIT, "file list"), 404, "RevisionNotFound"),
        (NotMirroredEntry(REPO, "x.bin", COMMIT), 404, "EntryNotFound"),
        (OfflineRepoNotFound("org/m", authenticated=False), 401, "RepoNotFound"),
        (OfflineRepoNotFound("org/m", authenticated=True), 404, "RepoNotFound"),
    ],
    ids=["revision", "file-list", "entry", "repo-anonymous", "repo-token"],
)
async def test_not_mirrored_errors_carry_the_hubs_code_and_say_how_to_get_it(
    exc: HubwardenError, status: int, code: str
) -> None:
    response = await _answer(exc)
    assert (response.status, response.headers.get("X-Error-Code")) == (status, code)
    assert "ask an administrator" in response.headers["X-Error-Message"]


async def test_not_mirrored_entry_has_no_commit_so_the_client_caches_no_absence() -> None:
    response = await _answer(NotMirroredEntry(REPO, "x.bin", COMMIT))
    assert "X-Repo-Commit" not in response.headers
    assert COMMIT[:12] in response.headers["X-Error-Message"]


def test_not_mirrored_errors_are_offline_misses() -> None:
    assert isinstance(NotMirroredRevision(REPO, "v9"), OfflineMiss)
    assert isinstance(NotMirroredEntry(REPO, "x.bin", COMMIT), OfflineMiss)


def test_not_mirrored_revision_message_names_the_revision_and_what_is_missing() -> None:
    assert NotMirroredRevision(REPO, "v9").message.startswith('revision "v9" of org/m was never')
    listing = NotMirroredRevision(REPO, COMMIT, "commit history").message
    assert listing.startswith(f'the commit history of org/m at "{COMMIT}" was never mirrored')
