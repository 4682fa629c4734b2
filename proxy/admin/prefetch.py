"""`hubwarden prefetch`: fetch, verify and scan repos ahead of any client.

    hubwarden prefetch org/name[@revision] [--type dataset] [--include GLOB]... [--exclude GLOB]...
    hubwarden prefetch --list mirror.toml

Each file goes through the server's own path (`Delivery.locate` then `Delivery.open`, so the
trust gate, the ingest, the verification and the scans are the server's), one ingest per blob
even while a server runs on the same data directory: a blob another process is fetching is
waited for, not fetched twice. What is released already is not fetched again, so an interrupted
prefetch (^C, or killed) resumes where it stopped when run again.

A mirror list is TOML:

    [[repo]]
    id = "org/name"
    type = "model"                # model (default), dataset or space
    revisions = ["main", "v1.0"]  # default ["main"]
    include = ["*.json", "*.safetensors"]   # default: every file
    exclude = ["*.bin"]

Exit status: 0 every file released; 1 something was held, rejected or failed (the table says
which); 2 bad usage or settings; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import enum
import fnmatch
import json
import signal
import sys
import threading
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from proxy.catalog import Caller
from proxy.config import ConfigError, Settings
from proxy.delivery import FileTarget, InFlightBlob
from proxy.errors import Held, HubwardenError, InvalidInput, NotReady, shown
from proxy.hub.context import SERVICES
from proxy.logs import configure_logging
from proxy.metadata import EntryType
from proxy.repos import RepoPath, RepoRef, RepoType, Revision
from proxy.services import Services

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

MAX_LIST_BYTES = 1024 * 1024
MAX_REPOS = 1000
MAX_REVISIONS = 100
MAX_PATTERNS = 200
MAX_PATTERN_CHARS = 300
MAX_FILES = 100_000  # files of one revision
NOT_READY_POLL_S = 1.0
WAIT_STEP_S = 0.5
EXIT_OK, EXIT_HELD, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Verdict(enum.StrEnum):
    RELEASED = "released"
    ALREADY = "already verified"
    HELD = "held"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Target:
    """One repo revision to prefetch, with the patterns that choose its files."""

    repo: RepoRef
    revision: str = "main"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def wants(self, path: str) -> bool:
        if self.include and not any(fnmatch.fnmatchcase(path, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(path, p) for p in self.exclude)

    def __str__(self) -> str:
        return f"{self.repo.repo_type.value} {self.repo.repo_id}@{self.revision}"


@dataclass(slots=True)
class Outcome:
    target: Target
    path: str
    size: int
    verdict: Verdict
    detail: str = ""
    commit: str = ""


@dataclass(slots=True)
class Result:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        bad = (Verdict.HELD, Verdict.FAILED)
        return EXIT_HELD if any(o.verdict in bad for o in self.outcomes) else EXIT_OK

    def counts(self) -> dict[str, int]:
        found = {v.value: 0 for v in Verdict}
        for outcome in self.outcomes:
            found[outcome.verdict.value] += 1
        return found


# -- what to prefetch ----------------------------------------------------------------------------


def parse_spec(
    text: str, repo_type: RepoType, include: Sequence[str], exclude: Sequence[str]
) -> Target:
    """`org/name[@revision]` with its patterns. Raises InvalidInput."""
    repo_id, _, revision = text.partition("@")
    if "@" in text and not revision:
        raise InvalidInput("repo", text, "has an empty revision after @; write org/name@main")
    return _target(repo_type, repo_id, revision or "main", include, exclude)


def _target(
    repo_type: RepoType,
    repo_id: str,
    revision: str,
    include: Sequence[object],
    exclude: Sequence[object],
) -> Target:
    repo = RepoRef.parse(repo_type, repo_id)
    Revision.parse(revision)  # raises InvalidInput on a hostile name
    return Target(repo, revision, _patterns("include", include), _patterns("exclude", exclude))


def _patterns(name: str, values: Sequence[object]) -> tuple[str, ...]:
    if len(values) > MAX_PATTERNS:
        raise InvalidInput(name, f"{len(values)} patterns", f"is more than {MAX_PATTERNS}")
    for value in values:
        if not isinstance(value, str) or not value or len(value) > MAX_PATTERN_CHARS:
            raise InvalidInput(
                name,
                shown(str(value)),
                f"must be a glob like *.json, 1 to {MAX_PATTERN_CHARS} characters",
            )
    return tuple(str(v) for v in values)


def load_list(path: Path) -> list[Target]:
    """The targets of a mirror list file. Raises InvalidInput naming the bad entry."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_LIST_BYTES + 1)
    except OSError as exc:
        raise InvalidInput("--list", str(path), f"cannot be read ({exc.strerror})") from exc
    if len(raw) > MAX_LIST_BYTES:
        raise InvalidInput("--list", str(path), f"is larger than {MAX_LIST_BYTES} bytes")
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput("--list", str(path), f"is not a TOML file ({exc})") from exc
    unknown = set(document) - {"repo"}
    if unknown:
        raise InvalidInput(
            "--list", ", ".join(sorted(unknown)), "are not known; use [[repo]] tables"
        )
    repos = document.get("repo", [])
    if not isinstance(repos, list) or not repos:
        raise InvalidInput(
            "--list", str(path), "has no [[repo]] table; see `hubwarden prefetch -h`"
        )
    if len(repos) > MAX_REPOS:
        raise InvalidInput("--list", f"{len(repos)} repos", f"is more than {MAX_REPOS}")
    return [t for number, entry in enumerate(repos, 1) for t in _list_entry(number, entry)]


def _list_entry(number: int, entry: object) -> list[Target]:
    where = f"[[repo]] number {number}"
    if not isinstance(entry, dict):
        raise InvalidInput(where, "", "must be a table")
    unknown = set(entry) - {"id", "type", "revisions", "include", "exclude"}
    if unknown:
        known = "id, type, revisions, include, exclude"
        raise InvalidInput(where, ", ".join(sorted(unknown)), f"are not known keys ({known})")
    repo_id = entry.get("id")
    if not isinstance(repo_id, str):
        raise InvalidInput(where, "", 'needs id = "org/name"')
    types = {t.value: t for t in RepoType}
    type_text = entry.get("type", "model")
    if type_text not in types:
        raise InvalidInput(
            f"{where} type", shown(str(type_text)), "must be model, dataset or space"
        )
    revisions = entry.get("revisions", ["main"])
    if not isinstance(revisions, list) or not revisions or len(revisions) > MAX_REVISIONS:
        raise InvalidInput(f"{where} revisions", "", f"must list 1 to {MAX_REVISIONS} names")
    include, exclude = entry.get("include", []), entry.get("exclude", [])
    if not isinstance(include, list) or not isinstance(exclude, list):
        raise InvalidInput(where, "", "include and exclude must be lists of globs")
    found = []
    for revision in revisions:
        if not isinstance(revision, str) or not revision:
            raise InvalidInput(f"{where} revisions", shown(str(revision)), "must be names")
        found.append(_target(types[str(type_text)], repo_id, revision, include, exclude))
    return found


# -- fetching ------------------------------------------------------------------------------------


class Prefetcher:
    """Prefetches targets through a running app's services, `jobs` files at a time."""

    def __init__(self, services: Services, progress: Progress | None, jobs: int = 4) -> None:
        self._services = services
        self._progress = progress
        self._jobs = asyncio.Semaphore(max(1, jobs))
        upstream = services.upstream
        self._caller = Caller(upstream.service_token if upstream is not None else None)
        self._overall: TaskID | None = None

    async def run(self, targets: Sequence[Target]) -> Result:
        result = Result()
        if self._progress is not None:
            self._overall = self._progress.add_task("all files", total=None)
        for target in targets:
            result.outcomes += await self._target(target)
        return result

    async def fetch_files(self, repo: RepoRef, commit: str, paths: Sequence[str]) -> dict[str, int]:
        """Prefetch exactly these files of a commit (those a new upstream head changed, for
        the upstream watch); returns verdict → how many."""
        include = tuple("".join(f"[{c}]" if c in "*?[" else c for c in p) for p in paths)
        result = await self.run([Target(repo, commit, include=include)])
        return result.counts()

    async def _target(self, target: Target) -> list[Outcome]:
        catalog = self._services.catalog
        try:
            resolved = await catalog.resolve(
                target.repo, Revision.parse(target.revision), self._caller
            )
            entries = await catalog.tree(resolved, self._caller)
        except HubwardenError as exc:
            return [Outcome(target, "", 0, Verdict.FAILED, exc.message)]
        files = [e for e in entries if e.entry_type is EntryType.FILE and target.wants(e.path)][
            :MAX_FILES
        ]
        if self._progress is not None and self._overall is not None:
            task = self._progress.tasks[self._overall]
            total = (task.total or 0) + sum(e.size for e in files)
            self._progress.update(self._overall, total=total)
        outcomes = await asyncio.gather(*(self._file(target, e.path, e.size) for e in files))
        for outcome in outcomes:
            outcome.commit = resolved.commit
        return list(outcomes)

    async def _file(self, target: Target, path: str, size: int) -> Outcome:
        async with self._jobs:
            try:
                verdict, detail = await self._fetch(target, path)
            except Held as exc:
                verdict, detail = Verdict.HELD, exc.message
            except HubwardenError as exc:
                verdict, detail = Verdict.FAILED, exc.message
            if self._progress is not None and self._overall is not None:
                self._progress.advance(self._overall, size)
            return Outcome(target, path, size, verdict, detail)

    async def _fetch(self, target: Target, path: str) -> tuple[Verdict, str]:
        delivery = self._services.delivery
        revision = Revision.parse(target.revision)
        located: FileTarget = await delivery.locate(
            target.repo, revision, RepoPath.parse(path), self._caller
        )
        fetched = False
        while True:
            try:
                found = await delivery.open(located, self._caller)
            except NotReady:  # another process (a server beside us) is fetching it
                await asyncio.sleep(NOT_READY_POLL_S)
                fetched = True
                continue
            if not isinstance(found, InFlightBlob):
                return (Verdict.RELEASED if fetched else Verdict.ALREADY), ""
            fetched = True
            await self._follow(found, path)

    async def _follow(self, found: InFlightBlob, path: str) -> None:
        job = found.job
        task = None
        if self._progress is not None:
            task = self._progress.add_task(escape(path[-60:]), total=job.size)
        try:
            while not job.done:
                await job.wait_change(WAIT_STEP_S)
                if task is not None and self._progress is not None:
                    self._progress.update(task, completed=job.flushed)
        finally:
            if task is not None and self._progress is not None:
                self._progress.remove_task(task)


class Interrupted(Exception):
    """SIGINT (^C): the prefetch stopped; what was in flight was abandoned."""


async def prefetch(
    settings: Settings, targets: Sequence[Target], *, jobs: int, console: Console | None
) -> Result:
    """Start the app's services (no listener), prefetch `targets`, stop them. Raises
    Interrupted on SIGINT, once everything is stopped cleanly.

    SIGINT is handled here rather than by asyncio.run's cancellation of the main task, which
    Python 3.11's `wait_for` can swallow (the run would then go on to the end)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach main only
        return await _prefetch(settings, targets, jobs=jobs, console=console)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    work = asyncio.ensure_future(_prefetch(settings, targets, jobs=jobs, console=console))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            while not work.done():  # until the cancellation is taken, and the cleanup done
                work.cancel()
                await asyncio.wait({work}, timeout=0.5)
            raise Interrupted
        return work.result()
    finally:
        stopping.cancel()
        loop.remove_signal_handler(signal.SIGINT)


async def _prefetch(
    settings: Settings, targets: Sequence[Target], *, jobs: int, console: Console | None
) -> Result:
    from proxy.app import create_app  # the app imports the CLI's neighbours; keep this lazy

    # ^C means now: what is in flight is abandoned at once (fetched again by the next run),
    # where a server lets downloads finish within the grace.
    settings = dataclasses.replace(
        settings, ingest=dataclasses.replace(settings.ingest, shutdown_grace_s=0.0)
    )
    runner = web.AppRunner(create_app(settings), handle_signals=False)
    await runner.setup()
    try:
        services: Services = runner.app[SERVICES]
        if services.upstream is None:
            raise ConfigError(
                "prefetch needs the upstream, and the settings say offline = true; run it on a "
                "mirror that reaches the Hub, then carry the repos across with export/import",
                source="offline",
                key="offline",
            )
        if console is None:
            return await Prefetcher(services, None, jobs).run(targets)
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, console=console, transient=True) as progress:
            return await Prefetcher(services, progress, jobs).run(targets)
    finally:
        await runner.cleanup()


# -- output --------------------------------------------------------------------------------------


def render_table(result: Result, console: Console) -> None:
    table = Table(title="prefetch", title_justify="left")
    for column in ("repo", "revision", "commit", "file", "size", "verdict", "why"):
        table.add_column(column, no_wrap=column != "why", overflow="fold")
    for o in result.outcomes:
        style = {Verdict.HELD: "red", Verdict.FAILED: "yellow"}.get(o.verdict, "green")
        table.add_row(
            escape(o.target.repo.repo_id), escape(o.target.revision), o.commit[:12], escape(o.path),
            str(o.size), f"[{style}]{o.verdict.value}[/]", escape(o.detail[:300]),
        )  # fmt: skip
    console.print(table)
    counts = ", ".join(f"{n} {v}" for v, n in result.counts().items() if n)
    console.print(counts or "nothing matched")


def render_json(result: Result) -> str:
    return json.dumps(
        {
            "files": [
                {"repo": o.target.repo.repo_id, "type": o.target.repo.repo_type.value,
                 "revision": o.target.revision, "commit": o.commit, "path": o.path,
                 "size": o.size, "verdict": o.verdict.value, "detail": o.detail}
                for o in result.outcomes
            ],
            "counts": result.counts(),
            "exit": result.exit_code,
        },
        indent=2,
    )  # fmt: skip


# -- the command ---------------------------------------------------------------------------------


def register(
    commands: Subparsers,
    load: Callable[[argparse.Namespace], Settings],
    add_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `prefetch` to the `hubwarden` parser."""
    parser = commands.add_parser(
        "prefetch",
        help="fetch, verify and scan repos ahead of any client",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="A mirror list is TOML: [[repo]] tables with id, type, revisions, include, "
        "exclude. Exit status: 0 all released, 1 something held or failed, 130 interrupted.",
    )
    add_options(parser)
    parser.add_argument("repos", nargs="*", metavar="ORG/NAME[@REVISION]", help="what to fetch")
    parser.add_argument("--type", choices=[t.value for t in RepoType], default="model")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB",
                        help="only files matching this glob (repeatable)")  # fmt: skip
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="not files matching this glob (repeatable)")  # fmt: skip
    parser.add_argument("--list", type=Path, metavar="MIRROR.TOML", help="many repos from a file")
    parser.add_argument("--jobs", type=int, default=4, help="files fetched at once (4)")
    parser.add_argument("--json", action="store_true", help="the verdicts as JSON, no progress")

    def command(args: argparse.Namespace) -> int:
        return _command(load, args)

    parser.set_defaults(command=command)


def _command(load: Callable[[argparse.Namespace], Settings], args: argparse.Namespace) -> int:
    if bool(args.repos) == bool(args.list):
        _error("give ORG/NAME[@REVISION]... or --list FILE (one of them)")
        return EXIT_USAGE
    if not 1 <= args.jobs <= 64:
        _error("--jobs must be 1 to 64")
        return EXIT_USAGE
    settings = load(args)
    try:
        if args.list:
            targets = load_list(args.list)
        else:
            types = {t.value: t for t in RepoType}
            targets = [
                parse_spec(t, types[args.type], args.include, args.exclude) for t in args.repos
            ]
    except InvalidInput as exc:
        _error(exc.message)
        return EXIT_USAGE
    configure_logging("ERROR" if settings.log_level != "DEBUG" else "DEBUG")
    console = None if args.json else Console(stderr=True)
    try:
        result = asyncio.run(prefetch(settings, targets, jobs=args.jobs, console=console))
    except (Interrupted, KeyboardInterrupt):
        _error("interrupted; run the same command again to resume (verified files are not "
               "fetched again)")  # fmt: skip
        return EXIT_INTERRUPTED
    if args.json:
        sys.stdout.write(render_json(result) + "\n")
    else:
        render_table(result, Console(width=_width()))
    return result.exit_code


def _error(message: str) -> None:
    sys.stderr.write(f"hubwarden prefetch: {message}\n")


def _width() -> int | None:
    return None if sys.stdout.isatty() else 200
