"""The `hubwarden` command (also `python -m proxy`).

    hubwarden serve [--config FILE] [--host H] [--port P] [--data-dir D] [--upstream URL]
                    [--offline]
    hubwarden db upgrade|current [--config FILE] [--data-dir D]
    hubwarden scan PATH... [--json] [--recursive]
    hubwarden policy check REPO[@REV] [--type model|dataset|space] [--json] [--config FILE]
                    [--upstream URL]
    hubwarden quarantine list|show|release|reject|rescan|bulk …   (proxy.admin.cli)
    hubwarden waivers list|revoke …; repos list|block|unblock …; changes list|approve|reject …
    hubwarden pins list REPO; audit [--follow] …; bom|signature REPO[@REV]
    hubwarden risk REPO[@REV] [--json]; watch status [--json]      (proxy.admin.risk_commands)
    hubwarden admin token|access …                                 (proxy.admin.commands)
    hubwarden prefetch REPO[@REV]… | --list FILE                   (proxy.admin.prefetch)
    hubwarden doctor [--repair] [--json]                           (proxy.ops.doctor)
    hubwarden keys create|show|trust|list|untrust                  (proxy.airgap.commands)
    hubwarden export --repo R… --out PATH; hubwarden import PATH   (proxy.airgap.commands)

    hubwarden --version

The config file is `--config`, else the file named by HUBWARDEN_CONFIG, else none (defaults).
Exit codes: 0 done; 1 the command failed (message on stderr); 2 bad usage or configuration.
`hubwarden serve` exits 1 when it cannot start: the port is taken, the data directory cannot be
created, read or written, the database is unreachable or its schema is behind.
`hubwarden db` works on an existing data directory and never creates one.
`hubwarden scan` has its own: 0 clean, 1 needs review, 2 malicious, 3 could not scan.
`hubwarden policy check`: 0 every file would be served; 1 a file would be held or refused, or the
upstream failed; 2 bad usage or configuration.
Every error is one stderr line saying what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import importlib
import importlib.metadata
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.admin.cli import register_review_commands
from proxy.admin.commands import register_admin_commands
from proxy.admin.prefetch import register as register_prefetch_command
from proxy.airgap.commands import register as register_airgap_commands
from proxy.config import CONFIG_FILE_VARIABLE, ConfigError, Settings, load_settings
from proxy.errors import HubwardenError
from proxy.logs import configure_logging
from proxy.ops.doctor import register as register_doctor_command

if TYPE_CHECKING:
    from aiohttp import web

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
    "workers": "workers",
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


def _version() -> str:
    try:
        return importlib.metadata.version(PROG)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(unknown version: not installed)"


class DataDirUnusable(HubwardenError):
    """The data directory (`path`) is missing where it must exist, cannot be created, or this
    process cannot list or write it. `reason` says which; the message says what to do."""

    def __init__(self, path: Path, reason: str, advice: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"data directory {path} {reason}; {advice}")


class ListenFailed(HubwardenError):
    """`hubwarden serve` could not listen on `host`:`port` (`errno` is the socket error)."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        self.host = host
        self.port = port
        self.errno = exc.errno
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            detail = (
                "the port is already in use (by another Hubwarden or another server); stop it "
                "or choose another port with --port or HUBWARDEN_PORT"
            )
        elif exc.errno == errno.EACCES:
            detail = (
                "permission denied (ports below 1024 need privileges); choose a port from 1024 "
                "up with --port or HUBWARDEN_PORT"
            )
        else:
            reason = exc.strerror if isinstance(exc, socket.gaierror) else None
            if reason is None and exc.errno is not None:
                reason = os.strerror(exc.errno)
            detail = (
                f"{reason or exc}; give an address of this machine with --host or HUBWARDEN_HOST "
                "(127.0.0.1: this machine only, 0.0.0.0: every interface)"
            )
        super().__init__(f"cannot listen on {where}: {detail}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A Hugging Face Hub mirror that quarantines, verifies and scans model files "
        "before serving them.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _serve_parser(commands)
    _db_parser(commands)
    _scan_parser(commands)
    _policy_parser(commands)
    register_review_commands(commands, load_cli_settings, _add_config_option)
    register_admin_commands(commands, load_cli_settings, _add_config_option)
    register_doctor_command(commands, load_cli_settings, _add_config_option)
    register_prefetch_command(commands, load_cli_settings, _add_config_option)
    register_airgap_commands(commands, load_cli_settings, _add_config_option)
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
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the port (default 1; see config.example.toml)",
    )
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
    configure_logging(settings.log_level, settings.log_format)
    _prepare_data_dir(settings.data_dir)
    from proxy.app import create_app  # imported late: `hubwarden db`/`scan` need no server

    upstream = "offline" if settings.offline else f"upstream {settings.upstream}"
    logger.info(
        "starting Hubwarden on %s:%d (%s, data in %s)",
        settings.host,
        settings.port,
        upstream,
        settings.data_dir,
    )
    if settings.workers > 1:
        return _serve_workers(settings)
    asyncio.run(_run_server(create_app(settings), settings))
    return EXIT_OK


def _serve_workers(settings: Settings) -> int:
    """`serve --workers N`: migrate once, bind the port N times, fork and supervise."""
    from proxy.app import create_app
    from proxy.ops.metrics import process_ended, share_across_processes
    from proxy.store import db
    from proxy.workers import Supervisor, bind_sockets

    async def upgrade() -> None:  # here, so that the workers do not race to migrate
        engine = db.create_engine(settings.effective_database_url)
        try:
            await db.upgrade_schema(engine)
        finally:
            await engine.dispose()

    if settings.upgrade_on_start:
        asyncio.run(upgrade())
    try:
        sockets = bind_sockets(settings.host, settings.port, settings.workers)
    except OSError as exc:
        raise ListenFailed(settings.host, settings.port, exc) from exc

    # every worker's metrics in files here, read together by whichever worker is scraped
    metrics_dir = Path(tempfile.mkdtemp(prefix="hubwarden-metrics-"))

    def run_worker(sock: socket.socket) -> int:
        share_across_processes(metrics_dir)
        try:
            app = create_app(settings, metrics_dir=metrics_dir)
            asyncio.run(_run_server(app, settings, sock))
        except HubwardenError as exc:
            return _fail(exc.message, EXIT_FAILED)
        return EXIT_OK

    logger.info("starting %d workers", settings.workers)
    try:
        ended = functools.partial(process_ended, metrics_dir)
        return Supervisor(sockets, run_worker, worker_ended=ended).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _run_server(
    app: web.Application, settings: Settings, sock: socket.socket | None = None
) -> None:
    """Start the app's services, listen, say where clients point HF_ENDPOINT, and serve until
    SIGINT or SIGTERM; then stop gracefully.

    Start-up failures surface here once, as our own errors: the database's (DatabaseUnavailable,
    SchemaOutdated, raised by the app's cleanup_ctx), a file under the data directory the blob
    store cannot use (DataDirUnusable), the address that cannot be bound (ListenFailed).
    """
    from proxy.hub.server import HubServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = HubServer(app, settings)
    try:
        try:
            await server.setup()
        except OSError as exc:  # the blob store's folders under the data directory
            if exc.filename is None or not Path(str(exc.filename)).is_relative_to(
                settings.data_dir
            ):
                raise
            raise DataDirUnusable(
                settings.data_dir,
                f"cannot be used: {exc.filename} ({exc.strerror})",
                _DATA_DIR_ADVICE,
            ) from exc
        if stop.is_set():  # asked to stop while starting: do not listen
            return
        try:
            port = await server.listen(settings.host, settings.port, sock)
        except OSError as exc:
            raise ListenFailed(settings.host, settings.port, exc) from exc
        logger.info("clients need only HF_ENDPOINT=%s", _client_endpoint(settings))
        logger.info("ready: listening on %s:%d", settings.host, port)
        await stop.wait()
        logger.info("stopping")
    finally:
        await server.close()


def _client_endpoint(settings: Settings) -> str:
    """What clients put in HF_ENDPOINT: the public URL when set, else this host and port."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    if settings.host in ("0.0.0.0", "::"):  # noqa: S104 (comparing, not binding)
        return (
            f"http://<this machine's name>:{settings.port} (listening on every interface; set "
            "public_url to have the exact URL shown here)"
        )
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"


_DATA_DIR_ADVICE = (
    "let the user running hubwarden read and write it (rwx), or choose another with "
    "--data-dir or HUBWARDEN_DATA_DIR"
)


def _prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory if needed, and check that this process can list and write it
    (a clear message now rather than a database or blob-store error later)."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirUnusable(data_dir, "is not a directory", _DATA_DIR_ADVICE)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirUnusable(
            data_dir,
            f"cannot be created ({exc.strerror})",
            "create it and let the user running hubwarden read and write it, or choose "
            "another with --data-dir or HUBWARDEN_DATA_DIR",
        ) from exc
    try:
        with os.scandir(data_dir):
            pass
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise DataDirUnusable(
            data_dir, f"is not readable and writable ({exc.strerror})", _DATA_DIR_ADVICE
        ) from exc


def _require_data_dir(settings: Settings) -> None:
    """`hubwarden db` works on the data directory the server uses and never creates one (the
    default, ./hubwarden-data, is relative to wherever the command runs)."""
    if settings.database_url is None and not settings.data_dir.is_dir():
        raise DataDirUnusable(
            settings.data_dir,
            "does not exist",
            "give the server's with --data-dir, --config or HUBWARDEN_DATA_DIR (`hubwarden "
            f"serve` creates it on its first start, or create it: mkdir -p {settings.data_dir})",
        )


def _sqlite_file(settings: Settings) -> Path | None:
    """The SQLite database file the settings name; None for PostgreSQL or in-memory SQLite."""
    from sqlalchemy.engine import make_url

    from proxy.store import db

    url = settings.effective_database_url
    if not db.is_sqlite(url):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


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
    configure_logging(settings.log_level, settings.log_format)
    _require_data_dir(settings)
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
    configure_logging(settings.log_level, settings.log_format)
    _require_data_dir(settings)
    database = _sqlite_file(settings)
    current: str | None = None
    if database is None or database.exists():  # opening a missing SQLite file would create it
        current, head = asyncio.run(_revisions(settings))
    else:
        from proxy.store import db

        head = db.head_revision()
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
        help="what the policy would do with each file of a repo (reads metadata and the "
        "signature file, no other file)",
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
