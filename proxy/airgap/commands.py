"""The air-gap commands: the signing key and the trusted keys, export and import of bundles.

    hubwarden keys create                          make this instance's signing key (once)
    hubwarden keys show [--json]                   its fingerprint and public key (PEM)
    hubwarden keys trust PUBLIC_KEY_FILE --name N  trust another instance's public key
    hubwarden keys list [--json]                   the trusted keys
    hubwarden keys untrust NAME                    stop trusting one
    hubwarden export --repo [TYPE:]ORG/NAME[@REV]... --out PATH [--since PREVIOUS]
                     [--split SIZE | --dir] [--json]
    hubwarden import PATH [--trust-scans] [--json]

`keys show > dmz.pub` on the exporting instance writes a file that `keys trust dmz.pub --name dmz`
takes as it is; compare the fingerprint both print over a second channel. Exit 0: done (an
import may have held files: the report lists them); 1: the command failed or the bundle was
refused, nothing changed (one line on stderr: what, and what to do); 2: bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

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

from proxy.admin.commands import DataDirMissing, actor
from proxy.airgap import importer
from proxy.airgap.errors import KeysError
from proxy.airgap.export import ExportReport, ExportSpec, export
from proxy.airgap.keys import KeyStore, check_name, read_key_file
from proxy.config import Settings
from proxy.errors import InvalidInput
from proxy.logs import configure_logging

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
EXIT_OK = 0


def register(
    commands: Subparsers,
    load: Callable[[argparse.Namespace], Settings],
    add_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `keys`, `export` and `import` to the `hubwarden` parser (`load` reads the settings,
    `add_options` adds --config and --data-dir)."""
    _keys(commands, load, add_options)
    _export(commands, load, add_options)
    _import(commands, load, add_options)


def _keys(
    commands: Subparsers,
    load: Callable[[argparse.Namespace], Settings],
    add_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    parser = commands.add_parser(
        "keys",
        help="the signing key bundles are signed with, and the keys trusted to sign them",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    def store(args: argparse.Namespace) -> KeyStore:
        settings = load(args)
        if not settings.data_dir.is_dir():  # a key made in the wrong place would never be used
            raise DataDirMissing(settings.data_dir)
        return KeyStore(settings.data_dir)

    create = actions.add_parser("create", help="make this instance's signing key (once)")
    add_options(create)

    def run_create(args: argparse.Namespace) -> int:
        keys = store(args)
        info = keys.create()
        _out(f"created the signing key {keys.signing_path}\nfingerprint: {info.fingerprint}")
        return EXIT_OK

    create.set_defaults(command=run_create)

    show = actions.add_parser("show", help="print the signing key's fingerprint and public key")
    add_options(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")

    def run_show(args: argparse.Namespace) -> int:
        info = store(args).show()
        if args.json:
            _out(json.dumps({"fingerprint": info.fingerprint, "public_key": info.pem}))
        else:
            _out(f"fingerprint: {info.fingerprint}\n{info.pem.rstrip()}")
        return EXIT_OK

    show.set_defaults(command=run_show)

    trust = actions.add_parser("trust", help="trust another instance's public key")
    add_options(trust)
    trust.add_argument("public_key_file", type=Path, metavar="PUBLIC_KEY_FILE")
    trust.add_argument("--name", required=True, type=_name, help="what to call the key")

    def run_trust(args: argparse.Namespace) -> int:
        key = store(args).trust(read_key_file(args.public_key_file), args.name)
        _out(f"trusted {key.name}\nfingerprint: {key.fingerprint}")
        return EXIT_OK

    trust.set_defaults(command=run_trust)

    listing = actions.add_parser("list", help="list the trusted keys")
    add_options(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    def run_list(args: argparse.Namespace) -> int:
        keys = store(args).trusted()
        if args.json:
            _out(json.dumps([{"name": k.name, "fingerprint": k.fingerprint} for k in keys]))
        elif not keys:
            _out("no trusted keys; add one with `hubwarden keys trust PUBLIC_KEY_FILE --name N`")
        else:
            width = max(len(k.name) for k in keys)
            _out("\n".join(f"{k.name:<{width}}  {k.fingerprint}" for k in keys))
        return EXIT_OK

    listing.set_defaults(command=run_list)

    untrust = actions.add_parser("untrust", help="stop trusting a key")
    add_options(untrust)
    untrust.add_argument("name", type=_name, metavar="NAME")

    def run_untrust(args: argparse.Namespace) -> int:
        store(args).untrust(args.name)
        _out(f"no longer trusting {args.name}")
        return EXIT_OK

    untrust.set_defaults(command=run_untrust)


def _name(value: str) -> str:
    """argparse type: a bad name is a usage error (exit 2)."""
    try:
        return check_name(value)
    except KeysError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


# -- export ------------------------------------------------------------------------------------

_SIZE = re.compile(r"([1-9][0-9]{0,15})([KMGT]?)(?:i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(value: str) -> int:
    """argparse type: `700M`, `4G`, `4GiB` or bytes (binary multiples, as `split -b`)."""
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f'"{value}" is not a size such as 700M, 4G or 1048576')
    size = int(match[1]) * _UNITS[match[2].upper()]
    if size < 1 << 20:
        raise argparse.ArgumentTypeError("a split size must be at least 1M")
    return size


def _spec(value: str) -> ExportSpec:
    try:
        return ExportSpec.parse(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _export(
    commands: Subparsers,
    load: Callable[[argparse.Namespace], Settings],
    add_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    parser = commands.add_parser(
        "export",
        help="write mirrored repo revisions (released files only) as a signed bundle",
        description="Write the released files of mirrored repo revisions, and this mirror's "
        "state of them, as one bundle (an OCI image layout) signed with this instance's key.",
        epilog="A revision is [TYPE:]ORG/NAME[@REVISION]: TYPE model (default), dataset or "
        "space; REVISION a branch, tag or 40-hex commit (default main). Exit 0: written; 1: "
        "refused or failed (nothing written); 2: bad usage.",
    )
    add_options(parser)
    parser.add_argument(
        "--repo",
        dest="specs",
        action="append",
        type=_spec,
        required=True,
        metavar="[TYPE:]ORG/NAME[@REV]",
        help="a revision to export (repeatable)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="PATH",
        help="the bundle to write (a tar; PATH.000… with --split; a folder with "
        "--dir); never replaced",
    )
    parser.add_argument(
        "--since",
        type=Path,
        metavar="PREVIOUS",
        help="leave out the files this earlier bundle carried (incremental)",
    )
    layout = parser.add_mutually_exclusive_group()
    layout.add_argument(
        "--split",
        type=_size,
        metavar="SIZE",
        help="cut the tar into parts of SIZE (e.g. 4G) for removable media",
    )
    layout.add_argument("--dir", action="store_true", help="write an OCI layout folder")
    parser.add_argument("--json", action="store_true", help="the report as JSON, no progress")

    def run(args: argparse.Namespace) -> int:
        settings = load(args)
        if not settings.data_dir.is_dir():
            raise DataDirMissing(settings.data_dir)
        configure_logging("ERROR" if settings.log_level != "DEBUG" else "DEBUG")
        console = None if args.json else Console(stderr=True)
        with _Bar(console) as bar:
            report = asyncio.run(
                export(
                    settings,
                    args.specs,
                    args.out,
                    actor=actor(),
                    since=args.since,
                    split=args.split,
                    directory=args.dir,
                    progress=bar.start,
                )
            )
        if args.json:
            _out(json.dumps(_export_json(report), indent=2))
        else:
            _export_table(report, Console(width=_width()))
        return EXIT_OK

    parser.set_defaults(command=run)


class _Bar:
    """One rich progress bar of bytes (nothing without a console)."""

    def __init__(self, console: Console | None, label: str = "writing") -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._label = label
        if console is not None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )

    def __enter__(self) -> _Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, total: int, label: str | None = None) -> Callable[[int], None]:
        progress = self._progress
        if progress is not None:
            if self._task is not None:
                progress.remove_task(self._task)
            self._task = progress.add_task(label or self._label, total=total)
        return self.advance

    def advance(self, count: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, count)


def _export_json(report: ExportReport) -> dict[str, object]:
    return {
        "bundle": report.paths,
        "fingerprint": report.fingerprint,
        "files_written": report.files_written,
        "bytes_written": report.bytes_written,
        "omitted": report.omitted,
        "revisions": [
            {
                "type": c.spec.repo.repo_type.value,
                "repo": c.spec.repo.repo_id,
                "revision": c.spec.revision,
                "commit": c.content.commit,
                "files": [f.path for f in c.content.files],
                "bytes": c.file_bytes,
                "left_out": [{"path": o.path, "size": o.size, "why": o.why} for o in c.left_out],
                "bom": hashlib.sha256(c.content.bom).hexdigest() if c.content.bom else None,
            }
            for c in report.revisions
        ],
    }


def _export_table(report: ExportReport, console: Console) -> None:
    table = Table(title="export", title_justify="left")
    for column in ("repo", "revision", "commit", "files", "bytes", "left out"):
        table.add_column(column, overflow="fold", no_wrap=column != "left out")
    for item in report.revisions:
        left = "\n".join(f"{o.path}: {o.why}" for o in item.left_out) or "-"
        table.add_row(
            escape(str(item.spec.repo)),
            escape(item.spec.revision),
            item.content.commit[:12],
            str(len(item.content.files)),
            str(item.file_bytes),
            escape(left[:2000]),
        )
    console.print(table)
    console.print(
        f"wrote {', '.join(report.paths)}: {report.files_written} files, "
        f"{report.bytes_written} bytes, {report.omitted} left out as carried before (--since); "
        f"signed by {report.fingerprint}"
    )


# -- import ------------------------------------------------------------------------------------


def _import(
    commands: Subparsers,
    load: Callable[[argparse.Namespace], Settings],
    add_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    parser = commands.add_parser(
        "import",
        help="check, scan and take in a signed bundle (all or nothing)",
        description="Take in a bundle another Hubwarden exported: its signature must be from a "
        "trusted key, every file is checked and scanned here, and nothing changes unless "
        "everything passes.",
        epilog="Exit 0: imported (files the local policy holds are listed as held) or nothing "
        "new; 1: refused or failed, nothing changed; 2: bad usage.",
    )
    add_options(parser)
    parser.add_argument(
        "path",
        type=Path,
        metavar="PATH",
        help="the bundle: a tar, the first of its split parts, or a folder",
    )
    parser.add_argument(
        "--trust-scans",
        action="store_true",
        help="judge the exporter's scan reports with the local policy instead of scanning again",
    )
    parser.add_argument("--json", action="store_true", help="the report as JSON, no progress")

    def run(args: argparse.Namespace) -> int:
        settings = load(args)
        if not settings.data_dir.is_dir():
            raise DataDirMissing(settings.data_dir)
        configure_logging("ERROR" if settings.log_level != "DEBUG" else "DEBUG")
        console = None if args.json else Console(stderr=True)
        path = _first_part(args.path)
        with _Bar(console, "checking") as bar:
            report = asyncio.run(
                importer.import_bundle(
                    settings,
                    path,
                    actor=actor(),
                    trust_scans=args.trust_scans,
                    progress=_Shown(bar),
                )
            )
        if args.json:
            _out(json.dumps(import_json(report), indent=2))
        else:
            _import_table(report, Console(width=_width()))
        return EXIT_OK

    parser.set_defaults(command=run)


def _first_part(path: Path) -> Path:
    """`bundle.tar.000` names the split bundle `bundle.tar` (the reader finds the parts)."""
    if not path.exists() and path.name.endswith(".000"):
        return path
    if path.suffix == ".000" and path.is_file():
        return path.with_suffix("")
    return path


class _Shown(importer.Progress):
    def __init__(self, bar: _Bar) -> None:
        self._bar = bar

    def staging(self, total: int) -> None:
        self._bar.start(total, "checking files")

    def advance(self, count: int) -> None:
        self._bar.advance(count)

    def scanning(self, total: int) -> None:
        self._bar.start(total, "scanning")

    def scanned(self) -> None:
        self._bar.advance(1)


def import_json(report: importer.ImportReport) -> dict[str, object]:
    kept = report.bom_paths  # one per BOM once written; none when the import changed nothing
    return {
        "bundle": {
            "digest": report.digest,
            "key": report.key_name,
            "fingerprint": report.fingerprint,
            "created": report.created,
            "exporter": report.exporter,
        },
        "changed": report.changed,
        "refs": [
            {
                "type": r.repo.repo_type.value,
                "repo": r.repo.repo_id,
                "ref": r.ref,
                "commit": r.commit,
                "status": r.status,
                "detail": r.detail,
            }
            for r in report.refs
        ],
        "files": [
            {
                "type": f.repo.repo_type.value,
                "repo": f.repo.repo_id,
                "ref": f.ref,
                "commit": f.commit,
                "path": f.path,
                "size": f.size,
                "sha256": f.sha256,
                "status": f.status,
                "detail": f.detail,
            }
            for f in report.files
        ],
        "signatures": [line.to_json() for line in report.signatures],
        "boms": [
            {**bom.to_json(), "kept": str(kept[i]) if i < len(kept) else None}
            for i, bom in enumerate(report.boms)
        ],
        "counts": report.counts(),
    }


def _import_table(report: importer.ImportReport, console: Console) -> None:
    refs = Table(title="refs", title_justify="left")
    for column in ("repo", "ref", "serves", "status"):
        refs.add_column(column, overflow="fold")
    for ref in report.refs:
        status = ref.status + (f": {ref.detail}" if ref.detail else "")
        refs.add_row(escape(str(ref.repo)), escape(ref.ref), ref.commit[:12], escape(status))
    files = Table(title="files", title_justify="left")
    for column in ("repo", "ref", "file", "size", "status", "why"):
        files.add_column(column, overflow="fold", no_wrap=column != "why")
    styles = {importer.Status.HELD: "red", importer.Status.WITHHELD: "yellow"}
    for line in report.files:
        style = styles.get(line.status, "green")
        files.add_row(
            escape(str(line.repo)),
            escape(line.ref or line.commit[:12]),
            escape(line.path),
            str(line.size),
            f"[{style}]{line.status}[/]",
            escape(line.detail[:300]),
        )
    console.print(refs)
    console.print(files)
    for signature in report.signatures:
        style = "green" if signature.status.value in ("verified", "unsigned") else "red"
        console.print(
            f"signature of {escape(str(signature.repo))} at {signature.commit[:12]}: "
            f"[{style}]{escape(signature.summary[:300])}[/]"
        )
    for bom in report.boms:
        console.print(
            f"AI-BOM of {escape(str(bom.repo))} at {bom.commit[:12]}: {bom.files} files, "
            f"{bom.hashed} with a sha256, matching the bundle (sha256 {bom.sha256[:12]}…)"
        )
    counts = ", ".join(f"{n} {s}" for s, n in report.counts().items() if n)
    what = "imported" if report.changed else "nothing new: this mirror holds all of it already"
    console.print(
        f"bundle {report.digest[:12]} signed by {escape(report.key_name)} "
        f"({report.fingerprint[:16]}…): {what}; {counts}"
    )


def _width() -> int | None:
    return None if sys.stdout.isatty() else 200
