"""The Hub's own scan results recorded beside ours (`proxy.trust.hub_scans`): an INFO finding of
scanner "hub" on each blob this mirror holds that the Hub has a word on, once per verdict. The
risk card records what it reads; the upstream watch records what the Hub says of a new commit's
files once they are mirrored (prefetched). Never deciding anything: the verdict stays ours."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from proxy.store.models import BlobState
from proxy.store.repository import Repository
from proxy.trust.hub_scans import HUB_SCANNER, HubFileStatus, hub_finding
from scanners.report import Finding

_SETTLED = (BlobState.RELEASED, BlobState.QUARANTINED, BlobState.REJECTED)


async def record_hub_status(
    repository: Repository,
    blob_pk: int,
    findings: Sequence[Finding],
    status: HubFileStatus,
    commit: str,
) -> Finding | None:
    """Record the Hub's word on a blob (whose findings are `findings`) unless the same verdict
    is recorded already; returns the finding added (None: none was)."""
    finding = hub_finding(status, commit)
    if any(f.scanner == HUB_SCANNER and f.code == finding.code for f in findings):
        return None
    await repository.add_findings(blob_pk, [finding])
    return finding


async def record_hub_scans(
    repository: Repository,
    entries: Iterable[tuple[str, str]],
    commit: str,
    statuses: Mapping[str, HubFileStatus],
) -> int:
    """Record the Hub's word on each file of `commit` (`entries`: path and etag) whose bytes
    this mirror verified; returns how many findings were added. Files not fetched yet get theirs
    when a risk card reads the Hub again once they are."""
    added = 0
    for path, etag in entries:
        status = statuses.get(path)
        if status is None:
            continue
        blob = await repository.get_blob(etag)
        if blob is None or blob.state not in _SETTLED:
            continue
        findings = await repository.list_findings(blob.pk)
        if await record_hub_status(repository, blob.pk, findings, status, commit):
            added += 1
    return added
