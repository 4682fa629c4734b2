"""Offline lineage from recorded (or imported) commit listings and ref kinds: what an offline
mirror needs to judge a pinned file at a commit it only knows from a bundle."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.metadata import CommitInfo, RefKind
from proxy.repos import RepoRef, RepoType
from proxy.store import db
from proxy.store.repository import Repository
from proxy.trust.lineage import Lineage

REPO = RepoRef(RepoType.MODEL, "org/model")
A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)


async def test_offline_is_ancestor_reads_recorded_listings(db_engine: AsyncEngine) -> None:
    repository = Repository(db.session_maker(db_engine))
    repo = await repository.upsert_repo(REPO, private=False, gated="false")
    await repository.save_history(repo.pk, B, [CommitInfo(B, {"id": B}), CommitInfo(A, {"id": A})])
    lineage = Lineage(repository, None, refs_ttl_s=0)
    assert await lineage.is_ancestor(repo, A, B, None) is True
    assert await lineage.is_ancestor(repo, B, A, None) is False  # B's listing names A
    assert await lineage.is_ancestor(repo, C, B, None) is False
    assert await lineage.is_ancestor(repo, A, C, None) is None  # nothing recorded tells


async def test_offline_heads_tell_branches_from_tags_and_leave_out_pull_requests(
    db_engine: AsyncEngine,
) -> None:
    repository = Repository(db.session_maker(db_engine))
    repo = await repository.upsert_repo(REPO, private=False, gated="false")
    for name, commit in (("", A), ("v1", B), ("refs/pr/1", C), ("dev", D)):
        await repository.set_ref(repo.pk, name, commit)
    await repository.set_ref_kinds(
        repo.pk, {"": RefKind.DEFAULT, "v1": RefKind.TAG, "refs/pr/1": RefKind.PULL_REQUEST}
    )
    heads = await Lineage(repository, None, refs_ttl_s=0).heads(repo, None)
    assert heads.branches == {"main": A, "dev": D}  # dev: kind unknown, taken as a branch
    assert heads.tags == {"v1": B}
