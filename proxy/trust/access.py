"""Who may see a gated or private repo's cached copy (DESIGN.md rule 8).

The mirror holds a gated or private repo's files once any allowed client fetched them, so holding
a copy proves nothing about the next caller. Every request for such a repo asks the upstream
whether THAT caller may see it, with the caller's own token:

- a file request: the file's metadata HEAD (the Hub answers a gated repo's repo info and tree to
  everyone, so only a file answer proves access);
- a repo-level request of a private repo: its repo info;
- a repo-level request of a gated repo: allowed, its metadata is public.

Only positive answers are cached, per (repo, caller), for a short TTL. A refusal is never
cached; a token the Hub refuses is a refusal; upstream trouble propagates (fail closed). Offline
the local access list decides (`local`: the client tokens an admin granted the repo, and admin
tokens); without one, or for any other caller, gated and private repos are refused. Offline, a
private repo refused and a repo never mirrored get the same answer (`OfflineRepoNotFound`), so
that neither tells that the other exists; and `whoami` names the local token's holder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

from proxy.caching import TtlCache
from proxy.errors import GatedRepo, RepoNotFound
from proxy.repos import RepoRef
from scanners.report import JsonValue

if TYPE_CHECKING:  # proxy.catalog builds an AccessChecker: a runtime import would be a cycle
    from proxy.catalog import Caller
    from proxy.store.repository import RepoRecord
    from proxy.upstream import Upstream

logger = logging.getLogger(__name__)

_OFFLINE_REASON = (
    "this mirror is offline and serves gated and private repos only to clients on its local "
    "access list; ask the mirror's admin to add you"
)


class LocalAccess(Protocol):
    """The local access list (`proxy.admin.access_list.AccessList`) as the offline check uses it."""

    async def allows(self, token: str | None, repo: RepoRef) -> bool:
        """Whether the bearer `token` (None: anonymous) may read `repo`."""
        ...


class Scope(IntEnum):
    """What an upstream answer proved: seeing the repo, or reading its files (which implies it)."""

    REPO = 1
    FILES = 2


class OfflineGatedRepo(GatedRepo):
    """Offline: a gated repo's copy, refused because the caller is on no local access list."""

    def __init__(self, repo: str, kind: str, *, authenticated: bool) -> None:
        super().__init__(repo, kind, authenticated=authenticated)
        self.message = f"Access to {kind} {repo} is restricted: {_OFFLINE_REASON}"
        self.args = (self.message,)


class OfflineRepoNotFound(RepoNotFound):
    """Offline: a repo never mirrored here, or a private repo's copy refused because the caller
    is on no local access list. One message for both, so that it does not reveal which."""

    def __init__(self, repo: str, *, authenticated: bool) -> None:
        super().__init__(repo, authenticated=authenticated)
        self.message = (
            f"Repository not found: this offline mirror holds no copy of {repo} that you may "
            "see. It serves only repos fetched or imported before, and private or gated ones "
            "only to clients on its local access list; ask an administrator to prefetch or "
            "import it, or to add you to the access list"
        )
        self.args = (self.message,)


class UnknownLocalToken(RepoNotFound):
    """Offline whoami: the token is none this mirror issued (the Hub's answer to a bad token is
    a 401, which the client reports as "Invalid user token")."""

    def __init__(self) -> None:
        super().__init__("whoami-v2", authenticated=False)
        self.message = (
            "this offline mirror knows no such token: offline, it answers only for the tokens "
            'it issued; ask an administrator for a client token ("hubwarden admin tokens")'
        )
        self.args = (self.message,)


class NamedIdentity(Protocol):
    @property
    def name(self) -> str: ...


class LocalIdentities(Protocol):
    """The local tokens (`proxy.admin.identity.Identities`) as offline whoami uses them."""

    async def authenticate(self, token: str) -> NamedIdentity | None: ...


async def local_whoami(identities: LocalIdentities, token: str) -> JsonValue:
    """whoami-v2 (hub-protocol.md §3.8) for a token this mirror issued: its name stands for the
    user. Raises UnknownLocalToken."""
    identity = await identities.authenticate(token)
    if identity is None:
        raise UnknownLocalToken
    name = identity.name
    return {
        "type": "user",
        "name": name,
        "fullname": name,
        "orgs": [],
        "auth": {"type": "access_token", "accessToken": {"displayName": name, "role": "read"}},
    }


def _is_restricted(record: RepoRecord) -> bool:
    """Whether a repo needs an access check: private, or gated in any way ("auto", "manual")."""
    return record.private or _is_gated(record)


def _is_gated(record: RepoRecord) -> bool:
    return record.gated not in ("false", "")


class AccessChecker:
    """Decides whether a caller may see a gated or private repo's cached copy.

    `upstream` None means offline. `ttl_s` is how long a positive answer is trusted (0: never
    cached, every request asks upstream); `clock` is injectable for tests. `local` is the local
    access list, asked offline only (it caches its own answers).
    """

    def __init__(
        self,
        upstream: Upstream | None,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        local: LocalAccess | None = None,
    ) -> None:
        self._upstream = upstream
        self._local = local
        self._ttl_s = ttl_s
        self._allowed: TtlCache[tuple[RepoRef, str], Scope] = TtlCache(ttl_s, clock)

    async def check(
        self, record: RepoRecord, caller: Caller, probe: tuple[str, str] | None
    ) -> None:
        """Return if `caller` may see `record` (`probe` = (commit, path) for a file request,
        None for a repo-level one). Raises GatedRepo or RepoNotFound (401 form for anonymous
        callers), UpstreamUnavailable, UpstreamRateLimited, UpstreamRejected, AccessDenied."""
        if not _is_restricted(record):
            return
        if self._upstream is None:
            if self._local is not None and await self._local.allows(caller.token, record.ref):
                return
            raise self._offline_refusal(record, caller)
        scope = Scope.FILES if probe is not None else Scope.REPO
        if scope is Scope.REPO and not record.private:
            return  # a gated repo's metadata is public upstream
        key = (record.ref, caller.key)
        cached = self._allowed.get(key)
        if cached is not None and cached >= scope:
            return
        await self._ask_upstream(self._upstream, record, caller, probe)
        if self._ttl_s > 0 and (cached is None or scope > cached):
            self._allowed.put(key, scope)

    async def _ask_upstream(
        self,
        upstream: Upstream,
        record: RepoRecord,
        caller: Caller,
        probe: tuple[str, str] | None,
    ) -> None:
        try:
            if probe is not None:
                commit, path = probe
                await upstream.file_metadata(record.ref, commit, path, caller.token)
            else:
                await upstream.repo_info(record.ref, None, caller.token)
        except GatedRepo as exc:
            raise self._refusal(
                record, caller, gated=True, upstream_authenticated=exc.authenticated
            ) from exc
        except RepoNotFound as exc:
            # Also a token the Hub refuses ("Invalid credentials", 401): that is no access.
            raise self._refusal(
                record,
                caller,
                gated=not record.private,
                upstream_authenticated=exc.authenticated,
            ) from exc

    def _refusal(
        self, record: RepoRecord, caller: Caller, *, gated: bool, upstream_authenticated: bool
    ) -> GatedRepo | RepoNotFound:
        """The refusal in the Hub's shape (hub-protocol.md §6.2): the 401 form for an anonymous
        caller (even when the service token was lent) and for a token the Hub refused."""
        authenticated = caller.token is not None and upstream_authenticated
        logger.info(
            "access to %s refused upstream for %s caller",
            record.ref,
            "an authenticated" if authenticated else "an anonymous or unknown",
        )
        ref = record.ref
        if gated:
            return GatedRepo(ref.repo_id, ref.repo_type.value, authenticated=authenticated)
        return RepoNotFound(ref.repo_id, authenticated=authenticated)

    def _offline_refusal(self, record: RepoRecord, caller: Caller) -> GatedRepo | RepoNotFound:
        authenticated = caller.token is not None
        ref = record.ref
        if record.private:
            return OfflineRepoNotFound(ref.repo_id, authenticated=authenticated)
        return OfflineGatedRepo(ref.repo_id, ref.repo_type.value, authenticated=authenticated)
