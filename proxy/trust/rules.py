"""Policy rules: what the `[policy]` settings make of a request and of a scanned file.

Pure: no I/O, no clock. Two moments:

- `Policy.before_fetch` runs on metadata alone (repo, revision, tree entry) before anything is
  fetched: `deny_publishers`, `allow_publishers`, `allow_pull_requests`, `max_file_bytes`. Its
  hits are refusals (REJECT): nothing is fetched, so there is nothing to hold.
- `Policy.after_scan` runs on a file's scan report: `allowed_formats`, `scanner_errors`,
  `remote_code`, `unknown_formats`, `opaque_data`, `torchscript`, `new_repos`.
- `Policy.signature_hits` runs on a file judged against its revision's model signature
  (`proxy.trust.signatures`): `signature_invalid` (the signature is invalid, or the file differs
  from its signed digest: always held), `uncovered_files` (a signed repo's file the signature does
  not list) and `require_signature` (a repo `[signing]` lists whose file no trusted signature
  proves).
- `Policy.risk_hits` runs on a file's repo's risk card at its commit (`proxy.trust.risk_hold`):
  `max_risk` holds the file when a dimension's settled rating is above the policy's limit.

A `RuleHit` names its rule and says what was wrong; `audited` is true when the rule runs in audit
mode (`audit_rules`): the hit is recorded, never enforced. `proxy.trust.verdicts.decide` turns a
report and its hits into the verdict.

Model formats (`allowed_formats`) are every scanner format name except those of `PASSING_FORMATS`
(text, JSON, data, opaque data, empty files, Python and Jinja sources, plain protobuf): see
`MODEL_FORMATS`. Python sources have their own rule (`remote_code`); plain protobuf is how
sentencepiece tokenizers (`tokenizer.model`) are stored, and the scanners treat it as data (an
`.onnx` model is `onnx`, a model format). A format name this module does not know is a model
format: a new scanner format is refused by a restrictive `allowed_formats` until it is listed.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.config import ConfigError, MaxRisk, NewRepos, PolicySettings, RuleAction
from proxy.errors import shown
from proxy.metadata import TreeEntry
from proxy.repos import RepoRef, Revision
from proxy.store.models import SignatureStatus
from proxy.trust.risk_facts import Dimension, Rating, RiskCard, worst
from proxy.trust.signature_report import FileStanding
from proxy.trust.signatures import FileSignature
from scanners.detect import FileFormat
from scanners.report import Finding, Outcome, ScanReport

# Rule names, as in `proxy.config.POLICY_RULES`.
DENY_PUBLISHERS = "deny_publishers"
ALLOW_PUBLISHERS = "allow_publishers"
ALLOW_PULL_REQUESTS = "allow_pull_requests"
MAX_FILE_BYTES = "max_file_bytes"
ALLOWED_FORMATS = "allowed_formats"
SCANNER_ERRORS = "scanner_errors"
REMOTE_CODE = "remote_code"
UNKNOWN_FORMATS = "unknown_formats"
OPAQUE_DATA = "opaque_data"
TORCHSCRIPT = "torchscript"
NEW_REPOS = "new_repos"
REQUIRE_SIGNATURE = "require_signature"
SIGNATURE_INVALID = "signature_invalid"
UNCOVERED_FILES = "uncovered_files"
MAX_RISK = "max_risk"

REMOTE_CODE_PREFIX = "REMOTE_CODE_"
FORMAT_UNKNOWN_CODE = "FORMAT_UNKNOWN"
DATA_OPAQUE_CODE = "DATA_OPAQUE"
OPAQUE_FORMAT = "opaque"  # the scanners' name for opaque data (DESIGN.md rule 10)

# Formats that are not model formats: `allowed_formats` never refuses them.
PASSING_FORMATS = frozenset(
    {
        FileFormat.EMPTY.value,
        FileFormat.TEXT.value,
        FileFormat.JSON.value,
        FileFormat.DATA.value,
        OPAQUE_FORMAT,
        FileFormat.PYTHON.value,
        FileFormat.JINJA.value,
        FileFormat.PROTOBUF.value,
    }
)
KNOWN_FORMATS = frozenset({f.value for f in FileFormat} | {OPAQUE_FORMAT})
# pickle, pytorch-zip, pytorch-legacy, pytorch-tar, joblib, numpy, npz, keras, hdf5, onnx,
# safetensors, gguf, msgpack (Flax), zip, tar, gzip, bzip2, xz, 7z, zstd, zlib, lzma, lz4, unknown.
MODEL_FORMATS = KNOWN_FORMATS - PASSING_FORMATS

MAX_PATTERNS_SHOWN = 5
_PULL_REQUEST = re.compile(r"refs/pr/[0-9]+")
_SIZE_UNITS = ("kB", "MB", "GB", "TB", "PB", "EB")
MAX_SUMMARY_CHARS = 120  # of one dimension's summary in a max_risk message
RISK_REMEDY = (
    "a reviewer may release the file, or waive the repo (release with scope repo), or an admin "
    "may raise [policy] max_risk"
)


@dataclass(frozen=True, slots=True)
class RuleHit:
    """One rule that matched: its name, what it does (HOLD or REJECT), why, and whether it only
    records (audit mode). `message` names the rule and the offending value; the caller adds who
    to ask."""

    rule: str
    action: RuleAction
    message: str
    audited: bool = False

    def __post_init__(self) -> None:
        if self.action is RuleAction.ALLOW:
            raise ValueError(f"a rule hit holds or rejects; {self.rule} allows, so it is no hit")

    @property
    def enforced(self) -> bool:
        return not self.audited


def is_model_format(file_format: str) -> bool:
    """True when `allowed_formats` applies to this scanner format name (unknown names included)."""
    return file_format not in PASSING_FORMATS


def finding_rule(finding: Finding) -> str | None:
    """The rule that governs a finding, or None when the scan's outcome alone decides it.

    ERROR findings (the file could not be fully scanned) follow `scanner_errors`; REVIEW
    findings of remote code follow `remote_code`, of an unknown format `unknown_formats`; the
    opaque data finding follows `opaque_data`. MALICIOUS findings follow no rule: never waived.
    """
    if finding.outcome is Outcome.ERROR:
        return SCANNER_ERRORS
    if finding.outcome is Outcome.REVIEW:
        if finding.code.startswith(REMOTE_CODE_PREFIX):
            return REMOTE_CODE
        if finding.code == FORMAT_UNKNOWN_CODE:
            return UNKNOWN_FORMATS
    if finding.outcome is Outcome.CLEAN and finding.code == DATA_OPAQUE_CODE:
        return OPAQUE_DATA
    return None


def human_size(size: int) -> str:
    """A byte count for people: `512 bytes`, `3.2 GB` (decimal units, as the Hub shows them)."""
    if size < 1000:
        return f"{size} bytes"
    value = size / 1000
    for unit in _SIZE_UNITS[:-1]:
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} {_SIZE_UNITS[-1]}"


def _matching(repo_id: str, patterns: Iterable[str]) -> str | None:
    """The first glob matching the repo id; case-insensitive, as the Hub's ids are."""
    lowered = repo_id.lower()
    for pattern in patterns:
        if fnmatch.fnmatchcase(lowered, pattern.lower()):
            return pattern
    return None


def _listed(patterns: tuple[str, ...]) -> str:
    shown_patterns = ", ".join(shown(p) for p in patterns[:MAX_PATTERNS_SHOWN])
    more = len(patterns) - MAX_PATTERNS_SHOWN
    return shown_patterns + (f" and {more} more" if more > 0 else "")


def _findings_text(findings: Iterable[Finding], limit: int = 3) -> str:
    worst = sorted(findings, key=lambda f: -f.outcome.rank)[:limit]
    return "; ".join(shown(f.message) for f in worst)


@dataclass(frozen=True, slots=True)
class Policy:
    """The policy rules of one `PolicySettings`. Raises ConfigError when `allowed_formats` names
    a format the scanners do not know (a typo would otherwise refuse every model file)."""

    settings: PolicySettings

    def __post_init__(self) -> None:
        unknown = [name for name in self.settings.allowed_formats if name not in KNOWN_FORMATS]
        if unknown:
            raise ConfigError(
                f'policy key "allowed_formats" holds "{shown(unknown[0])}", which is not a '
                f"scanner format name; expected some of {', '.join(sorted(MODEL_FORMATS))}",
                source="policy",
                key="policy.allowed_formats",
                value=shown(unknown[0]),
                allowed=", ".join(sorted(MODEL_FORMATS)),
            )

    def is_audited(self, rule: str) -> bool:
        """True when `rule` runs in audit mode: its hits are recorded, not enforced."""
        audit = self.settings.audit_rules
        return rule in audit or "*" in audit

    @property
    def waived(self) -> frozenset[str]:
        """The finding rules set to "allow": their REVIEW findings do not hold a file
        (pass to `decide`). `scanner_errors` is never waived (DESIGN.md rule 6)."""
        rules = {
            REMOTE_CODE: self.settings.remote_code,
            UNKNOWN_FORMATS: self.settings.unknown_formats,
        }
        return frozenset(rule for rule, action in rules.items() if action is RuleAction.ALLOW)

    def _hit(self, rule: str, action: RuleAction, message: str) -> RuleHit:
        return RuleHit(rule, action, f"policy rule {rule}: {message}", self.is_audited(rule))

    # -- before anything is fetched ----------------------------------------------------------

    def before_fetch(
        self, repo: RepoRef, revision: Revision, entry: TreeEntry | None
    ) -> list[RuleHit]:
        """The rules that need no content. `entry` None: the repo-level rules only."""
        hits = [*self._publisher_hits(repo), *self._pull_request_hits(revision)]
        if entry is not None:
            hits.extend(self._size_hits(entry))
        return hits

    def _publisher_hits(self, repo: RepoRef) -> list[RuleHit]:
        hits: list[RuleHit] = []
        denied = _matching(repo.repo_id, self.settings.deny_publishers)
        if denied is not None:
            hits.append(
                self._hit(
                    DENY_PUBLISHERS,
                    RuleAction.REJECT,
                    f'{repo.repo_type.value} "{shown(repo.repo_id)}" matches the denied '
                    f'publisher "{shown(denied)}"',
                )
            )
        allowed = self.settings.allow_publishers
        if allowed and _matching(repo.repo_id, allowed) is None:
            hits.append(
                self._hit(
                    ALLOW_PUBLISHERS,
                    RuleAction.REJECT,
                    f'{repo.repo_type.value} "{shown(repo.repo_id)}" is not from an allowed '
                    f"publisher ({_listed(allowed)})",
                )
            )
        return hits

    def _pull_request_hits(self, revision: Revision) -> list[RuleHit]:
        if self.settings.allow_pull_requests or not _PULL_REQUEST.fullmatch(revision.name):
            return []
        return [
            self._hit(
                ALLOW_PULL_REQUESTS,
                RuleAction.REJECT,
                f'revision "{shown(revision.name)}" is a pull request, which anyone on the Hub '
                "may open; pull requests are not served, use a branch, tag or commit",
            )
        ]

    def _size_hits(self, entry: TreeEntry) -> list[RuleHit]:
        limit = self.settings.max_file_bytes
        if limit <= 0 or entry.size <= limit:
            return []
        return [
            self._hit(
                MAX_FILE_BYTES,
                RuleAction.REJECT,
                f'"{shown(entry.path)}" is {human_size(entry.size)} ({entry.size} bytes), more '
                f"than the {human_size(limit)} ({limit} bytes) allowed",
            )
        ]

    # -- once the file is scanned ------------------------------------------------------------

    def after_scan(
        self, repo: RepoRef, entry: TreeEntry, report: ScanReport, *, new_repo: bool
    ) -> list[RuleHit]:
        """The rules that read the scan report. `new_repo`: no file of the repo was released
        before. Hits come most specific first (format, errors, code, data), `new_repos` last."""
        return [
            *self._format_hits(entry, report),
            *self._finding_hits(entry, report),
            *self._opaque_hits(entry, report),
            *self._torchscript_hits(entry, report),
            *self._new_repo_hits(repo, new_repo=new_repo),
        ]

    def _format_hits(self, entry: TreeEntry, report: ScanReport) -> list[RuleHit]:
        allowed = self.settings.allowed_formats
        file_format = report.file_format
        if not allowed or not is_model_format(file_format) or file_format in allowed:
            return []
        return [
            self._hit(
                ALLOWED_FORMATS,
                RuleAction.REJECT,
                f'"{shown(entry.path)}" is {shown(file_format)}, not one of the allowed model '
                f"formats ({_listed(allowed)})",
            )
        ]

    def _finding_hits(self, entry: TreeEntry, report: ScanReport) -> list[RuleHit]:
        path = shown(entry.path)
        by_rule: dict[str, list[Finding]] = {}
        for finding in report.findings:
            rule = finding_rule(finding)
            if rule is not None:
                by_rule.setdefault(rule, []).append(finding)
        hits: list[RuleHit] = []
        errors = by_rule.get(SCANNER_ERRORS)
        if errors:
            # "allow" is refused by the settings; should one get here, it holds (fail closed).
            action = (
                RuleAction.REJECT
                if self.settings.scanner_errors is RuleAction.REJECT
                else (RuleAction.HOLD)
            )
            text = f'"{path}" could not be fully scanned: {_findings_text(errors)}'
            hits.append(self._hit(SCANNER_ERRORS, action, text))
        code = by_rule.get(REMOTE_CODE)
        if code and self.settings.remote_code is not RuleAction.ALLOW:
            text = f'"{path}" is remote code: {_findings_text(code)}'
            hits.append(self._hit(REMOTE_CODE, self.settings.remote_code, text))
        unknown = by_rule.get(UNKNOWN_FORMATS)
        if unknown and self.settings.unknown_formats is not RuleAction.ALLOW:
            text = (
                f'"{path}" is binary of a format the scanners do not know, which a loader '
                "could open"
            )
            hits.append(self._hit(UNKNOWN_FORMATS, self.settings.unknown_formats, text))
        return hits

    def _opaque_hits(self, entry: TreeEntry, report: ScanReport) -> list[RuleHit]:
        action = self.settings.opaque_data
        opaque = report.file_format == OPAQUE_FORMAT or any(
            finding_rule(f) == OPAQUE_DATA for f in report.findings
        )
        if action is RuleAction.ALLOW or not opaque:
            return []
        text = f'"{shown(entry.path)}" is opaque data (no known loader would execute it)'
        return [self._hit(OPAQUE_DATA, action, text)]

    def _torchscript_hits(self, entry: TreeEntry, report: ScanReport) -> list[RuleHit]:
        action = self.settings.torchscript
        if action is RuleAction.ALLOW or report.file_format != FileFormat.TORCHSCRIPT.value:
            return []
        text = f'"{shown(entry.path)}" is a TorchScript archive (its code runs when it is loaded)'
        return [self._hit(TORCHSCRIPT, action, text)]

    def _new_repo_hits(self, repo: RepoRef, *, new_repo: bool) -> list[RuleHit]:
        if not new_repo or self.settings.new_repos is not NewRepos.REVIEW:
            return []
        text = (
            f'{repo.repo_type.value} "{shown(repo.repo_id)}" never had a file released; its '
            "first files wait for an admin's review"
        )
        return [self._hit(NEW_REPOS, RuleAction.HOLD, text)]

    # -- against the revision's model signature ----------------------------------------------

    def signature_hits(
        self,
        repo: RepoRef,
        signature: FileSignature,
        *,
        required: bool,
        uncovered: RuleAction,
    ) -> list[RuleHit]:
        """The signature rules for one file. `required`: `[signing] require_signature` lists
        the repo; `uncovered`: what `[signing] uncovered_files` does with an unlisted file."""
        standing = signature.standing
        if standing in (FileStanding.SIGNATURE, FileStanding.IGNORED):
            return []  # the signature itself, and what its signer left out on purpose
        hits: list[RuleHit] = []
        message = signature.message
        if signature.status is SignatureStatus.INVALID or standing is FileStanding.MISMATCH:
            hits.append(self._hit(SIGNATURE_INVALID, RuleAction.HOLD, message))
        if standing is FileStanding.UNCOVERED and uncovered is not RuleAction.ALLOW:
            hits.append(self._hit(UNCOVERED_FILES, uncovered, message))
        if required and standing is not FileStanding.COVERED:
            text = (
                f'{repo.repo_type.value} "{shown(repo.repo_id)}" must be signed by a trusted '
                f"signer; {message or 'no signature proves this file'}"
            )
            hits.append(self._hit(REQUIRE_SIGNATURE, RuleAction.HOLD, text))
        return hits

    # -- against the repo's risk card ---------------------------------------------------------

    @property
    def risk_limit(self) -> Rating | None:
        """The highest risk card rating served (`max_risk`); None when it is off."""
        limit = self.settings.max_risk
        return None if limit is MaxRisk.OFF else Rating(limit.value)

    def risk_hits(self, repo: RepoRef, card: RiskCard) -> list[RuleHit]:
        """`max_risk` for a file of the repo whose card is `card`: held when a dimension's
        settled rating is above the limit. The message names the rating, the dimensions behind
        it and what an admin can do."""
        limit = self.risk_limit
        if limit is None:
            return []
        over = card.above(limit)
        if not over:
            return []
        rating = worst([d.settled_rating for d in over])
        text = (
            f'{repo.repo_type.value} "{shown(repo.repo_id)}" is rated {rating.value} on its '
            f"risk card, above max_risk {limit.value}: {_dimensions_text(over)}; {RISK_REMEDY}"
        )
        return [self._hit(MAX_RISK, RuleAction.HOLD, text)]

    def risk_unknown_hit(self, repo: RepoRef, why: str) -> list[RuleHit]:
        """`max_risk` when the card cannot be computed: held (fail closed), saying why."""
        limit = self.risk_limit
        if limit is None:
            return []
        text = (
            f'the risk card of {repo.repo_type.value} "{shown(repo.repo_id)}" cannot be '
            f"computed ({shown(why)[:200]}), and max_risk is {limit.value}; {RISK_REMEDY}"
        )
        return [self._hit(MAX_RISK, RuleAction.HOLD, text)]


def _dimensions_text(dimensions: Iterable[Dimension]) -> str:
    """`licence high (cc-by-nc-4.0: custom-restricted); ...`, each summary cut short, escaped."""
    parts = []
    for d in dimensions:
        summary = shown(d.summary)
        if len(summary) > MAX_SUMMARY_CHARS:
            summary = summary[: MAX_SUMMARY_CHARS - 3] + "..."
        parts.append(f"{d.name.value} {d.settled_rating.value} ({summary})")
    return "; ".join(parts)
