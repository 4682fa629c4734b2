"""Webhooks: outside systems are told when a file is held or rejected, a repo is blocked or a
pinned change waits for review (issue 12, item 9), or the upstream watch sees a mirrored branch
move (`repo.update_available`, issue 11).

The request path only enqueues. `Repository.audit` hands every committed audit event to
`Notifier.on_audit`, which keeps the kinds below and puts them on a bounded queue (when it is
full the oldest event is dropped, with a warning). One task, owned by the app's cleanup_ctx,
names the repo and POSTs each event to every URL:

    POST <webhook url>
    Content-Type: application/json
    X-Hubwarden-Event: blob.rejected
    X-Hubwarden-Delivery: <uuid4: one per event, the same for every URL and every retry>
    X-Hubwarden-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes> (when a secret is set)

    {"event": "blob.rejected", "at": "2025-01-31T12:00:00.000Z", "repo": "model/org/name",
     "details": {"path": "pytorch_model.bin", "commit": "…", "reason": "…", …}}

`details` are the audit event's, minus any key that names a credential. Connection errors,
timeouts, 5xx and 429 are retried with exponential backoff (1, 2, 4… s, capped); other answers
are final, and redirects are never followed (a receiver cannot send the body elsewhere). Each final
failure is one WARNING naming the webhook by its position and origin only: webhook URLs often
carry their secret in the path or the query.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from proxy.config import NotifySettings
from proxy.errors import shown
from proxy.store.repository import AuditRecord, RepoRecord
from scanners.report import JsonValue

logger = logging.getLogger(__name__)

EVENT_HEADER = "X-Hubwarden-Event"
DELIVERY_HEADER = "X-Hubwarden-Delivery"
SIGNATURE_HEADER = "X-Hubwarden-Signature"
USER_AGENT = "Hubwarden-Webhook"
# Detail keys never sent out, whatever an audit site records one day (tokens stay inside).
_CREDENTIAL_KEY_PARTS = ("token", "secret", "password", "authorization", "cookie")


class EventKind(enum.StrEnum):
    """The audit actions a webhook is told about: something waits for, or needs, a person."""

    BLOB_QUARANTINED = "blob.quarantined"
    BLOB_REJECTED = "blob.rejected"
    REPO_BLOCKED = "repo.blocked"
    PIN_CHANGE_HELD = "pin.change_held"
    REPO_UPDATE_AVAILABLE = "repo.update_available"  # the upstream watch saw a new head


_KIND_OF_ACTION = {kind.value: kind for kind in EventKind}


@dataclass(frozen=True, slots=True)
class NotifyEvent:
    """One thing to tell the webhooks; the repo is named by key, resolved when sending."""

    kind: EventKind
    at: dt.datetime
    repo_pk: int | None
    details: Mapping[str, JsonValue]

    @classmethod
    def from_audit(cls, record: AuditRecord) -> NotifyEvent | None:
        """The event an audit record announces, or None for actions webhooks are not told."""
        kind = _KIND_OF_ACTION.get(record.action)
        if kind is None:
            return None
        return cls(kind, record.at, record.repo_pk, record.details)


@dataclass(frozen=True, slots=True)
class NotifyLimits:
    queue_size: int = 1000
    first_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    drain_s: float = 2.0  # at shutdown, how long queued events may still go out


class RepoLookup(Protocol):
    async def repo_by_pk(self, pk: int) -> RepoRecord | None: ...


class Notifier:
    """Sends events to the configured webhooks from one background task (`start`/`close`)."""

    def __init__(
        self,
        settings: NotifySettings,
        session: aiohttp.ClientSession,
        repos: RepoLookup,
        limits: NotifyLimits | None = None,
    ) -> None:
        self._urls = settings.webhook_urls
        self._key = settings.secret.reveal().encode() if settings.secret is not None else None
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._retries = settings.retries
        self._session = session
        self._repos = repos
        self._limits = limits or NotifyLimits()
        self._queue: asyncio.Queue[NotifyEvent] = asyncio.Queue(self._limits.queue_size)
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Events queued and not yet taken by the sending task."""
        return self._queue.qsize()

    @property
    def is_running(self) -> bool:
        return self._task is not None and not self._task.done()

    def on_audit(self, record: AuditRecord) -> None:
        """The `Repository` hook: publish the audit events webhooks are told about."""
        event = NotifyEvent.from_audit(record)
        if event is not None:
            self.publish(event)

    def publish(self, event: NotifyEvent) -> None:
        """Queue the event for every webhook. Never waits and never raises: when the queue is
        full, the oldest queued event is dropped with a warning."""
        if self._queue.full():
            dropped = self._queue.get_nowait()
            self._queue.task_done()
            logger.warning(
                "webhook queue full (%d events): dropped the oldest, %s of %s",
                self._limits.queue_size,
                dropped.kind.value,
                _iso8601z(dropped.at),
            )
        self._queue.put_nowait(event)

    def start(self) -> None:
        """Start the sending task (on the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hubwarden-webhooks")

    async def close(self) -> None:
        """Give queued events up to `drain_s` to go out, then cancel the sending task and wait
        for it to end."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._limits.drain_s):
                await self._queue.join()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._queue.qsize():
            logger.warning("stopped with %d webhook events unsent", self._queue.qsize())

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._send(event)
            except Exception:
                # A task supervisor (STYLE.md §3.5): one event that cannot be sent (the database
                # gone while naming its repo, a bug) must not silence the ones after it.
                logger.exception("webhook event %s could not be sent", event.kind.value)
            finally:
                self._queue.task_done()

    async def _send(self, event: NotifyEvent) -> None:
        body = await self._body(event)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: event.kind.value,
            DELIVERY_HEADER: str(uuid.uuid4()),
        }
        if self._key is not None:
            digest = hmac.new(self._key, body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        async with asyncio.TaskGroup() as group:
            for index, url in enumerate(self._urls, start=1):
                group.create_task(self._deliver(index, url, body, headers))

    async def _body(self, event: NotifyEvent) -> bytes:
        repo = None
        if event.repo_pk is not None:
            record = await self._repos.repo_by_pk(event.repo_pk)
            if record is not None:
                repo = f"{record.ref.repo_type.value}/{record.ref.repo_id}"
        payload: dict[str, JsonValue] = {
            "event": event.kind.value,
            "at": _iso8601z(event.at),
            "repo": repo,
            "details": _without_credentials(dict(event.details)),
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    async def _deliver(self, index: int, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        """POST to one webhook, retrying what may pass later; log a final failure."""
        failure = ""
        attempts = 0
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff_s(attempt))
            attempts += 1
            try:
                status = await self._post(url, body, headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = type(exc).__name__  # its text may quote the URL
                continue
            if 200 <= status < 300:
                return
            failure = f"HTTP {status}"
            if not _is_retriable(status):
                break
        logger.warning(
            "webhook %d (%s) was not told of %s (delivery %s): %s after %d attempt(s)",
            index,
            _shown_url(url),
            headers[EVENT_HEADER],
            headers[DELIVERY_HEADER],
            failure,
            attempts,
        )

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        async with self._session.post(
            url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
        ) as response:
            return response.status

    def _backoff_s(self, attempt: int) -> float:
        """1, 2, 4… times the first backoff before retry `attempt`, capped."""
        limits = self._limits
        return float(min(limits.first_backoff_s * 2 ** (attempt - 1), limits.max_backoff_s))


def _is_retriable(status: int) -> bool:
    return status == 429 or status >= 500


def _iso8601z(at: dt.datetime) -> str:
    if at.tzinfo is None:  # SQLite gives naive datetimes back; we store UTC
        at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _without_credentials(value: JsonValue) -> JsonValue:
    if isinstance(value, dict):
        return {
            key: _without_credentials(item)
            for key, item in value.items()
            if not any(part in key.lower() for part in _CREDENTIAL_KEY_PARTS)
        }
    if isinstance(value, list):
        return [_without_credentials(item) for item in value]
    return value


def _shown_url(url: str) -> str:
    """The webhook's origin, without user, password, path or query (any may hold a secret)."""
    parsed = URL(url)
    tail = "/..." if parsed.path not in ("", "/") or parsed.query_string else ""
    return shown(f"{parsed.origin()}{tail}")
