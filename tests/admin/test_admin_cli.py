"""`hubwarden admin token|access`, run in-process through `proxy.cli.main` on the configured
database: the token printed once, tables and JSON without secrets, revocation, grants, the OS user
audited, and the exit codes (1 with one stderr line; 2 for bad usage)."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from proxy.admin.identity import Identities, Identity, Role
from proxy.cli import main
from proxy.store import db
from proxy.store.repository import AuditRecord, Repository

T = TypeVar("T")


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No Hubwarden setting from the real environment, and the root logger given back as it was
    (the CLI configures logging)."""
    for variable in list(os.environ):
        if variable.startswith("HUBWARDEN_") and not variable.startswith("HUBWARDEN_TEST_"):
            monkeypatch.delenv(variable)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def database(db_url: str, clean_environment: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI's database is `db_url` (each kind)."""
    monkeypatch.setenv("HUBWARDEN_DATABASE_URL", db_url)
    return db_url


@pytest.fixture
def admin(database: str, tmp_path: Path) -> Callable[..., int]:
    """`hubwarden admin ARGS... --data-dir tmp_path`."""

    def run(*args: str) -> int:
        return main(["admin", *args, "--data-dir", str(tmp_path)])

    return run


def _on_database(url: str, use: Callable[[Identities, Repository], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = db.create_engine(url)
        try:
            sessions = db.session_maker(engine)
            repository = Repository(sessions)
            return await use(Identities(sessions, repository), repository)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _authenticate(url: str, token: str) -> Identity | None:
    return _on_database(url, lambda identities, _: identities.authenticate(token))


def _audit(url: str) -> list[AuditRecord]:
    return _on_database(url, lambda _, repository: repository.list_audit())


def _create(
    admin: Callable[..., int], capsys: pytest.CaptureFixture[str], name: str, role: str
) -> str:
    assert admin("token", "create", "--name", name, "--role", role) == 0
    return capsys.readouterr().out.strip()


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# -- token create ---------------------------------------------------------------------------------


def test_token_create_prints_the_token_alone_and_says_it_will_not_be_shown_again(
    admin: Callable[..., int], database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin("token", "create", "--name", "ci", "--role", "client") == 0
    captured = capsys.readouterr()
    (token,) = captured.out.splitlines()
    assert token.startswith("hwa_")
    assert 'created client token "ci"' in captured.err
    assert "it will not be shown again" in captured.err
    assert token not in captured.err
    assert _authenticate(database, token) == Identity("ci", Role.CLIENT)


def test_token_create_records_the_os_user_as_actor(
    admin: Callable[..., int], database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _create(admin, capsys, "ci", "client")
    (event,) = _audit(database)
    assert (event.actor, event.action) == (f"os:{getpass.getuser()}", "token.created")


def test_token_create_with_expires_sets_the_expiry(
    admin: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin("token", "create", "--name", "ci", "--role", "client", "--expires", "12h") == 0
    assert "expires" in capsys.readouterr().err
    assert admin("token", "list", "--json") == 0
    (listed,) = json.loads(capsys.readouterr().out)
    lifetime = dt.datetime.fromisoformat(listed["expires_at"]) - dt.datetime.fromisoformat(
        listed["created_at"]
    )
    assert lifetime == dt.timedelta(hours=12)


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--name", "ci", "--role", "superuser"], "argument --role: invalid choice: 'superuser'"),
        (["--name", "bad name", "--role", "client"], "argument --name: token name"),
        (["--name", "x" * 65, "--role", "client"], "must be 1 to 64 characters"),
        (["--role", "client"], "the following arguments are required: --name"),
        (["--name", "ci", "--role", "client", "--expires", "30"], "argument --expires"),
        (["--name", "ci", "--role", "client", "--expires", "0d"], "above 0"),
        (["--name", "ci", "--role", "client", "--expires", "9999d"], "at most 3650d"),
    ],
    ids=["role", "name", "long-name", "no-name", "no-unit", "zero", "too-long"],
)
def test_token_create_bad_usage_exits_2(
    admin: Callable[..., int],
    database: str,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    complaint: str,
) -> None:
    assert admin("token", "create", *flags) == 2
    captured = capsys.readouterr()
    assert complaint in captured.err
    assert captured.out == ""


def test_token_create_taken_name_exits_1_with_one_line(
    admin: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    _create(admin, capsys, "ci", "client")
    assert admin("token", "create", "--name", "ci", "--role", "admin") == 1
    assert _error_line(capsys) == (
        'hubwarden: error: a token named "ci" already exists (revoked tokens keep their name); '
        "choose another name"
    )


# -- token list -----------------------------------------------------------------------------------


def test_token_list_prints_an_aligned_table_without_tokens_or_hashes(
    admin: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = [
        _create(admin, capsys, "a-rather-long-name", "reviewer"),
        _create(admin, capsys, "ci", "client"),
    ]
    assert admin("token", "list") == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "ROLE", "CREATED", "EXPIRES", "LAST", "USED", "REVOKED"]
    assert [row.split()[:2] for row in rows] == [
        ["a-rather-long-name", "reviewer"],
        ["ci", "client"],
    ]
    for column in ("ROLE", "CREATED", "EXPIRES", "LAST USED", "REVOKED"):
        at = header.index(column)
        assert all(row[at - 2 : at] == "  " and row[at] != " " for row in rows), (column, out)
    assert all(token not in out for token in tokens)
    assert "hwa_" not in out


def test_token_list_json_lists_fields_without_secrets(
    admin: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    token = _create(admin, capsys, "ci", "client")
    assert admin("token", "list", "--json") == 0
    out = capsys.readouterr().out
    (listed,) = json.loads(out)
    assert set(listed) == {
        "name",
        "role",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "last_used_at",
    }
    assert (listed["name"], listed["role"], listed["revoked_at"]) == ("ci", "client", None)
    assert token not in out


def test_token_list_empty_prints_the_header_only(
    admin: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin("token", "list") == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("NAME")


# -- token revoke ---------------------------------------------------------------------------------


def test_token_revoke_stops_the_token_and_shows_in_the_list(
    admin: Callable[..., int], database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    token = _create(admin, capsys, "ci", "client")
    assert admin("token", "revoke", "ci") == 0
    assert capsys.readouterr().out.startswith('token "ci" revoked')
    assert _authenticate(database, token) is None
    assert admin("token", "list", "--json") == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["revoked_at"] is not None
    assert [e.action for e in _audit(database)] == ["token.created", "token.revoked"]


def test_token_revoke_unknown_name_exits_1_saying_what_to_do(
    admin: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin("token", "list") == 0  # the schema exists: no migration line on stderr below
    capsys.readouterr()
    assert admin("token", "revoke", "nope") == 1
    assert _error_line(capsys) == (
        'hubwarden: error: no token is named "nope"; '
        "see the names with `hubwarden admin token list`"
    )


# -- access ---------------------------------------------------------------------------------------


def test_access_grant_list_revoke_round_trip(
    admin: Callable[..., int], database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _create(admin, capsys, "ci", "client")
    assert admin("access", "grant", "ci", "model/acme/*") == 0
    assert capsys.readouterr().out == 'token "ci" may read the repos matching "model/acme/*"\n'
    assert admin("access", "list") == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["TOKEN", "PATTERN", "GRANTED", "BY"]
    assert row.split()[:2] == ["ci", "model/acme/*"]
    assert row.endswith(f"os:{getpass.getuser()}")
    assert admin("access", "revoke", "ci", "model/acme/*") == 0
    assert "may no longer read" in capsys.readouterr().out
    assert admin("access", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    actions = [e.action for e in _audit(database)]
    assert actions == ["token.created", "access.granted", "access.revoked"]


def test_access_list_json_filtered_by_token(
    admin: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    _create(admin, capsys, "ci", "client")
    _create(admin, capsys, "lab", "client")
    assert admin("access", "grant", "ci", "model/acme/*") == 0
    assert admin("access", "grant", "lab", "dataset/lab/*") == 0
    capsys.readouterr()
    assert admin("access", "list", "--token", "lab", "--json") == 0
    (grant,) = json.loads(capsys.readouterr().out)
    assert (grant["token"], grant["pattern"]) == ("lab", "dataset/lab/*")
    assert grant["created_by"] == f"os:{getpass.getuser()}"


def test_access_grant_unknown_token_exits_1_with_one_line(
    admin: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin("token", "list") == 0
    capsys.readouterr()
    assert admin("access", "grant", "ghost", "model/acme/*") == 1
    assert _error_line(capsys).startswith('hubwarden: error: no token is named "ghost"')


def test_access_grant_to_an_admin_token_exits_1_saying_why(
    admin: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    _create(admin, capsys, "boss", "admin")
    assert admin("access", "grant", "boss", "model/acme/*") == 1
    assert "only client tokens are granted repos" in _error_line(capsys)


def test_access_revoke_unknown_grant_exits_1(
    admin: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    _create(admin, capsys, "ci", "client")
    assert admin("access", "revoke", "ci", "model/acme/*") == 1
    assert 'has no grant "model/acme/*"' in _error_line(capsys)


def test_access_grant_pattern_without_repo_type_exits_2(
    admin: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin("access", "grant", "ci", "acme/*") == 2
    assert "must start with model/, dataset/, space/" in capsys.readouterr().err


def test_admin_without_subject_or_action_exits_2(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["admin"]) == 2
    assert main(["admin", "token"]) == 2
    assert "required" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_environment")
def test_admin_missing_data_dir_exits_1_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "elsewhere"
    assert main(["admin", "token", "list", "--data-dir", str(missing)]) == 1
    assert _error_line(capsys) == (
        f"hubwarden: error: data directory {missing} does not exist; this command works on the "
        "server's data directory (its database and keys): give it with --data-dir, --config or "
        "HUBWARDEN_DATA_DIR (or its database_url)"
    )
    assert not missing.exists()
