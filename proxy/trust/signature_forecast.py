"""What a repo's model signature will do to its files, told before any of them is fetched (for
`hubwarden policy check`): the same judgement as `proxy.trust.signatures` makes at fetch time,
from the commit's file list and the signature file's bytes alone.

- No signature file: `unsigned`; under `require_signature` every file will be held, which the
  file list alone proves.
- A signature file: it is judged exactly as the mirror judges it (`judge_signature`: who signed,
  trusted for the repo or not, valid or not; signed files absent from the commit make it
  invalid). A verified signature is then compared file by file: an LFS file's sha256 is the one
  upstream advertises, so it is covered or differs from what was signed; a file the signature
  does not list is not covered (`uncovered_files`); a regular file's sha256 is known only once
  its bytes are hashed: "needs verification at fetch". An invalid, untrusted or unverifiable
  signature gives every file its outcome at once.
- A signature file that cannot be read now (upstream trouble, too large, bytes that do not match
  what upstream advertised): every file "needs verification at fetch".

Pure and blocking (`judge_signature` runs the library's checks; for Sigstore without a trust
config it may use the network): callers run `forecast` on a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proxy.config import SigningSettings
from proxy.metadata import EntryType, TreeEntry
from proxy.repos import RepoRef
from proxy.store.models import SignatureStatus
from proxy.store.signatures import SignatureRecord
from proxy.trust.signature_checks import judge_signature, recorded
from proxy.trust.signature_report import FileStanding, file_message, standing_of
from proxy.trust.signatures import FileSignature, requires_signature, trusted_signers
from scanners.report import JsonValue

NEEDS_FETCH = "needs verification at fetch"
_STANDING_WORDS = {
    FileStanding.COVERED: "covered",
    FileStanding.MISMATCH: "differs from the signed sha256",
    FileStanding.UNCOVERED: "not covered by the signature",
    FileStanding.IGNORED: "left out by the signer",
}


@dataclass(frozen=True, slots=True)
class FileForecast:
    """One file: what the signature rules will judge (None: nothing, or not before its bytes
    are hashed) and the predicted outcome in words."""

    judged: FileSignature | None
    words: str


@dataclass(frozen=True, slots=True)
class Forecast:
    """A commit's signature as the mirror will find it. `record` None: no signature file, or
    one that cannot be read now (`unreadable` says why)."""

    signature_file: str
    present: bool
    required: bool
    record: SignatureRecord | None
    unreadable: str = ""

    @property
    def status(self) -> str:
        """verified, unsigned, invalid, untrusted_signer, unverifiable, or NEEDS_FETCH."""
        if not self.present:
            return SignatureStatus.UNSIGNED.value
        return self.record.status.value if self.record is not None else NEEDS_FETCH

    @property
    def summary(self) -> str:
        record = self.record
        if not self.present:
            return "unsigned" + (" (required by [signing] require_signature)" if self.required
                                 else "")  # fmt: skip
        if record is None:
            return f"{NEEDS_FETCH} ({self.unreadable})"
        if record.status is SignatureStatus.VERIFIED:
            return f"verified by {record.signer}"
        label = record.status.value.replace("_", " ")
        detail = f": {record.detail}" if record.detail else ""
        who = f" ({record.signer})" if record.signer and not detail else ""
        return f"{label}{who}{detail}"

    @property
    def matters(self) -> bool:
        """False when the repo is neither signed nor required to be: nothing to tell."""
        return self.present or self.required

    def file(self, entry: TreeEntry) -> FileForecast:
        """What the signature will do to one file of the commit."""
        if not self.matters:
            return FileForecast(None, "")
        if entry.path == self.signature_file:
            return FileForecast(FileSignature(None, FileStanding.SIGNATURE), "the signature file")
        record = self.record
        if not self.present:
            judged = FileSignature(SignatureStatus.UNSIGNED, FileStanding.UNCHECKED, "",
                                   "the repo carries no signature")  # fmt: skip
            return FileForecast(judged, "unsigned")
        if record is None:
            return FileForecast(None, f"{NEEDS_FETCH} ({self.unreadable})")
        advertised = entry.lfs.sha256 if entry.lfs is not None else None
        standing = standing_of(record, entry.path, advertised)
        if standing is FileStanding.PENDING:  # a regular file: hashed when its bytes are here
            return FileForecast(None, f"{NEEDS_FETCH} (signed by {record.signer})")
        message = file_message(record, entry.path, advertised, standing)
        judged = FileSignature(record.status, standing, record.signer, message)
        if record.status is SignatureStatus.VERIFIED:
            words = f"{_STANDING_WORDS[standing]} (verified by {record.signer})"
            return FileForecast(judged, words)
        return FileForecast(judged, self.summary)

    def to_json(self) -> dict[str, JsonValue]:
        record = self.record
        return {
            "file": self.signature_file,
            "present": self.present,
            "required": self.required,
            "status": self.status,
            "signer": record.signer if record is not None else "",
            "summary": self.summary,
        }


def forecast(
    settings: SigningSettings,
    repo: RepoRef,
    commit: str,
    entries: Sequence[TreeEntry],
    data: bytes | None,
    *,
    unreadable: str = "",
) -> Forecast:
    """The commit's signature judged from its file list and the signature file's bytes (`data`;
    None with `unreadable` when it exists but could not be read)."""
    files = [e for e in entries if e.entry_type is EntryType.FILE]
    name = settings.signature_file
    present = any(e.path == name for e in files)
    required = requires_signature(settings, repo)
    if not present or data is None:
        return Forecast(name, present, required, None, unreadable if present else "")
    judged = judge_signature(
        data, trusted_signers(settings, repo), settings.sigstore_trust_config, offline=False
    )
    record = recorded(commit, judged, files, "", "")
    return Forecast(name, present, required, record)
