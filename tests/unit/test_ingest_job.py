"""`IngestJob.sendable`: what may go out before the verdict, with the real `StreamScan`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from proxy.errors import Held, UpstreamUnavailable
from proxy.ingest import IngestJob, IngestSpec
from proxy.metadata import EntryType, TreeEntry
from proxy.repos import RepoRef, RepoType
from proxy.store.repository import RepoRecord
from scanners import StreamScan

JSON_BODY = json.dumps({"model_type": "bert", "pad": "x" * 80}).encode()
PICKLE_BODY = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01K\x02\x86\x94."


@pytest.fixture
def scans() -> Iterator[list[StreamScan]]:
    made: list[StreamScan] = []
    yield made
    for scan in made:
        scan.close()


def _job(scans: list[StreamScan], tmp_path: Path, name: str, body: bytes, tail: int) -> IngestJob:
    entry = TreeEntry(EntryType.FILE, name, "1" * 40, len(body))
    record = RepoRecord(1, RepoRef(RepoType.MODEL, "org/m"), private=False, gated="false")
    scan = StreamScan(name=name, size=len(body))
    scans.append(scan)
    return IngestJob(IngestSpec(record, "c" * 40, entry, None), tmp_path / "t.part", scan, tail)


def _arrive(job: IngestJob, data: bytes) -> None:
    """What the ingest's writer does per batch: feed the stream scan, count the flushed bytes."""
    cast(StreamScan, job.scan).feed(data)
    job.flushed += len(data)


def test_ingest_job_sendable_holds_back_the_tail(scans: list[StreamScan], tmp_path: Path) -> None:
    job = _job(scans, tmp_path, "config.json", JSON_BODY, tail=30)
    _arrive(job, JSON_BODY)
    assert job.sendable() == len(JSON_BODY) - 30


def test_ingest_job_sendable_never_exceeds_the_flushed_bytes(
    scans: list[StreamScan], tmp_path: Path
) -> None:
    job = _job(scans, tmp_path, "config.json", JSON_BODY, tail=1)
    # The writer thread feeds the scan before the loop counts the batch as flushed.
    cast(StreamScan, job.scan).feed(JSON_BODY)
    job.flushed = 20
    assert job.sendable() == 20


def test_ingest_job_sendable_of_a_pickle_is_zero_until_the_verdict(
    scans: list[StreamScan], tmp_path: Path
) -> None:
    job = _job(scans, tmp_path, "model.pkl", PICKLE_BODY, tail=1)
    _arrive(job, PICKLE_BODY)
    assert job.sendable() == 0


def test_ingest_job_sendable_after_an_alarm_is_zero(
    scans: list[StreamScan], tmp_path: Path
) -> None:
    job = _job(scans, tmp_path, "config.json", JSON_BODY, tail=1)
    _arrive(job, JSON_BODY + b"more than advertised")
    assert job.sendable() == 0


def test_ingest_job_sendable_with_tail_beyond_size_is_zero(
    scans: list[StreamScan], tmp_path: Path
) -> None:
    job = _job(scans, tmp_path, "config.json", JSON_BODY, tail=10 * len(JSON_BODY))
    _arrive(job, JSON_BODY)
    assert job.sendable() == 0


def test_ingest_job_sendable_once_released_is_the_whole_file(
    scans: list[StreamScan], tmp_path: Path
) -> None:
    job = _job(scans, tmp_path, "model.pkl", PICKLE_BODY, tail=10)
    _arrive(job, PICKLE_BODY)
    job.released = True
    assert (job.sendable(), job.done) == (len(PICKLE_BODY), True)


@pytest.mark.parametrize(
    "failure", [Held("held in quarantine: x", path="x"), UpstreamUnavailable("gone")]
)
def test_ingest_job_sendable_after_a_failure_raises_it(
    scans: list[StreamScan], tmp_path: Path, failure: Held | UpstreamUnavailable
) -> None:
    job = _job(scans, tmp_path, "config.json", JSON_BODY, tail=1)
    _arrive(job, JSON_BODY)
    job.failure = failure
    with pytest.raises(type(failure)):
        job.sendable()


async def test_ingest_job_wait_change_wakes_on_notify(
    scans: list[StreamScan], tmp_path: Path
) -> None:
    job = _job(scans, tmp_path, "config.json", JSON_BODY, tail=1)
    waiter = asyncio.create_task(job.wait_change(60.0))
    await asyncio.sleep(0)
    await job.notify()
    await asyncio.wait_for(waiter, 10.0)
    assert waiter.done()


async def test_ingest_job_wait_change_times_out_quietly(
    scans: list[StreamScan], tmp_path: Path
) -> None:
    job = _job(scans, tmp_path, "config.json", JSON_BODY, tail=1)
    await job.wait_change(0.01)
    assert not job.done
