"""A revision's files against its signature: each file's standing, the findings, the status.

Pure: the recorded signature (`SignatureRecord`) and what the mirror holds of the commit's
files (`StoredRevision`) in, typed values out. A verified signature lists every signed file with
its sha256; a file of the commit is then covered (same sha256), a mismatch (the bytes differ from
what was signed: tampering of a signed file), uncovered (not listed), or ignored (left out by
the signer, `ignore_paths`). An LFS file not fetched yet is compared through the sha256
upstream advertises for it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.errors import shown
from proxy.repos import RepoRef
from proxy.store.models import SignatureStatus
from proxy.store.signatures import SignatureRecord, StoredFile, StoredRevision
from scanners.report import JsonValue

MAX_NAMED = 5
MISMATCH_CODE = "SIGNATURE_FILE_MISMATCH"
UNCOVERED_CODE = "SIGNATURE_FILE_UNCOVERED"
MISSING_CODE = "SIGNATURE_FILE_MISSING"


class FileStanding(enum.StrEnum):
    """Where one file of a revision stands against the revision's signature."""

    COVERED = "covered"  # its sha256 is the signed one
    MISMATCH = "mismatch"  # its sha256 differs from the signed one
    UNCOVERED = "uncovered"  # the signature does not list it
    IGNORED = "ignored"  # the signer left it out on purpose (ignore_paths)
    SIGNATURE = "signature"  # the signature file itself
    PENDING = "not fetched"  # signed, but its bytes are not here yet
    UNCHECKED = "unchecked"  # no verified signature to compare with


@dataclass(frozen=True, slots=True)
class SignatureFinding:
    """A problem a revision's signature shows: a code, the file concerned and a message."""

    code: str
    path: str
    message: str


@dataclass(frozen=True, slots=True)
class SignatureReport:
    """A revision's signature as a whole: the recorded status, the status its files give it
    (`status`: `invalid` once a file differs from its signed digest or a signed file is
    absent), every recorded file's standing, and the findings."""

    repo: RepoRef
    commit: str
    record: SignatureRecord
    status: SignatureStatus
    required: bool
    complete: bool
    files: tuple[tuple[str, FileStanding], ...]
    findings: tuple[SignatureFinding, ...]

    @property
    def summary(self) -> str:
        """One line for people: `verified by <signer>`, `untrusted signer: <who>`…"""
        if self.status is SignatureStatus.VERIFIED:
            return f"verified by {self.record.signer}"
        if self.status is SignatureStatus.UNSIGNED:
            return "unsigned"
        detail = self.record.detail
        if self.status is SignatureStatus.INVALID and self.findings:
            detail = self.findings[0].message
        label = self.status.value.replace("_", " ")
        return f"{label}: {detail}" if detail else label

    def to_json(self) -> dict[str, JsonValue]:
        """The report as the admin API and `hubwarden signature --json` give it."""
        record = self.record
        checked = record.checked_at.isoformat() if record.checked_at is not None else None
        return {
            "repo": self.repo.repo_id,
            "type": self.repo.repo_type.value,
            "commit": self.commit,
            "status": self.status.value,
            "recorded_status": record.status.value,
            "summary": self.summary,
            "signer": record.signer,
            "detail": record.detail,
            "required": self.required,
            "signature_sha256": record.signature_sha256,
            "checked_at": checked,
            "file_list": "complete" if self.complete else "partial",
            "files": [{"path": path, "standing": standing.value} for path, standing in self.files],
            "findings": [
                {"code": f.code, "path": f.path, "message": f.message} for f in self.findings
            ],
        }


def named(paths: Sequence[str]) -> str:
    """A few paths for a message, escaped: `a, b, c and 4 more`."""
    listed = ", ".join(shown(p) for p in paths[:MAX_NAMED])
    more = len(paths) - MAX_NAMED
    return listed + (f" and {more} more" if more > 0 else "")


def is_ignored(path: str, ignore_paths: Sequence[str]) -> bool:
    """True when the signer left `path` out: it is one of `ignore_paths` or under one."""
    return any(path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in ignore_paths)


def standing_of(record: SignatureRecord, path: str, sha256: str | None) -> FileStanding:
    """Where a file whose bytes hash to `sha256` (None: not fetched) stands against `record`
    (UNCHECKED unless it is verified)."""
    if record.status is not SignatureStatus.VERIFIED:
        return FileStanding.UNCHECKED
    signed = record.files.get(path)
    if signed is None:
        ignored = is_ignored(path, record.ignore_paths)
        return FileStanding.IGNORED if ignored else FileStanding.UNCOVERED
    if sha256 is None:
        return FileStanding.PENDING
    return FileStanding.COVERED if sha256 == signed else FileStanding.MISMATCH


def file_message(
    record: SignatureRecord, path: str, sha256: str | None, standing: FileStanding
) -> str:
    """What a file's standing (or its revision's status) means, for a held message."""
    quoted = f'"{shown(path)}"'
    if standing is FileStanding.MISMATCH:
        signed = record.files.get(path, "")
        return (
            f"{quoted} (sha256 {str(sha256)[:12]}…) differs from the sha256 {signed[:12]}… "
            f"that {shown(record.signer)} signed"
        )
    if standing is FileStanding.UNCOVERED:
        return f"{quoted} is not covered by the signature of {shown(record.signer)}"
    messages = {
        SignatureStatus.UNSIGNED: "the repo carries no signature",
        SignatureStatus.UNTRUSTED_SIGNER: "its signature is by a signer not trusted for it",
        SignatureStatus.INVALID: "its signature is invalid",
        SignatureStatus.UNVERIFIABLE: "its signature cannot be verified here",
    }
    message = messages.get(record.status, "")
    return f"{message} ({shown(record.detail)})" if message and record.detail else message


def _stored_standing(record: SignatureRecord, file: StoredFile) -> FileStanding:
    standing = standing_of(record, file.path, file.sha256)
    advertised = file.advertised_sha256
    if standing is FileStanding.PENDING and advertised and advertised != record.files[file.path]:
        return FileStanding.MISMATCH  # upstream already says it would serve other bytes
    return standing


def _file_findings(
    record: SignatureRecord, stored: StoredRevision | None, signature_file: str
) -> tuple[list[tuple[str, FileStanding]], list[SignatureFinding]]:
    files: list[tuple[str, FileStanding]] = []
    findings: list[SignatureFinding] = []
    for file in stored.files if stored is not None else ():
        if file.path == signature_file:
            files.append((file.path, FileStanding.SIGNATURE))
            continue
        standing = _stored_standing(record, file)
        files.append((file.path, standing))
        if standing in (FileStanding.MISMATCH, FileStanding.UNCOVERED):
            code = MISMATCH_CODE if standing is FileStanding.MISMATCH else UNCOVERED_CODE
            digest = file.sha256 or file.advertised_sha256
            message = file_message(record, file.path, digest, standing)
            findings.append(SignatureFinding(code, file.path, message))
    return files, findings


def build_report(
    repo: RepoRef,
    record: SignatureRecord,
    stored: StoredRevision | None,
    *,
    signature_file: str,
    required: bool,
) -> SignatureReport:
    """The report of a revision: every recorded file judged against the signature."""
    files, findings = _file_findings(record, stored, signature_file)
    complete = stored is not None and stored.complete
    status = record.status
    if status is SignatureStatus.VERIFIED:
        if complete:
            present = {path for path, _ in files}
            findings.extend(
                SignatureFinding(MISSING_CODE, path, f'"{shown(path)}" is signed but absent')
                for path in sorted(set(record.files) - present)
            )
        if any(f.code != UNCOVERED_CODE for f in findings):
            status = SignatureStatus.INVALID
    elif status is not SignatureStatus.UNSIGNED:
        code = f"SIGNATURE_{status.value.upper()}"
        findings.insert(0, SignatureFinding(code, signature_file, record.detail or status.value))
    return SignatureReport(
        repo, record.commit, record, status, required, complete, tuple(files), tuple(findings)
    )
