"""`Catalog` offline (no upstream at all) over records written through the real Repository:
refs and commit listings, approved commits, and what was never mirrored."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.catalog import Caller, Catalog, NotMirroredEntry, NotMirroredRevision, Resolved
from proxy.errors import EntryNotFound
from proxy.metadata import CommitInfo, EntryType, RefKind, TreeEntry
from proxy.repos import RepoRef, RepoType, Revision
from proxy.store.models import BlobState
from proxy.store.repository import RepoRecord, Repository
from proxy.trust.access import OfflineRepoNotFound

MODEL = RepoRef(RepoType.MODEL, "org/m")
ANONYMOUS = Caller(None)
OLD, NEW, OTHER = "a" * 40, "b" * 40, "c" * 40
CONFIG = TreeEntry(EntryType.FILE, "config.json", "1" * 40, 2)
WEIGHTS = TreeEntry(EntryType.FILE, "w.bin", "2" * 40, 9)


@pytest.fixture
def repository(db_sessions: async_sessionmaker[AsyncSession]) -> Repository:
    return Repository(db_sessions)


@pytest.fixture
def offline(repository: Repository) -> Catalog:
    return Catalog(repository, None, ttl_s=30.0)


async def _repo(repository: Repository, *mirrored: str) -> RepoRecord:
    """A recorded public repo whose `mirrored` commits have their info recorded."""
    record = await repository.upsert_repo(MODEL, private=False, gated="false")
    for sha in mirrored:
        await repository.save_commit(record.pk, sha, {"id": MODEL.repo_id, "sha": sha})
    return record


async def _ref(
    repository: Repository,
    record: RepoRecord,
    name: str,
    head: str,
    *,
    approved: str | None = None,
    kind: RefKind | None = None,
) -> None:
    await repository.set_ref(record.pk, name, head)
    if approved is not None:
        await repository.set_approved(record.pk, name, approved)
    if kind is not None:
        await repository.set_ref_kinds(record.pk, {name: kind})


# -- refs -------------------------------------------------------------------------------------


async def test_offline_refs_list_the_default_branch_as_main_when_only_it_was_recorded(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository, OLD)
    await _ref(repository, record, "", OLD, kind=RefKind.DEFAULT)
    listing = await offline.refs(MODEL, ANONYMOUS, include_prs=False)
    assert listing == {
        "branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": OLD}],
        "converts": [],
        "tags": [],
    }


async def test_offline_refs_list_each_ref_at_the_commit_it_serves(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository, OLD, NEW, OTHER)
    await _ref(repository, record, "main", NEW, approved=OLD, kind=RefKind.BRANCH)
    await _ref(repository, record, "v1", OTHER, kind=RefKind.TAG)
    await _ref(repository, record, "refs/pr/1", NEW, kind=RefKind.PULL_REQUEST)
    listing = await offline.refs(MODEL, ANONYMOUS, include_prs=True)
    assert listing["branches"] == [
        {"name": "main", "ref": "refs/heads/main", "targetCommit": OLD}
    ]  # the head awaiting review is not served, so not listed
    assert listing["tags"] == [{"name": "v1", "ref": "refs/tags/v1", "targetCommit": OTHER}]
    assert listing["pullRequests"] == [
        {"name": "refs/pr/1", "ref": "refs/pr/1", "targetCommit": NEW}
    ]


async def test_offline_refs_leave_out_refs_whose_commit_is_not_mirrored(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository, OLD)
    await _ref(repository, record, "main", OLD, kind=RefKind.BRANCH)
    await _ref(repository, record, "dev", NEW, kind=RefKind.BRANCH)
    listing = await offline.refs(MODEL, ANONYMOUS, include_prs=False)
    assert listing["branches"] == [{"name": "main", "ref": "refs/heads/main", "targetCommit": OLD}]


async def test_offline_refs_of_unknown_kind_are_listed_as_branches(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository, OLD)
    await _ref(repository, record, "recorded-before-kinds", OLD)
    listing = await offline.refs(MODEL, ANONYMOUS, include_prs=False)
    assert listing["branches"] == [
        {"name": "recorded-before-kinds", "ref": "refs/heads/recorded-before-kinds",
         "targetCommit": OLD}
    ]  # fmt: skip


async def test_offline_refs_leave_out_names_the_hub_resolves_but_does_not_list(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository, OLD)
    await _ref(repository, record, "main", OLD, kind=RefKind.BRANCH)
    await _ref(repository, record, "a1b2c3d", OLD, kind=RefKind.UNLISTED)
    listing = await offline.refs(MODEL, ANONYMOUS, include_prs=True)
    assert [group for group, items in listing.items() if items] == ["branches"]
    assert len(listing["branches"]) == 1  # type: ignore[arg-type]


async def test_offline_refs_of_a_repo_never_mirrored_is_repo_not_found(offline: Catalog) -> None:
    with pytest.raises(OfflineRepoNotFound, match="no copy of org/m"):
        await offline.refs(MODEL, ANONYMOUS, include_prs=False)


# -- revisions --------------------------------------------------------------------------------


async def test_offline_branch_held_back_gives_its_approved_commit_with_a_notice(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository, OLD, NEW)
    await _ref(repository, record, "main", NEW, approved=OLD, kind=RefKind.BRANCH)
    _, info = await offline.repo_info(MODEL, Revision("main"), ANONYMOUS)
    assert info.sha == OLD
    assert f"last approved commit {OLD[:12]} of main" in info.notice


@pytest.mark.parametrize(("recorded", "asked"), [("", "main"), ("main", None)])
async def test_offline_main_and_the_default_branch_stand_for_each_other(
    repository: Repository, offline: Catalog, recorded: str, asked: str | None
) -> None:
    record = await _repo(repository, OLD)
    await _ref(repository, record, recorded, OLD)
    revision = None if asked is None else Revision(asked)
    _, info = await offline.repo_info(MODEL, revision, ANONYMOUS)
    assert info.sha == OLD


async def test_offline_ref_whose_commit_info_was_never_recorded_is_not_mirrored(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository)
    await _ref(repository, record, "v2", NEW, kind=RefKind.TAG)
    with pytest.raises(NotMirroredRevision, match='revision "v2" of org/m was never mirrored'):
        await offline.resolve(MODEL, Revision("v2"), ANONYMOUS)


# -- commit listings --------------------------------------------------------------------------


async def test_offline_history_is_the_recorded_listing(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository, NEW)
    listing = [CommitInfo(NEW, {"id": NEW, "title": "b"}), CommitInfo(OLD, {"id": OLD})]
    await repository.save_history(record.pk, NEW, listing)
    assert await offline.history(Resolved(record, NEW), ANONYMOUS) == listing


async def test_offline_history_never_recorded_is_not_mirrored(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository, NEW)
    with pytest.raises(NotMirroredRevision, match="commit history of org/m"):
        await offline.history(Resolved(record, NEW), ANONYMOUS)


async def test_save_history_keeps_what_was_recorded_first(repository: Repository) -> None:
    record = await _repo(repository, NEW)
    first = [CommitInfo(NEW, {"id": NEW, "title": "first"})]
    await repository.save_history(record.pk, NEW, first)
    await repository.save_history(record.pk, NEW, [CommitInfo(NEW, {"id": NEW, "title": "x"})])
    assert await repository.get_history(record.pk, NEW) == first


async def test_save_history_shares_the_items_of_commits_in_several_listings(
    repository: Repository,
) -> None:
    record = await _repo(repository, NEW)
    old = CommitInfo(OLD, {"id": OLD, "title": "old"})
    await repository.save_history(record.pk, OLD, [old])
    await repository.save_history(record.pk, NEW, [CommitInfo(NEW, {"id": NEW}), old])
    assert [c.commit_id for c in await repository.get_history(record.pk, NEW) or []] == [NEW, OLD]


async def test_set_ref_kinds_records_only_refs_that_have_a_row(repository: Repository) -> None:
    record = await _repo(repository, OLD)
    await repository.set_ref(record.pk, "main", OLD)
    kinds = {"main": RefKind.BRANCH, "v1": RefKind.TAG}
    assert await repository.set_ref_kinds(record.pk, kinds) == {"main"}
    assert (await repository.list_refs(record.pk))[0].kind is RefKind.BRANCH


# -- entries and files ------------------------------------------------------------------------


async def test_offline_entries_of_a_commit_never_listed_whole_refuse_unknown_paths(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository, OLD)
    commit = await repository.save_commit(record.pk, OLD, None)
    await repository.save_entries(commit.pk, [CONFIG])
    resolved = Resolved(record, OLD)
    assert await offline.entries(resolved, ["config.json"], ANONYMOUS) == [CONFIG]
    with pytest.raises(NotMirroredEntry, match=r'"w\.bin" of org/m at a{12} was never mirrored'):
        await offline.entries(resolved, ["config.json", "w.bin"], ANONYMOUS)


async def test_offline_entries_of_a_commit_listed_whole_leave_absent_paths_out(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository, OLD)
    commit = await repository.save_commit(record.pk, OLD, None)
    await repository.save_tree(commit.pk, [CONFIG])
    resolved = Resolved(record, OLD)
    assert await offline.entries(resolved, ["config.json", "w.bin"], ANONYMOUS) == [CONFIG]
    with pytest.raises(EntryNotFound) as absent:
        await offline.file_entry(resolved, "w.bin", ANONYMOUS)
    assert absent.value.commit == OLD  # truly absent: the client may remember it


async def test_offline_file_whose_content_never_arrived_is_not_mirrored(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository, OLD)
    commit = await repository.save_commit(record.pk, OLD, None)
    await repository.save_tree(commit.pk, [CONFIG])
    with pytest.raises(NotMirroredEntry) as missing:
        await offline.file_entry(Resolved(record, OLD), "config.json", ANONYMOUS)
    assert missing.value.commit is None


async def test_offline_file_held_in_quarantine_is_still_found_so_its_get_says_why(
    repository: Repository, offline: Catalog
) -> None:
    record = await _repo(repository, OLD)
    commit = await repository.save_commit(record.pk, OLD, None)
    await repository.save_tree(commit.pk, [WEIGHTS])
    assert await repository.claim_blob(WEIGHTS.etag, WEIGHTS.size, record.pk, WEIGHTS.path)
    await repository.set_blob_state(WEIGHTS.etag, BlobState.QUARANTINED, reason="pickle")
    assert await offline.file_entry(Resolved(record, OLD), "w.bin", ANONYMOUS) == WEIGHTS
