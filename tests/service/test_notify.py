"""`Notifier`: webhooks POSTed from one background task to a real receiver on loopback, and the
`Repository.audit` hook that feeds it (SQLite, schema from the migrations)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.config import NotifySettings, Secret
from proxy.ops.notify import EventKind, Notifier, NotifyEvent, NotifyLimits
from proxy.repos import RepoRef, RepoType
from proxy.store.repository import AuditRecord, RepoRecord, Repository
from scanners.report import JsonValue

# Every Notifier here needs a Repository to name repos: SQLite is enough for that.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

SECRET = "s3cret"
AT = dt.datetime(2025, 1, 31, 12, 0, tzinfo=dt.UTC)
FAST = NotifyLimits(first_backoff_s=0.01, max_backoff_s=0.05, drain_s=0.2)
WAIT_S = 5.0
REDIRECTS = (301, 302, 307, 308)


@dataclass(frozen=True)
class Received:
    path: str
    headers: CIMultiDict[str]
    body: bytes
    answered: int

    def json(self) -> dict[str, JsonValue]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


@dataclass
class Receiver:
    """A webhook endpoint on loopback that records every request and answers `answers` in turn
    (then 200); while `hanging`, it answers nothing until `release` is set."""

    url: str
    requests: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    hanging: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.answers.pop(0) if self.answers else 200
        self.requests.append(Received(request.path, request.headers.copy(), body, status))
        if self.hanging:
            await asyncio.wait_for(self.release.wait(), 60)
        if status in REDIRECTS:
            return web.Response(status=status, headers={"Location": "/elsewhere"})
        return web.Response(status=status)

    async def wait_for(self, count: int) -> list[Received]:
        """The first `count` requests, polling for up to WAIT_S."""
        for _ in range(int(WAIT_S / 0.01)):
            if len(self.requests) >= count:
                return self.requests[:count]
            await asyncio.sleep(0.01)
        pytest.fail(f"{len(self.requests)} of {count} webhook requests arrived in {WAIT_S} s")


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> AsyncIterator[Receiver]:
    app = web.Application()
    receiver = Receiver(url="")
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    server = await aiohttp_server(app)
    receiver.url = str(server.make_url("/hook"))
    yield receiver
    receiver.release.set()  # a hanging handler returns before the server closes


@pytest.fixture
def repository(db_sessions: async_sessionmaker[AsyncSession]) -> Repository:
    return Repository(db_sessions)


@pytest.fixture
async def record(repository: Repository) -> RepoRecord:
    return await repository.upsert_repo(
        RepoRef(RepoType.MODEL, "org/m"), private=False, gated="false"
    )


MakeNotifier = Callable[..., Notifier]


@pytest.fixture
async def make_notifier(repository: Repository) -> AsyncIterator[MakeNotifier]:
    """Notifiers on one client session, started unless `start=False`, closed at teardown."""
    made: list[Notifier] = []

    async with aiohttp.ClientSession() as session:

        def make(
            *urls: str,
            secret: str | None = SECRET,
            retries: int = 3,
            timeout_s: float = 10.0,
            limits: NotifyLimits = FAST,
            start: bool = True,
        ) -> Notifier:
            settings = NotifySettings(
                webhook_urls=urls,
                secret=Secret(secret) if secret is not None else None,
                timeout_s=timeout_s,
                retries=retries,
            )
            notifier = Notifier(settings, session, repository, limits)
            made.append(notifier)
            if start:
                notifier.start()
            return notifier

        try:
            yield make
        finally:
            for notifier in made:
                await notifier.close()


def event(
    n: int = 0, kind: EventKind = EventKind.BLOB_REJECTED, repo_pk: int | None = None
) -> NotifyEvent:
    return NotifyEvent(kind, AT, repo_pk, {"n": n})


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str) -> str:
    for _ in range(int(WAIT_S / 0.01)):
        for message in caplog.messages:
            if text in message:
                return message
        await asyncio.sleep(0.01)
    pytest.fail(f"no log line with {text!r} in {WAIT_S} s: {caplog.messages}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- what is sent ---------------------------------------------------------------------------------


async def test_notifier_event_is_posted_as_json_with_its_headers_and_hmac_signature(
    make_notifier: MakeNotifier, receiver: Receiver, record: RepoRecord
) -> None:
    notifier = make_notifier(receiver.url)
    notifier.publish(NotifyEvent(EventKind.REPO_BLOCKED, AT, record.pk, {"reason": "tampered"}))
    [got] = await receiver.wait_for(1)
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Hubwarden-Event"] == "repo.blocked"
    assert uuid.UUID(got.headers["X-Hubwarden-Delivery"]).version == 4
    expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers["X-Hubwarden-Signature"], expected)
    assert got.json() == {
        "event": "repo.blocked",
        "at": "2025-01-31T12:00:00.000Z",
        "repo": "model/org/m",
        "details": {"reason": "tampered"},
    }


async def test_notifier_without_secret_sends_no_signature(
    make_notifier: MakeNotifier, receiver: Receiver
) -> None:
    make_notifier(receiver.url, secret=None).publish(event())
    [got] = await receiver.wait_for(1)
    assert "X-Hubwarden-Signature" not in got.headers
    assert got.json()["repo"] is None


async def test_notifier_details_never_carry_credentials(
    make_notifier: MakeNotifier, receiver: Receiver
) -> None:
    details: dict[str, JsonValue] = {
        "path": "a.bin",
        "token": "hf_secret",
        "nested": {"Authorization": "Bearer x", "client_secret": "y", "kept": [1, {"password": 2}]},
    }
    make_notifier(receiver.url).publish(NotifyEvent(EventKind.BLOB_REJECTED, AT, None, details))
    [got] = await receiver.wait_for(1)
    assert got.json()["details"] == {"path": "a.bin", "nested": {"kept": [1, {}]}}


async def test_notifier_every_webhook_gets_the_event_with_one_delivery_id(
    make_notifier: MakeNotifier, receiver: Receiver
) -> None:
    make_notifier(receiver.url + "/one", receiver.url + "/two").publish(event())
    got = await receiver.wait_for(2)
    assert sorted(r.path for r in got) == ["/hook/one", "/hook/two"]
    assert len({r.headers["X-Hubwarden-Delivery"] for r in got}) == 1


# -- the Repository hook --------------------------------------------------------------------------


async def test_repository_audit_hook_gets_the_committed_record(
    db_sessions: async_sessionmaker[AsyncSession], record: RepoRecord
) -> None:
    seen: list[AuditRecord] = []
    repository = Repository(db_sessions, on_audit=seen.append)
    await repository.audit("hubwarden", "repo.blocked", repo_pk=record.pk, details={"r": "x"})
    [audited] = seen
    assert (audited.actor, audited.action, audited.repo_pk, audited.details) == (
        "hubwarden",
        "repo.blocked",
        record.pk,
        {"r": "x"},
    )
    assert audited.at.tzinfo is not None
    assert [e.action for e in await repository.list_audit()] == ["repo.blocked"]


async def test_repository_audit_hook_sends_only_the_kinds_webhooks_are_told(
    db_sessions: async_sessionmaker[AsyncSession],
    make_notifier: MakeNotifier,
    receiver: Receiver,
    record: RepoRecord,
) -> None:
    notifier = make_notifier(receiver.url)
    repository = Repository(db_sessions, on_audit=notifier.on_audit)
    await repository.audit("hubwarden", "blob.released", repo_pk=record.pk)
    await repository.audit("alice", "review.released", repo_pk=record.pk)
    await repository.audit("hubwarden", "blob.quarantined", repo_pk=record.pk, details={"n": 1})
    await repository.audit("hubwarden", "pin.change_held", repo_pk=record.pk, details={"n": 2})
    got = await receiver.wait_for(2)
    assert [(r.json()["event"], r.json()["details"]) for r in got] == [
        ("blob.quarantined", {"n": 1}),
        ("pin.change_held", {"n": 2}),
    ]


# -- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_notifier_retries_after_two_failures_then_delivers(
    make_notifier: MakeNotifier, receiver: Receiver, status: int
) -> None:
    receiver.answers = [status, status]
    make_notifier(receiver.url).publish(event())
    got = await receiver.wait_for(3)
    assert [r.answered for r in got] == [status, status, 200]
    assert len({r.headers["X-Hubwarden-Delivery"] for r in got}) == 1
    assert len({r.body for r in got}) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 410, *REDIRECTS])
async def test_notifier_client_error_or_redirect_is_final(
    make_notifier: MakeNotifier, receiver: Receiver, status: int
) -> None:
    receiver.answers = [status]
    notifier = make_notifier(receiver.url)
    notifier.publish(event(0))
    notifier.publish(event(1))  # sent only once the first is given up: one task, in order
    got = await receiver.wait_for(2)
    assert [(r.json()["details"], r.answered, r.path) for r in got] == [
        ({"n": 0}, status, "/hook"),
        ({"n": 1}, 200, "/hook"),
    ]


async def test_notifier_timeout_is_retried_then_logged(
    make_notifier: MakeNotifier, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.hanging = True
    make_notifier(receiver.url, retries=1, timeout_s=0.2).publish(event())
    line = await wait_for_log(caplog, "was not told of blob.rejected")
    assert "Timeout" in line
    assert "after 2 attempt(s)" in line
    assert len(receiver.requests) == 2


async def test_notifier_unreachable_webhook_is_retried_then_logged_without_its_secrets(
    make_notifier: MakeNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    url = f"http://user:pw@127.0.0.1:{port}/hooks/secret-path?token=abc"
    with caplog.at_level(logging.WARNING, logger="proxy.ops.notify"):
        make_notifier(url, retries=2).publish(event())
        line = await wait_for_log(caplog, "was not told of blob.rejected")
    assert f"webhook 1 (http://127.0.0.1:{port}/...)" in line
    assert "after 3 attempt(s)" in line
    assert not any(secret in line for secret in ("pw", "secret-path", "token", "abc"))


# -- never blocking, bounded, stopped -------------------------------------------------------------


async def test_notifier_publish_while_a_webhook_hangs_returns_without_waiting(
    make_notifier: MakeNotifier, receiver: Receiver
) -> None:
    receiver.hanging = True
    notifier = make_notifier(receiver.url)
    notifier.publish(event(0))
    await receiver.wait_for(1)  # the sending task is now stuck on the first event
    for n in range(1, 6):
        notifier.publish(event(n))  # synchronous: if it waited, this loop would never end
    assert notifier.pending == 5


async def test_notifier_full_queue_drops_the_oldest_event_with_a_warning(
    make_notifier: MakeNotifier, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = make_notifier(receiver.url, limits=NotifyLimits(queue_size=2), start=False)
    for n in range(3):
        notifier.publish(event(n))
    assert "dropped the oldest" in caplog.text
    notifier.start()
    got = await receiver.wait_for(2)
    assert [r.json()["details"] for r in got] == [{"n": 1}, {"n": 2}]


async def test_notifier_close_sends_queued_events_first(
    make_notifier: MakeNotifier, receiver: Receiver
) -> None:
    notifier = make_notifier(receiver.url, limits=NotifyLimits(drain_s=WAIT_S))
    for n in range(3):
        notifier.publish(event(n))
    await notifier.close()
    assert [r.json()["details"] for r in receiver.requests] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_notifier_close_cancels_a_stuck_delivery_and_ends_its_task(
    make_notifier: MakeNotifier, receiver: Receiver
) -> None:
    receiver.hanging = True
    notifier = make_notifier(receiver.url)
    notifier.publish(event())
    await receiver.wait_for(1)
    await notifier.close()
    assert not notifier.is_running
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "hubwarden-webhooks"]
