"""Policy as code at the two places it acts: before anything is fetched (publishers, pull
requests, file size) and once a file is scanned (formats, remote code, unknown formats, scanner
errors, opaque data, new repos, the model signature, and the repo's risk card against
`max_risk`: `proxy.trust.risk_hold`).

An enforced rule refuses with a message naming itself; a rule in audit mode records what it
would have refused (an audit event and a WARNING line, once per repo, rule and path a while) and
refuses nothing. The policy is read from its source before every decision, so a change of the
policy file applies to the next request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from proxy.caching import IMMUTABLE_TTL_S, TtlCache
from proxy.config import RuleAction
from proxy.errors import Held, HubwardenError
from proxy.lifecycle import BlobOrigin, Settlement
from proxy.metadata import TreeEntry
from proxy.repos import Revision
from proxy.store.models import BlobState
from proxy.store.repository import RepoRecord, Repository
from proxy.store.waivers import Waivers
from proxy.trust.blocks import SYSTEM_ACTOR
from proxy.trust.lineage import Lineage
from proxy.trust.risk_hold import RiskHold, changes_the_card, is_exempt, is_read_by_the_card
from proxy.trust.rules import MAX_RISK, Policy, RuleHit
from proxy.trust.signatures import Signatures
from proxy.trust.verdicts import Verdict, decide
from scanners.report import Outcome, ScanReport

logger = logging.getLogger(__name__)

_STATES = {
    Verdict.RELEASE: BlobState.RELEASED,
    Verdict.QUARANTINE: BlobState.QUARANTINED,
    Verdict.REJECT: BlobState.REJECTED,
}


class PolicyRefused(Held):
    """A policy rule refuses a repo, revision or file; `rule` names it."""

    def __init__(self, message: str, *, rule: str, path: str = "") -> None:
        self.rule = rule
        super().__init__(message, path=path)


def _off_branch_hit(policy: Policy, commit: str) -> RuleHit:
    rule = "allow_pull_requests"
    return RuleHit(
        rule,
        RuleAction.REJECT,
        f"policy rule {rule}: commit {commit[:12]} is on no branch's current history (a pull "
        "request, a deleted branch or a stray commit), and pull requests are not served; use a "
        "branch, tag or commit of a branch",
        policy.is_audited(rule),
    )


class PolicyGate:
    """Applies the policy in force; `policy` returns it (hot-reloaded by `PolicySource`)."""

    def __init__(
        self,
        repository: Repository,
        lineage: Lineage,
        policy: Callable[[], Policy],
        contact: str,
        waivers: Waivers | None = None,
        *,
        signatures: Signatures | None = None,
        risk: RiskHold | None = None,
    ) -> None:
        """`waivers`: reviewers' releases that also cover later files (None: none apply);
        `signatures`: model signatures checked at settle time (None: not checked); `risk`: the
        risk cards `max_risk` reads (None until `use_risk`: while `max_risk` is set, files are
        then held, since their card cannot be computed)."""
        self._waivers = waivers
        self._signatures = signatures
        self._risk = risk
        self._db = repository
        self._lineage = lineage
        self._policy = policy
        self._contact = contact
        self._audited: TtlCache[tuple[int, str, str], bool] = TtlCache(IMMUTABLE_TTL_S)

    def use_risk(self, risk: RiskHold) -> None:
        """Give the gate the risk cards (done once, by the app factory: gathering a card's
        facts fetches licence files through the ingest path, which needs this gate)."""
        self._risk = risk

    async def check_repo(self, repo: RepoRecord, revision: Revision | None) -> None:
        """The repo-level rules (publishers, pull requests by name). Raises PolicyRefused."""
        policy = self._policy()
        hits = policy.before_fetch(repo.ref, revision or Revision("main"), None)
        await self._enforce(repo, "", hits)

    async def check_file(
        self, repo: RepoRecord, commit: str, entry: TreeEntry, token: str | None
    ) -> None:
        """The rules that need no content, for one file at a commit. A refused pull request is
        recognised by lineage (a commit on no branch's current history), since a client may ask
        for it by hash. Raises PolicyRefused."""
        policy = self._policy()
        hits = policy.before_fetch(repo.ref, Revision(commit), entry)
        if not policy.settings.allow_pull_requests:
            on_branch = await self._lineage.on_current_history(repo, commit, token)
            if on_branch is not True:
                hits.append(_off_branch_hit(policy, commit))
        await self._enforce(repo, entry.path, hits)

    async def _enforce(self, repo: RepoRecord, path: str, hits: Sequence[RuleHit]) -> None:
        for hit in hits:
            if hit.audited:
                await self._record_audited(repo, path, hit)
        for action in (RuleAction.REJECT, RuleAction.HOLD):
            for hit in hits:
                if hit.enforced and hit.action is action:
                    raise PolicyRefused(
                        f"{hit.message}; ask {self._contact}", rule=hit.rule, path=path
                    )

    async def _record_audited(self, repo: RepoRecord, path: str, hit: RuleHit) -> None:
        key = (repo.pk, hit.rule, path)
        if self._audited.get(key):
            return
        self._audited.put(key, True)
        await self._db.audit(
            SYSTEM_ACTOR,
            "policy.audited",
            repo_pk=repo.pk,
            details={
                "rule": hit.rule,
                "action": hit.action.value,
                "path": path,
                "message": hit.message,
            },
        )
        logger.warning("audit mode, would %s: %s", hit.action.value, hit.message)

    async def settle(
        self, origin: BlobOrigin, report: ScanReport, token: str | None = None
    ) -> Settlement:
        """The next state of a scanned blob: the findings, the rules that read them, and the
        repo's model signature (`token`: the client's, should the signature file be fetched)."""
        policy = self._policy()
        new_repo = not await self._db.has_pins(origin.repo.pk)
        hits = policy.after_scan(origin.repo.ref, origin.entry, report, new_repo=new_repo)
        hits += await self._signature_hits(policy, origin, token)
        hits += await self._risk_hits(policy, origin, report, hits, token)
        decision = decide(report, hits, waived=policy.waived)
        if self._risk is not None:
            held_otherwise = decision.verdict is not Verdict.RELEASE and decision.rule != MAX_RISK
            if origin.commit and changes_the_card(origin.entry.path, report, held_otherwise):
                self._risk.changed(origin.repo.pk, origin.commit)
        for hit in decision.audited:
            await self._record_audited(origin.repo, origin.entry.path, hit)
        # A waiver trusts what was read, never what could not be (DESIGN.md rule 6).
        waivable = decision.verdict is Verdict.QUARANTINE and report.outcome is not Outcome.ERROR
        if waivable and self._waivers is not None:
            waiver = await self._waivers.covering(origin.repo.ref, origin.entry.path)
            if waiver is not None:  # held, not malicious nor refused by a rule to reject
                blob = await self._db.get_blob(origin.entry.etag)
                if blob is not None:  # judged again when the waiver ends
                    await self._waivers.record_waived(waiver.pk, blob.pk, decision.reason)
                await self._db.audit(
                    waiver.created_by,
                    "waiver.applied",
                    repo_pk=origin.repo.pk,
                    blob_pk=blob.pk if blob is not None else None,
                    details={"waiver": waiver.pk, "path": origin.entry.path,
                             "held_for": decision.reason},
                )  # fmt: skip
                return Settlement(BlobState.RELEASED, f"waiver {waiver.pk} ({waiver.covers})")
        return Settlement(_STATES[decision.verdict], decision.reason)

    async def _risk_hits(
        self,
        policy: Policy,
        origin: BlobOrigin,
        report: ScanReport,
        hits: Sequence[RuleHit],
        token: str | None,
    ) -> list[RuleHit]:
        """`max_risk` for a scanned file: its repo's risk card at its commit, with this file's
        own scan in it (not computed when max_risk is off, for the files it never holds, or when
        the file is refused or held by another rule anyway)."""
        limit = policy.risk_limit
        path = origin.entry.path
        signature_file = self._signatures.signature_file if self._signatures else ""
        if limit is None or is_exempt(report.file_format):
            return []
        if report.outcome is Outcome.MALICIOUS or any(h.enforced for h in hits):
            return []
        repo = origin.repo
        if self._risk is None:
            return policy.risk_unknown_hit(repo.ref, "no risk card service in this process")
        settling = (path, origin.entry.size, report)
        fetch = not is_read_by_the_card(path, signature_file)
        try:  # a rescan settles without a commit: the one the file was first fetched for
            commit = origin.commit or await self._risk.commit_of(origin.entry.etag)
            card = await self._risk.card(repo, commit, settling, token, limit, fetch=fetch)
        except HubwardenError as exc:
            return policy.risk_unknown_hit(repo.ref, exc.message)
        return policy.risk_hits(repo.ref, card)

    async def _signature_hits(
        self, policy: Policy, origin: BlobOrigin, token: str | None
    ) -> list[RuleHit]:
        """The signature rules for a verified file: its sha256 against the signed one."""
        signatures = self._signatures
        if signatures is None:
            return []
        blob = await self._db.get_blob(origin.entry.etag)
        sha256 = blob.sha256 if blob is not None else None
        repo, path = origin.repo, origin.entry.path
        signature = await signatures.check_file(repo, origin.commit, path, sha256, token)
        return policy.signature_hits(
            repo.ref,
            signature,
            required=signatures.is_required(repo.ref),
            uncovered=signatures.uncovered_files,
        )
