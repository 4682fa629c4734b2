"""Facts only the upstream knows, which the risk card and the watch read now and then: who a
publisher is, where a repo's branches and tags point now, and the Hub's own scan results.

Each answer is cached for `ttl_s`, so a card opened twice costs no second call; the calls carry
the service token (they are made for no client, DESIGN.md rule 8) and go only to the configured
upstream. Offline there is no `UpstreamFacts` at all: callers say "unknown offline". Upstream JSON
is hostile: every value is checked before it becomes a fact.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from proxy.caching import TtlCache
from proxy.errors import RepoNotFound
from proxy.repos import RepoRef, is_commit_sha
from proxy.trust.hub_scans import HubFileStatus, HubRepoStatus, file_status, repo_status
from proxy.trust.risk import Account
from proxy.upstream import Upstream
from scanners.report import JsonValue

DEFAULT_TTL_S = 600.0
MAX_SECURITY_PATHS = 1000  # files whose Hub scan status one card asks for
MAX_LISTING_PAGES = 2  # commit listing pages read to count the commits not mirrored
_ACCOUNT_KINDS = (("organisation", "organizations"), ("user", "users"))


@dataclass(frozen=True, slots=True)
class RefHeads:
    """Branch and tag name → commit, as the upstream lists them now."""

    branches: dict[str, str]
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class CommitsSince:
    """How far a branch's head is ahead of the commit served, and when the head was made."""

    ahead: int | None  # None: the served commit was not found near the head
    head_date: dt.datetime | None


@dataclass(frozen=True, slots=True)
class HubSecurity:
    """The Hub's own scan results for one commit (both parts empty when it published none)."""

    repo: HubRepoStatus | None
    files: dict[str, HubFileStatus]


def parse_date(value: JsonValue) -> dt.datetime | None:
    """A Hub date (`YYYY-MM-DDTHH:MM:SS[.fff]Z`), or None when absent or malformed."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _account(kind: str, body: JsonValue) -> Account:
    data = body if isinstance(body, dict) else {}
    verified = data.get("isVerified")
    fullname = data.get("fullname")
    return Account(
        kind=kind,
        verified=verified if isinstance(verified, bool) else None,
        created_at=parse_date(data.get("createdAt")),
        fullname=fullname[:200] if isinstance(fullname, str) else "",
    )


def _targets(body: JsonValue, key: str) -> dict[str, str]:
    items = body.get(key) if isinstance(body, dict) else None
    found: dict[str, str] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        name, target = item.get("name"), item.get("targetCommit")
        named = isinstance(name, str) and 0 < len(name) <= 256
        if named and isinstance(target, str) and is_commit_sha(target):
            found[str(name)] = target
    return found


class UpstreamFacts:
    """The few cached upstream calls of the risk card and the watch."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstream = upstream
        self._accounts: TtlCache[str, tuple[Account | None]] = TtlCache(ttl_s, clock)
        self._security: TtlCache[tuple[RepoRef, str], HubSecurity] = TtlCache(ttl_s, clock)
        self._since: TtlCache[tuple[RepoRef, str, str], CommitsSince] = TtlCache(ttl_s, clock)

    @property
    def service_token(self) -> str | None:
        """The token these calls carry (the mirror's own), for the watch's catalog calls."""
        return self._upstream.service_token

    @property
    def _token(self) -> str | None:
        return self._upstream.service_token

    async def account(self, namespace: str) -> Account | None:
        """The organisation or user `namespace` as the Hub reports it; None when the Hub knows
        neither. Raises UpstreamUnavailable, UpstreamRateLimited, UpstreamRejected."""
        cached = self._accounts.get(namespace)
        if cached is not None:
            return cached[0]
        found: Account | None = None
        for kind, plural in _ACCOUNT_KINDS:
            path = f"{plural}/{quote(namespace, safe='')}/overview"
            try:
                body = await self._upstream.api_json(path, self._token, what=namespace)
            except RepoNotFound:
                continue
            found = _account(kind, body)
            break
        self._accounts.put(namespace, (found,))
        return found

    async def heads(self, repo: RepoRef) -> RefHeads:
        """Where the repo's branches and tags point upstream now (never cached: the watch asks
        exactly to see a change). Raises RepoNotFound, GatedRepo, Upstream* errors."""
        body = await self._upstream.refs(repo, self._token, include_prs=False)
        return RefHeads(_targets(body, "branches"), _targets(body, "tags"))

    async def commits_since(self, repo: RepoRef, head: str, served: str) -> CommitsSince:
        """How many commits `head` is ahead of `served` on its listing (None when `served` is
        not in the first MAX_LISTING_PAGES pages: a rewritten history, or a long way behind),
        and the date of `head`. Cached: commits never change. Raises as `heads`."""
        cached = self._since.get((repo, head, served))
        if cached is not None:
            return cached
        ahead, newest, cursor = 0, None, None
        found: int | None = None
        for _ in range(MAX_LISTING_PAGES):
            page = await self._upstream.commits_page(repo, head, cursor, self._token)
            for item in page.items:
                if newest is None:
                    newest = parse_date(item.raw.get("date"))
                if item.commit_id == served:
                    found = ahead
                    break
                ahead += 1
            cursor = page.cursor
            if found is not None or cursor is None:
                break
        since = CommitsSince(found, newest)
        self._since.put((repo, head, served), since)
        return since

    async def hub_security(self, repo: RepoRef, commit: str, paths: Sequence[str]) -> HubSecurity:
        """The Hub's own scan results at `commit`: `securityRepoStatus` from repo info asked with
        `securityStatus=true`, and each file's `securityFileStatus` from paths-info asked with
        `expand=true` (hub-protocol.md §3.3, §3.4). Raises as `heads`."""
        cached = self._security.get((repo, commit))
        if cached is not None:
            return cached
        base = f"{repo.repo_type.plural}/{repo.repo_id}"
        info = await self._upstream.api_json(
            f"{base}/revision/{commit}?securityStatus=true", self._token, what=repo.repo_id
        )
        status = repo_status(info.get("securityRepoStatus") if isinstance(info, dict) else None)
        files: dict[str, HubFileStatus] = {}
        wanted = list(dict.fromkeys(paths))[:MAX_SECURITY_PATHS]
        asked = set(wanted)
        if wanted:
            form = [("paths", p) for p in wanted] + [("expand", "true")]
            listed = await self._upstream.api_json(
                f"{base}/paths-info/{commit}", self._token, what=repo.repo_id, form=form
            )
            for item in listed if isinstance(listed, list) else []:
                path = item.get("path") if isinstance(item, dict) else None
                if isinstance(item, dict) and isinstance(path, str) and path in asked:
                    found = file_status(path, item.get("securityFileStatus"))
                    if found is not None:
                        files[path] = found
        security = HubSecurity(status, files)
        self._security.put((repo, commit), security)
        return security
