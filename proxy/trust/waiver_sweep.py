"""Waived files judged again: when a waiver expires or is revoked, each file it let through (one
no reviewer looked at) goes back to quarantine with the reason it was held for, unless another
active waiver covers it now. The server sweeps every `INTERVAL_S` seconds (proxy.app); revoking
a waiver sweeps at once.
"""

from __future__ import annotations

from proxy.lifecycle import BlobLifecycle
from proxy.store.models import BlobState
from proxy.store.repository import Repository
from proxy.store.waivers import WaivedFile, Waivers
from proxy.trust.blocks import SYSTEM_ACTOR

INTERVAL_S = 60.0
BATCH = 200


class WaiverSweep:
    def __init__(self, waivers: Waivers, repository: Repository, lifecycle: BlobLifecycle) -> None:
        self._waivers = waivers
        self._db = repository
        self._lifecycle = lifecycle

    async def sweep(self) -> int:
        """Judge again every file an ended waiver let through; returns how many are held."""
        held = 0
        while batch := await self._waivers.ended_waived(limit=BATCH):
            for waived in batch:
                held += await self._judge_again(waived)
        return held

    async def _judge_again(self, waived: WaivedFile) -> int:
        blob = await self._db.get_blob_by_pk(waived.blob_pk)
        repo = await self._db.repo_of_blob(waived.blob_pk)
        if blob is None or blob.state is not BlobState.RELEASED or repo is None:
            await self._waivers.mark_judged(waived.pk)
            return 0
        other = await self._waivers.covering(repo.ref, blob.first_path)
        if other is not None:  # still waived, by a newer waiver: its end will judge it
            await self._waivers.record_waived(other.pk, blob.pk, waived.held_for)
            await self._waivers.mark_judged(waived.pk)
            return 0
        ended = "revoked" if waived.waiver.revoked_at is not None else "expired"
        reason = f"{waived.held_for} (waiver {waived.waiver.pk} {ended})"
        await self._lifecycle.held_again(blob, reason, SYSTEM_ACTOR)
        await self._waivers.mark_judged(waived.pk)
        return 1
