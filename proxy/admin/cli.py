"""`hubwarden quarantine|waivers|repos|changes|pins|audit`: the admins' review for people on
the server.

These run over the same service as the API (`proxy.admin.review.Review`), on the configured
database and data directory, not over HTTP. The acting identity recorded is the OS user
(`os:<name>`, role `os-user`, from `local`). Tables for people (rich), `--json` for scripts.
Decisions made here reach the `[notify]` webhooks like the server's. Exit 0 done, 1 failed (one
stderr line), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import aiohttp
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.admin.commands import duration_argument, require_data_dir
from proxy.admin.filters import held_filter, parse_since
from proxy.admin.rescan import Rescanner, make_rescanner
from proxy.admin.review import AuditQuery, Review
from proxy.admin.risk import command_hold
from proxy.admin.risk_commands import register as register_risk_commands
from proxy.config import Settings
from proxy.errors import InvalidInput
from proxy.forkserver import ForkServer
from proxy.lifecycle import BlobLifecycle
from proxy.ops.notify import Notifier
from proxy.repos import RepoRef, RepoType, Revision
from proxy.scanning import ScanLimits, ScannerPool
from proxy.store import db
from proxy.store.blob_protocol import BlobStore
from proxy.store.blob_stores import open_blob_store
from proxy.store.repository import AUDIT_CONTEXT, AuditRecord, Repository
from proxy.store.review import HeldFilter, ReviewQueries
from proxy.store.signatures import SignatureRecords
from proxy.store.waivers import Waivers
from proxy.trust.blocks import Blocks
from proxy.trust.lineage import Lineage
from proxy.trust.pins import Pins
from proxy.trust.policy_gate import PolicyGate
from proxy.trust.policy_source import PolicySource
from proxy.trust.signature_files import StoredFiles
from proxy.trust.signatures import Signatures

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Job = Callable[[Review, argparse.Namespace], Awaitable[object]]
SettingsLoader = Callable[[argparse.Namespace], Settings]
AddOptions = Callable[[argparse.ArgumentParser], None]
FOLLOW_POLL_S = 1.0


def actor() -> str:
    """Who acts from the server's shell: the OS user."""
    return f"os:{getpass.getuser()}"


def register_review_commands(
    commands: Subparsers, load: SettingsLoader, add_options: AddOptions
) -> None:
    """Add `quarantine`, `repos`, `changes`, `audit`, `bom`, `signature`, `risk` and `watch` to
    the `hubwarden` parser."""
    _Builder(commands, load, add_options).build()


class _Builder:
    def __init__(self, commands: Subparsers, load: SettingsLoader, add: AddOptions) -> None:
        self._commands = commands
        self._load = load
        self._add = add

    def build(self) -> None:
        quarantine = self._group("quarantine", "held and rejected files")
        listed = self._action(quarantine, "list", "list held files", _quarantine_list,
                              json_flag=True, filters=True)  # fmt: skip
        listed.add_argument("--limit", type=int, default=200, help="at most this many (200)")
        bulk = self._action(quarantine, "bulk", "release or reject every held file a filter "
                            "matches (at most 500)", _bulk, comment=True, filters=True)  # fmt: skip
        bulk.add_argument("decision", choices=["release", "reject"], help="what to do")
        bulk.add_argument("--all", action="store_true", help="every held file (no filter)")
        self._action(quarantine, "show", "one held file, its findings and history",
                     _quarantine_show, ids=True, json_flag=True)  # fmt: skip
        release = self._action(quarantine, "release", "serve these bytes from now on",
                               _release, ids=True, comment=True)  # fmt: skip
        release.add_argument(
            "--scope", choices=["blob", "path", "repo", "org"], default="blob",
            help="also waive later held files of this path, repo or organisation (blob: only "
            "these bytes)",
        )  # fmt: skip
        release.add_argument("--expires", type=duration_argument, metavar="30d|12h|90m",
                             help="when the waiver ends (default: never)")  # fmt: skip
        self._action(quarantine, "reject", "refuse these bytes for good", _reject, ids=True,
                     comment=True)  # fmt: skip
        self._action(quarantine, "rescan", "scan again with today's scanners and policy",
                     _rescan, ids=True, comment=True)  # fmt: skip
        waivers = self._group("waivers", "releases that also cover later files")
        self._action(waivers, "list", "list waivers", _waivers_list, json_flag=True)
        revoke = self._action(waivers, "revoke", "end a waiver", _waiver_revoke, comment=True)
        revoke.add_argument("waiver_id", type=int, metavar="ID", help="the waiver id")
        repos = self._group("repos", "blocked repos")
        self._action(repos, "list", "list blocked repos", _repos_list, json_flag=True)
        self._action(repos, "block", "block a repo", _block, repo=True, comment=True)
        self._action(repos, "unblock", "lift a repo's block", _unblock, repo=True, comment=True)
        changes = self._group("changes", "pinned changes waiting for review")
        self._action(changes, "list", "list waiting changes", _changes_list, json_flag=True)
        self._action(changes, "approve", "re-pin and serve the new head", _approve, repo=True,
                     ref=True, comment=True)  # fmt: skip
        self._action(changes, "reject", "keep serving the approved commit", _reject_change,
                     repo=True, ref=True, comment=True)  # fmt: skip
        pins = self._group("pins", "approved hashes by path")
        self._action(pins, "list", "the pins of a repo", _pins_list, repo=True, json_flag=True)
        bom = self._commands.add_parser(
            "bom", help="the CycloneDX 1.6 ML-BOM of a mirrored revision (JSON)"
        )
        self._add(bom)
        bom.add_argument(
            "spec", metavar="REPO[@REVISION]", help="org/name, a branch, tag or commit"
        )
        bom.add_argument("--type", choices=[t.value for t in RepoType], default="model")
        bom.add_argument("--out", "-o", type=Path, metavar="FILE", help="write it here, not stdout")
        self._bind(bom, _bom)
        signature = self._commands.add_parser(
            "signature", help="the model signature of a mirrored revision and its files"
        )
        self._add(signature)
        signature.add_argument(
            "spec", metavar="REPO[@REVISION]", help="org/name, a branch, tag or commit"
        )
        signature.add_argument("--type", choices=[t.value for t in RepoType], default="model")
        signature.add_argument("--json", action="store_true", help="JSON for scripts")
        self._bind(signature, _signature)
        audit = self._commands.add_parser("audit", help="the audit log, newest last")
        self._add(audit)
        audit.add_argument("--action", help="only this action, e.g. review.released")
        audit.add_argument("--actor", help="only this actor, e.g. token:alice or os:root")
        audit.add_argument("--repo", metavar="REPO", help="only events about this repo")
        audit.add_argument("--type", choices=[t.value for t in RepoType], default="model")
        audit.add_argument("--since", help="7d, 12h, 90m or an ISO time")
        audit.add_argument("--limit", type=int, default=100, help="at most this many (100)")
        audit.add_argument("--follow", "-f", action="store_true",
                           help="then print new events as they come, until ^C")  # fmt: skip
        audit.add_argument("--json", action="store_true", help="one JSON object per line")
        self._bind(audit, _audit)
        register_risk_commands(self._commands, self._load, self._add)  # risk, watch status

    def _group(self, name: str, help_text: str) -> Subparsers:
        parser = self._commands.add_parser(name, help=help_text)
        return parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    def _action(
        self,
        group: Subparsers,
        name: str,
        help_text: str,
        job: Job,
        **wants: bool,
    ) -> argparse.ArgumentParser:
        parser = group.add_parser(name, help=help_text)
        self._add(parser)
        if wants.get("ids"):
            parser.add_argument("review_id", type=int, metavar="ID", help="the review id")
        if wants.get("repo"):
            parser.add_argument("repo", metavar="REPO", help="namespace/name")
            parser.add_argument("--type", choices=[t.value for t in RepoType], default="model")
        if wants.get("ref"):
            parser.add_argument("ref", metavar="REF", help="the branch or tag, e.g. main")
        if wants.get("comment"):
            parser.add_argument("--comment", "-m", required=True, help="why (audited)")
        if wants.get("json_flag"):
            parser.add_argument("--json", action="store_true", help="machine-readable output")
        if wants.get("filters"):
            parser.add_argument("--state", choices=["quarantined", "rejected"])
            parser.add_argument("--repo", help="namespace/name, or namespace/ for all of it")
            parser.add_argument("--format", dest="file_format", help="pickle, gguf, zip, …")
            parser.add_argument("--severity", help="worst finding at least info, low, medium, "
                                "high or critical")  # fmt: skip
            parser.add_argument("--since", help="changed since: 7d, 12h, 90m or an ISO time")
        self._bind(parser, job)
        return parser

    def _bind(self, parser: argparse.ArgumentParser, job: Job) -> None:
        load = self._load

        def command(args: argparse.Namespace) -> int:
            settings = load(args)
            require_data_dir(settings)
            try:
                asyncio.run(_run(settings, job, args))
            except KeyboardInterrupt:  # `audit --follow` ends so
                return 0
            return 0

        parser.set_defaults(command=command)


async def _run(settings: Settings, job: Job, args: argparse.Namespace) -> None:
    AUDIT_CONTEXT.set({"role": "os-user", "remote": "local"})
    engine = db.create_engine(settings.effective_database_url)
    try:
        await db.prepare_schema(engine, upgrade=settings.upgrade_on_start)
        async with (
            _notifier(settings, engine) as notifier,
            open_blob_store(settings.data_dir, settings.store) as store,  # [store]: local or S3
        ):
            await _review_job(settings, engine, notifier, job, args, store=store)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _notifier(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Notifier | None]:
    """The `[notify]` webhooks, as the server has them, so that a decision made here is told
    too; the queued events go out before the command ends."""
    if not settings.notify.webhook_urls:
        yield None
        return
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        repos = Repository(db.session_maker(engine), db.read_session_maker(engine))
        notifier = Notifier(settings.notify, session, repos)
        notifier.start()
        try:
            yield notifier
        finally:
            await notifier.close()


async def _review_job(
    settings: Settings,
    engine: AsyncEngine,
    notifier: Notifier | None,
    job: Job,
    args: argparse.Namespace,
    *,
    store: BlobStore,
) -> None:
    hook = notifier.on_audit if notifier is not None else None
    repository = Repository(db.session_maker(engine), db.read_session_maker(engine), on_audit=hook)
    blocks = Blocks(repository, settings.contact)
    waivers = Waivers(db.session_maker(engine), db.read_session_maker(engine))
    forks = ForkServer(store.tmp_dir)
    signatures = Signatures(  # from what is stored only: commands never fetch
        SignatureRecords(db.session_maker(engine), db.read_session_maker(engine)),
        settings.signing,
        offline=True,
        files=StoredFiles(repository, store),
    )
    review = Review(
        repository,
        ReviewQueries(db.session_maker(engine), db.read_session_maker(engine)),
        BlobLifecycle(repository, store, blocks, settings.contact),
        blocks,
        Pins(repository, settings.policy.unpinned_paths),
        _rescanner(settings, engine, repository, store, waivers, signatures, forks),
        waivers,
        signatures=signatures,
    )
    try:
        await job(review, args)
    finally:
        await forks.close()  # started by the first rescan, if any


def _rescanner(
    settings: Settings,
    engine: AsyncEngine,
    repository: Repository,
    store: BlobStore,
    waivers: Waivers,
    signatures: Signatures,
    forks: ForkServer,
) -> Rescanner:
    """The scanner workers (forks of one process that imported the scanners, as in the
    server) and the policy in force, as the server uses them."""
    scan = settings.scan
    limits = ScanLimits(scan.timeout_s, scan.max_memory_mb, scan.max_cpu_s, 1)
    pool = ScannerPool(limits, forks=forks)
    lineage = Lineage(repository, None, refs_ttl_s=0)  # a verdict needs no history
    policy = PolicyGate(repository, lineage, PolicySource(settings.policy).current, "", waivers,
                        signatures=signatures)  # fmt: skip
    # max_risk reads the repo's risk card as `hubwarden risk` computes it (nothing fetched).
    policy.use_risk(command_hold(settings, engine, repository, store))
    return make_rescanner(repository, store, pool, policy)


def _repo(args: argparse.Namespace) -> RepoRef:
    return RepoRef.parse(RepoType(args.type), args.repo)


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}


def _console() -> Console:
    """Colours on a terminal; plain and wide enough for whole ids and paths otherwise."""
    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, width=None if tty else 240, no_color=not tty, highlight=False)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], title: str = "") -> None:
    """An aligned table for people (rich); a severity cell is coloured."""
    table = Table(*header, title=title or None, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    _console().print(table)


def _cell(value: object) -> str:
    text = escape(str(value))  # rich markup is ours only, never a file name's
    style = _SEVERITY_STYLE.get(text)
    return f"[{style}]{text}[/]" if style else text


def _filter(args: argparse.Namespace) -> HeldFilter:
    return held_filter(
        state=getattr(args, "state", None),
        repo=args.repo,
        file_format=args.file_format,
        severity=args.severity,
        since=args.since,
    )


def _json(value: Any) -> None:
    print(json.dumps(value, default=str, indent=2))


async def _quarantine_list(review: Review, args: argparse.Namespace) -> None:
    held = await review.held(_filter(args), limit=max(1, min(args.limit, 1000)))
    if args.json:
        _json([
            {"id": b.pk, "repo": str(b.repo) if b.repo else None, "path": b.path, "size": b.size,
             "sha256": b.sha256, "state": b.state.value, "format": b.file_format,
             "commit": b.commit or None, "revisions": list(b.revisions),
             "worst_finding": None if b.worst is None else {
                 "severity": b.worst.severity.value, "code": b.worst.code},
             "reason": b.reason, "requests": b.requests, "since": b.updated_at}
            for b in held
        ])  # fmt: skip
        return
    rows = [(b.pk, b.state.value, b.repo or "-", b.path, b.size,
             b.worst.severity.value if b.worst else "-", b.worst.code if b.worst else b.reason,
             _when(b.updated_at), b.requests or "") for b in held]  # fmt: skip
    _table(("ID", "STATE", "REPO", "PATH", "SIZE", "WORST", "FINDING", "SINCE", "ASKED"), rows)
    print(f"{len(held)} held or rejected files")


async def _bulk(review: Review, args: argparse.Namespace) -> None:
    found = _filter(args)
    if found == HeldFilter() and not args.all:
        raise InvalidInput(
            "filter", "", "is empty: name what to decide (--repo, --format, --severity, "
            "--since) or pass --all to decide every held file"
        )  # fmt: skip
    result = await review.bulk(found, args.decision, actor(), args.comment)
    verb = "released" if args.decision == "release" else "rejected"
    files = "file" if len(result.decided) == 1 else "files"
    print(f"{len(result.decided)} {files} {verb}: {', '.join(map(str, result.decided)) or '-'}")
    for pk, error in result.failed:
        print(f"review {pk} not {verb}: {error}")
    if result.more:
        print("more files match: run the same command again for the next 500")


async def _quarantine_show(review: Review, args: argparse.Namespace) -> None:
    item = await review.item(args.review_id)
    blob = item.blob
    if args.json:
        _json({
            "id": blob.pk, "repo": str(blob.repo) if blob.repo else None, "path": blob.path,
            "size": blob.size, "sha256": blob.sha256, "state": blob.state.value,
            "format": blob.file_format, "reason": blob.reason,
            "findings": [f.to_dict() for f in item.findings],
            "history": [{"at": e.at, "actor": e.actor, "action": e.action,
                         "details": e.details} for e in item.history],
        })  # fmt: skip
        return
    print(f"review {blob.pk}: {blob.repo or '-'} {blob.path} ({blob.state.value})")
    print(f"  sha256 {blob.sha256}, {blob.size} bytes, format {blob.file_format or '?'}")
    print(f"  why: {blob.reason}")
    for finding in item.findings:
        print(f"  [{finding.severity.value}] {finding.code}: {finding.message}")
    for event in item.history:
        print(
            f"  {_when(event.at)} {event.actor} {event.action} {event.details.get('comment', '')}"
        )


async def _release(review: Review, args: argparse.Namespace) -> None:
    waiver = await review.release(
        args.review_id, actor(), args.comment, scope=args.scope, expires_in=args.expires
    )
    print(f"review {args.review_id} released")
    if waiver is not None:
        until = _when(waiver.expires_at) if waiver.expires_at else "revoked"
        print(f"waiver {waiver.pk} covers {waiver.covers} until {until}")


async def _waivers_list(review: Review, args: argparse.Namespace) -> None:
    waivers = await review.waivers()
    if args.json:
        _json([{"id": w.pk, "covers": w.covers, "scope": w.scope.value, "by": w.created_by,
                "comment": w.comment, "created_at": w.created_at, "expires_at": w.expires_at,
                "revoked_at": w.revoked_at} for w in waivers])  # fmt: skip
        return
    now = dt.datetime.now(dt.UTC)
    rows = [(w.pk, "active" if w.is_active(now) else "ended", w.covers, w.created_by,
             _when(w.expires_at) if w.expires_at else "-", w.comment) for w in waivers]  # fmt: skip
    _table(("ID", "STATE", "COVERS", "BY", "EXPIRES", "WHY"), rows)


async def _waiver_revoke(review: Review, args: argparse.Namespace) -> None:
    await review.revoke_waiver(args.waiver_id, actor(), args.comment)
    print(f"waiver {args.waiver_id} revoked")


async def _reject(review: Review, args: argparse.Namespace) -> None:
    await review.reject(args.review_id, actor(), args.comment)
    print(f"review {args.review_id} rejected")


async def _rescan(review: Review, args: argparse.Namespace) -> None:
    state = await review.rescan(args.review_id, actor(), args.comment)
    print(f"review {args.review_id} scanned again: {state.value}")


async def _repos_list(review: Review, args: argparse.Namespace) -> None:
    blocked = await review.blocked()
    if args.json:
        _json([{"repo": str(b.repo.ref), "type": b.repo.ref.repo_type.value, "reason": b.reason,
                "detail": b.detail, "since": b.since, "by": b.by} for b in blocked])  # fmt: skip
        return
    rows = [(b.repo.ref, b.reason, _when(b.since), b.by, b.detail) for b in blocked]
    _table(("REPO", "REASON", "SINCE", "BY", "DETAIL"), rows)
    print(f"{len(blocked)} blocked repos")


async def _block(review: Review, args: argparse.Namespace) -> None:
    await review.block(_repo(args), actor(), args.comment)
    print(f"{_repo(args)} blocked")


async def _unblock(review: Review, args: argparse.Namespace) -> None:
    await review.unblock(_repo(args), actor(), args.comment)
    print(f"{_repo(args)} unblocked")


async def _changes_list(review: Review, args: argparse.Namespace) -> None:
    changes = await review.changes()
    if args.json:
        _json([{"repo": str(c.held.repo.ref), "ref": c.held.name, "head": c.held.head,
                "approved": c.held.approved,
                "changed": [{"path": p, "pinned": o, "new": n} for p, o, n in c.changed]}
               for c in changes])  # fmt: skip
        return
    rows = [(c.held.repo.ref, c.held.name or "(default)", c.held.approved[:12], c.held.head[:12],
             ", ".join(p for p, _, _ in c.changed)) for c in changes]  # fmt: skip
    _table(("REPO", "REF", "SERVED", "WAITING", "CHANGED FILES"), rows)
    print(f"{len(changes)} pinned changes waiting")


async def _approve(review: Review, args: argparse.Namespace) -> None:
    await review.approve_change(_repo(args), args.ref, actor(), args.comment)
    print(f"{_repo(args)}@{args.ref} now serves its new head")


async def _reject_change(review: Review, args: argparse.Namespace) -> None:
    await review.reject_change(_repo(args), args.ref, actor(), args.comment)
    print(f"{_repo(args)}@{args.ref} keeps its approved commit")


async def _pins_list(review: Review, args: argparse.Namespace) -> None:
    pins = await review.pins(_repo(args))
    if args.json:
        _json([{"path": p.path, "etag": p.etag, "commit": p.commit} for p in pins])
        return
    _table(("PATH", "COMMIT", "HASH"), [(p.path, p.commit[:12], p.etag) for p in pins])
    print(f"{len(pins)} pins")


async def _bom(review: Review, args: argparse.Namespace) -> None:
    repo_id, _, revision = str(args.spec).partition("@")
    repo = RepoRef.parse(RepoType(args.type), repo_id)
    revision = revision or "main"
    Revision.parse(revision)  # raises InvalidInput on a hostile name
    text = await review.bom(repo, revision)
    if args.out is None:
        print(text)
        return
    args.out.write_text(text + "\n")
    print(f"wrote the ML-BOM of {repo.repo_id}@{revision} to {args.out}")


async def _signature(review: Review, args: argparse.Namespace) -> None:
    repo_id, _, revision = str(args.spec).partition("@")
    repo = RepoRef.parse(RepoType(args.type), repo_id)
    revision = revision or "main"
    Revision.parse(revision)  # raises InvalidInput on a hostile name
    report = await review.signature(repo, revision)
    if args.json:
        _json({"revision": revision, **report.to_json()})
        return
    print(f"{repo.repo_id}@{revision} ({report.commit[:12]}): {report.summary}")
    if report.required:
        print("a trusted signature is required for this repo ([signing] require_signature)")
    _table(("PATH", "STANDING"), [(path, standing.value) for path, standing in report.files])
    for finding in report.findings:
        print(f"{finding.code}: {finding.message}")


async def _audit(review: Review, args: argparse.Namespace) -> None:
    repo = _repo(args) if args.repo else None
    since = parse_since(args.since, dt.datetime.now(dt.UTC)) if args.since else None
    found = AuditQuery(action=args.action, actor=args.actor, repo=repo, since=since)
    events = await review.audit(found, limit=max(1, min(args.limit, 10_000)))
    for event in events:
        _print_event(event, as_json=args.json)
    if not args.follow:
        return
    after = events[-1].pk if events else await _last_event(review)
    while True:
        sys.stdout.flush()
        await asyncio.sleep(FOLLOW_POLL_S)
        for event in await review.audit(found, limit=1000, after=after):
            _print_event(event, as_json=args.json)
            after = event.pk


async def _last_event(review: Review) -> int:
    newest = await review.audit(limit=1)
    return newest[-1].pk if newest else 0


def _print_event(event: AuditRecord, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"id": event.pk, "at": event.at, "actor": event.actor,
                          "action": event.action, "repo_pk": event.repo_pk,
                          "blob_pk": event.blob_pk, "details": event.details},
                         default=str), flush=True)  # fmt: skip
    else:
        print(f"{_when(event.at)}  {event.actor:<16}  {event.action:<20}  "
              f"{json.dumps(event.details, default=str)[:160]}", flush=True)  # fmt: skip
