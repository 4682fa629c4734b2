"""The risk card of a mirrored revision: the five dimensions security reviews of open models use,
each rated low, medium or high with the facts behind it (issue 11, item 2). Pure: facts in, card
out (`proxy.trust.risk_facts`); `proxy.admin.risk` gathers the facts; file-format safety is
`proxy.trust.risk_formats`.

- **access control**: public (low); gated with automatic approval (medium: each user accepts the
  publisher's terms, and the mirror asks upstream whether each caller did); gated with manual
  approval or private (high: the publisher chooses who may have the files, and a mirror that
  serves beyond them leaks them).
- **licence**: the card's `license` and the `LICENSE*` files, classified (`proxy.trust.licences`):
  permissive (low), copyleft (medium), custom or restricted (high), none or unknown (high); a
  file whose licence differs from the card's is at least medium.
- **file-format safety**: the share of model files and bytes in pickle-bearing formats (by the
  scanners' format once fetched, by the file name before), remote code (`auto_map`, `*.py`,
  REMOTE_CODE_* findings), the worst finding, held files and the Hub's own scan where it differs
  from ours. High: remote code, a held file or a high finding, or most model bytes pickled;
  medium: some pickled files beside safetensors/GGUF, a medium finding, model files not yet
  scanned, or the Hub flagging a file this mirror released.
- **publisher traceability**: organisation or user, verified and account age as the Hub reports
  them, signature status, the policy's allow- and deny-lists. Low: allow-listed, a verified
  signature or a verified organisation; high: denied, an invalid or untrusted signature, an
  account the Hub does not know or one younger than `YOUNG_ACCOUNT`; medium otherwise.
- **version timeliness**: age of the served commit, upstream commits not mirrored yet, the last
  upstream activity. High: `MANY_BEHIND` commits behind or older than `OLD`; medium: behind, older
  than `AGING`, or the upstream never checked; low otherwise.

Offline, what only the upstream knows says "unknown offline" and the rating leans on what was
recorded. The overall rating is the worst dimension; `[policy] max_risk` names the highest rating
allowed, and the card says when the repo is above it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from proxy.trust.hub_scans import disagreement
from proxy.trust.licences import LicenceClass, classify_hub_id
from proxy.trust.risk_facts import (
    NOT_FETCHED,
    Account,
    Dimension,
    DimensionName,
    LicenceFile,
    PublisherFacts,
    Rating,
    RepoFile,
    RiskCard,
    RiskFacts,
    SignatureStatus,
    TimelinessFacts,
    worst,
)
from proxy.trust.risk_formats import FormatKind, format_dimension, format_kind
from scanners.report import JsonValue

__all__ = [
    "NOT_FETCHED", "Account", "Dimension", "DimensionName", "FormatKind", "LicenceFile",
    "PublisherFacts", "Rating", "RepoFile", "RiskCard", "RiskFacts", "SignatureStatus",
    "TimelinessFacts", "assess", "format_kind", "worst",
]  # fmt: skip

YOUNG_ACCOUNT = dt.timedelta(days=90)
AGING = dt.timedelta(days=365)
OLD = dt.timedelta(days=3 * 365)
MANY_BEHIND = 10
MAX_FACT_ITEMS = 20  # items listed in one fact
UNKNOWN_OFFLINE = "unknown offline"


def assess(facts: RiskFacts) -> RiskCard:
    """The risk card the facts make."""
    dimensions = (
        access_dimension(facts.private, facts.gated),
        licence_dimension(facts.card_licence, facts.licence_files, facts.complete_tree),
        format_dimension(facts),
        publisher_dimension(facts.publisher, facts.now, facts.offline),
        timeliness_dimension(facts.timeliness, facts.now, facts.offline),
    )
    disagreements = tuple(
        text
        for f in facts.files
        if f.hub is not None and (text := disagreement(f.hub, f.state, f.outcome)) is not None
    )
    return RiskCard(
        repo=facts.repo,
        revision=facts.revision,
        commit=facts.commit,
        overall=worst([d.rating for d in dimensions]),
        dimensions=dimensions,
        offline=facts.offline,
        max_risk=facts.max_risk,
        disagreements=disagreements,
    )


# -- access control ------------------------------------------------------------------------------


def access_dimension(private: bool, gated: str) -> Dimension:
    if private:
        return Dimension(
            DimensionName.ACCESS, Rating.HIGH,
            "private: only the accounts the publisher named may have it",
            {"visibility": "private", "gated": gated not in ("false", "")},
        )  # fmt: skip
    if gated == "manual":
        return Dimension(
            DimensionName.ACCESS, Rating.HIGH,
            "gated, manual approval: the publisher approves each requester",
            {"visibility": "public", "gated": "manual"},
        )  # fmt: skip
    if gated not in ("false", ""):
        return Dimension(
            DimensionName.ACCESS, Rating.MEDIUM,
            "gated, automatic approval: each user must accept the publisher's terms",
            {"visibility": "public", "gated": "auto"},
        )  # fmt: skip
    return Dimension(
        DimensionName.ACCESS, Rating.LOW, "public, not gated: anyone may download it",
        {"visibility": "public", "gated": False},
    )  # fmt: skip


# -- licence -------------------------------------------------------------------------------------

_LICENCE_RATING = {
    LicenceClass.PERMISSIVE: Rating.LOW,
    LicenceClass.COPYLEFT: Rating.MEDIUM,
    LicenceClass.RESTRICTED: Rating.HIGH,
    LicenceClass.UNKNOWN: Rating.HIGH,
}


def licence_dimension(
    card_licence: str | None, files: Sequence[LicenceFile], complete: bool = True
) -> Dimension:
    card = classify_hub_id(card_licence) if card_licence else None
    read = [f for f in files if f.licence is not None]
    facts: dict[str, JsonValue] = {
        "card": card.name if card else None,
        "class": card.kind.value if card else LicenceClass.UNKNOWN.value,
        "spdx": card.spdx if card else None,
        "files": [
            {"path": f.path, "class": f.licence.kind.value if f.licence else NOT_FETCHED,
             "spdx": f.licence.spdx if f.licence else None}
            for f in files[:MAX_FACT_ITEMS]
        ],
    }  # fmt: skip
    if card is None:
        known = [
            f.licence for f in read if f.licence and f.licence.kind is not LicenceClass.UNKNOWN
        ]
        if not known:
            if files:
                why = "no licence in the card; a LICENSE file exists but was not read"
            elif complete:
                why = "no licence in the card and no LICENSE file"
            else:
                why = "no licence in the card; no LICENSE file known (the file list is partial)"
            return Dimension(DimensionName.LICENCE, Rating.HIGH, why, facts)
        first = known[0]
        facts.update({"class": first.kind.value, "spdx": first.spdx})
        rating = worst([_LICENCE_RATING[first.kind], Rating.MEDIUM])  # the card is silent
        return Dimension(
            DimensionName.LICENCE, rating,
            f"no licence in the card; {first.name} reads as {first.kind.value}", facts,
        )  # fmt: skip
    rating = _LICENCE_RATING[card.kind]
    summary = f"{card.name}: {card.kind.value}" + (f" ({card.spdx})" if card.spdx else "")
    conflicting = [
        f for f in read
        if f.licence and f.licence.kind not in (LicenceClass.UNKNOWN, card.kind)
    ]  # fmt: skip
    if conflicting and card.kind is not LicenceClass.UNKNOWN:
        other = conflicting[0].licence
        assert other is not None
        facts["conflict"] = f"{conflicting[0].path} reads as {other.kind.value}"
        rating = worst([rating, Rating.MEDIUM])
        summary += f"; but {conflicting[0].path} reads as {other.kind.value}"
    return Dimension(DimensionName.LICENCE, rating, summary, facts)


# -- publisher traceability ----------------------------------------------------------------------


def _days(span: dt.timedelta) -> int:
    return max(0, span.days)


def publisher_dimension(facts: PublisherFacts, now: dt.datetime, offline: bool) -> Dimension:
    account = facts.account
    out: dict[str, JsonValue] = {
        "namespace": facts.namespace or None,
        "kind": account.kind if account else (UNKNOWN_OFFLINE if offline else "unknown"),
        "verified": account.verified if account else None,
        "account_created": account.created_at.isoformat() if account and account.created_at
        else None,
        "account_age_days": _days(now - account.created_at) if account and account.created_at
        else None,
        "signature": facts.signature.value,
        "signer": facts.signer or None,
        "allow_listed": facts.allow_listed,
        "denied_by_policy": facts.denied,
    }  # fmt: skip
    if not account and not facts.account_checked:
        out["account"] = UNKNOWN_OFFLINE if offline else "not asked"
    high = _publisher_high(facts, account, now)
    if high:
        return Dimension(DimensionName.PUBLISHER, Rating.HIGH, high, out)
    low = _publisher_low(facts, account)
    if low:
        return Dimension(DimensionName.PUBLISHER, Rating.LOW, low, out)
    if account is None:
        why = f"account {UNKNOWN_OFFLINE}" if offline else "account not known upstream"
        if not facts.namespace:
            why = "a legacy id without a namespace"
    elif account.kind == "organisation":
        why = "an organisation the Hub does not mark verified"
    else:
        why = "a user account, not an organisation"
    return Dimension(DimensionName.PUBLISHER, Rating.MEDIUM, why, out)


def _publisher_high(facts: PublisherFacts, account: Account | None, now: dt.datetime) -> str:
    if facts.denied:
        return "the publisher is on the policy's deny list"
    if facts.signature in (SignatureStatus.INVALID, SignatureStatus.UNTRUSTED):
        return f"signature {facts.signature.value}"
    if facts.account_checked and account is None and facts.namespace:
        return f"the Hub knows no organisation or user {facts.namespace}"
    if account and account.created_at and now - account.created_at < YOUNG_ACCOUNT:
        return f"the account is {_days(now - account.created_at)} days old"
    return ""


def _publisher_low(facts: PublisherFacts, account: Account | None) -> str:
    if facts.allow_listed:
        return "on the policy's allow list"
    if facts.signature is SignatureStatus.VERIFIED:
        return f"signed by {facts.signer or 'a trusted signer'}"
    if account and account.kind == "organisation" and account.verified:
        return "a verified organisation"
    return ""


# -- version timeliness --------------------------------------------------------------------------


def timeliness_dimension(facts: TimelinessFacts, now: dt.datetime, offline: bool) -> Dimension:
    age = now - facts.served_date if facts.served_date else None
    behind = facts.commits_behind
    head_known = facts.upstream_head is not None
    moved = head_known and facts.upstream_head != facts.served_commit
    out: dict[str, JsonValue] = {
        "served_commit": facts.served_commit,
        "served_commit_date": facts.served_date.isoformat() if facts.served_date else None,
        "served_commit_age_days": _days(age) if age is not None else None,
        "upstream_head": facts.upstream_head
        or (UNKNOWN_OFFLINE if offline else "unknown"),
        "upstream_seen_at": facts.upstream_seen_at.isoformat() if facts.upstream_seen_at
        else None,
        "commits_not_mirrored": behind if behind is not None
        else ("unknown" if moved else 0 if head_known else None),
        "last_upstream_activity": facts.last_activity.isoformat() if facts.last_activity
        else None,
        "newer_head_held_for_review": facts.held_change,
    }  # fmt: skip
    if (behind or 0) >= MANY_BEHIND:
        return Dimension(DimensionName.TIMELINESS, Rating.HIGH,
                         f"{behind} upstream commits not mirrored", out)  # fmt: skip
    if age is not None and age > OLD:
        return Dimension(DimensionName.TIMELINESS, Rating.HIGH,
                         f"the served commit is {_days(age)} days old", out)  # fmt: skip
    medium = []
    if moved:
        medium.append(f"{behind or 'newer'} upstream commit(s) not mirrored")
    if age is not None and age > AGING:
        medium.append(f"the served commit is {_days(age)} days old")
    if not head_known and not offline:
        medium.append("the upstream head could not be read")
    if medium:
        return Dimension(DimensionName.TIMELINESS, Rating.MEDIUM, "; ".join(medium), out)
    days = f"{_days(age)} days old" if age is not None else "of unknown age"
    if head_known:
        summary = f"the served commit is the upstream head, {days}"
    else:  # offline, never watched: what is known is the commit's age
        summary = f"the served commit is {days}; the upstream head {UNKNOWN_OFFLINE}"
    return Dimension(DimensionName.TIMELINESS, Rating.LOW, summary, out)
