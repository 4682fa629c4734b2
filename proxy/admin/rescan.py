"""Scanning a held file again, for a reviewer (new scanners, a changed policy): the same worker
process and policy rules as the first scan, on the bytes kept in quarantine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from proxy.errors import HubwardenError
from proxy.lifecycle import BlobOrigin, Settlement
from proxy.metadata import EntryType, LfsInfo, TreeEntry
from proxy.scanning import ScannerPool
from proxy.store.blob_protocol import BlobPlace, BlobStore
from proxy.store.repository import BlobRecord, RepoRecord, Repository
from proxy.trust.policy_gate import PolicyGate
from scanners.report import ScanReport

Rescanner = Callable[[BlobRecord], Awaitable[tuple[ScanReport, Settlement]]]
NO_OID = "0" * 40


def make_rescanner(
    repository: Repository, store: BlobStore, scanner: ScannerPool, policy: PolicyGate
) -> Rescanner:
    async def rescan(blob: BlobRecord) -> tuple[ScanReport, Settlement]:
        assert blob.sha256 is not None
        async with store.local_copy(blob.sha256, BlobPlace.QUARANTINED) as held:
            report = await scanner.scan(held, blob.first_path)
        origin = BlobOrigin(await _first_repo(repository, blob), "", _entry(blob))
        return report, await policy.settle(origin, report)

    return rescan


class RescanImpossible(HubwardenError):
    """The held file cannot be scanned again (its repo's record is gone)."""


async def _first_repo(repository: Repository, blob: BlobRecord) -> RepoRecord:
    found = await repository.repo_of_blob(blob.pk)
    if found is None:
        raise RescanImpossible(f"review {blob.pk}: the repo it came from is no longer recorded")
    return found


def _entry(blob: BlobRecord) -> TreeEntry:
    """The file as first asked for: its path, size and advertised hash."""
    lfs = LfsInfo(blob.etag, blob.size, 0) if len(blob.etag) == 64 else None
    oid = blob.etag if lfs is None else NO_OID
    return TreeEntry(EntryType.FILE, blob.first_path, oid, blob.size, lfs)
