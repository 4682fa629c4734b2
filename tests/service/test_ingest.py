"""`Ingestor` driven directly: real Repository, BlobStore, ScannerPool, StreamScanPool, Upstream on
the fake Hub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.config import PinnedChange, PolicySettings
from proxy.errors import Held, UpstreamUnavailable
from proxy.forkserver import ForkServer
from proxy.ingest import IngestJob, Ingestor, IngestSettings, IngestSpec
from proxy.lifecycle import BlobLifecycle
from proxy.repos import RepoRef, RepoType
from proxy.scanning import ScanLimits, ScannerPool
from proxy.store.blobs import BlobStore
from proxy.store.models import AuditEvent, BlobState
from proxy.store.repository import Repository
from proxy.stream_scans import StreamLimits, StreamScanPool
from proxy.trust.blocks import Blocks
from proxy.trust.gate import Gate
from proxy.trust.lineage import Lineage
from proxy.trust.pins import Pins
from proxy.trust.policy_gate import PolicyGate
from proxy.trust.rules import Policy
from proxy.upstream import Upstream, UpstreamConfig
from tests.fakehub.hub import FakeHub
from tests.fakehub.model import Repo
from tests.fakehub.traffic import Origin

MODEL = RepoRef(RepoType.MODEL, "org/m")
CONFIG = b'{"model_type": "bert", "hidden_size": 8}\n'
EVIL_PICKLE = b"\x80\x02cos\nsystem\n(S'id'\ntR."  # written, scanned, never loaded
FINISH_TIMEOUT_S = 30.0
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _safetensors(values: int = 50_000) -> bytes:
    """A valid safetensors file of one F32 tensor (200 KB by default: several chunks)."""
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    data = (bytes(range(256)) * (4 * values // 256 + 1))[: 4 * values]
    return len(header).to_bytes(8, "little") + header + data


WEIGHTS = _safetensors()


def _ingestor(
    repository: Repository,
    store: BlobStore,
    upstream: Upstream | None,
    scanner: ScannerPool,
    settings: IngestSettings,
    *,
    stream_scans: StreamScanPool,
) -> Ingestor:
    """An Ingestor wired as `create_app` wires it, with the real trust rules."""
    blocks = Blocks(repository, "sec@example")
    lineage = Lineage(repository, upstream, refs_ttl_s=0)
    policy = PolicyGate(repository, lineage, lambda: Policy(PolicySettings()), "sec@example")
    gate = Gate(
        repository,
        blocks,
        Pins(repository, ("*.md",)),
        lineage,
        pinned_change=lambda: PinnedChange.BLOCK,
        contact="sec@example",
        policy=policy,
    )
    return Ingestor(
        BlobLifecycle(repository, store, blocks, "sec@example"),
        store,
        upstream,
        scanner,
        gate,
        lambda spec, report: policy.settle(spec.origin, report),
        stream_scans,
        settings,
    )


@dataclass
class Rig:
    ingestor: Ingestor
    repository: Repository
    store: BlobStore
    upstream: Upstream
    stream_scans: StreamScanPool


@pytest.fixture
def ingest_retries() -> int:
    return 1


@pytest.fixture
async def rig(
    fake_hub: FakeHub,
    db_sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
    ingest_retries: int,
) -> AsyncIterator[Rig]:
    repository = Repository(db_sessions)
    store = BlobStore(tmp_path / "data")
    store.prepare()
    forks = ForkServer(store.tmp_dir)
    stream_scans = StreamScanPool(StreamLimits(1, 100, 1024, 30, 60.0), store.tmp_dir, forks)
    await stream_scans.start()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        upstream = Upstream(
            UpstreamConfig(fake_hub.url, None, 5.0, 5.0, 0, 1024 * 1024, 10_000), session
        )
        ingestor = _ingestor(
            repository,
            store,
            upstream,
            ScannerPool(
                ScanLimits(timeout_s=60.0, max_memory_mb=1024, max_cpu_s=30, workers=2),
                forks=forks,
            ),
            IngestSettings(
                hold_tail_bytes=1024,
                write_batch_bytes=64 * 1024,
                chunk_bytes=16 * 1024,
                retries=ingest_retries,
            ),
            stream_scans=stream_scans,
        )
        try:
            yield Rig(ingestor, repository, store, upstream, stream_scans)
        finally:
            await ingestor.cleanup()
            await stream_scans.close()
            await forks.close()


@pytest.fixture
def repo(fake_hub: FakeHub) -> Repo:
    return fake_hub.create_repo(
        "org/m",
        files={"model.safetensors": WEIGHTS, "config.json": CONFIG, "evil.pkl": EVIL_PICKLE},
    )


async def _spec(rig: Rig, repo: Repo, path: str) -> IngestSpec:
    record = await rig.repository.upsert_repo(MODEL, private=False, gated="false")
    (entry,) = await rig.upstream.paths_info(MODEL, repo.head(), [path], None)
    return IngestSpec(record, repo.head(), entry, None)


async def _started(rig: Rig, spec: IngestSpec) -> IngestJob:
    job = await rig.ingestor.start(spec)
    assert job is not None
    return job


async def _finished(rig: Rig, job: IngestJob) -> None:
    """Wait until the ingest task has ended (verdict recorded, job dropped)."""
    async with asyncio.timeout(FINISH_TIMEOUT_S):
        while rig.ingestor.job(job.etag) is not None or not job.done:
            await job.wait_change(0.2)


async def _ingest(rig: Rig, repo: Repo, path: str) -> IngestJob:
    job = await _started(rig, await _spec(rig, repo, path))
    await _finished(rig, job)
    return job


def _files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


# -- release --------------------------------------------------------------------------------------


@SQLITE_ONLY
async def test_ingestor_clean_lfs_file_is_released_into_the_store(rig: Rig, repo: Repo) -> None:
    job = await _ingest(rig, repo, "model.safetensors")
    blob = await rig.repository.get_blob(job.etag)
    assert blob is not None
    assert (job.released, blob.state, blob.sha256) == (True, BlobState.RELEASED, job.etag)
    assert rig.store.released_path(job.etag).read_bytes() == WEIGHTS


@SQLITE_ONLY
async def test_ingestor_clean_regular_file_is_verified_by_git_sha1(rig: Rig, repo: Repo) -> None:
    job = await _ingest(rig, repo, "config.json")
    blob = await rig.repository.get_blob(repo.file("config.json").sha1)
    assert blob is not None
    assert (job.released, blob.state) == (True, BlobState.RELEASED)
    assert rig.store.released_path(str(blob.sha256)).read_bytes() == CONFIG


@SQLITE_ONLY
async def test_ingestor_release_pins_the_path(rig: Rig, repo: Repo) -> None:
    job = await _ingest(rig, repo, "model.safetensors")
    pin = await rig.repository.get_pin(job.spec.repo.pk, "model.safetensors")
    assert pin is not None
    assert (pin.etag, pin.commit) == (job.etag, repo.head())


@SQLITE_ONLY
async def test_ingestor_release_is_audited(
    rig: Rig, repo: Repo, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    await _ingest(rig, repo, "model.safetensors")
    async with db_sessions() as session:
        actions = list((await session.execute(select(AuditEvent.action))).scalars())
    assert actions == ["blob.released"]


@SQLITE_ONLY
async def test_ingestor_release_leaves_no_temp_file(rig: Rig, repo: Repo) -> None:
    await _ingest(rig, repo, "model.safetensors")
    assert _files(rig.store.tmp_dir) == []


# -- single flight --------------------------------------------------------------------------------


async def test_ingestor_two_starts_fetch_the_blob_once(
    rig: Rig, repo: Repo, fake_hub: FakeHub
) -> None:
    spec = await _spec(rig, repo, "model.safetensors")
    first = await _started(rig, spec)
    second = await rig.ingestor.start(spec)
    await _finished(rig, first)
    assert second is first
    assert fake_hub.body_fetches("*/model.safetensors") == 1


@SQLITE_ONLY
async def test_ingestor_concurrent_starts_claim_the_blob_once(
    rig: Rig, repo: Repo, fake_hub: FakeHub
) -> None:
    spec = await _spec(rig, repo, "model.safetensors")
    jobs = await asyncio.gather(*(rig.ingestor.start(spec) for _ in range(5)))
    running = {id(j): j for j in jobs if j is not None}
    assert len(running) == 1
    await _finished(rig, next(iter(running.values())))
    assert fake_hub.body_fetches("*/model.safetensors") == 1


@SQLITE_ONLY
async def test_ingestor_start_after_release_starts_nothing(
    rig: Rig, repo: Repo, fake_hub: FakeHub
) -> None:
    spec = await _spec(rig, repo, "model.safetensors")
    await _finished(rig, await _started(rig, spec))
    assert await rig.ingestor.start(spec) is None
    assert fake_hub.body_fetches("*/model.safetensors") == 1


# -- verdicts against the file --------------------------------------------------------------------


@pytest.mark.parametrize("keep_size", [True, False])
async def test_ingestor_tampered_bytes_are_rejected_and_block_the_repo(
    rig: Rig, repo: Repo, keep_size: bool
) -> None:
    repo.tamper("model.safetensors", keep_size=keep_size)
    job = await _ingest(rig, repo, "model.safetensors")
    blob = await rig.repository.get_blob(job.etag)
    block = await rig.repository.active_block(job.spec.repo.pk)
    assert blob is not None and block is not None
    assert (blob.state, block.reason) == (BlobState.REJECTED, "tampered")
    with pytest.raises(Held, match="tampered"):
        job.sendable()


@SQLITE_ONLY
async def test_ingestor_tampered_bytes_are_discarded(rig: Rig, repo: Repo) -> None:
    repo.tamper("model.safetensors", keep_size=True)
    await _ingest(rig, repo, "model.safetensors")
    assert _files(rig.store.root) == []


@SQLITE_ONLY
async def test_ingestor_tampered_regular_file_is_rejected(rig: Rig, repo: Repo) -> None:
    repo.tamper("config.json", keep_size=True)
    job = await _ingest(rig, repo, "config.json")
    blob = await rig.repository.get_blob(job.etag)
    assert blob is not None
    assert blob.state is BlobState.REJECTED


@SQLITE_ONLY
async def test_ingestor_malicious_pickle_is_rejected_into_quarantine(rig: Rig, repo: Repo) -> None:
    job = await _ingest(rig, repo, "evil.pkl")
    blob = await rig.repository.get_blob(job.etag)
    assert blob is not None
    assert (blob.state, job.released) == (BlobState.REJECTED, False)
    assert rig.store.quarantined_path(job.etag).read_bytes() == EVIL_PICKLE
    assert not rig.store.has_released(job.etag)


@SQLITE_ONLY
async def test_ingestor_malicious_pickle_fails_readers_with_the_review_id(
    rig: Rig, repo: Repo
) -> None:
    job = await _ingest(rig, repo, "evil.pkl")
    blob = await rig.repository.get_blob(job.etag)
    assert blob is not None
    with pytest.raises(Held, match=rf"os\.system.*review {blob.pk}; ask sec@example") as caught:
        job.sendable()
    assert caught.value.review_id == blob.pk


@SQLITE_ONLY
async def test_ingestor_malicious_pickle_keeps_its_findings(rig: Rig, repo: Repo) -> None:
    job = await _ingest(rig, repo, "evil.pkl")
    blob = await rig.repository.get_blob(job.etag)
    assert blob is not None
    codes = [f.code for f in await rig.repository.list_findings(blob.pk)]
    assert "PICKLE_GLOBAL_DENIED" in codes


# -- upstream trouble -----------------------------------------------------------------------------


@SQLITE_ONLY
async def test_ingestor_body_cut_mid_way_resumes_with_a_range(
    rig: Rig, repo: Repo, fake_hub: FakeHub
) -> None:
    stall = fake_hub.stall("*/model.safetensors", after_bytes=70_000)
    job = await _started(rig, await _spec(rig, repo, "model.safetensors"))
    await asyncio.wait_for(stall.reached.wait(), FINISH_TIMEOUT_S)
    stall.cut()
    await _finished(rig, job)
    first, resumed = [r.range for r in fake_hub.requests if r.origin is Origin.CDN]
    # Resumed from the last byte written (the cut may lose a partial chunk, never more).
    assert first is None
    assert resumed is not None
    assert 0 < int(resumed.removeprefix("bytes=").removesuffix("-")) <= 70_000
    assert rig.store.released_path(job.etag).read_bytes() == WEIGHTS


@SQLITE_ONLY
@pytest.mark.parametrize("ingest_retries", [0])
async def test_ingestor_body_cut_without_retries_is_abandoned(
    rig: Rig, repo: Repo, fake_hub: FakeHub
) -> None:
    stall = fake_hub.stall("*/model.safetensors", after_bytes=70_000)
    job = await _started(rig, await _spec(rig, repo, "model.safetensors"))
    await asyncio.wait_for(stall.reached.wait(), FINISH_TIMEOUT_S)
    stall.cut()
    await _finished(rig, job)
    with pytest.raises(UpstreamUnavailable):
        job.sendable()
    assert await rig.repository.get_blob(job.etag) is None
    assert _files(rig.store.root) == []


@SQLITE_ONLY
@pytest.mark.parametrize("ingest_retries", [0])
async def test_ingestor_abandoned_blob_is_fetched_again_by_the_next_start(
    rig: Rig, repo: Repo, fake_hub: FakeHub
) -> None:
    fake_hub.inject("*/model.safetensors", status=500, origin=Origin.CDN)
    spec = await _spec(rig, repo, "model.safetensors")
    await _finished(rig, await _started(rig, spec))
    retry = await _started(rig, spec)
    await _finished(rig, retry)
    assert retry.released


@SQLITE_ONLY
async def test_ingestor_range_ignored_on_resume_is_not_spliced(
    rig: Rig, repo: Repo, fake_hub: FakeHub
) -> None:
    stall = fake_hub.stall("*/model.safetensors", after_bytes=70_000)
    spec = await _spec(rig, repo, "model.safetensors")
    job = await _started(rig, spec)
    await asyncio.wait_for(stall.reached.wait(), FINISH_TIMEOUT_S)
    # The resumed request gets a 200 with the whole body: splicing it would corrupt the file.
    fake_hub.inject("*/model.safetensors", status=200, body=WEIGHTS, origin=Origin.CDN, times=5)
    stall.cut()
    await _finished(rig, job)
    assert not rig.store.has_released(job.etag)
    assert await rig.repository.get_blob(job.etag) is None


@SQLITE_ONLY
async def test_ingestor_cleanup_abandons_an_ingest_in_flight(
    rig: Rig, repo: Repo, fake_hub: FakeHub
) -> None:
    stall = fake_hub.stall("*/model.safetensors", after_bytes=70_000)
    job = await _started(rig, await _spec(rig, repo, "model.safetensors"))
    await asyncio.wait_for(stall.reached.wait(), FINISH_TIMEOUT_S)
    await rig.ingestor.cleanup()
    assert rig.ingestor.job(job.etag) is None
    assert await rig.repository.get_blob(job.etag) is None
    assert _files(rig.store.tmp_dir) == []


@SQLITE_ONLY
async def test_ingestor_offline_starts_nothing(rig: Rig, repo: Repo, tmp_path: Path) -> None:
    spec = await _spec(rig, repo, "model.safetensors")
    offline = _ingestor(
        rig.repository,
        rig.store,
        None,
        ScannerPool(ScanLimits(timeout_s=1.0, max_memory_mb=256, max_cpu_s=1, workers=1)),
        IngestSettings(hold_tail_bytes=1, write_batch_bytes=4096, chunk_bytes=4096, retries=0),
        stream_scans=rig.stream_scans,
    )
    assert await offline.start(spec) is None
    assert await rig.repository.get_blob(spec.entry.etag) is None
