"""Parsing hostile requests into value objects: repo, revision, path, caller, query flags."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web

from proxy.catalog import Caller
from proxy.config import Settings
from proxy.errors import InvalidInput
from proxy.repos import RepoPath, RepoRef, RepoType, Revision

MAX_TOKEN_CHARS = 4096
_SPECIAL_REF_PATH = re.compile(r"(pr/[0-9]{1,9}|convert/[A-Za-z0-9._-]{1,64})(?:/(.*))?", re.S)
_HOST = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def repo_type_of(request: web.Request) -> RepoType:
    """From `{type}` (plural: API routes and dataset/space file routes); models otherwise."""
    plural = request.match_info.get("type")
    return RepoType.MODEL if plural is None else RepoType.from_plural(plural)


def repo_of(request: web.Request) -> RepoRef:
    name = request.match_info["name"]
    namespace = request.match_info.get("namespace")
    repo_id = f"{namespace}/{name}" if namespace is not None else name
    return RepoRef.parse(repo_type_of(request), repo_id)


@dataclass(frozen=True, slots=True)
class RevisionAndPath:
    revision: Revision
    path: str


def revision_and_path(request: web.Request) -> RevisionAndPath:
    """`{rev}` and `{path}`, accepting unencoded special refs (`refs/pr/1/file`)."""
    rev = request.match_info["rev"]
    path = request.match_info.get("path", "")
    if rev == "refs":
        match = _SPECIAL_REF_PATH.fullmatch(path)
        if match is None:
            raise InvalidInput("revision", f"refs/{path}", "is not refs/pr/N or refs/convert/NAME")
        rev, path = f"refs/{match.group(1)}", match.group(2) or ""
    return RevisionAndPath(Revision.parse(rev), path)


def file_path(value: str) -> RepoPath:
    return RepoPath.parse(value)


def folder_path(value: str) -> RepoPath:
    return RepoPath.parse(value.strip("/") if value else "", allow_empty=True)


def caller_of(request: web.Request) -> Caller:
    """The client's bearer token, if any (kept for upstream calls only, never stored)."""
    header = request.headers.get("Authorization", "")
    if not header:
        return Caller(None)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidInput("Authorization header", scheme, "must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise InvalidInput("Authorization header", "Bearer …", "holds an invalid token")
    return Caller(token)


def query_bool(request: web.Request, key: str, default: bool = False) -> bool:
    """Booleans as the clients send them: true/True/1 and false/False/0."""
    value = request.query.get(key)
    if value is None:
        return default
    if value in ("true", "True", "1"):
        return True
    if value in ("false", "False", "0", ""):
        return False
    raise InvalidInput(f"query parameter {key}", value, "must be true or false")


def public_base(request: web.Request, settings: Settings) -> str:
    """The base URL clients reach us by, for absolute Link URLs (the client refuses relative ones,
    hub-protocol.md §2): `public_url`; else the request's Host when it is one of `trusted_hosts`;
    else the address this connection reached. A Host header is never copied unchecked: behind a
    shared cache that would let one client plant links to another host for everyone."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = request.headers.get("Host", "")
    if settings.trusted_hosts and _HOST.fullmatch(host) and _is_trusted(host, settings):
        return f"{request.scheme}://{host}"
    return f"{request.scheme}://{_bound_address(request)}"


def _is_trusted(host: str, settings: Settings) -> bool:
    """`name:port` matches an entry naming that port, `name` an entry with no port (any port)."""
    host = host.lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return host in settings.trusted_hosts or name in settings.trusted_hosts


def _bound_address(request: web.Request) -> str:
    """`ip:port` of our end of the connection (what the client connected to, NAT aside)."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        raise InvalidInput("Host header", "", "cannot be used here: set public_url")
    address, port = str(sockname[0]), int(sockname[1])
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def review_id_of(request: web.Request) -> int:
    """`{id}` of a review route: the number a held or blocked message names."""
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 12:
        raise InvalidInput("review id", text, "is not a number; use the id the 403 message names")
    return int(text)
