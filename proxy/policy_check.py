"""`hubwarden policy check`: what the policy would do with each file of a repo, before any fetch.

Reads the repo's metadata from the upstream (repo info at the revision, the full tree) and, when
the repo carries one, its model signature file (`[signing] signature_file`, a small JSON bundle:
parsed and verified, never executed); never another file's content. It plans each file:

- the rules that need no content (`Policy.before_fetch`: publishers, pull requests, file size)
  are applied exactly: their answer is final (stage `before_fetch`);
- the rules that read a scan report (`Policy.after_scan`) are predicted from the file name
  (stage `after_scan`): `*.safetensors` is taken for safetensors, `*.bin`/`*.pt`/`*.pth`/
  `*.ckpt`/`*.pkl` for a pickle-bearing format, `*.py` for remote code, and so on, scanned clean.
  The scan decides for real: a `.bin` may turn out to be opaque data, a `config.json` may carry
  an `auto_map` (remote code), any file may hold something malicious. `new_repos` and
  `max_risk` need the database and are only noted;
- the signature rules (`require_signature`, `signature_invalid`, `uncovered_files`) are predicted
  as the mirror will judge them at fetch (`proxy.trust.signature_forecast`) when the repo carries
  a signature or `require_signature` lists it: unsigned (every file held when required), the
  signature's status and signer, and for a verified signature each file covered, differing from
  its signed sha256 (an LFS file's is advertised) or not covered; a regular file's sha256 is known
  only once fetched: "needs verification at fetch".

The result renders as a table (`render_text`) or as JSON (`render_json`, shape below). The
command exits 0 when every file would be served, 1 when one would be held or refused.

JSON (stable; `schema` changes when a key is removed or changes meaning):

    {"schema": 1,
     "repo": {"type": "model", "id": "org/name"},
     "revision": "main" | null,             # as asked; null: the default branch
     "commit": "<40 hex>",                  # what the revision resolved to
     "upstream": "https://huggingface.co",
     "repo_rules": [HIT, ...],              # repo-level rules that matched (publishers, PRs)
     "files": [{"path": str, "size": int, "lfs": bool,
                "format": str,              # predicted from the name, e.g. "safetensors"
                "action": "serve" | "hold" | "refuse",
                "stage": "before_fetch" | "after_scan",  # final, or predicted from the name
                "rule": str | null,         # the rule that decided; null: the scan alone
                "reason": str,
                "signature": str,           # its predicted signature outcome ("": unsigned and
                                            # not required), e.g. "covered (verified by X)"
                "audited": [HIT, ...]}],    # audit-mode rules that would have refused it
     "signature": null | {"file": str, "present": bool, "required": bool,
                          "status": "verified" | "unsigned" | "invalid" | "untrusted_signer" |
                                    "unverifiable" | "needs verification at fetch",
                          "signer": str, "summary": str},
     "notes": [str, ...],
     "summary": {"files": int, "serve": int, "hold": int, "refuse": int},
     "exit_code": 0 | 1}
    HIT = {"rule": str, "action": "hold" | "reject", "message": str, "audited": bool}
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from proxy.config import ConfigError, MaxRisk, NewRepos, Settings, SigningSettings
from proxy.errors import (
    AccessDenied,
    GatedRepo,
    HubwardenError,
    RepoNotFound,
    RevisionNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    shown,
)
from proxy.metadata import EntryType, RepoInfo, TreeEntry
from proxy.repos import RepoRef, RepoType, Revision
from proxy.trust.model_signing_adapter import MAX_SIGNATURE_BYTES
from proxy.trust.policy_source import PolicySource
from proxy.trust.rules import Policy, RuleHit, human_size
from proxy.trust.signature_forecast import Forecast, forecast
from proxy.trust.verdicts import Decision, Verdict, decide
from proxy.upstream import Upstream, UpstreamConfig
from scanners.detect import FileFormat
from scanners.report import Finding, JsonValue, Outcome, ScanReport, Severity

JSON_SCHEMA = 1
EXIT_SERVED = 0
EXIT_NOT_SERVED = 1


class Action(enum.StrEnum):
    """What the mirror would do with a file."""

    SERVE = "serve"
    HOLD = "hold"
    REFUSE = "refuse"


class Stage(enum.StrEnum):
    """`before_fetch`: decided from metadata, final. `after_scan`: predicted from the name."""

    BEFORE_FETCH = "before_fetch"
    AFTER_SCAN = "after_scan"


_ACTIONS = {
    Verdict.RELEASE: Action.SERVE,
    Verdict.QUARANTINE: Action.HOLD,
    Verdict.REJECT: Action.REFUSE,
}


class CheckFailed(HubwardenError):
    """The policy check could not read the repo's metadata from the upstream (unknown repo or
    revision, no access, upstream down). `repo` is the repo asked for."""

    def __init__(self, message: str, *, repo: RepoRef) -> None:
        self.repo = repo
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Target:
    """`REPO[@REVISION]` as given; `revision` None: the repo's default branch."""

    repo: RepoRef
    revision: Revision | None = None

    @classmethod
    def parse(cls, text: str, repo_type: RepoType) -> Target:
        """Raises InvalidInput naming the repo id or the revision."""
        repo_id, at, revision = text.partition("@")
        repo = RepoRef.parse(repo_type, repo_id)
        return cls(repo, Revision.parse(revision) if at else None)


@dataclass(frozen=True, slots=True)
class FilePlan:
    """What the policy would do with one file, and why."""

    path: str
    size: int
    lfs: bool
    file_format: str
    action: Action
    stage: Stage
    rule: str | None
    reason: str
    audited: tuple[RuleHit, ...] = ()
    signature: str = ""  # the predicted signature outcome ("": unsigned and not required)


@dataclass(frozen=True, slots=True)
class CheckResult:
    target: Target
    commit: str
    upstream: str
    repo_rules: tuple[RuleHit, ...]
    files: tuple[FilePlan, ...]
    notes: tuple[str, ...]
    signature: Forecast | None = None

    def count(self, action: Action) -> int:
        return sum(1 for plan in self.files if plan.action is action)

    @property
    def exit_code(self) -> int:
        """0 when every file would be served, else 1."""
        served = all(plan.action is Action.SERVE for plan in self.files)
        return EXIT_SERVED if served else EXIT_NOT_SERVED


# -- predictions from the file name ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Expected:
    """What the scan of a file of that name is expected to find: its possible formats (the
    first that would be served counts) and findings."""

    label: str
    formats: tuple[str, ...]
    findings: tuple[Finding, ...] = ()


_PICKLE_BEARING = _Expected(
    "pickle-bearing",
    (FileFormat.PICKLE.value, FileFormat.TORCH_ZIP.value, FileFormat.TORCH_LEGACY.value),
)
_REMOTE_CODE = _Expected(
    "remote code",
    (FileFormat.PYTHON.value,),
    (
        Finding(
            "policy-check",
            "REMOTE_CODE_PYTHON",
            Severity.MEDIUM,
            Outcome.REVIEW,
            "Python code in the repo runs with trust_remote_code",
        ),
    ),
)
_TEXT = _Expected("text", (FileFormat.TEXT.value,))
_DATA = _Expected("data", (FileFormat.DATA.value,))
_BY_CONTENT = _Expected("by content", (FileFormat.TEXT.value,))


def _single(file_format: FileFormat) -> _Expected:
    return _Expected(file_format.value, (file_format.value,))


_DATA_SUFFIXES = (
    ".parquet", ".arrow", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".wav", ".mp3",
    ".flac", ".ogg", ".mp4", ".pdf", ".tflite", ".sqlite", ".db",
)  # fmt: skip
_BY_SUFFIX: dict[str, _Expected] = {
    **dict.fromkeys((".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"), _PICKLE_BEARING),
    ".safetensors": _single(FileFormat.SAFETENSORS),
    ".gguf": _single(FileFormat.GGUF),
    ".joblib": _single(FileFormat.JOBLIB),
    ".npy": _single(FileFormat.NUMPY),
    ".npz": _single(FileFormat.NPZ),
    ".h5": _single(FileFormat.HDF5),
    ".hdf5": _single(FileFormat.HDF5),
    ".keras": _single(FileFormat.KERAS),
    ".onnx": _single(FileFormat.ONNX),
    ".msgpack": _single(FileFormat.MSGPACK),
    ".pb": _single(FileFormat.PROTOBUF),
    ".model": _single(FileFormat.PROTOBUF),  # sentencepiece
    ".zip": _single(FileFormat.ZIP),
    ".tar": _single(FileFormat.TAR),
    ".gz": _single(FileFormat.GZIP),
    ".tgz": _single(FileFormat.GZIP),
    ".bz2": _single(FileFormat.BZIP2),
    ".xz": _single(FileFormat.XZ),
    ".7z": _single(FileFormat.SEVEN_Z),
    ".zst": _single(FileFormat.ZSTD),
    ".lz4": _single(FileFormat.LZ4),
    ".py": _REMOTE_CODE,
    ".json": _single(FileFormat.JSON),
    ".jinja": _single(FileFormat.JINJA),
    ".j2": _single(FileFormat.JINJA),
    **dict.fromkeys(
        (".md", ".txt", ".yaml", ".yml", ".csv", ".tsv", ".jsonl", ".cfg", ".ini", ".toml"), _TEXT
    ),
    **dict.fromkeys(_DATA_SUFFIXES, _DATA),
}
_TEXT_NAMES = frozenset({".gitattributes", ".gitignore", "license", "notice", "readme"})


def expected_scan(path: str) -> _Expected:
    """What the scan of `path` is expected to find, judged by its name alone."""
    name = path.rsplit("/", 1)[-1].lower()
    if name in _TEXT_NAMES:
        return _TEXT
    if "tfevents" in name:
        return _DATA
    _, dot, suffix = name.rpartition(".")
    return _BY_SUFFIX.get(f".{suffix}", _BY_CONTENT) if dot else _BY_CONTENT


def _predicted(
    policy: Policy,
    repo: RepoRef,
    entry: TreeEntry,
    expected: _Expected,
    signature_hits: Sequence[RuleHit],
) -> Decision:
    """The decision for the first expected format that would be served, else for the first."""
    decisions = []
    for file_format in expected.formats:
        report = ScanReport(entry.path, file_format, entry.size, expected.findings, {}, 0.0)
        hits = [*policy.after_scan(repo, entry, report, new_repo=False), *signature_hits]
        decisions.append(decide(report, hits, waived=policy.waived))
    served = [d for d in decisions if d.verdict is Verdict.RELEASE]
    return served[0] if served else decisions[0]


def plan_file(
    policy: Policy,
    repo: RepoRef,
    revision: Revision,
    entry: TreeEntry,
    signature: Forecast | None = None,
    signing: SigningSettings | None = None,
) -> FilePlan:
    """What `policy` would do with one file: final for the metadata rules, predicted from the
    name for the content rules, and from the commit's signature (`signature`, judged under
    `signing`) for the signature rules."""
    expected = expected_scan(entry.path)
    before = policy.before_fetch(repo, revision, entry)
    told = signature.file(entry) if signature is not None else None
    base = FilePlan(
        entry.path, entry.size, entry.lfs is not None, expected.label,
        Action.SERVE, Stage.AFTER_SCAN, None, "", (), told.words if told else "",
    )  # fmt: skip
    refused = next((h for h in before if h.enforced), None)
    if refused is not None:
        audited = tuple(h for h in before if h.audited)
        return _replace(
            base, Action.REFUSE, Stage.BEFORE_FETCH, refused.rule, refused.message, audited
        )
    signature_hits: list[RuleHit] = []
    if told is not None and told.judged is not None and signature is not None:
        uncovered = (signing or SigningSettings()).uncovered_files
        signature_hits = policy.signature_hits(
            repo, told.judged, required=signature.required, uncovered=uncovered
        )
    decision = _predicted(policy, repo, entry, expected, signature_hits)
    audited = tuple(h for h in before if h.audited) + decision.audited
    action = _ACTIONS[decision.verdict]
    reason = decision.reason if action is not Action.SERVE else "served when the scan finds nothing"
    return _replace(base, action, Stage.AFTER_SCAN, decision.rule, reason, audited)


def _replace(
    base: FilePlan,
    action: Action,
    stage: Stage,
    rule: str | None,
    reason: str,
    audited: tuple[RuleHit, ...],
) -> FilePlan:
    return FilePlan(
        base.path, base.size, base.lfs, base.file_format, action, stage, rule, reason, audited,
        base.signature,
    )  # fmt: skip


def _notes(policy: Policy, info: RepoInfo) -> tuple[str, ...]:
    notes: list[str] = []
    settings = policy.settings
    if settings.new_repos is NewRepos.REVIEW:
        notes.append(
            "new_repos = review: if no file of this repo was released before, its first files "
            "wait for an admin (this check reads no database)"
        )
    if settings.max_risk is not MaxRisk.OFF:
        notes.append(
            f"max_risk = {settings.max_risk.value}: files are also held when the repo's risk card "
            "is rated above it, judged at fetch from what the mirror records (hubwarden risk "
            "shows the card once the repo is mirrored)"
        )
    if settings.audit_rules:
        notes.append(
            f"audit mode ({', '.join(settings.audit_rules)}): those rules record, never refuse"
        )
    if info.gated:
        notes.append("the repo is gated: files are served only to clients the Hub lets in")
    notes.append(
        '"after scan" is a prediction from the file name; the scan decides (content, '
        "auto_map in configs, malicious payloads)"
    )
    return tuple(notes)


def plan(
    policy: Policy,
    target: Target,
    info: RepoInfo,
    entries: Sequence[TreeEntry],
    upstream: str,
    signature: Forecast | None = None,
    signing: SigningSettings | None = None,
) -> CheckResult:
    """The plan of every file of the tree (folders skipped), sorted by path; `signature`: the
    commit's signature as the mirror will judge it, under `signing`."""
    revision = target.revision or Revision(info.sha)
    files = sorted(
        (
            plan_file(policy, target.repo, revision, e, signature, signing)
            for e in entries
            if e.entry_type is EntryType.FILE
        ),
        key=lambda p: p.path,
    )
    return CheckResult(
        target=target,
        commit=info.sha,
        upstream=upstream,
        repo_rules=tuple(policy.before_fetch(target.repo, revision, None)),
        files=tuple(files),
        notes=_notes(policy, info),
        signature=signature if signature is not None and signature.matters else None,
    )


# -- talking to the upstream ------------------------------------------------------------------


def _failed(target: Target, upstream: str, exc: HubwardenError) -> CheckFailed:
    repo = target.repo
    what = f'{repo.repo_type.value} "{shown(repo.repo_id)}"'
    if isinstance(exc, RepoNotFound):
        message = (
            f"{what} was not found at {upstream} (or it is private); check the repo id and "
            "--type, or set HF_TOKEN to a token that can see it"
        )
    elif isinstance(exc, RevisionNotFound):
        revision = target.revision.name if target.revision else "(default branch)"
        message = (
            f'revision "{shown(revision)}" is not a branch, tag or commit of {what}; check the '
            'part after "@"'
        )
    elif isinstance(exc, GatedRepo):
        message = (
            f"{what} is gated and the token in use has no access; set HF_TOKEN to one that has"
        )
    elif isinstance(exc, AccessDenied):
        message = f"{what} cannot be read at {upstream}: {exc.message}"
    else:
        message = (
            f"cannot read {what} from {upstream}: {exc.message}; check --upstream and the "
            "network, then retry"
        )
    return CheckFailed(message, repo=repo)


async def inspect(
    upstream: Upstream, policy: Policy, target: Target, signing: SigningSettings | None = None
) -> CheckResult:
    """Read the repo's metadata (and its signature file, never another file) and plan every
    file. Raises CheckFailed."""
    signing = signing or SigningSettings()
    token = upstream.service_token  # on behalf of no client: the mirror's own token
    revision = target.revision.name if target.revision else None
    try:
        info = await upstream.repo_info(target.repo, revision, token)
        entries = await upstream.list_tree(target.repo, info.sha, token)
    except (
        RepoNotFound,
        RevisionNotFound,
        GatedRepo,
        AccessDenied,
        UpstreamUnavailable,
        UpstreamRateLimited,
        UpstreamRejected,
    ) as exc:
        raise _failed(target, upstream.base_url, exc) from exc
    data, unreadable = await _signature_bytes(upstream, target.repo, info.sha, entries, signing)
    signature = await asyncio.to_thread(
        forecast, signing, target.repo, info.sha, entries, data, unreadable=unreadable
    )
    return plan(policy, target, info, entries, upstream.base_url, signature, signing)


def _advertised(entry: TreeEntry, data: bytes) -> bool:
    """The bytes are those upstream advertised: the LFS sha256, else the git blob oid."""
    if entry.lfs is not None:
        return hashlib.sha256(data).hexdigest() == entry.lfs.sha256
    blob = b"blob %d\0" % len(data) + data
    return hashlib.sha1(blob, usedforsecurity=False).hexdigest() == entry.oid


async def _signature_bytes(
    upstream: Upstream,
    repo: RepoRef,
    commit: str,
    entries: Sequence[TreeEntry],
    signing: SigningSettings,
) -> tuple[bytes | None, str]:
    """The signature file's bytes, checked against the hash upstream advertised (None: no such
    file, or it cannot be read now, with why)."""
    name = signing.signature_file
    entry = next((e for e in entries if e.path == name and e.entry_type is EntryType.FILE), None)
    if entry is None:
        return None, ""
    if entry.size > MAX_SIGNATURE_BYTES:
        return None, f"{shown(name)} is {entry.size} bytes, more than {MAX_SIGNATURE_BYTES}"
    try:
        async with upstream.open_file(repo, commit, name, upstream.service_token) as body:
            data = await body.read(MAX_SIGNATURE_BYTES)
    except HubwardenError as exc:
        return None, f"{shown(name)} could not be read: {exc.message}"
    if not _advertised(entry, data):
        return None, f"{shown(name)} does not hash to what upstream advertised"
    return data, ""


async def run(settings: Settings, target: Target) -> CheckResult:
    """The whole check with its own upstream session. Raises ConfigError (offline settings, an
    invalid policy file) and CheckFailed."""
    if settings.offline:
        raise ConfigError(
            "the settings say offline = true, and policy check reads the repo's metadata from "
            "the upstream; run it with HUBWARDEN_OFFLINE=false",
            source="offline",
            key="offline",
        )
    policy = PolicySource(settings.policy).current()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        return await inspect(
            Upstream(UpstreamConfig.from_settings(settings), session),
            policy,
            target,
            settings.signing,
        )


# -- rendering ----------------------------------------------------------------------------------


def _hit_json(hit: RuleHit) -> dict[str, JsonValue]:
    return {
        "rule": hit.rule,
        "action": hit.action.value,
        "message": hit.message,
        "audited": hit.audited,
    }


def _file_json(plan: FilePlan) -> dict[str, JsonValue]:
    return {
        "path": plan.path,
        "size": plan.size,
        "lfs": plan.lfs,
        "format": plan.file_format,
        "action": plan.action.value,
        "stage": plan.stage.value,
        "rule": plan.rule,
        "reason": plan.reason,
        "signature": plan.signature,
        "audited": [_hit_json(h) for h in plan.audited],
    }


def result_json(result: CheckResult) -> dict[str, JsonValue]:
    """The JSON document of a check (shape in the module docstring)."""
    repo = result.target.repo
    revision = result.target.revision
    return {
        "schema": JSON_SCHEMA,
        "repo": {"type": repo.repo_type.value, "id": repo.repo_id},
        "revision": revision.name if revision else None,
        "commit": result.commit,
        "upstream": result.upstream,
        "repo_rules": [_hit_json(h) for h in result.repo_rules],
        "files": [_file_json(p) for p in result.files],
        "notes": list(result.notes),
        "signature": result.signature.to_json() if result.signature is not None else None,
        "summary": {
            "files": len(result.files),
            **{action.value: result.count(action) for action in Action},
        },
        "exit_code": result.exit_code,
    }


def render_json(result: CheckResult) -> str:
    return json.dumps(result_json(result), indent=2)


_STAGE_WORDS = {Stage.BEFORE_FETCH: "before fetch", Stage.AFTER_SCAN: "after scan"}
_HEADER = ("ACTION", "WHEN", "SIZE", "FORMAT", "PATH", "REASON")


def _row(plan: FilePlan) -> tuple[str, ...]:
    reason = plan.reason
    if plan.signature:
        reason += f" [signature: {plan.signature}]"
    if plan.audited:
        reason += "".join(f" [audit only: {h.message}]" for h in plan.audited)
    return (
        plan.action.value,
        _STAGE_WORDS[plan.stage],
        human_size(plan.size),
        plan.file_format,
        shown(plan.path),
        reason,
    )


def render_text(result: CheckResult) -> str:
    """A table of the files, the repo-level rules and notes, and a summary line."""
    repo = result.target.repo
    revision = result.target.revision.name if result.target.revision else "(default branch)"
    lines = [
        f'policy check of {repo.repo_type.value} "{shown(repo.repo_id)}" at {shown(revision)} '
        f"(commit {result.commit[:12]}) from {result.upstream}",
        "",
    ]
    rows = [_HEADER, *(_row(p) for p in result.files)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines.append("")
    lines.extend(
        f"repo{' (audit only)' if hit.audited else ''}: {hit.message}" for hit in result.repo_rules
    )
    if result.signature is not None:
        lines.append(f"signature ({shown(result.signature.signature_file)}): "
                     f"{shown(result.signature.summary)}")  # fmt: skip
    lines.extend(f"note: {note}" for note in result.notes)
    lines.append(
        f"{len(result.files)} files: {result.count(Action.SERVE)} served, "
        f"{result.count(Action.HOLD)} held, {result.count(Action.REFUSE)} refused"
    )
    return "\n".join(lines)
