"""The error middleware: each domain exception → status, X-Error-Code, headers, one-line message."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy.errors import (
    AccessDenied,
    EntryNotFound,
    GatedRepo,
    Held,
    HubwardenError,
    IntegrityError,
    InvalidInput,
    NotReady,
    OfflineMiss,
    ReadOnly,
    RepoNotFound,
    RevisionNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    XetRefused,
)
from proxy.hub.errors import error_middleware

COMMIT = "c" * 40
WWW_AUTHENTICATE = 'Bearer realm="Authentication required", charset="UTF-8"'


def _raising(exc: BaseException) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc

    return handler


async def _answer(exc: BaseException, method: str = "GET") -> web.Response:
    request = make_mocked_request(method, "/org/m/resolve/main/x.bin")
    response = await error_middleware(request, _raising(exc))
    assert isinstance(response, web.Response)
    return response


CASES: list[tuple[HubwardenError, int, str | None]] = [
    (InvalidInput("path", "../x", "is bad"), 400, None),
    (RepoNotFound("org/m", authenticated=True), 404, "RepoNotFound"),
    (RepoNotFound("org/m", authenticated=False), 401, "RepoNotFound"),
    (GatedRepo("org/m", "model", authenticated=True), 403, "GatedRepo"),
    (GatedRepo("org/m", "model", authenticated=False), 401, "GatedRepo"),
    (RevisionNotFound("nope"), 404, "RevisionNotFound"),
    (EntryNotFound("x.bin", commit=COMMIT), 404, "EntryNotFound"),
    (EntryNotFound("d", commit=None, folder=True, rev="main"), 404, "EntryNotFound"),
    (AccessDenied("Access to this resource is disabled."), 403, None),
    (ReadOnly(), 403, None),
    (XetRefused(), 403, None),
    (Held("held in quarantine: x.bin (pickle); ask admin", path="x.bin", review_id=3), 403, None),
    (NotReady("x.bin", 4), 429, None),
    (UpstreamRateLimited(9), 429, None),
    (UpstreamUnavailable("down", status=502), 502, None),
    (UpstreamUnavailable("overloaded", status=503), 503, None),
    (UpstreamUnavailable("timed out", status=504), 504, None),
    (UpstreamRejected("bad JSON"), 502, None),
    (IntegrityError("x.bin", "sha256", "a" * 64, "b" * 64), 502, None),
    (OfflineMiss("offline: not mirrored"), 404, None),
    (HubwardenError("unclassified"), 500, None),
]
CASE_IDS = [f"{type(exc).__name__}-{status}" for exc, status, _ in CASES]


@pytest.mark.parametrize(("exc", "status", "code"), CASES, ids=CASE_IDS)
async def test_error_middleware_each_exception_maps_to_status_and_code(
    exc: HubwardenError, status: int, code: str | None
) -> None:
    response = await _answer(exc)
    assert (response.status, response.headers.get("X-Error-Code")) == (status, code)
    assert response.headers["X-Error-Message"] == exc.message


@pytest.mark.parametrize(("exc", "status", "code"), CASES, ids=CASE_IDS)
async def test_error_middleware_get_body_is_json_with_the_message(
    exc: HubwardenError, status: int, code: str | None
) -> None:
    response = await _answer(exc)
    assert response.content_type == "application/json"
    assert isinstance(response.text, str)
    assert json.loads(response.text) == {"error": exc.message}


@pytest.mark.parametrize(("exc", "status", "code"), CASES, ids=CASE_IDS)
async def test_error_middleware_head_has_no_body(
    exc: HubwardenError, status: int, code: str | None
) -> None:
    response = await _answer(exc, method="HEAD")
    assert response.body is None
    assert response.headers["X-Error-Message"] == exc.message


async def test_error_middleware_anonymous_repo_not_found_asks_for_authentication() -> None:
    response = await _answer(RepoNotFound("org/m", authenticated=False))
    assert response.headers["WWW-Authenticate"] == WWW_AUTHENTICATE


async def test_error_middleware_authenticated_repo_not_found_has_no_challenge() -> None:
    response = await _answer(RepoNotFound("org/m", authenticated=True))
    assert "WWW-Authenticate" not in response.headers


async def test_error_middleware_entry_not_found_sends_the_commit() -> None:
    response = await _answer(EntryNotFound("x.bin", commit=COMMIT))
    assert response.headers["X-Repo-Commit"] == COMMIT


async def test_error_middleware_entry_not_found_without_commit_sends_none() -> None:
    response = await _answer(EntryNotFound("x.bin", commit=None))
    assert "X-Repo-Commit" not in response.headers


async def test_error_middleware_not_ready_get_is_429_with_retry_after() -> None:
    response = await _answer(NotReady("x.bin", 4))
    assert (response.status, response.headers["Retry-After"]) == (429, "4")


async def test_error_middleware_not_ready_head_is_503_with_retry_after() -> None:
    response = await _answer(NotReady("x.bin", 4), method="HEAD")
    assert (response.status, response.headers["Retry-After"]) == (503, "4")


async def test_error_middleware_rate_limited_passes_retry_after_on() -> None:
    response = await _answer(UpstreamRateLimited(9))
    assert response.headers["Retry-After"] == "9"


async def test_error_middleware_held_has_no_error_code() -> None:
    response = await _answer(Held("held in quarantine: x", path="x"))
    assert "X-Error-Code" not in response.headers


@pytest.mark.parametrize(
    "message",
    ["line\r\nX-Injected: 1", "caf\u00e9 \u2028 end", "tab\there", "\n" * 3, "x" * 5000],
)
async def test_error_middleware_message_header_is_one_ascii_line(message: str) -> None:
    value = (await _answer(AccessDenied(message))).headers["X-Error-Message"]
    assert value.isascii()
    assert "\r" not in value
    assert "\n" not in value
    assert len(value) <= 1000


@pytest.mark.parametrize("control", ["\x00", "\x1b", "\x7f", "\x0b"])
async def test_error_middleware_message_header_holds_no_control_character(control: str) -> None:
    value = (await _answer(AccessDenied(f"a{control}b"))).headers["X-Error-Message"]
    assert all(ch == "\t" or " " <= ch <= "~" for ch in value)


async def test_error_middleware_unexpected_exception_is_500_with_request_id() -> None:
    response = await _answer(ValueError("secret internal detail"))
    request_id = response.headers["X-Request-Id"]
    assert response.status == 500
    assert request_id in response.headers["X-Error-Message"]
    assert "secret internal detail" not in response.headers["X-Error-Message"]
    assert isinstance(response.text, str)
    assert "secret internal detail" not in response.text


async def test_error_middleware_http_exceptions_pass_through() -> None:
    with pytest.raises(web.HTTPNotFound):
        await _answer(web.HTTPNotFound())


async def test_error_middleware_successful_answer_is_untouched() -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text="fine")

    response = await error_middleware(make_mocked_request("GET", "/"), ok)
    assert isinstance(response, web.Response)
    assert (response.status, response.text) == (200, "fine")
