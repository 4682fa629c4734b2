"""Model signatures: what a repo's OpenSSF model-signing signature proves at a commit.

A signed repo carries one signature file (`[signing] signature_file`, `model.sig`): a Sigstore
bundle over the list of every file with its sha256. It is verified once per commit, when the
first file of that commit is settled (`PolicyGate.settle`), and the status is recorded
(`revision_signatures`):

- `verified`: the signature verifies and its signer is one the admin trusts for the repo
  (`[[signing.trusted]]`: a Sigstore identity + OIDC issuer, an EC key, or a certificate chain);
- `unsigned`: no signature file at the commit;
- `invalid`: malformed, does not verify, or files it signs are absent from the commit;
- `untrusted_signer`: made by a key, certificate or identity not trusted for the repo;
- `unverifiable`: cannot be checked here (offline without a Sigstore trust config, a hashing
  other than sha256 of whole files, the signature file not mirrored).

The files are never read again: the signed digests are compared with the sha256 this mirror
computed when it verified each file. A file is judged when it is settled (`check_file`): it is
covered (its sha256 is the signed one), differs from the signed digest (tampering of a signed
file), is not covered (an extra file), or was left out by the signer (`ignore_paths`). The
policy rules (`proxy.trust.rules`) turn that into holds. `report` shows a revision as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from proxy.caching import TtlCache
from proxy.config import RuleAction, SigningSettings, TrustedSigner
from proxy.errors import HubwardenError, shown
from proxy.metadata import TreeEntry
from proxy.repos import RepoRef
from proxy.store.models import SignatureStatus
from proxy.store.repository import RepoRecord
from proxy.store.signatures import SignatureRecord, SignatureRecords
from proxy.trust.signature_checks import Judged, check_trust, judge_signature, recorded
from proxy.trust.signature_report import (
    FileStanding,
    SignatureReport,
    build_report,
    file_message,
    standing_of,
)

logger = logging.getLogger(__name__)

VERIFY_TIMEOUT_S = 60.0
MAX_LOCKS = 10_000


class RevisionUnknown(HubwardenError):
    """This mirror cannot tell what files the commit has (offline, never listed)."""


class SignatureFileUnavailable(HubwardenError):
    """The signature file exists but its verified bytes cannot be had (`refused`: the mirror
    rejected them; otherwise an upstream or store failure, worth another try)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        self.refused = refused
        super().__init__(message)


class RevisionFiles(Protocol):
    """What signatures need of the mirror: a commit's files and the signature file's bytes."""

    async def entry(
        self, repo: RepoRecord, commit: str, path: str, token: str | None
    ) -> TreeEntry | None:
        """The file at `path` (None: the commit has none). Raises RevisionUnknown."""
        ...

    async def listing(self, repo: RepoRecord, commit: str, token: str | None) -> list[TreeEntry]:
        """Every file of the commit. Raises RevisionUnknown."""
        ...

    async def read(
        self, repo: RepoRecord, commit: str, entry: TreeEntry, token: str | None
    ) -> bytes:
        """The file's verified bytes, fetched like any file when not mirrored yet.
        Raises SignatureFileUnavailable."""
        ...


@dataclass(frozen=True, slots=True)
class FileSignature:
    """A file judged against its revision's signature: the revision's status and signer, the
    file's standing, and a message for people (for holds and reports)."""

    status: SignatureStatus | None  # None: the signature file itself, not judged against itself
    standing: FileStanding
    signer: str = ""
    message: str = ""


def _matching(repo_id: str, patterns: Sequence[str]) -> bool:
    lowered = repo_id.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


def requires_signature(settings: SigningSettings, repo: RepoRef) -> bool:
    """True when `[signing] require_signature` lists the repo."""
    return _matching(repo.repo_id, settings.require_signature)


def trusted_signers(settings: SigningSettings, repo: RepoRef) -> tuple[TrustedSigner, ...]:
    """The signers `[signing]` trusts for the repo, in the order configured."""
    return tuple(s for s in settings.trusted if _matching(repo.repo_id, s.repos))


class Signatures:
    """Verifies and records revision signatures; judges files against them."""

    def __init__(
        self,
        records: SignatureRecords,
        settings: SigningSettings,
        *,
        offline: bool,
        files: RevisionFiles | None = None,
    ) -> None:
        """`files`: how to list a commit and read its signature file (None until `connect`:
        the mirror's fetching path is built after the policy that uses this). Raises
        ConfigError when a trusted key, certificate or trust config cannot be used."""
        self._records = records
        self._settings = settings
        self._offline = offline
        self._files = files
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        self._unverifiable: TtlCache[tuple[int, str], SignatureRecord] = TtlCache(60.0)
        self._config_digest = check_trust(settings)

    def connect(self, files: RevisionFiles) -> None:
        """Give the signatures the mirror's files (done once, by the app factory)."""
        self._files = files

    @property
    def signature_file(self) -> str:
        return self._settings.signature_file

    @property
    def uncovered_files(self) -> RuleAction:
        """What `[signing] uncovered_files` does with a file the signature does not list."""
        return self._settings.uncovered_files

    def is_required(self, repo: RepoRef) -> bool:
        """True when policy requires a trusted signature for the repo (`require_signature`)."""
        return requires_signature(self._settings, repo)

    def signers_for(self, repo: RepoRef) -> tuple[TrustedSigner, ...]:
        """The signers the admin trusts for the repo, in the order configured."""
        return trusted_signers(self._settings, repo)

    def _trust_digest(self, repo: RepoRef) -> str:
        signers = [
            [s.name, s.identity, s.issuer, str(s.public_key), [str(p) for p in s.certificate_chain]]
            for s in self.signers_for(repo)
        ]
        text = json.dumps([self._config_digest, self.signature_file, signers])
        return hashlib.sha256(text.encode()).hexdigest()

    async def revision(self, repo: RepoRecord, commit: str, token: str | None) -> SignatureRecord:
        """The signature status of the repo at `commit`: recorded, or verified now (once per
        commit and trust; the signature file is fetched like any file when needed)."""
        digest = self._trust_digest(repo.ref)
        stored = await self._records.get(repo.pk, commit)
        if stored is not None and stored.trust_digest == digest:
            return stored
        key = (repo.pk, commit)
        if len(self._locks) > MAX_LOCKS:
            self._locks.clear()
        async with self._locks.setdefault(key, asyncio.Lock()):
            stored = await self._records.get(repo.pk, commit)
            if stored is not None and stored.trust_digest == digest:
                return stored
            cached = self._unverifiable.get(key)
            if cached is not None:
                return cached
            record = await self._verify(repo, commit, token, digest)
            if record.status is SignatureStatus.UNVERIFIABLE:
                self._unverifiable.put(key, record)  # not recorded: it may be checked later
            else:
                await self._records.put(repo.pk, record)
            self._log(repo, record)
            return record

    def _log(self, repo: RepoRecord, record: SignatureRecord) -> None:
        level = logging.INFO if record.status in (
            SignatureStatus.VERIFIED, SignatureStatus.UNSIGNED
        ) else logging.WARNING  # fmt: skip
        logger.log(level, "signature of %s at %s: %s %s %s", repo.ref, record.commit[:12],
                   record.status.value, shown(record.signer), shown(record.detail))  # fmt: skip

    async def _verify(
        self, repo: RepoRecord, commit: str, token: str | None, digest: str
    ) -> SignatureRecord:
        def unverifiable(detail: str) -> SignatureRecord:
            return SignatureRecord(commit, SignatureStatus.UNVERIFIABLE, "", detail, None, {}, (),
                                   digest)  # fmt: skip

        files = self._files
        if files is None:
            return unverifiable("this process cannot read the repo's files")
        try:
            entry = await files.entry(repo, commit, self.signature_file, token)
        except RevisionUnknown as exc:
            return unverifiable(exc.message)
        if entry is None:
            return SignatureRecord(commit, SignatureStatus.UNSIGNED, trust_digest=digest)
        try:
            data = await files.read(repo, commit, entry, token)
        except SignatureFileUnavailable as exc:
            if exc.refused:
                return SignatureRecord(commit, SignatureStatus.INVALID, "", exc.message,
                                       trust_digest=digest)  # fmt: skip
            return unverifiable(f"the signature file cannot be read: {exc.message}")
        judged = await self._judge(data, repo.ref)
        listing = None
        if judged.status is SignatureStatus.VERIFIED:  # only a signed repo is listed whole
            with contextlib.suppress(RevisionUnknown):  # then its files are checked one by one
                listing = await files.listing(repo, commit, token)
        return recorded(commit, judged, listing, hashlib.sha256(data).hexdigest(), digest)

    def trust_digest(self, repo: RepoRef) -> str:
        """What is trusted for `repo`, as a digest: a record made under another is judged again."""
        return self._trust_digest(repo)

    async def judge(
        self, repo: RepoRef, commit: str, data: bytes | None, listing: Sequence[TreeEntry]
    ) -> SignatureRecord:
        """`revision`'s verdict from bytes the caller holds: `data` is the commit's signature
        file (None: it has none), `listing` its files. Neither cached nor recorded: an import
        verifies before the commit has rows, and records the result with them."""
        digest = self._trust_digest(repo)
        if data is None:
            return SignatureRecord(commit, SignatureStatus.UNSIGNED, trust_digest=digest)
        judged = await self._judge(data, repo)
        return recorded(commit, judged, listing, hashlib.sha256(data).hexdigest(), digest)

    async def _judge(self, data: bytes, repo: RepoRef) -> Judged:
        signers = self.signers_for(repo)
        call = asyncio.to_thread(
            judge_signature,
            data,
            signers,
            self._settings.sigstore_trust_config,
            offline=self._offline,
        )
        try:
            async with asyncio.timeout(VERIFY_TIMEOUT_S):
                return await call
        except TimeoutError:
            return Judged(SignatureStatus.UNVERIFIABLE, "", "verification took too long")

    async def check_file(
        self, repo: RepoRecord, commit: str, path: str, sha256: str | None, token: str | None
    ) -> FileSignature:
        """How a file with bytes hashing to `sha256` stands against its revision's signature
        (verifying the revision first if needed)."""
        if path == self.signature_file:
            # Never the revision itself here: verifying it may be waiting for this very file.
            return FileSignature(None, FileStanding.SIGNATURE)
        record = await self.revision(repo, commit, token)
        standing = standing_of(record, path, sha256)
        return FileSignature(record.status, standing, record.signer,
                             file_message(record, path, sha256, standing))  # fmt: skip

    async def recorded(self, repo: RepoRecord, commit: str) -> SignatureRecord | None:
        """The status recorded for a revision, never verifying anything (None: never checked;
        the admin pages show this, which costs one read)."""
        return await self._records.get(repo.pk, commit)

    def is_current(self, repo: RepoRef, record: SignatureRecord) -> bool:
        """Whether `record` was judged under what is trusted for the repo now (else it is
        judged again when the next file of its revision is fetched)."""
        return record.trust_digest == self._trust_digest(repo)

    async def report(self, repo: RepoRecord, commit: str) -> SignatureReport:
        """A revision's signature (verified now when it never was, or was under another trust)
        with every recorded file's standing."""
        record = await self.revision(repo, commit, None)
        stored = await self._records.stored_revision(repo.pk, commit)
        return build_report(
            repo.ref,
            record,
            stored,
            signature_file=self.signature_file,
            required=self.is_required(repo.ref),
        )
