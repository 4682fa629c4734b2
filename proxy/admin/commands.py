"""`hubwarden admin token|access`: tokens and the local access list, for people on the server.

    hubwarden admin token create --name NAME --role admin|reviewer|viewer|client [--expires 30d]
    hubwarden admin token list [--json]
    hubwarden admin token revoke NAME
    hubwarden admin access grant TOKEN_NAME PATTERN
    hubwarden admin access revoke TOKEN_NAME PATTERN
    hubwarden admin access list [--token NAME] [--json]

Each takes `--config FILE` and `--data-dir DIR` like `hubwarden db upgrade` and runs over the
services directly (not over HTTP) on the configured database, bringing its schema up to date as
the server would (`upgrade_on_start`); it never creates a data directory. The acting identity
recorded in the audit log is the OS user, `os:<name>`. `token create` writes the token alone on
stdout (so `$(...)` captures it) and the reminder that it will not be shown again on stderr.
Exit 0 done; 1 failed, with one stderr line saying what and what to do (raised as
HubwardenError, rendered by `proxy.cli.main`); 2 bad usage (argparse).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from proxy.admin.access_list import AccessList, GrantRecord, parse_pattern
from proxy.admin.identity import Identities, Role, TokenRecord, parse_token_name
from proxy.config import Settings
from proxy.errors import HubwardenError, InvalidInput, shown
from proxy.logs import configure_logging
from proxy.store import db
from proxy.store.repository import Repository

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_OK = 0
MAX_EXPIRY = dt.timedelta(days=3650)
_DURATION = re.compile(r"([1-9][0-9]{0,6})([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


@dataclass(frozen=True, slots=True)
class AdminServices:
    """What the admin commands act on."""

    identities: Identities
    access: AccessList


Job = Callable[[AdminServices, argparse.Namespace], Awaitable[int]]


def actor() -> str:
    """Who acts from the server's shell: the OS user."""
    try:
        return f"os:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"os:uid-{os.getuid()}"


@dataclass(frozen=True, slots=True)
class _Wiring:
    """How the `hubwarden` command reads settings: its loader and its --config/--data-dir."""

    load: Callable[[argparse.Namespace], Settings]
    add_options: Callable[[argparse.ArgumentParser], None]


def register_admin_commands(
    commands: Subparsers,
    load: Callable[[argparse.Namespace], Settings],
    add_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `admin token …` and `admin access …` to the `hubwarden` parser."""
    admin = commands.add_parser("admin", help="tokens and the local access list")
    subjects = admin.add_subparsers(title="subjects", metavar="SUBJECT", required=True)
    wiring = _Wiring(load, add_options)
    _token_parsers(subjects, wiring)
    _access_parsers(subjects, wiring)


# -- parsers --------------------------------------------------------------------------------------


def _token_parsers(subjects: Subparsers, wiring: _Wiring) -> None:
    token = subjects.add_parser("token", help="create, list and revoke tokens")
    actions = token.add_subparsers(title="actions", metavar="ACTION", required=True)
    create = _action(
        actions,
        "create",
        "create a token and print it (once)",
        _token_create,
        wiring,
        description="Prints the new token on stdout, once: it is stored only as a hash.",
    )
    create.add_argument(
        "--name", required=True, type=_name_argument, help="1-64 of A-Z a-z 0-9 ._-"
    )
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument(
        "--expires",
        type=duration_argument,
        metavar="DURATION",
        help="lifetime, e.g. 30d, 12h or 90m (default: no expiry)",
    )
    listing = _action(
        actions, "list", "list tokens (never the tokens themselves)", _token_list, wiring
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    revoke = _action(actions, "revoke", "revoke a token for good", _token_revoke, wiring)
    revoke.add_argument("name", metavar="NAME", type=_name_argument, help="the token's name")


def _access_parsers(subjects: Subparsers, wiring: _Wiring) -> None:
    access = subjects.add_parser(
        "access", help="which client tokens may read which gated or private repos offline"
    )
    actions = access.add_subparsers(title="actions", metavar="ACTION", required=True)
    for name, help_text, job in (
        ("grant", "let a client token read the repos matching PATTERN", _access_grant),
        ("revoke", "withdraw a grant", _access_revoke),
    ):
        parser = _action(actions, name, help_text, job, wiring)
        parser.add_argument("token_name", metavar="TOKEN_NAME", type=_name_argument)
        parser.add_argument(
            "pattern",
            metavar="PATTERN",
            type=_pattern_argument,
            help='a glob over "type/namespace/name", e.g. "model/acme/*"',
        )
    listing = _action(actions, "list", "list the grants", _access_list, wiring)
    listing.add_argument("--token", type=_name_argument, metavar="NAME", help="of this token only")
    listing.add_argument("--json", action="store_true", help="machine-readable output")


def _action(
    actions: Subparsers,
    name: str,
    help_text: str,
    job: Job,
    wiring: _Wiring,
    description: str | None = None,
) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help_text, description=description or help_text)
    wiring.add_options(parser)

    def command(args: argparse.Namespace) -> int:
        return _run(wiring.load(args), job, args)

    parser.set_defaults(command=command)
    return parser


def _name_argument(value: str) -> str:
    try:
        return parse_token_name(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc


def _pattern_argument(value: str) -> str:
    try:
        return parse_pattern(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc


def parse_duration(text: str) -> dt.timedelta:
    """`30d`, `12h`, `90m` as a timedelta (at most ten years). Raises InvalidInput."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(
            "duration", text, "must be a whole number above 0 and d, h or m, e.g. 30d, 12h, 90m"
        )
    duration = dt.timedelta(**{_UNITS[match[2]]: int(match[1])})
    if duration > MAX_EXPIRY:
        raise InvalidInput("duration", text, f"must be at most {MAX_EXPIRY.days}d")
    return duration


def duration_argument(value: str) -> dt.timedelta:
    try:
        return parse_duration(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc


# -- running --------------------------------------------------------------------------------------


def _run(settings: Settings, job: Job, args: argparse.Namespace) -> int:
    configure_logging(settings.log_level)
    require_data_dir(settings)
    return asyncio.run(_with_services(settings, job, args))


class DataDirMissing(HubwardenError):
    """The default SQLite database's data directory does not exist: this is not the server's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"data directory {path} does not exist; this command works on the server's data "
            "directory (its database and keys): give it with --data-dir, --config or "
            "HUBWARDEN_DATA_DIR (or its database_url)"
        )


def require_data_dir(settings: Settings) -> None:
    # Never create one: in the wrong working directory that would be a fresh database whose
    # tokens the server never sees (the default data_dir is relative).
    if settings.database_url is None and not settings.data_dir.is_dir():
        raise DataDirMissing(settings.data_dir)


async def _with_services(settings: Settings, job: Job, args: argparse.Namespace) -> int:
    engine = db.create_engine(settings.effective_database_url)
    try:
        await db.prepare_schema(engine, upgrade=settings.upgrade_on_start)
        sessions, reads = db.session_maker(engine), db.read_session_maker(engine)
        repository = Repository(sessions, reads)
        identities = Identities(sessions, repository, read_sessions=reads)
        access = AccessList(sessions, repository, identities, read_sessions=reads)
        return await job(AdminServices(identities, access), args)
    finally:
        await engine.dispose()


# -- tokens ---------------------------------------------------------------------------------------


async def _token_create(services: AdminServices, args: argparse.Namespace) -> int:
    record, token = await services.identities.create(
        args.name, Role(args.role), args.expires, actor()
    )
    _out(token)
    expiry = f"expires {_when(record.expires_at)}" if record.expires_at else "never expires"
    _err(
        f'created {record.role.value} token "{record.name}" ({expiry}); it will not be shown '
        "again: store it now"
    )
    return EXIT_OK


async def _token_list(services: AdminServices, args: argparse.Namespace) -> int:
    tokens = await services.identities.list()
    if args.json:
        _out(json.dumps([_token_json(t) for t in tokens], indent=2))
        return EXIT_OK
    now = dt.datetime.now(dt.UTC)
    rows = [
        (
            t.name,
            t.role.value,
            _when(t.created_at),
            _expiry(t, now),
            _when(t.last_used_at),
            _when(t.revoked_at),
        )
        for t in tokens
    ]
    _table(("NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED", "REVOKED"), rows)
    return EXIT_OK


def _token_json(token: TokenRecord) -> dict[str, str | None]:
    return {
        "name": token.name,
        "role": token.role.value,
        "created_at": token.created_at.isoformat(),
        "created_by": token.created_by,
        "expires_at": _iso(token.expires_at),
        "revoked_at": _iso(token.revoked_at),
        "last_used_at": _iso(token.last_used_at),
    }


def _expiry(token: TokenRecord, now: dt.datetime) -> str:
    if token.expires_at is None:
        return "never"
    return _when(token.expires_at) + (" (expired)" if token.expires_at <= now else "")


async def _token_revoke(services: AdminServices, args: argparse.Namespace) -> int:
    record = await services.identities.revoke(args.name, actor())
    _out(f'token "{record.name}" revoked ({_when(record.revoked_at)})')
    return EXIT_OK


# -- access list ----------------------------------------------------------------------------------


async def _access_grant(services: AdminServices, args: argparse.Namespace) -> int:
    grant = await services.access.grant(args.token_name, args.pattern, actor())
    _out(f'token "{grant.token_name}" may read the repos matching "{grant.pattern}"')
    return EXIT_OK


async def _access_revoke(services: AdminServices, args: argparse.Namespace) -> int:
    grant = await services.access.revoke(args.token_name, args.pattern, actor())
    _out(f'token "{grant.token_name}" may no longer read the repos matching "{grant.pattern}"')
    return EXIT_OK


async def _access_list(services: AdminServices, args: argparse.Namespace) -> int:
    grants = await services.access.list(args.token)
    if args.json:
        _out(json.dumps([_grant_json(g) for g in grants], indent=2))
        return EXIT_OK
    rows = [(g.token_name, g.pattern, _when(g.created_at), g.created_by) for g in grants]
    _table(("TOKEN", "PATTERN", "GRANTED", "BY"), rows)
    return EXIT_OK


def _grant_json(grant: GrantRecord) -> dict[str, str]:
    return {
        "token": grant.token_name,
        "pattern": grant.pattern,
        "created_at": grant.created_at.isoformat(),
        "created_by": grant.created_by,
    }


# -- output ---------------------------------------------------------------------------------------


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


def _when(moment: dt.datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """An aligned table for people (text from the database escaped); the last column unpadded."""
    texts = [list(header), *[[shown(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in texts) for i in range(len(header) - 1)]
    for row in texts:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        _out("  ".join([*cells, row[-1]]).rstrip())
