"""The values of the risk card (`proxy.trust.risk`): the facts a card is computed from, each
dimension's rating, and the card itself. Pure values, no I/O."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from proxy.repos import RepoRef
from proxy.trust.hub_scans import HubFileStatus
from proxy.trust.licences import Licence
from scanners.report import JsonValue, Severity

NOT_FETCHED = "not fetched"
SCANNED = "scanned"  # the state of a file being settled: scanned, its verdict not recorded yet
MAX_RISK_REASON = "policy rule max_risk:"  # how the reason of a file max_risk held begins


class Rating(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return {Rating.LOW: 0, Rating.MEDIUM: 1, Rating.HIGH: 2}[self]


def worst(ratings: Sequence[Rating]) -> Rating:
    return max(ratings, key=lambda r: r.rank, default=Rating.LOW)


class DimensionName(enum.StrEnum):
    ACCESS = "access control"
    LICENCE = "licence"
    FORMAT = "file-format safety"
    PUBLISHER = "publisher traceability"
    TIMELINESS = "version timeliness"


@dataclass(frozen=True, slots=True)
class Dimension:
    """One dimension: its rating, why in one line, and the facts (name → value). `settled` is
    the rating on what is known for good, when part of `rating` only waits for files to be
    fetched and scanned (model files not scanned yet): `[policy] max_risk` judges that one."""

    name: DimensionName
    rating: Rating
    summary: str
    facts: dict[str, JsonValue]
    settled: Rating | None = None

    @property
    def settled_rating(self) -> Rating:
        return self.rating if self.settled is None else self.settled


# -- facts ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LicenceFile:
    """A `LICENSE*` file of the revision: its classified text when the mirror holds it released."""

    path: str
    licence: Licence | None  # None: not fetched (or held): its text was not read


@dataclass(frozen=True, slots=True)
class RepoFile:
    """A file of the revision as the mirror knows it."""

    path: str
    size: int
    state: str = NOT_FETCHED  # released, quarantined, rejected, or "not fetched"
    file_format: str = ""  # the scanners' format name once fetched
    outcome: str = ""
    worst: Severity | None = None  # the worst finding of our scanners
    worst_text: str = ""  # its code and message
    codes: tuple[str, ...] = ()  # our findings' codes
    hub: HubFileStatus | None = None  # the Hub's own scan, where it published one
    reason: str = ""  # why it is held (the policy rule that held it, or the findings)

    @property
    def held_by_risk(self) -> bool:
        """Held by `[policy] max_risk` itself: the card does not count it as a held file (it
        would otherwise hold the repo's next files for having held this one)."""
        return self.reason.startswith(MAX_RISK_REASON)


@dataclass(frozen=True, slots=True)
class Account:
    """The publisher's account as the Hub reports it (`/api/{organizations|users}/{name}/overview`
    on the Hub)."""

    kind: str  # "organisation" or "user"
    verified: bool | None = None
    created_at: dt.datetime | None = None
    fullname: str = ""


class SignatureStatus(enum.StrEnum):
    VERIFIED = "verified"
    UNSIGNED = "unsigned"
    INVALID = "invalid"
    UNTRUSTED = "untrusted signer"
    UNVERIFIABLE = "unverifiable"  # cannot be checked here (offline without a trust config...)
    NOT_CHECKED = "not checked"


@dataclass(frozen=True, slots=True)
class PublisherFacts:
    namespace: str  # "" for legacy one-segment ids
    account: Account | None  # None: unknown (offline, or the upstream could not be asked)
    account_checked: bool  # the upstream was asked (account None then: no such account)
    signature: SignatureStatus = SignatureStatus.NOT_CHECKED
    signer: str = ""
    allow_listed: bool | None = None  # None: no allow-list in the policy
    denied: bool = False


@dataclass(frozen=True, slots=True)
class TimelinessFacts:
    served_commit: str
    served_date: dt.datetime | None  # `lastModified` recorded with the served commit
    upstream_head: str | None  # the branch's head upstream, as last seen (None: unknown)
    upstream_seen_at: dt.datetime | None  # when that head was seen (a watch check, or now)
    commits_behind: int | None  # commits on the branch after the served one (None: unknown)
    last_activity: dt.datetime | None  # the newest upstream commit's date known
    held_change: bool = False  # the newer head waits for review (a pinned change)


@dataclass(frozen=True, slots=True)
class RiskFacts:
    repo: RepoRef
    revision: str
    commit: str
    now: dt.datetime
    offline: bool
    private: bool
    gated: str  # "false", "auto" or "manual"
    card_licence: str | None
    licence_files: Sequence[LicenceFile]
    files: Sequence[RepoFile]
    complete_tree: bool  # every file of the commit is listed
    auto_map: bool  # config.json (as the Hub reports it) names remote code
    publisher: PublisherFacts
    timeliness: TimelinessFacts
    max_risk: Rating | None = None
    hub_scans_done: bool | None = None


@dataclass(frozen=True, slots=True)
class RiskCard:
    repo: RepoRef
    revision: str
    commit: str
    overall: Rating
    dimensions: tuple[Dimension, ...]
    offline: bool
    max_risk: Rating | None = None
    disagreements: tuple[str, ...] = field(default=())

    @property
    def exceeds_policy(self) -> bool:
        """True when `[policy] max_risk` is set and the overall rating is above it."""
        return self.max_risk is not None and self.overall.rank > self.max_risk.rank

    def above(self, limit: Rating) -> tuple[Dimension, ...]:
        """The dimensions whose settled rating is above `limit` (what `[policy] max_risk`
        holds a repo for): what waits only for files to be scanned does not count, each file
        being judged by its own scan."""
        return tuple(d for d in self.dimensions if d.settled_rating.rank > limit.rank)

    @property
    def held_for(self) -> tuple[Dimension, ...]:
        """The dimensions the policy's max_risk holds the repo's files for (none: served)."""
        return self.above(self.max_risk) if self.max_risk is not None else ()

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "repo": self.repo.repo_id,
            "type": self.repo.repo_type.value,
            "revision": self.revision,
            "commit": self.commit,
            "overall": self.overall.value,
            "offline": self.offline,
            "max_risk": self.max_risk.value if self.max_risk else None,
            "exceeds_policy": self.exceeds_policy,
            "held_for": [d.name.value for d in self.held_for],
            "dimensions": [
                {"name": d.name.value, "rating": d.rating.value, "summary": d.summary,
                 "settled_rating": d.settled_rating.value, "facts": d.facts}
                for d in self.dimensions
            ],
            "hub_disagreements": list(self.disagreements),
        }  # fmt: skip
