"""Policy as code at the two places it acts: before anything is fetched (publishers, pull
requests, file size) and once a file is scanned (formats, remote code, unknown formats, scanner
errors, opaque data, new repos).

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
from proxy.errors import Held
from proxy.lifecycle import BlobOrigin, Settlement
from proxy.metadata import TreeEntry
from proxy.repos import Revision
from proxy.store.models import BlobState
from proxy.store.repository import RepoRecord, Repository
from proxy.store.waivers import Waivers
from proxy.trust.blocks import SYSTEM_ACTOR
from proxy.trust.lineage import Lineage
from proxy.trust.rules import Policy, RuleHit
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
    ) -> None:
        """`waivers`: reviewers' releases that also cover later files (None: none apply);
        `signatures`: model signatures checked at settle time (None: not checked)."""
        self._waivers = waivers
        self._signatures = signatures
        self._db = repository
        self._lineage = lineage
        self._policy = policy
        self._contact = contact
        self._audited: TtlCache[tuple[int, str, str], bool] = TtlCache(IMMUTABLE_TTL_S)

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
        decision = decide(report, hits, waived=policy.waived)
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
