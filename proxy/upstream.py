"""The client of the real Hub (or of another Hubwarden): metadata calls and file fetches.

Everything upstream says is hostile input: JSON bodies are read up to a bound, decoded into the
typed values of `proxy.metadata`, and every Xet key is dropped on the way in. Foreign exceptions
(aiohttp errors, timeouts) become `UpstreamUnavailable`; the Hub's error codes become the matching
domain exceptions. A token goes only to the upstream origin, never to a CDN host or another origin
(DESIGN.md rule 9), and a client without a token is asked for without one: the service token never
widens what an anonymous client may see (rule 8) unless the admin says so.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit

import aiohttp
from multidict import CIMultiDictProxy

from proxy.config import Settings
from proxy.errors import (
    AccessDenied,
    EntryNotFound,
    GatedRepo,
    InvalidInput,
    RepoNotFound,
    RevisionNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    shown,
)
from proxy.metadata import (
    CommitInfo,
    EntryType,
    FileMetadata,
    LfsInfo,
    Page,
    RepoInfo,
    TreeEntry,
    strip_xet,
)
from proxy.repos import RepoRef, is_commit_sha
from proxy.upstream_body import FOREIGN_ERRORS, FileLocation, UpstreamBody, unavailable
from scanners.report import JsonValue

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 10
MAX_CURSOR_CHARS = 4096
# A held message names the file, the reason, the review and whom to ask: longer than `shown`'s
# cut, and still within the one header line the client reads (hub/errors.py cuts at 1000).
MAX_UPSTREAM_MESSAGE_CHARS = 900
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes (\d{1,20})-\d{1,20}/(\d{1,20}|\*)")
_DISABLED_MESSAGE = "Access to this resource is disabled."


class UpstreamHeld(AccessDenied):
    """The upstream refuses a file's bytes with a stated reason and no Hub error code: another
    Hubwarden holding it (quarantined, rejected, blocked; hub-protocol.md §6.3). Its message is
    passed on, so that the client learns why, and where to ask."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.upstream_message = _printable(message, MAX_UPSTREAM_MESSAGE_CHARS)
        super().__init__(f"the upstream mirror refuses {shown(path)}: {self.upstream_message}")


def _printable(text: str, limit: int) -> str:
    """Upstream text made safe for a header and a log line: printable ASCII, cut to `limit`."""
    kept = "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in text[: limit + 1])
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """How to reach the upstream; built by the app factory from the settings."""

    base_url: str
    service_token: str | None = field(repr=False)
    connect_timeout_s: float
    read_timeout_s: float
    retries: int
    max_json_bytes: int
    max_tree_entries: int
    user_agent: str = "hubwarden/0.1"
    # `[fetch] anonymous_uses_service_token`: lend the service token to clients without one
    # (widens what anonymous clients see to what the service account sees; off by default).
    anonymous_uses_service_token: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamConfig:
        """The upstream client's config as the settings say (the server and the CLI alike)."""
        fetch = settings.fetch
        return cls(
            base_url=settings.upstream,
            service_token=fetch.token.reveal() if fetch.token else None,  # HF_TOKEN applied
            connect_timeout_s=fetch.connect_timeout_s,
            read_timeout_s=fetch.read_timeout_s,
            retries=fetch.retries,
            max_json_bytes=fetch.max_json_bytes,
            max_tree_entries=fetch.max_tree_entries,
            anonymous_uses_service_token=fetch.anonymous_uses_service_token,
        )


def _retry_after(headers: Mapping[str, str], default: int = 5) -> int:
    value = headers.get("Retry-After", "")
    if value.isdigit():
        return max(1, min(int(value), 3600))
    return default


def _clean_etag(value: str | None) -> str:
    if not value:
        return ""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


class Upstream:
    """Speaks to the upstream Hub with one aiohttp session owned by the app factory.

    Every call takes `token`: the token of the client on whose behalf it is made, or None for a
    client without one. A call with None goes upstream without any token, unless the config's
    `anonymous_uses_service_token` lends it the service token. Hubwarden's own calls that are
    made on behalf of no client (history checks, refs refresh, the policy-check command) pass
    `token=upstream.service_token` explicitly. Whatever the token, it is sent to the upstream
    origin only: dropped on a redirect to a CDN host or any other origin.
    """

    def __init__(self, config: UpstreamConfig, session: aiohttp.ClientSession) -> None:
        self._config = config
        self._session = session
        self._origin = urlsplit(config.base_url)._replace(path="", query="", fragment="").geturl()

    @property
    def base_url(self) -> str:
        return self._config.base_url

    @property
    def service_token(self) -> str | None:
        """The mirror's own token (config or HF_TOKEN), for calls made on behalf of no client:
        pass it as `token=`. Never pass it for a client's request (DESIGN.md rule 8)."""
        return self._config.service_token

    # -- plumbing ------------------------------------------------------------------------------

    def _effective_token(self, token: str | None) -> str | None:
        """The token a call carries: the one given, else the service token only when the admin
        lends it to clients without one."""
        if token:
            return token
        if self._config.anonymous_uses_service_token:
            return self._config.service_token
        return None

    def _headers(self, token: str | None) -> dict[str, str]:
        headers = {"User-Agent": self._config.user_agent, "Accept-Encoding": "identity"}
        effective = self._effective_token(token)
        if effective:
            headers["Authorization"] = f"Bearer {effective}"
        return headers

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None,
            connect=self._config.connect_timeout_s,
            sock_connect=self._config.connect_timeout_s,
            sock_read=self._config.read_timeout_s,
        )

    def _is_upstream_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts._replace(path="", query="", fragment="").geturl() == self._origin

    def _raise_for_status(
        self,
        status: int,
        headers: CIMultiDictProxy[str],
        *,
        token: str | None,
        what: str,
        repo: RepoRef | None = None,
    ) -> None:
        if status < 400:
            return
        code = headers.get("X-Error-Code", "")
        message = headers.get("X-Error-Message", "")
        authenticated = self._effective_token(token) is not None
        if code == "RevisionNotFound":
            raise RevisionNotFound(message.removeprefix("Invalid rev id: ") or what)
        if code == "EntryNotFound":
            commit = headers.get("X-Repo-Commit")
            raise EntryNotFound(what, commit=commit if commit and is_commit_sha(commit) else None)
        if code == "GatedRepo":
            kind = repo.repo_type.value if repo else "repo"
            raise GatedRepo(repo.repo_id if repo else what, kind, authenticated=status == 403)
        if code == "RepoNotFound" or status == 401:
            raise RepoNotFound(what, authenticated=authenticated and status != 401)
        if message == _DISABLED_MESSAGE:
            raise AccessDenied(_DISABLED_MESSAGE)
        if status == 403 and message and repo is not None:
            raise UpstreamHeld(what, message)
        if status == 429:
            raise UpstreamRateLimited(_retry_after(headers))
        if status == 404:
            raise RepoNotFound(what, authenticated=authenticated)
        if status >= 500:
            raise UpstreamUnavailable(
                f"the upstream Hub answered {status} for {shown(what)}; retry later",
                status=503 if status == 503 else 502,
            )
        raise UpstreamRejected(
            f"the upstream Hub answered {status} for {shown(what)}: {shown(message)}"
        )

    async def _read_json(self, response: aiohttp.ClientResponse) -> JsonValue:
        limit = self._config.max_json_bytes
        data = await response.content.read(limit + 1)
        if len(data) > limit:
            raise UpstreamRejected(f"upstream answer for {response.url.path} exceeds {limit} bytes")
        try:
            value: JsonValue = json.loads(data)
            return strip_xet(value)
        except RecursionError as exc:
            raise UpstreamRejected(
                f"upstream answer for {response.url.path} nests too deep"
            ) from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise UpstreamRejected(f"upstream answer for {response.url.path} is not JSON") from exc

    async def _get_json(
        self,
        url: str,
        *,
        token: str | None,
        what: str,
        method: str = "GET",
        data: aiohttp.FormData | None = None,
    ) -> tuple[JsonValue, CIMultiDictProxy[str]]:
        """GET (or POST) a JSON document with bounded retries on 429, 5xx and network errors."""
        attempt = 0
        while True:
            try:
                async with self._session.request(
                    method,
                    url,
                    headers=self._headers(token),
                    timeout=self._timeout(),
                    data=data,
                    allow_redirects=True,  # renamed repos; aiohttp drops auth on other origins
                ) as response:
                    self._raise_for_status(
                        response.status, response.headers, token=token, what=what
                    )
                    return await self._read_json(response), response.headers
            except (UpstreamUnavailable, UpstreamRateLimited) as exc:
                failure: Exception = exc
            except FOREIGN_ERRORS as exc:
                failure = unavailable(exc)
                failure.__cause__ = exc
            attempt += 1
            if attempt > self._config.retries:
                raise failure
            delay = min(2.0**attempt / 4, 4.0)
            if isinstance(failure, UpstreamRateLimited):
                if failure.retry_after_s > 5:
                    raise failure
                delay = float(failure.retry_after_s)
            logger.warning(
                "upstream %s failed (%s); retry %d in %.1fs", what, failure, attempt, delay
            )
            await asyncio.sleep(delay)

    def _api_url(self, repo: RepoRef, *parts: str) -> str:
        suffix = "".join(f"/{quote(p, safe='')}" for p in parts)
        return f"{self._config.base_url}/api/{repo.repo_type.plural}/{repo.repo_id}{suffix}"

    # -- metadata ------------------------------------------------------------------------------

    async def repo_info(self, repo: RepoRef, revision: str | None, token: str | None) -> RepoInfo:
        """Repo info at a revision (None: the default branch). Raises RepoNotFound, GatedRepo,
        RevisionNotFound, UpstreamUnavailable, UpstreamRateLimited, UpstreamRejected."""
        url = self._api_url(repo) if revision is None else self._api_url(repo, "revision", revision)
        body, _ = await self._get_json(url, token=token, what=repo.repo_id)
        if not isinstance(body, dict):
            raise UpstreamRejected(f"repo info for {repo} is not an object")
        sha = body.get("sha")
        if not isinstance(sha, str) or not _HEX40.fullmatch(sha):
            raise UpstreamRejected(f"repo info for {repo} has no valid sha")
        gated = body.get("gated", False)
        return RepoInfo(
            repo_id=str(body.get("id") or repo.repo_id),
            sha=sha,
            private=body.get("private") is True,
            gated=gated if isinstance(gated, str) else bool(gated),
            disabled=body.get("disabled") is True,
            raw=body,
        )

    async def list_tree(self, repo: RepoRef, commit: str, token: str | None) -> list[TreeEntry]:
        """Every file and folder of a commit, following all pages. Bounded by max_tree_entries."""
        url: str | None = self._api_url(repo, "tree", commit) + "?recursive=true&expand=false"
        entries: list[TreeEntry] = []
        pages = 0
        while url is not None:
            body, headers = await self._get_json(url, token=token, what=repo.repo_id)
            if not isinstance(body, list):
                raise UpstreamRejected(f"tree listing of {repo} is not a list")
            entries.extend(_tree_entry(item) for item in body)
            if len(entries) > self._config.max_tree_entries:
                raise UpstreamRejected(
                    f"{repo} has more than {self._config.max_tree_entries} files and folders"
                )
            pages += 1
            url = self._next_link(headers)
        logger.info("listed %s@%s: %d entries in %d pages", repo, commit, len(entries), pages)
        return entries

    async def paths_info(
        self, repo: RepoRef, commit: str, paths: list[str], token: str | None
    ) -> list[TreeEntry]:
        """Tree entries of the given paths at a commit; unknown paths are left out."""
        url = self._api_url(repo, "paths-info", commit)
        form = [("paths", p) for p in paths] + [("expand", "false")]
        body, _ = await self._get_json(
            url, token=token, what=repo.repo_id, method="POST", data=aiohttp.FormData(form)
        )
        if not isinstance(body, list):
            raise UpstreamRejected(f"paths-info of {repo} is not a list")
        return [_tree_entry(item) for item in body]

    def _next_link(self, headers: CIMultiDictProxy[str]) -> str | None:
        """The `rel="next"` URL of a Link header, if it points at the upstream origin."""
        for link in headers.getall("Link", []):
            for part in link.split(","):
                match = re.match(r'\s*<([^>]*)>\s*;\s*rel="?next"?', part)
                if match:
                    url: str = urljoin(self._config.base_url + "/", str(match.group(1)))
                    if not self._is_upstream_origin(url):
                        raise UpstreamRejected("upstream pagination link points at another host")
                    return url
        return None

    async def refs(self, repo: RepoRef, token: str | None, *, include_prs: bool) -> JsonValue:
        """The refs listing (branches, converts, tags, pullRequests) as upstream JSON."""
        url = self._api_url(repo, "refs") + ("?include_prs=1" if include_prs else "")
        body, _ = await self._get_json(url, token=token, what=repo.repo_id)
        if not isinstance(body, dict):
            raise UpstreamRejected(f"refs of {repo} is not an object")
        return body

    async def commits_page(
        self,
        repo: RepoRef,
        revision: str,
        cursor: str | None,
        token: str | None,
        *,
        formatted: bool = False,
    ) -> Page[CommitInfo]:
        """One page of the commit history (newest first). `cursor` comes from a previous page
        (and carries `formatted` on); `formatted` asks for the items' HTML renderings too."""
        url = self._api_url(repo, "commits", revision)
        if cursor:
            url += "?" + _decode_cursor(cursor)
        elif formatted:
            url += "?" + urlencode({"expand[]": "formatted"})
        body, headers = await self._get_json(url, token=token, what=repo.repo_id)
        if not isinstance(body, list):
            raise UpstreamRejected(f"commit listing of {repo} is not a list")
        items: list[CommitInfo] = []
        for item in body:
            if not isinstance(item, dict) or not _HEX40.fullmatch(str(item.get("id", ""))):
                raise UpstreamRejected(f"commit listing of {repo} holds an invalid item")
            items.append(CommitInfo(commit_id=str(item["id"]), raw=item))
        next_url = self._next_link(headers)
        total = headers.get("X-Total-Count", "")
        return Page(
            items=tuple(items),
            cursor=_encode_cursor(urlsplit(next_url).query) if next_url else None,
            total=int(total) if total.isdigit() else None,
        )

    async def api_json(
        self,
        path: str,
        token: str | None,
        *,
        what: str,
        form: Sequence[tuple[str, str]] | None = None,
    ) -> JsonValue:
        """The JSON document at `/api/{path}` (each segment quoted by the caller), POSTed as a
        form when `form` is given; for the few facts the risk card and the watch read. Raises
        as `repo_info` (RepoNotFound for a 404)."""
        url = f"{self._config.base_url}/api/{path}"
        data = aiohttp.FormData(list(form)) if form is not None else None
        method = "GET" if form is None else "POST"
        body, _ = await self._get_json(url, token=token, what=what, method=method, data=data)
        return body

    async def whoami(self, token: str) -> JsonValue:
        """whoami-v2 for a client's token. Raises RepoNotFound (as 401) for a bad token."""
        url = f"{self._config.base_url}/api/whoami-v2"
        body, _ = await self._get_json(url, token=token, what="whoami-v2")
        return body

    # -- files ---------------------------------------------------------------------------------

    def _resolve_url(self, repo: RepoRef, commit: str, path: str) -> str:
        return (
            f"{self._config.base_url}/{repo.file_path}/resolve/"
            f"{quote(commit, safe='')}/{quote(path)}"
        )

    async def file_metadata(
        self, repo: RepoRef, commit: str, path: str, token: str | None
    ) -> FileMetadata:
        """The metadata HEAD as the client does it: follow same-origin redirects, stop at the
        first off-origin one and read the metadata there (hub-protocol.md §3.2.1, §9 item 17)."""
        url = self._resolve_url(repo, commit, path)
        for _ in range(MAX_REDIRECTS):
            try:
                async with self._session.head(
                    url,
                    headers=self._headers(token),
                    timeout=self._timeout(),
                    allow_redirects=False,
                ) as response:
                    status, headers = response.status, response.headers
            except FOREIGN_ERRORS as exc:
                raise unavailable(exc) from exc
            self._raise_for_status(status, headers, token=token, what=path, repo=repo)
            location = headers.get("Location")
            if 300 <= status < 400 and location:
                target = urljoin(url, location)
                if self._is_upstream_origin(target):
                    url = target
                    continue
            return _file_metadata(headers, status, path)
        raise UpstreamRejected(f"too many redirects for {shown(path)}")

    @asynccontextmanager
    async def open_file(
        self,
        repo: RepoRef,
        commit: str,
        path: str,
        token: str | None,
        *,
        start: int = 0,
        end: int | None = None,
        location: FileLocation | None = None,
    ) -> AsyncIterator[UpstreamBody]:
        """GET a file's bytes from `start` (up to `end`, exclusive, when given), following the
        CDN redirect without the token; from `location` (a previous body's) when given, so that
        ranged requests of one file skip the redirect. Raises as `repo_info`, UpstreamUnavailable
        when the upstream cannot be reached."""
        if location is None:
            location = FileLocation(self._resolve_url(repo, commit, path), on_origin=True)
        headers = self._headers(token if location.on_origin else None)
        if not location.on_origin:
            headers.pop("Authorization", None)  # lent service token: never to a CDN host
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        response, location = await self._get_following(location, headers, path)
        try:
            self._raise_for_status(
                response.status, response.headers, token=token, what=path, repo=repo
            )
            length = response.headers.get("Content-Length")
            yield UpstreamBody(
                status=response.status,
                content_length=int(length) if length and length.isdigit() else None,
                reader=response.content,
                location=location,
                content_range=_content_range(
                    response.status, response.headers.get("Content-Range")
                ),
            )
        finally:
            response.release()

    async def _get_following(
        self, location: FileLocation, headers: dict[str, str], path: str
    ) -> tuple[aiohttp.ClientResponse, FileLocation]:
        """GET `location`, following redirects; the token is dropped for good at the first
        redirect off the upstream origin (DESIGN rule 9). The caller releases the response."""
        url, keeps_token = location.url, location.on_origin
        for _ in range(MAX_REDIRECTS):
            try:
                response = await self._session.get(
                    url, headers=headers, timeout=self._timeout(), allow_redirects=False
                )
            except FOREIGN_ERRORS as exc:
                raise unavailable(exc) from exc
            target = response.headers.get("Location")
            if not (300 <= response.status < 400 and target):
                return response, FileLocation(url, on_origin=keeps_token)
            response.release()
            url = urljoin(url, target)
            if not self._is_upstream_origin(url):
                headers.pop("Authorization", None)
                keeps_token = False
        raise UpstreamRejected(f"too many redirects for {shown(path)}")


def _content_range(status: int, content_range: str | None) -> tuple[int | None, int | None]:
    """The first byte a response's body holds (0 unless a 206 says otherwise; None when a 206
    says nothing usable) and the whole file's size a 206 tells (None when it does not)."""
    if status != 206:
        return 0, None
    match = _CONTENT_RANGE.fullmatch((content_range or "").strip())
    if match is None:
        return None, None
    return int(match[1]), int(match[2]) if match[2].isdigit() else None


def _tree_entry(item: JsonValue) -> TreeEntry:
    if not isinstance(item, dict):
        raise UpstreamRejected("tree entry is not an object")
    entry_type = EntryType.DIRECTORY if item.get("type") == "directory" else EntryType.FILE
    path, oid, size = item.get("path"), item.get("oid"), item.get("size", 0)
    if not isinstance(path, str) or not path or len(path) > 4096:
        raise UpstreamRejected("tree entry has no valid path")
    if not isinstance(oid, str) or not _HEX40.fullmatch(oid):
        raise UpstreamRejected(f"tree entry {shown(path)} has no valid oid")
    if not isinstance(size, int) or size < 0:
        raise UpstreamRejected(f"tree entry {shown(path)} has no valid size")
    lfs = item.get("lfs")
    lfs_info = None
    if isinstance(lfs, dict):
        sha256, lfs_size, pointer = lfs.get("oid"), lfs.get("size"), lfs.get("pointerSize", 0)
        if (
            not isinstance(sha256, str)
            or not _HEX64.fullmatch(sha256)
            or not isinstance(lfs_size, int)
            or not isinstance(pointer, int)
            or lfs_size < 0
            or pointer < 0
        ):
            raise UpstreamRejected(f"tree entry {shown(path)} has an invalid lfs block")
        lfs_info = LfsInfo(sha256=sha256, size=lfs_size, pointer_size=pointer)
        size = lfs_size
    return TreeEntry(entry_type=entry_type, path=path, oid=oid, size=size, lfs=lfs_info)


def _file_metadata(headers: CIMultiDictProxy[str], status: int, path: str) -> FileMetadata:
    commit = headers.get("X-Repo-Commit", "")
    etag = _clean_etag(headers.get("X-Linked-Etag") or headers.get("ETag"))
    size_text = headers.get("X-Linked-Size") or (
        headers.get("Content-Length") if status < 300 else None
    )
    if not _HEX40.fullmatch(commit):
        raise UpstreamRejected(f"upstream metadata of {shown(path)} has no X-Repo-Commit")
    if not (_HEX40.fullmatch(etag) or _HEX64.fullmatch(etag)):
        raise UpstreamRejected(f"upstream metadata of {shown(path)} has no usable ETag")
    if not size_text or not size_text.isdigit():
        raise UpstreamRejected(f"upstream metadata of {shown(path)} has no size")
    return FileMetadata(commit=commit, etag=etag, size=int(size_text), is_lfs=len(etag) == 64)


def _encode_cursor(query: str) -> str:
    """An opaque cursor for our own Link URLs: the upstream's next-page query, base64url."""
    return base64.urlsafe_b64encode(query.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    """The upstream query a cursor stands for, with only pagination keys kept."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise InvalidInput("cursor", cursor, "is too long; use the Link URL as given")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        query = base64.urlsafe_b64decode(padded.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor", cursor, "is not valid; use the Link URL as given") from exc
    allowed = {"cursor", "p", "limit", "expand", "expand[]"}
    return urlencode([(k, v) for k, v in parse_qsl(query) if k in allowed])
