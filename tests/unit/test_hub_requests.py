"""Parsing hostile requests into value objects, with aiohttp's own request factory."""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy.catalog import Caller
from proxy.config import Settings, load_settings
from proxy.errors import InvalidInput
from proxy.hub.requests import (
    MAX_TOKEN_CHARS,
    caller_of,
    public_base,
    query_bool,
    repo_of,
    revision_and_path,
)
from proxy.hub.routes import add_hub_routes
from proxy.repos import RepoRef, RepoType


def _request(
    path: str = "/",
    headers: dict[str, str] | None = None,
    match_info: dict[str, str] | None = None,
) -> web.Request:
    return make_mocked_request("GET", path, headers=headers, match_info=match_info or {})


def test_caller_of_no_authorization_is_anonymous() -> None:
    assert caller_of(_request()) == Caller(None)


@pytest.mark.parametrize("header", ["Bearer hf_abc", "bearer hf_abc", "BEARER   hf_abc  "])
def test_caller_of_bearer_token_is_kept(header: str) -> None:
    assert caller_of(_request(headers={"Authorization": header})).token == "hf_abc"


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "hf_abc", "Token x"]
)
def test_caller_of_other_schemes_are_invalid_input(header: str) -> None:
    with pytest.raises(InvalidInput, match="Authorization header"):
        caller_of(_request(headers={"Authorization": header}))


@pytest.mark.parametrize("token", ["x" * (MAX_TOKEN_CHARS + 1), "hf_é", "hf_\x01x", "hf_\x7fx"])
def test_caller_of_hostile_token_is_invalid_input(token: str) -> None:
    with pytest.raises(InvalidInput, match="invalid token"):
        caller_of(_request(headers={"Authorization": f"Bearer {token}"}))


def test_caller_of_refusal_never_shows_the_token() -> None:
    with pytest.raises(InvalidInput) as caught:
        caller_of(_request(headers={"Authorization": "Bearer hf_secret\x01"}))
    assert "hf_secret" not in caught.value.message


def test_caller_of_wrong_scheme_refusal_never_shows_the_credentials() -> None:
    with pytest.raises(InvalidInput) as caught:
        caller_of(_request(headers={"Authorization": "Basic dXNlcjpwYXNz"}))
    assert "dXNlcjpwYXNz" not in caught.value.message


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("True", True), ("1", True),
                                                 ("false", False), ("False", False), ("0", False),
                                                 ("", False)])  # fmt: skip
def test_query_bool_client_spellings_parse(value: str, expected: bool) -> None:
    assert query_bool(_request(f"/x?flag={value}"), "flag") is expected


@pytest.mark.parametrize("default", [True, False])
def test_query_bool_missing_key_is_the_default(default: bool) -> None:
    assert query_bool(_request("/x?other=1"), "flag", default) is default


@pytest.mark.parametrize("value", ["yes", "TRUE", "2", "on", "true%0A"])
def test_query_bool_other_values_are_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput, match="query parameter flag"):
        query_bool(_request(f"/x?flag={value}"), "flag")


def _settings(**values: object) -> Settings:
    return load_settings(None, {}, values)


def _on_socket(host: str, sockname: tuple[str, int] = ("10.1.2.3", 8080)) -> web.Request:
    """A request whose connection reached us at `sockname` (our end of the socket)."""
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        sockname if name == "sockname" else default
    )
    return make_mocked_request("GET", "/", headers={"Host": host}, transport=transport)


def test_public_base_configured_url_wins_without_trailing_slash() -> None:
    settings = _settings(public_url="https://hub.example.com/", trusted_hosts=["evil.example"])
    assert public_base(_on_socket("evil.example"), settings) == "https://hub.example.com"


@pytest.mark.parametrize("host", ["proxy", "proxy.corp:8080", "PROXY.corp:9", "[::1]:8080"])
def test_public_base_trusted_host_header_is_used(host: str) -> None:
    settings = _settings(trusted_hosts=["proxy", "proxy.corp", "[::1]:8080"])
    assert public_base(_on_socket(host), settings) == f"http://{host}"


@pytest.mark.parametrize(
    "host",
    ["evil.example", "proxy:81", "", "evil.example/path", "a b", "x@proxy", "h\r\nX: y", "a" * 300],
)
def test_public_base_untrusted_host_header_gives_the_bound_address(host: str) -> None:
    settings = _settings(trusted_hosts=["proxy:80"])
    assert public_base(_on_socket(host), settings) == "http://10.1.2.3:8080"


def test_public_base_without_trusted_hosts_never_copies_the_host_header() -> None:
    request = _on_socket("evil.example", ("::1", 9000))
    assert public_base(request, _settings()) == "http://[::1]:9000"


@pytest.mark.parametrize(
    ("match_info", "revision", "path"),
    [
        ({"rev": "main", "path": "a/b.bin"}, "main", "a/b.bin"),
        ({"rev": "c" * 40, "path": "x"}, "c" * 40, "x"),
        ({"rev": "refs/pr/1", "path": "config.json"}, "refs/pr/1", "config.json"),
        ({"rev": "refs", "path": "pr/1/config.json"}, "refs/pr/1", "config.json"),
        ({"rev": "refs", "path": "pr/1"}, "refs/pr/1", ""),
        ({"rev": "refs", "path": "convert/pq/d/t.parquet"}, "refs/convert/pq", "d/t.parquet"),
        ({"rev": "main"}, "main", ""),
    ],
)  # fmt: skip
def test_revision_and_path_encoded_and_unencoded_forms_parse(
    match_info: dict[str, str], revision: str, path: str
) -> None:
    wanted = revision_and_path(_request(match_info=match_info))
    assert (wanted.revision.name, wanted.path) == (revision, path)


@pytest.mark.parametrize(
    "match_info",
    [
        {"rev": "refs", "path": "heads/main/x"},
        {"rev": "refs", "path": "pr/abc/x"},
        {"rev": "refs", "path": "pr/1234567890/x"},
        {"rev": "refs", "path": "convert/../x"},
        {"rev": "refs", "path": ""},
        {"rev": "refs/heads/main", "path": "x"},
        {"rev": "main/../x", "path": "x"},
    ],
)
def test_revision_and_path_hostile_refs_are_invalid_input(match_info: dict[str, str]) -> None:
    with pytest.raises(InvalidInput, match="revision"):
        revision_and_path(_request(match_info=match_info))


@pytest.mark.parametrize(
    "url",
    [
        "/org/m/resolve/refs%2Fpr%2F3/sub/config.json",
        "/org/m/resolve/refs/pr/3/sub/config.json",
    ],
)
async def test_revision_and_path_through_the_real_router_both_forms_agree(url: str) -> None:
    app = web.Application()
    add_hub_routes(app)
    match = await app.router.resolve(make_mocked_request("GET", url, app=app))
    wanted = revision_and_path(_request(url, match_info=dict(match)))
    assert (wanted.revision.name, wanted.path) == ("refs/pr/3", "sub/config.json")


@pytest.mark.parametrize(
    ("match_info", "repo"),
    [
        ({"namespace": "org", "name": "m"}, RepoRef(RepoType.MODEL, "org/m")),
        ({"name": "gpt2"}, RepoRef(RepoType.MODEL, "gpt2")),
        ({"type": "datasets", "namespace": "org", "name": "d"}, RepoRef(RepoType.DATASET, "org/d")),
        ({"type": "spaces", "namespace": "org", "name": "s"}, RepoRef(RepoType.SPACE, "org/s")),
    ],
)
def test_repo_of_match_info_gives_the_repo(match_info: dict[str, str], repo: RepoRef) -> None:
    assert repo_of(_request(match_info=match_info)) == repo


def test_repo_of_unknown_type_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="repo type"):
        repo_of(_request(match_info={"type": "buckets", "namespace": "o", "name": "n"}))
