"""`hubwarden doctor [--repair] [--json]`: find (and fix) what crashes, full disks and hands left
inconsistent between the database and the blob store.

    stuck row          a blob `fetching`/`scanning` whose owner process is gone
                       → repair: forget the row (the next request fetches it again)
    orphaned temp      a file in tmp/ whose ingest process is gone → repair: delete it
    leftover worker    a scan worker whose server is gone → repair: kill it
    missing file       a `released` (or `quarantined`) row whose file is not in the store
                       → repair: forget the row (fetched, verified and scanned again on request;
                       pins still protect it)
    misplaced file     a blob's file in blobs/ while its row holds it in quarantine (or the
                       reverse) → repair: move it where its row says
    file without row   a file in blobs/ or quarantine/ that no row expects → repair: delete it

Rows owned by a live process (a running server's ingests) and rows of another host are left
alone. Exit 0: nothing wrong (or everything repaired); 1: problems remain (message on stdout,
the hint on stderr); 2: bad usage. Runs beside a live server: it only takes what is provably dead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import functools
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeAlias

from proxy.config import Settings
from proxy.errors import HubwardenError
from proxy.logs import configure_logging
from proxy.ops.owners import Liveness, is_alive, pid_is_alive
from proxy.scanning import leftover_workers
from proxy.store import db
from proxy.store.blob_stores import require_local_store
from proxy.store.blobs import BlobStore, temp_owner_pid
from proxy.store.models import BlobState
from proxy.store.repository import BlobRecord, Repository

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_OK = 0
EXIT_PROBLEMS = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UNFINISHED = (BlobState.FETCHING, BlobState.SCANNING)


class Kind(enum.StrEnum):
    STUCK_ROW = "stuck row"
    ORPHANED_TEMP = "orphaned temp"
    LEFTOVER_WORKER = "leftover worker"
    MISSING_FILE = "missing file"
    MISPLACED_FILE = "misplaced file"
    FILE_WITHOUT_ROW = "file without row"


@dataclass(slots=True)
class Problem:
    """One inconsistency: what (`kind`), which (`subject`), why, and what `--repair` does."""

    kind: Kind
    subject: str
    detail: str
    repair: str
    repaired: bool = False


@dataclass(slots=True)
class Diagnosis:
    problems: list[Problem] = field(default_factory=list)
    in_flight: int = 0
    """Rows and temp files of live ingests (left alone)."""
    not_judged: list[str] = field(default_factory=list)
    """Rows owned by another host: nothing here can tell whether their owner lives."""

    @property
    def exit_code(self) -> int:
        return EXIT_PROBLEMS if any(not p.repaired for p in self.problems) else EXIT_OK


class DataDirMissing(HubwardenError):
    """`hubwarden doctor` was pointed at a data directory that does not exist."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"data directory {path} does not exist; give the server's with --data-dir, --config "
            "or HUBWARDEN_DATA_DIR"
        )


# -- the checks ------------------------------------------------------------------------------


class Doctor:
    """Compares the database's blob rows with the blob store's files, and repairs on request."""

    def __init__(self, repository: Repository, store: BlobStore, *, repair: bool) -> None:
        self._db = repository
        self._store = store
        self._repair = repair
        self.diagnosis = Diagnosis()

    async def examine(self) -> Diagnosis:
        """Run every check (repairing as it goes when asked); returns what was found."""
        await asyncio.to_thread(self._workers)
        await self._stuck_rows()
        await self._rows_and_files()
        await asyncio.to_thread(self._temp_files)
        return self.diagnosis

    def _found(self, problem: Problem, fix: Callable[[], object] | None = None) -> None:
        if self._repair and fix is not None:
            fix()
            problem.repaired = True
        self.diagnosis.problems.append(problem)

    def _workers(self) -> None:
        for pid in leftover_workers(self._store.tmp_dir):
            problem = Problem(
                Kind.LEFTOVER_WORKER, f"pid {pid}", "a scan worker whose server is gone", "kill it"
            )
            self._found(problem, functools.partial(_kill, pid))

    async def _stuck_rows(self) -> None:
        for blob in await self._db.list_blobs(_UNFINISHED):
            liveness = is_alive(blob.owner)
            if liveness is Liveness.ALIVE:
                self.diagnosis.in_flight += 1
                continue
            if liveness is Liveness.UNKNOWN and blob.owner is not None:
                self.diagnosis.not_judged.append(f"blob {blob.etag} ({blob.owner})")
                continue
            owner = f"its owner {blob.owner} is gone" if blob.owner else "no owner recorded"
            problem = Problem(
                Kind.STUCK_ROW,
                _blob_name(blob),
                f"{blob.state.value}, {owner}",
                "forget the row (fetched again on the next request)",
            )
            if self._repair:
                problem.repaired = await self._db.forget_abandoned_blob(blob.etag, blob.owner)
            self.diagnosis.problems.append(problem)

    async def _rows_and_files(self) -> None:
        rows = await self._db.list_blobs(
            (BlobState.RELEASED, BlobState.QUARANTINED, BlobState.REJECTED, BlobState.SCANNING)
        )
        files = await asyncio.to_thread(self._stored_files)
        expected: dict[Path, BlobRecord] = {}
        busy: set[str] = set()  # being settled right now: may sit in either place
        for blob in rows:
            if blob.sha256 is None:
                continue
            if blob.state is BlobState.SCANNING:
                busy.add(blob.sha256)
                continue
            expected[self._place_of(blob)] = blob
        for path, blob in expected.items():
            if path not in files:
                await self._missing(blob, path, files)
        for path in sorted(files - set(expected)):
            if path.name in busy:
                continue
            moved_to = self._moved_to(path)
            if moved_to in expected and moved_to not in files:
                continue  # misplaced: moved where its row says (above)
            problem = Problem(
                Kind.FILE_WITHOUT_ROW,
                str(path.relative_to(self._store.root)),
                "no blob row expects this file here",
                "delete it",
            )
            self._found(problem, functools.partial(path.unlink, missing_ok=True))

    def _place_of(self, blob: BlobRecord) -> Path:
        assert blob.sha256 is not None
        if blob.state is BlobState.RELEASED:
            return self._store.released_path(blob.sha256)
        return self._store.quarantined_path(blob.sha256)

    def _moved_to(self, path: Path) -> Path | None:
        """Where a misplaced file of `path` goes (None: no sha256 file of ours)."""
        sha = path.name
        if not _SHA256.fullmatch(sha):
            return None
        if path.parent == self._store.quarantine_dir:
            return self._store.released_path(sha)
        return self._store.quarantined_path(sha)

    async def _missing(self, blob: BlobRecord, path: Path, files: set[Path]) -> None:
        assert blob.sha256 is not None
        other = self._moved_to(path)
        if other is not None and other in files:
            problem = Problem(
                Kind.MISPLACED_FILE,
                _blob_name(blob),
                f"{blob.state.value}, but its file is in {other.parent.name}/",
                f"move it to {path.parent.relative_to(self._store.root)}/",
            )
            self._found(problem, lambda: self._move(blob, other))
            return
        if blob.state is BlobState.REJECTED:
            return  # a rejected blob may have no bytes (tampered files are never kept)
        problem = Problem(
            Kind.MISSING_FILE,
            _blob_name(blob),
            f"{blob.state.value}, but {path.relative_to(self._store.root)} is missing",
            "forget the row (fetched, verified and scanned again on request)",
        )
        if self._repair:
            await self._db.forget_blob(blob.etag)
            problem.repaired = True
        self.diagnosis.problems.append(problem)

    def _move(self, blob: BlobRecord, misplaced: Path) -> None:
        assert blob.sha256 is not None
        if blob.state is BlobState.RELEASED:
            self._store.release(misplaced, blob.sha256)
        else:
            self._store.quarantine(misplaced, blob.sha256)

    def _stored_files(self) -> set[Path]:
        found: set[Path] = set()
        for directory in (self._store.blobs_dir, self._store.quarantine_dir):
            if directory.is_dir():
                found.update(p for p in directory.rglob("*") if p.is_file() or p.is_symlink())
        return found

    def _temp_files(self) -> None:
        if not self._store.tmp_dir.is_dir():
            return
        for path in sorted(self._store.tmp_dir.iterdir()):
            pid = temp_owner_pid(path)
            if pid is not None and pid_is_alive(pid):
                self.diagnosis.in_flight += 1
                continue
            owner = f"its ingest (pid {pid}) is gone" if pid else "no ingest names it"
            problem = Problem(
                Kind.ORPHANED_TEMP, str(path.relative_to(self._store.root)), owner, "delete it"
            )
            self._found(problem, functools.partial(path.unlink, missing_ok=True))


def _blob_name(blob: BlobRecord) -> str:
    return f"blob {blob.etag[:12]} ({blob.first_path})"


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# -- running ---------------------------------------------------------------------------------


async def diagnose(settings: Settings, *, repair: bool) -> Diagnosis:
    """Examine (and with `repair`, fix) the data directory and database `settings` name.
    Raises DataDirMissing, DatabaseUnavailable, SchemaOutdated."""
    require_local_store(settings.store, "doctor")  # never judge S3 by an empty directory
    if not settings.data_dir.is_dir():
        raise DataDirMissing(settings.data_dir)
    engine = db.create_engine(settings.effective_database_url)
    try:
        await db.prepare_schema(engine, upgrade=False)
        repository = Repository(db.session_maker(engine), db.read_session_maker(engine))
        doctor = Doctor(repository, BlobStore(settings.data_dir), repair=repair)
        return await doctor.examine()
    finally:
        await engine.dispose()


def render_text(diagnosis: Diagnosis) -> str:
    lines = []
    for problem in diagnosis.problems:
        done = "repaired" if problem.repaired else f"--repair: {problem.repair}"
        lines.append(f"{problem.kind.value}: {problem.subject}: {problem.detail} ({done})")
    lines.extend(f"not judged: {row}: owned by another host; run doctor there"
                 for row in diagnosis.not_judged)  # fmt: skip
    left = sum(1 for p in diagnosis.problems if not p.repaired)
    if not diagnosis.problems:
        lines.append(f"no problems found ({diagnosis.in_flight} ingests in flight left alone)")
    elif left:
        lines.append(f"{left} problems found; run `hubwarden doctor --repair` to fix them")
    else:
        lines.append(f"{len(diagnosis.problems)} problems repaired")
    return "\n".join(lines)


def render_json(diagnosis: Diagnosis) -> str:
    return json.dumps(
        {
            "problems": [{**asdict(p), "kind": p.kind.value} for p in diagnosis.problems],
            "in_flight": diagnosis.in_flight,
            "not_judged": diagnosis.not_judged,
        },
        indent=2,
    )


def register(
    commands: Subparsers,
    load: Callable[[argparse.Namespace], Settings],
    add_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `doctor` to the `hubwarden` parser (`load` reads the settings, `add_options` adds
    --config and --data-dir)."""
    parser = commands.add_parser(
        "doctor",
        help="find (and --repair) stuck downloads, orphaned files and store/database mismatches",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_options(parser)
    parser.add_argument("--repair", action="store_true", help="fix what is found")
    parser.add_argument("--json", action="store_true", help="machine-readable output")

    def command(args: argparse.Namespace) -> int:
        settings = load(args)
        configure_logging("ERROR")
        diagnosis = asyncio.run(diagnose(settings, repair=args.repair))
        sys.stdout.write((render_json(diagnosis) if args.json else render_text(diagnosis)) + "\n")
        if diagnosis.exit_code != EXIT_OK:
            sys.stderr.write(
                "hubwarden doctor: problems found; run `hubwarden doctor --repair` to fix them\n"
            )
        return diagnosis.exit_code

    parser.set_defaults(command=command)
