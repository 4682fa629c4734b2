"""Sign-in sessions of the admin pages: an encrypted cookie, a CSRF token, expiry.

The cookie holds the token's *name* (never the token), when the session signed in and was last
seen, its CSRF token and at most one flash message: JSON sealed with Fernet (aiohttp-session's
`EncryptedCookieStorage` over `cryptography`), so it can be neither read nor forged without the
key. Every request looks the name up again (`Identities.get`): a revoked or expired token, or a
changed role, takes effect on the next page.

- **Cookie** `hubwarden_admin`: Path=/admin/, HttpOnly, SameSite=Strict, and Secure when the
  request came over HTTPS: TLS ended in this process, or a reverse proxy in front of it said
  `X-Forwarded-Proto: https`. That header is honoured for this flag only, and it can only add
  Secure (the browser then withholds the cookie over plain HTTP): a client that forges it locks
  itself out and no one else.
- **Expiry**: `SessionLimits`: 8 h without a request (the cookie is sealed again at most once a
  minute; Fernet refuses a cookie sealed longer ago than that), 24 h after sign-in whatever the
  activity. Signing out drops the cookie.
- **Key**: 32 random bytes in `data_dir/admin-session.key`, made on the first start with mode 0600
  and kept, so sessions survive a restart. A key file others may read or write is refused at start
  (`SessionKeyUnusable`). Delete it to end every session: the next start makes a new one. Replicas
  behind a load balancer need the same file (copy it to each), or sticky sessions.
- **CSRF**: one random token per session (a synchronizer token), in a hidden field of every form,
  compared in constant time on every POST (`csrf_ok`). The sign-in form has one too, from an
  anonymous session, so no other site can sign a browser in with a token of its own. A session
  starts afresh at sign-in (new CSRF token). Forms are read with `proxy.hub.bodies.request_body`
  (once per request, shared with the handler), never aiohttp's `post()`: that answers 500 to an
  unknown `charset=` and parses multipart bodies no form of ours sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_session import Session
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet

from proxy.admin.identity import Action, Identities, Identity, utcnow
from proxy.errors import HubwardenError
from proxy.hub.bodies import BodyLimits, request_body
from proxy.hub.context import SERVICES

KEY_FILE = "admin-session.key"
COOKIE_NAME = "hubwarden_admin"
COOKIE_PATH = "/admin/"
CSRF_FIELD = "csrf"
MAX_FLASH_CHARS = 300
# The admin pages' forms are small: a comment (2000 characters) and a few hidden fields.
FORM_LIMITS = BodyLimits(max_bytes=64 * 1024, max_fields=50)

_WHO = "who"  # the token's name
_SINCE = "since"  # signed in at (Unix seconds)
_SEEN = "seen"  # last request at (Unix seconds)
_CSRF = "csrf"
_FLASH = "flash"


@dataclass(frozen=True, slots=True)
class SessionLimits:
    idle_s: int = 8 * 3600
    absolute_s: int = 24 * 3600
    touch_every_s: int = 60  # how often a request seals the cookie again (sliding idle expiry)


class SessionKeyUnusable(HubwardenError):
    """The admin pages' session key file cannot be used; the server does not start."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"admin session key {path} {problem}")


# -- the key -----------------------------------------------------------------------------------


def load_or_create_key(data_dir: Path) -> bytes:
    """The Fernet key in `data_dir/admin-session.key`, made (mode 0600) when there is none.

    Raises SessionKeyUnusable (others may read it; not a key), OSError (the data directory).
    """
    path = data_dir / KEY_FILE
    if not path.exists():
        _create_key(path)
    return _read_key(path)


def _create_key(path: Path) -> None:
    # Written whole to a private temp file, then linked into place: a concurrent start (a second
    # process on the same data directory) either wins the link or keeps the key already there.
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(Fernet.generate_key())
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            path.hardlink_to(temp)
    finally:
        temp.unlink(missing_ok=True)


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SessionKeyUnusable(
            path,
            f"may be read or written by other users (mode {mode:o}); run `chmod 600 {path}`, "
            "or delete it to end every admin session and have a new key made at the next start",
        )
    key = path.read_bytes().strip()
    try:
        Fernet(key)
    except ValueError as exc:
        raise SessionKeyUnusable(
            path,
            "is not a session key; delete it to have a new one made at the next start "
            "(every admin session ends)",
        ) from exc
    return key


# -- the cookie --------------------------------------------------------------------------------


def came_over_https(request: web.Request) -> bool:
    """TLS ended here, or the reverse proxy in front says so (see the module's note)."""
    if request.secure:
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return forwarded.split(",")[0].strip().lower() == "https"


class SessionKeeper:
    """aiohttp-session's encrypted cookie storage in two forms sharing one key: with and without
    the Secure flag, chosen per request."""

    def __init__(self, key: bytes, limits: SessionLimits) -> None:
        fernet = Fernet(key)
        self.limits = limits
        self._plain = self._storage(fernet, secure=None)
        self._secure = self._storage(fernet, secure=True)

    def _storage(self, fernet: Fernet, *, secure: bool | None) -> EncryptedCookieStorage:
        return EncryptedCookieStorage(
            fernet,
            cookie_name=COOKIE_NAME,
            path=COOKIE_PATH,
            max_age=self.limits.idle_s,
            secure=secure,
            httponly=True,
            samesite="Strict",
        )

    def storage_for(self, request: web.Request) -> EncryptedCookieStorage:
        return self._secure if came_over_https(request) else self._plain


SESSION_KEEPER = web.AppKey("admin_session_keeper", SessionKeeper)
_SESSION = web.RequestKey("admin_session", Session)


async def keeper_ctx(app: web.Application) -> AsyncIterator[None]:
    """Read (or make) the key at start, once the services (and the data directory) are up."""
    data_dir = app[SERVICES].settings.data_dir
    key = await asyncio.to_thread(load_or_create_key, data_dir)
    app[SESSION_KEEPER] = SessionKeeper(key, SessionLimits())
    yield


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Load the session from its cookie; seal it into the response when it changed.

    aiohttp-session's own middleware does the same but keeps the session under plain-string
    request keys, which aiohttp deprecates (NotAppKeyWarning); its storage is used as it is.
    """
    storage = request.config_dict[SESSION_KEEPER].storage_for(request)
    loaded = await storage.load_session(request)
    before = dict(loaded)
    request[_SESSION] = loaded
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # a redirect: it carries the session too
        await _save(request, exc, loaded, before, storage)
        raise
    await _save(request, response, loaded, before, storage)
    return response


async def _save(
    request: web.Request,
    response: web.StreamResponse,
    loaded: Session,
    before: dict[str, object],
    storage: EncryptedCookieStorage,
) -> None:
    session = request[_SESSION]
    if session is loaded and dict(session) == before:
        return
    if response.prepared:  # a streamed answer: its headers are gone (no page does this)
        raise RuntimeError("the admin session changed after the response was sent")
    await storage.save_session(request, response, session)


# -- what a session holds ----------------------------------------------------------------------


def _now() -> int:
    return int(time.time())


def _session(request: web.Request) -> Session:
    return request[_SESSION]


def csrf_token(request: web.Request) -> str:
    """This session's CSRF token (a session without one gets one)."""
    session = _session(request)
    token = session.get(_CSRF)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[_CSRF] = token
    return token


async def csrf_ok(request: web.Request) -> bool:
    """The POSTed form carries this session's CSRF token, once. The form is read (and kept for
    the handler) by `request_body`: a body that cannot be parsed raises InvalidInput."""
    expected = _session(request).get(_CSRF)
    sent = (await request_body(request, FORM_LIMITS)).strings(CSRF_FIELD)
    if not isinstance(expected, str) or not expected or len(sent) != 1:
        return False
    return hmac.compare_digest(expected.encode(), sent[0].encode())


async def signed_in(request: web.Request, identities: Identities) -> Identity | None:
    """Who this session signed in as; None (and the session ended) once it has expired, or its
    token was revoked, expired or may no longer view."""
    session = _session(request)
    limits = request.config_dict[SESSION_KEEPER].limits
    name, since, seen = session.get(_WHO), session.get(_SINCE), session.get(_SEEN)
    if not isinstance(name, str) or not isinstance(since, int) or not isinstance(seen, int):
        return None
    now = _now()
    if now - since > limits.absolute_s or now - seen > limits.idle_s:
        session.invalidate()
        return None
    record = await identities.get(name)
    if record is None or not record.is_active(utcnow()):  # revoked or expired since sign-in
        session.invalidate()
        return None
    identity = Identity(record.name, record.role)
    if not identity.can(Action.VIEW):  # a client token cannot use the pages
        session.invalidate()
        return None
    if now - seen >= limits.touch_every_s:
        session[_SEEN] = now
    return identity


async def sign_in(request: web.Request, identity: Identity) -> None:
    """Start a fresh session (new CSRF token) for `identity`."""
    session = await request.config_dict[SESSION_KEEPER].storage_for(request).new_session()
    request[_SESSION] = session
    now = _now()
    session.update({_WHO: identity.name, _SINCE: now, _SEEN: now, _CSRF: secrets.token_urlsafe(32)})


def sign_out(request: web.Request) -> None:
    _session(request).invalidate()


def flash(request: web.Request, text: str) -> None:
    """A one-line message shown on the next page this session opens."""
    _session(request)[_FLASH] = text[:MAX_FLASH_CHARS]


def take_flash(request: web.Request) -> str | None:
    session: Session = _session(request)
    text = session.pop(_FLASH, None)
    return text if isinstance(text, str) else None
