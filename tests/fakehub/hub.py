"""`FakeHub`: the fake upstream Hugging Face Hub and CDN, on two loopback ports, with test controls.

    async with FakeHub() as hub:
        hub.add_user("alice", token="hf_alice")
        repo = hub.create_repo("org/m", files={"config.json": b"{}"})
        sha = repo.commit({"model.safetensors": data}, message="Add weights")
        HfApi(endpoint=hub.url).model_info("org/m")            # from a thread
        assert hub.count("/org/m/resolve/*", method="HEAD") == 0
        assert not hub.cdn_requests_with_auth()

Repos (`Repo`, see model.py) carry the repo controls: commit, tag, branches, PRs, convert refs,
force-push, tamper. The hub carries users, renames, the request log, faults, throttles and stalls.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from datetime import datetime
from types import TracebackType

from aiohttp import web

from tests.fakehub.app import create_hub_app
from tests.fakehub.cdn import create_cdn_app
from tests.fakehub.gitobjects import GITATTRIBUTES_DEFAULT, Content, LfsRule
from tests.fakehub.model import Gated, Repo, RepoKey, RepoType
from tests.fakehub.state import HubState, Organization, User
from tests.fakehub.traffic import Fault, Origin, RecordedRequest, Stall, Throttle

SHUTDOWN_TIMEOUT_S = 2.0


class FakeHub:
    """The fake Hub. Start it with ``async with FakeHub() as hub`` (or ``start``/``close``).

    ``tree_page_size`` and ``commits_page_size`` are small so that pagination is always
    exercised; ``lfs_rule`` decides which files are LFS when a commit does not say.
    """

    def __init__(
        self,
        *,
        tree_page_size: int = 3,
        commits_page_size: int = 3,
        lfs_rule: LfsRule | None = None,
    ) -> None:
        self.state = HubState(
            lfs_rule=lfs_rule or LfsRule(),
            tree_page_size=tree_page_size,
            commits_page_size=commits_page_size,
        )
        self._runners: list[web.AppRunner] = []

    @property
    def url(self) -> str:
        """The Hub origin, e.g. ``http://127.0.0.1:40123`` (pass it as ``endpoint=``)."""
        return self.state.hub_url

    @property
    def cdn_url(self) -> str:
        return self.state.cdn_url

    async def start(self) -> None:
        """Start the Hub and the CDN on free loopback ports (inside the running loop)."""
        self.state.hub_url = await self._serve(create_hub_app(self.state))
        self.state.cdn_url = await self._serve(create_cdn_app(self.state))

    async def close(self) -> None:
        """Release every stalled or hanging answer, then stop both servers."""
        self.state.traffic.closing.set()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    async def __aenter__(self) -> FakeHub:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        self._runners.append(runner)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    # ---- users and repos -------------------------------------------------------------------

    def add_user(
        self,
        name: str,
        *,
        token: str | None = None,
        orgs: Collection[str] = (),
        created_at: datetime | None = None,
    ) -> str:
        """Register ``name``; return its token (``Authorization: Bearer <token>``).
        ``created_at`` is what its overview (``/api/users/{name}/overview``) says."""
        token = token or f"hf_{name}_{secrets.token_hex(8)}"
        self.state.users[token] = User(name, token, tuple(orgs), created_at)
        return token

    def add_organization(
        self,
        name: str,
        *,
        verified: bool = False,
        created_at: datetime | None = None,
        fullname: str = "",
    ) -> Organization:
        """An organisation with an overview (``/api/organizations/{name}/overview``)."""
        organization = Organization(name, verified, created_at, fullname or name.title())
        self.state.organizations[name] = organization
        return organization

    def create_repo(
        self,
        repo_id: str,
        *,
        repo_type: RepoType | str = RepoType.MODEL,
        files: Mapping[str, Content] | None = None,
        lfs: Collection[str] | None = None,
        private: bool = False,
        gated: Gated = False,
        readers: Collection[str] = (),
        granted: Collection[str] = (),
        card_data: Mapping[str, object] | None = None,
    ) -> Repo:
        """Create a repo whose ``main`` starts, as on the Hub, with a ``.gitattributes`` commit.

        ``files`` (if any) go in a second commit. ``readers`` may see a private repo;
        ``granted`` may download a gated repo's files.
        """
        key = RepoKey(RepoType(repo_type), repo_id)
        if key in self.state.repos:
            raise ValueError(f"repo {repo_type}:{repo_id} already exists")
        repo = Repo(
            key,
            self.state.lfs_rule,
            self.state.clock,
            private=private,
            gated=gated,
            readers=set(readers),
            granted=set(granted),
            card_data=dict(card_data or {}),
        )
        repo.commit({".gitattributes": GITATTRIBUTES_DEFAULT}, message="initial commit")
        if files:
            repo.commit(files, message="Upload files", lfs=lfs)
        self.state.repos[key] = repo
        return repo

    def repo(self, repo_id: str, repo_type: RepoType | str = RepoType.MODEL) -> Repo:
        return self.state.repos[RepoKey(RepoType(repo_type), repo_id)]

    def rename_repo(
        self, repo_id: str, new_id: str, repo_type: RepoType | str = RepoType.MODEL
    ) -> Repo:
        """Move a repo; its old id then answers a relative 307 to the new one, as on the Hub."""
        old = RepoKey(RepoType(repo_type), repo_id)
        repo = self.state.repos.pop(old)
        repo.key = RepoKey(old.repo_type, new_id)
        self.state.repos[repo.key] = repo
        self.state.renames[old] = new_id
        return repo

    def delete_repo(self, repo_id: str, repo_type: RepoType | str = RepoType.MODEL) -> None:
        del self.state.repos[RepoKey(RepoType(repo_type), repo_id)]

    # ---- what the fake saw ---------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request since the last ``reset_requests``, oldest first (both origins)."""
        return list(self.state.traffic.log)

    @property
    def counter(self) -> dict[tuple[str, Origin, str], int]:
        """Requests per (method, origin, decoded path) since the last reset (never truncated)."""
        return dict(self.state.traffic.counts)

    def count(
        self, path_glob: str = "*", *, method: str | None = None, origin: Origin | None = None
    ) -> int:
        """How many requests matched (decoded path glob, ``*`` crossing ``/``)."""
        return sum(1 for r in self.state.traffic.log if r.matches(path_glob, method, origin))

    def body_fetches(self, path_glob: str = "*") -> int:
        """GETs that received file bytes (CDN or resolve-cache, 200/206) on matching paths."""
        return sum(
            1
            for r in self.state.traffic.log
            if r.matches(path_glob, "GET", None) and r.status in (200, 206) and r.body_bytes
        )

    def bytes_served(self, path_glob: str = "*") -> int:
        """File bytes sent on matching paths (proves one fetch even when it was ranged)."""
        return sum(r.body_bytes for r in self.state.traffic.log if r.matches(path_glob, None, None))

    def xet_token_requests(self) -> int:
        """Requests that reached a xet-read-token route (a proxy must keep this at 0)."""
        return self.count("/api/*/xet-read-token/*")

    def cdn_requests_with_auth(self) -> list[RecordedRequest]:
        """CDN requests that carried ``Authorization`` (a proxy must keep this empty)."""
        return [r for r in self.state.traffic.log if r.origin is Origin.CDN and r.has_auth]

    def reset_requests(self) -> None:
        self.state.traffic.reset()

    # ---- misbehaving on purpose ----------------------------------------------------------

    def inject(
        self,
        path_glob: str,
        *,
        status: int = 500,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        times: int = 1,
        method: str | None = None,
        origin: Origin | None = None,
        hang: bool = False,
    ) -> Fault:
        """Answer the next ``times`` matching requests with ``status`` (e.g. 429 + Retry-After).

        ``hang=True``: say nothing until ``fault.release()`` or close (a timeout for the caller).
        """
        fault = Fault(
            path_glob, status, dict(headers or {}), body, times, method, origin, hang=hang
        )
        self.state.traffic.faults.append(fault)
        return fault

    def throttle(
        self, bytes_per_s: float, path_glob: str = "*", *, shared: bool = False
    ) -> Throttle:
        """Send matching file bodies at ``bytes_per_s``: per connection, or ``shared`` by all."""
        throttle = Throttle(bytes_per_s, path_glob, shared)
        self.state.traffic.throttles.append(throttle)
        return throttle

    def stall(self, path_glob: str = "*", *, after_bytes: int = 0, times: int = 1) -> Stall:
        """Stop the next ``times`` matching bodies after ``after_bytes`` (see `Stall`)."""
        stall = Stall(path_glob, after_bytes, times)
        self.state.traffic.stalls.append(stall)
        return stall

    def ignore_ranges(self, path_glob: str = "*") -> None:
        """Answer matching file GETs whole (``200``) whatever their ``Range`` says, as a server
        without range support does (until ``clear_misbehaviour``)."""
        self.state.traffic.range_ignored.append(path_glob)

    def cancel(self, item: Fault | Throttle | Stall) -> None:
        """Remove one fault, throttle or stall (releasing whatever it holds)."""
        traffic = self.state.traffic
        if isinstance(item, Throttle):
            traffic.throttles.remove(item)
        elif isinstance(item, Fault):
            traffic.faults.remove(item)
            item.release()
        else:
            traffic.stalls.remove(item)
            item.release()

    def clear_misbehaviour(self) -> None:
        """Drop every fault, throttle and stall; release whatever is stalled or hanging."""
        traffic = self.state.traffic
        for fault in traffic.faults:
            fault.release()
        for stall in traffic.stalls:
            stall.release()
        traffic.faults.clear()
        traffic.throttles.clear()
        traffic.stalls.clear()
        traffic.range_ignored.clear()
