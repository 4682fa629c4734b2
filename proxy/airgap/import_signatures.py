"""Model signatures of imported revisions: verified offline, from the bundle, as the server
verifies them when it fetches (`proxy.trust.signatures`), so that the same rules hold.

For each commit an import brings, the signature file (`[signing] signature_file`) is looked up
in the commit's tree (from the signed state) and its bytes read from where the import has them:
staged from the bundle (checked against their sha256 as they streamed), or this mirror's store.
`Signatures.judge` then verifies them against this mirror's `[signing]` trust, always offline (an
import never opens a connection: Sigstore needs `sigstore_trust_config`), and compares the signed
file list with the commit's tree. Each imported file is then judged against that record as
`PolicyGate.settle` judges a fetched one (`Policy.signature_hits`: `signature_invalid`,
`uncovered_files`, `require_signature`), with the sha256 the import verified.

The outcome is recorded in `revision_signatures` once the import's transaction is written, as
the server records it: `verified` (by whom), `unsigned`, `invalid`, `untrusted_signer`; an
`unverifiable` one is not recorded, so that the server tries again later, as it does online.
A signature file the bundle lacks: withheld by the exporter as rejected (`invalid`, as a file
this mirror rejected), or held there or never fetched (`unverifiable`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from proxy.airgap.state import RevisionState
from proxy.errors import shown
from proxy.metadata import EntryType, TreeEntry
from proxy.repos import RepoRef
from proxy.store.blobs import BlobStore
from proxy.store.bundles import BlobView
from proxy.store.models import BlobState, SignatureStatus
from proxy.store.signatures import (
    SignatureRecord,
    SignatureRecords,
    StoredFile,
    StoredRevision,
)
from proxy.trust.model_signing_adapter import MAX_SIGNATURE_BYTES
from proxy.trust.rules import Policy, RuleHit
from proxy.trust.signature_report import build_report, file_message, standing_of
from proxy.trust.signatures import FileSignature, SignatureFileUnavailable, Signatures
from scanners.report import JsonValue

Key = tuple[RepoRef, str]
"""A repo and a commit."""


@dataclass(frozen=True, slots=True)
class SignatureLine:
    """One imported commit's signature as the admin API would show it (`status`: `invalid` once
    a file the bundle carries differs from its signed digest), for the import's report."""

    repo: RepoRef
    commit: str
    status: SignatureStatus
    recorded: SignatureStatus
    signer: str
    summary: str
    required: bool

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "repo": self.repo.repo_id,
            "type": self.repo.repo_type.value,
            "commit": self.commit,
            "status": self.status.value,
            "recorded_status": self.recorded.value,
            "signer": self.signer,
            "summary": self.summary,
            "required": self.required,
        }


@dataclass(frozen=True, slots=True)
class Holdings:
    """Where an import finds a signature file's bytes: staged from the bundle (sha256 → temp
    file), and this mirror's blob rows (etag → row) and store."""

    staged: Mapping[str, Path]
    blobs: Mapping[str, BlobView]
    store: BlobStore


class ImportSignatures:
    """The signatures of one import's commits: judged before its verdicts, recorded after its
    transaction."""

    def __init__(self, signatures: Signatures, records: SignatureRecords) -> None:
        self._signatures = signatures
        self._records = records
        self.judged: dict[Key, SignatureRecord] = {}
        self._states: dict[Key, RevisionState] = {}

    def etags(self, states: Sequence[RevisionState]) -> set[str]:
        """The etags of the signature files of `states`' commits."""
        name = self._signatures.signature_file
        return {e.etag for s in states for e in s.tree if e.path == name}

    async def judge(self, states: Sequence[RevisionState], holdings: Holdings) -> None:
        """Verify the signature of every commit of `states` (once per repo and commit)."""
        for state in states:
            key = (state.repo, state.commit)
            if key not in self.judged:
                self.judged[key] = await self._judge(state, holdings)
                self._states[key] = state

    async def _judge(self, state: RevisionState, holdings: Holdings) -> SignatureRecord:
        signatures = self._signatures
        entry = state.entries().get(signatures.signature_file)
        files = [e for e in state.tree if e.entry_type is EntryType.FILE]
        if entry is None or entry.entry_type is not EntryType.FILE:
            return await signatures.judge(state.repo, state.commit, None, files)
        try:
            data = await asyncio.to_thread(_signature_bytes, state, entry, holdings)
        except SignatureFileUnavailable as exc:
            digest = signatures.trust_digest(state.repo)
            if exc.refused:
                return SignatureRecord(state.commit, SignatureStatus.INVALID, "", exc.message,
                                       trust_digest=digest)  # fmt: skip
            detail = f"the signature file cannot be read: {exc.message}"
            return SignatureRecord(state.commit, SignatureStatus.UNVERIFIABLE, "", detail,
                                   trust_digest=digest)  # fmt: skip
        return await signatures.judge(state.repo, state.commit, data, files)

    def hits(self, policy: Policy, state: RevisionState, path: str, sha256: str) -> list[RuleHit]:
        """The signature rules for an imported file whose bytes hash to `sha256`, as
        `PolicyGate` applies them to a fetched one."""
        signatures = self._signatures
        if path == signatures.signature_file:
            return []  # the signature itself: never judged against itself
        record = self.judged[(state.repo, state.commit)]
        standing = standing_of(record, path, sha256)
        message = file_message(record, path, sha256, standing)
        signature = FileSignature(record.status, standing, record.signer, message)
        return policy.signature_hits(
            state.repo,
            signature,
            required=signatures.is_required(state.repo),
            uncovered=signatures.uncovered_files,
        )

    def lines(self) -> list[SignatureLine]:
        """Each commit's signature with every file of its tree judged against it."""
        lines: list[SignatureLine] = []
        for key, record in self.judged.items():
            state = self._states[key]
            report = build_report(
                state.repo,
                record,
                _stored(state),
                signature_file=self._signatures.signature_file,
                required=self._signatures.is_required(state.repo),
            )
            lines.append(SignatureLine(state.repo, state.commit, report.status, record.status,
                                       record.signer, report.summary, report.required))  # fmt: skip
        return lines

    async def record(self, repo: RepoRef, repo_pk: int) -> None:
        """Record the repo's judged signatures, as the server does (not the unverifiable)."""
        for (judged_repo, _commit), record in self.judged.items():
            if judged_repo == repo and record.status is not SignatureStatus.UNVERIFIABLE:
                await self._records.put(repo_pk, record)


def _stored(state: RevisionState) -> StoredRevision:
    """The commit's files as this mirror will hold them: the carried ones with the sha256 the
    import verified, the others with the hash upstream advertised (LFS) at most."""
    carried = {f.path: f.sha256 for f in state.files}
    files = tuple(
        StoredFile(
            e.path,
            carried.get(e.path),
            e.lfs.sha256 if e.lfs is not None else None,
            "imported" if e.path in carried else "not carried",
        )
        for e in state.tree
        if e.entry_type is EntryType.FILE
    )
    return StoredRevision(True, files)


def _signature_bytes(state: RevisionState, entry: TreeEntry, holdings: Holdings) -> bytes:
    """The signature file's verified bytes. Raises SignatureFileUnavailable (`refused`: a
    mirror rejected it)."""
    if entry.size > MAX_SIGNATURE_BYTES:
        raise SignatureFileUnavailable(
            f"the signature file is {entry.size} bytes, more than {MAX_SIGNATURE_BYTES}",
            refused=True,
        )
    carried = next((f for f in state.files if f.path == entry.path), None)
    if carried is not None and carried.sha256 in holdings.staged:
        return _read(holdings.staged[carried.sha256], carried.sha256)
    known = holdings.blobs.get(entry.etag)
    if known is not None and known.state is BlobState.REJECTED:
        raise SignatureFileUnavailable(
            f"this mirror rejected the signature file ({shown(known.reason)})", refused=True
        )
    if known is not None and known.sha256 is not None:
        store = holdings.store
        for path in (store.released_path(known.sha256), store.quarantined_path(known.sha256)):
            if path.exists():
                return _read(path, known.sha256)
    withheld = next((w for w in state.withheld if w.path == entry.path), None)
    if withheld is not None:
        rejected = withheld.state is BlobState.REJECTED
        raise SignatureFileUnavailable(
            f"the exporting mirror {'rejected' if rejected else 'holds'} the signature file "
            f"({shown(withheld.reason)}); the bundle does not carry it",
            refused=rejected,
        )
    raise SignatureFileUnavailable("the signature file was never mirrored here nor exported")


def _read(path: Path, sha256: str) -> bytes:
    """A small file's bytes, checked against `sha256` (read again: they were staged or stored
    earlier, and must still be what was verified)."""
    with path.open("rb") as handle:
        data = handle.read(MAX_SIGNATURE_BYTES + 1)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SignatureFileUnavailable(f"the signature file does not hash to {sha256}")
    return data
