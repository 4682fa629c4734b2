"""`Catalog` with a real Repository and Upstream on the fake Hub: resolution, records, history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.catalog import Caller, Catalog
from proxy.config import PinnedChange
from proxy.errors import EntryNotFound, Held, OfflineMiss, RepoNotFound, RevisionNotFound
from proxy.repos import RepoRef, RepoType, Revision
from proxy.store.models import BlockReason
from proxy.store.repository import Repository
from proxy.trust.blocks import Blocks
from proxy.trust.gate import Gate
from proxy.trust.lineage import Lineage
from proxy.trust.pins import Pins
from proxy.upstream import Upstream, UpstreamConfig
from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Repo

MODEL = RepoRef(RepoType.MODEL, "org/m")
ANONYMOUS = Caller(None)
MAIN = Revision("main")
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rewrites:
    """The history_rewritten blocks the catalog's guard (the real `Gate`) placed."""

    repository: Repository

    async def seen(self) -> list[tuple[str, str]]:
        record = await self.repository.find_repo(MODEL)
        block = None if record is None else await self.repository.active_block(record.pk)
        if block is None or block.reason != BlockReason.HISTORY_REWRITTEN:
            return []
        return [(MODEL.repo_id, block.detail)]


@pytest.fixture
async def upstream(fake_hub: FakeHub) -> AsyncIterator[Upstream]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield Upstream(UpstreamConfig(fake_hub.url, None, 5.0, 5.0, 0, 1 << 20, 10_000), session)


@pytest.fixture
def repository(db_sessions: async_sessionmaker[AsyncSession]) -> Repository:
    return Repository(db_sessions)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rewrites(repository: Repository) -> Rewrites:
    return Rewrites(repository)


@pytest.fixture
def catalog(
    repository: Repository, upstream: Upstream, clock: FakeClock, rewrites: Rewrites
) -> Catalog:
    gate = Gate(
        repository,
        Blocks(repository, "sec@example"),
        Pins(repository, ("*.md",)),
        Lineage(repository, upstream, refs_ttl_s=30.0, clock=clock),
        pinned_change=lambda: PinnedChange.HOLD,
        contact="sec@example",
    )
    return Catalog(repository, upstream, ttl_s=30.0, clock=clock, guard=gate)


@pytest.fixture
def repo(fake_hub: FakeHub) -> Repo:
    return fake_hub.create_repo("org/m", files={"config.json": b"{}", "d/w.bin": b"w" * 100})


async def test_catalog_resolve_branch_gives_its_head_and_records_it(
    catalog: Catalog, repository: Repository, repo: Repo
) -> None:
    resolved = await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    assert resolved.commit == repo.head()
    assert await repository.get_ref(resolved.repo.pk, "main") == repo.head()


async def test_catalog_resolve_within_ttl_asks_upstream_once(
    catalog: Catalog, repo: Repo, fake_hub: FakeHub
) -> None:
    await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    repo.commit({"new.txt": b"n"})
    resolved = await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    assert resolved.commit != repo.head()
    assert fake_hub.count("/api/models/org/m/revision/main") == 1


async def test_catalog_resolve_after_ttl_sees_the_new_head(
    catalog: Catalog, repo: Repo, clock: FakeClock
) -> None:
    await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    new_head = repo.commit({"new.txt": b"n"})
    clock.now += 31
    assert (await catalog.resolve(MODEL, MAIN, ANONYMOUS)).commit == new_head


async def test_catalog_resolve_cache_is_per_caller(
    catalog: Catalog, repo: Repo, fake_hub: FakeHub
) -> None:
    token = fake_hub.add_user("alice")
    await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    await catalog.resolve(MODEL, MAIN, Caller(token))
    assert fake_hub.count("/api/models/org/m/revision/main") == 2


async def test_catalog_recorded_commit_is_answered_without_upstream(
    catalog: Catalog, repo: Repo, fake_hub: FakeHub
) -> None:
    await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    fake_hub.reset_requests()
    resolved = await catalog.resolve(MODEL, Revision(repo.head()), ANONYMOUS)
    assert resolved.commit == repo.head()
    assert fake_hub.requests == []


async def test_catalog_branch_moving_forward_is_not_a_rewrite(
    catalog: Catalog, repo: Repo, clock: FakeClock, rewrites: Rewrites
) -> None:
    await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    for n in range(7):  # more than two pages of history
        repo.commit({f"f{n}.txt": b"x"})
    clock.now += 31
    await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    assert await rewrites.seen() == []


async def test_catalog_force_pushed_branch_is_reported_as_rewritten(
    catalog: Catalog, repo: Repo, clock: FakeClock, rewrites: Rewrites
) -> None:
    old = repo.head()
    await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    new = repo.force_push({"config.json": b'{"evil": true}'})
    clock.now += 31
    with pytest.raises(Held, match="history_rewritten"):
        await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    seen = await rewrites.seen()
    assert len(seen) == 1
    repo_id, detail = seen[0]
    assert repo_id == "org/m"
    assert old[:12] in detail and new[:12] in detail


async def test_catalog_pr_ref_moving_is_not_checked_for_ancestry(
    catalog: Catalog, repo: Repo, clock: FakeClock, rewrites: Rewrites
) -> None:
    pr = Revision(repo.open_pr({"a.txt": b"a"}))
    await catalog.resolve(MODEL, pr, ANONYMOUS)
    repo.pull_requests[1] = repo.force_push({"b.txt": b"b"}, branch="scratch")
    clock.now += 31
    await catalog.resolve(MODEL, pr, ANONYMOUS)
    assert await rewrites.seen() == []


async def test_catalog_tree_is_recorded_and_served_from_the_database(
    catalog: Catalog, repo: Repo, fake_hub: FakeHub
) -> None:
    resolved = await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    first = await catalog.tree(resolved, ANONYMOUS)
    fake_hub.reset_requests()
    assert await catalog.tree(resolved, ANONYMOUS) == first
    assert fake_hub.requests == []
    assert {e.path for e in first} == {".gitattributes", "config.json", "d", "d/w.bin"}


async def test_catalog_file_entry_of_a_folder_is_entry_not_found_with_commit(
    catalog: Catalog, repo: Repo
) -> None:
    resolved = await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    with pytest.raises(EntryNotFound) as caught:
        await catalog.file_entry(resolved, "d", ANONYMOUS)
    assert caught.value.commit == repo.head()


async def test_catalog_entries_are_fetched_once_then_recorded(
    catalog: Catalog, repo: Repo, fake_hub: FakeHub
) -> None:
    resolved = await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    await catalog.file_entry(resolved, "config.json", ANONYMOUS)
    await catalog.file_entry(resolved, "config.json", ANONYMOUS)
    assert fake_hub.count("/api/models/org/m/paths-info/*") == 1


async def test_catalog_offline_resolves_what_was_recorded(
    catalog: Catalog, repository: Repository, repo: Repo
) -> None:
    online = await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    await catalog.tree(online, ANONYMOUS)
    offline = Catalog(repository, None, ttl_s=30.0)
    resolved = await offline.resolve(MODEL, MAIN, ANONYMOUS)
    assert resolved.commit == repo.head()
    assert len(await offline.tree(resolved, ANONYMOUS)) == 4


async def test_catalog_offline_unknown_repo_is_repo_not_found(repository: Repository) -> None:
    with pytest.raises(RepoNotFound):
        await Catalog(repository, None, ttl_s=30.0).resolve(MODEL, MAIN, ANONYMOUS)


async def test_catalog_offline_unknown_revision_is_revision_not_found(
    catalog: Catalog, repository: Repository, repo: Repo
) -> None:
    await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    with pytest.raises(RevisionNotFound):
        await Catalog(repository, None, ttl_s=30.0).resolve(MODEL, Revision("v2"), ANONYMOUS)


async def test_catalog_offline_tree_never_mirrored_is_offline_miss(
    catalog: Catalog, repository: Repository, repo: Repo
) -> None:
    await catalog.resolve(MODEL, MAIN, ANONYMOUS)
    offline = Catalog(repository, None, ttl_s=30.0)
    resolved = await offline.resolve(MODEL, MAIN, ANONYMOUS)
    with pytest.raises(OfflineMiss, match="never mirrored"):
        await offline.tree(resolved, ANONYMOUS)


async def test_catalog_private_repo_access_is_checked_per_caller(
    catalog: Catalog, fake_hub: FakeHub
) -> None:
    token = fake_hub.add_user("alice")
    fake_hub.create_repo("org/m", files={"a.txt": b"a"}, private=True, readers=["alice"])
    resolved = await catalog.resolve(MODEL, MAIN, Caller(token))
    with pytest.raises(RepoNotFound):
        await catalog.check_access(resolved.repo, ANONYMOUS)
