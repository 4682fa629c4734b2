"""The `hubwarden` command (also `python -m proxy`).

    hubwarden serve [--config FILE] [--host H] [--port P] [--data-dir D] [--upstream URL]
                    [--offline]
    hubwarden db upgrade|current [--config FILE] [--data-dir D]
    hubwarden scan PATH... [--json] [--recursive]
    hubwarden policy check REPO[@REV] [--type model|dataset|space] [--json] [--config FILE]
                    [--upstream URL]

The config file is `--config`, else the file named by HUBWARDEN_CONFIG, else none (defaults).
Exit codes: 0 done; 1 the command failed (message on stderr); 2 bad usage or configuration.
`hubwarden scan` has its own: 0 clean, 1 needs review, 2 malicious, 3 could not scan.
`hubwarden policy check`: 0 every file would be served; 1 a file would be held or refused, or the
upstream failed; 2 bad usage or configuration.
Every error is one stderr line saying what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from proxy.config import CONFIG_FILE_VARIABLE, ConfigError, Settings, load_settings
from proxy.errors import HubwardenError
from proxy.logs import configure_logging

logger = logging.getLogger(__name__)

PROG = "hubwarden"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SCAN_UNAVAILABLE = 3

Command = Callable[[argparse.Namespace], int]
# Flags that override a setting: argparse destination → dotted settings key.
SETTING_FLAGS = {
    "host": "host",
    "port": "port",
    "data_dir": "data_dir",
    "upstream": "upstream",
    "offline": "offline",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `hubwarden` command; returns its exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["scan"]:
        return _scan(arguments[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    command: Command | None = getattr(args, "command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return command(args)
    except ConfigError as exc:
        return _fail(exc.message, EXIT_USAGE)
    except HubwardenError as exc:
        return _fail(exc.message, EXIT_FAILED)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A Hugging Face Hub mirror that quarantines, verifies and scans model files "
        "before serving them.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _serve_parser(commands)
    _db_parser(commands)
    _scan_parser(commands)
    _policy_parser(commands)
    # Later: quarantine, repos, pins, prefetch, export, import, admin.
    return parser


# -- shared options -----------------------------------------------------------------------------


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML settings file (default: ${CONFIG_FILE_VARIABLE}, else built-in defaults)",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="where blobs and the database live")


def load_cli_settings(args: argparse.Namespace) -> Settings:
    """Settings from the --config file (or HUBWARDEN_CONFIG), the environment and the flags.

    Raises ConfigError.
    """
    config_file: Path | None = args.config
    if config_file is None and os.environ.get(CONFIG_FILE_VARIABLE):
        config_file = Path(os.environ[CONFIG_FILE_VARIABLE])
    overrides = {
        key: getattr(args, dest) for dest, key in SETTING_FLAGS.items() if hasattr(args, dest)
    }
    return load_settings(config_file, os.environ, overrides)


# -- serve --------------------------------------------------------------------------------------


def _serve_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("serve", help="run the mirror")
    _add_config_option(parser)
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080)")
    parser.add_argument("--upstream", metavar="URL", help="the Hub to mirror")
    parser.add_argument(
        "--offline",
        action="store_true",
        default=None,
        help="never contact the upstream; serve what is stored",
    )
    parser.set_defaults(command=_serve)


def _serve(args: argparse.Namespace) -> int:
    settings = load_cli_settings(args)
    configure_logging(settings.log_level)
    _prepare_data_dir(settings.data_dir)
    from aiohttp import web

    from proxy.app import create_app  # imported late: `hubwarden db`/`scan` need no server

    upstream = "offline" if settings.offline else f"upstream {settings.upstream}"
    logger.info(
        "starting Hubwarden on %s:%d (%s, data in %s)",
        settings.host,
        settings.port,
        upstream,
        settings.data_dir,
    )
    from proxy.hub.access import ACCESS_LOGGER, AccessLogger

    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=ACCESS_LOGGER,
        access_log_class=AccessLogger,
    )
    return EXIT_OK


def _prepare_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"data directory {data_dir} cannot be created ({exc.strerror}); choose another "
            "with --data-dir or HUBWARDEN_DATA_DIR",
            source=str(data_dir),
            key="data_dir",
        ) from exc


# -- db -----------------------------------------------------------------------------------------


def _db_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("db", help="manage the database schema")
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="bring the schema up to date")
    _add_config_option(upgrade)
    upgrade.set_defaults(command=_db_upgrade)
    current = actions.add_parser("current", help="print the schema's revision")
    _add_config_option(current)
    current.set_defaults(command=_db_current)


def _db_upgrade(args: argparse.Namespace) -> int:
    settings = load_cli_settings(args)
    configure_logging(settings.log_level)
    _prepare_data_dir(settings.data_dir)
    asyncio.run(_upgrade(settings))
    return EXIT_OK


async def _upgrade(settings: Settings) -> None:
    from proxy.store import db

    engine = db.create_engine(settings.effective_database_url)
    try:
        await db.upgrade_schema(engine)
        print(f"database schema at revision {await db.current_revision(engine)}")
    finally:
        await engine.dispose()


def _db_current(args: argparse.Namespace) -> int:
    settings = load_cli_settings(args)
    configure_logging(settings.log_level)
    _prepare_data_dir(settings.data_dir)
    current, head = asyncio.run(_revisions(settings))
    state = "up to date" if current == head else f"behind {head}: run `hubwarden db upgrade`"
    print(f"{current or '(empty)'} ({state})")
    return EXIT_OK


async def _revisions(settings: Settings) -> tuple[str | None, str]:
    from proxy.store import db

    engine = db.create_engine(settings.effective_database_url)
    try:
        return await db.current_revision(engine), db.head_revision()
    finally:
        await engine.dispose()


# -- scan ---------------------------------------------------------------------------------------


def _scan_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Listed for --help only: `main` hands `scan`'s arguments to scanners.cli untouched.
    commands.add_parser(
        "scan",
        help="scan model files without loading them (hubwarden scan --help)",
        add_help=False,
    )


def _scan(argv: list[str]) -> int:
    try:
        scanners_cli = importlib.import_module("scanners.cli")
    except ImportError as exc:
        return _fail(
            f"the scanners cannot be loaded ({exc}); reinstall hubwarden", EXIT_SCAN_UNAVAILABLE
        )
    code: int = scanners_cli.main(argv)
    return code


# -- policy -------------------------------------------------------------------------------------


def _policy_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("policy", help="see what the policy does with a repo")
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="what the policy would do with each file of a repo (reads metadata, no file)",
        description="Exit 0: every file would be served; 1: a file would be held or refused, "
        "or the upstream failed; 2: bad usage or configuration.",
    )
    check.add_argument("target", metavar="REPO[@REV]", help="e.g. google/gemma-2b@main")
    check.add_argument(
        "--type", choices=("model", "dataset", "space"), default="model", help="repo type"
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML settings file (default: ${CONFIG_FILE_VARIABLE}, else built-in defaults)",
    )
    check.add_argument("--upstream", metavar="URL", help="the Hub to read metadata from")
    check.set_defaults(command=_policy_check)


def _policy_check(args: argparse.Namespace) -> int:
    from proxy import policy_check  # imported late: other commands need no aiohttp client
    from proxy.errors import InvalidInput
    from proxy.repos import RepoType

    try:
        target = policy_check.Target.parse(args.target, RepoType(args.type))
    except InvalidInput as exc:
        return _fail(f"{exc.message}; give REPO[@REV], e.g. google/gemma-2b@main", EXIT_USAGE)
    settings = load_cli_settings(args)
    # Progress and retry lines would bury the answer: errors only, unless asked for debugging.
    configure_logging("DEBUG" if settings.log_level == "DEBUG" else "ERROR")
    result = asyncio.run(policy_check.run(settings, target))
    print(policy_check.render_json(result) if args.json else policy_check.render_text(result))
    return result.exit_code
