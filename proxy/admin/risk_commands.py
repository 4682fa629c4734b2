"""`hubwarden risk REPO[@REV]` and `hubwarden watch status`: the risk card of a mirrored revision
and what the upstream watch saw, for people on the server (rich tables) or scripts (`--json`).

They run on the configured database and data directory, not over HTTP, through the same
services as the admin API (`proxy.admin.risk.RiskCards`, `proxy.store.watches.WatchRecords`).
Online, the risk card makes the same few upstream calls as the API's (with the service token);
offline, it is computed from what was recorded. Exit 0 done, 1 failed (one stderr line), 2 bad
usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.admin.commands import require_data_dir
from proxy.admin.risk import command_cards, upstream_facts_of
from proxy.admin.updates import ChangedView, UpdateView, updates, watch_state
from proxy.config import Settings
from proxy.repos import RepoRef, RepoType, Revision
from proxy.store import db
from proxy.store.blob_stores import open_blob_store
from proxy.store.repository import Repository
from proxy.store.watches import WatchRecord, WatchRecords
from proxy.trust.risk import RiskCard
from scanners.report import JsonValue

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
SettingsLoader = Callable[[argparse.Namespace], Settings]
AddOptions = Callable[[argparse.ArgumentParser], None]
_RATING_STYLE = {"high": "bold red", "medium": "yellow", "low": "green"}


def register(commands: Subparsers, load: SettingsLoader, add_options: AddOptions) -> None:
    """Add `risk` and `watch status` to the `hubwarden` parser."""
    risk = commands.add_parser(
        "risk", help="the risk card of a mirrored revision (five dimensions, low/medium/high)"
    )
    add_options(risk)
    risk.add_argument("spec", metavar="REPO[@REVISION]", help="org/name, a branch, tag or commit")
    risk.add_argument("--type", choices=[t.value for t in RepoType], default="model")
    risk.add_argument("--json", action="store_true", help="machine-readable output")
    risk.set_defaults(command=lambda args: _run(load(args), _risk, args))
    watch = commands.add_parser("watch", help="the upstream watch of mirrored branches and tags")
    actions = watch.add_subparsers(title="actions", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status",
        help="watched refs, last check and what changed",
        description="The JSON is GET /admin/api/updates?all=true's; with --changed, "
        "GET /admin/api/updates's.",
    )
    add_options(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--changed", action="store_true", help="only the refs with a change noticed"
    )
    status.set_defaults(command=lambda args: _run(load(args), _watch_status, args))


Job = Callable[[Settings, AsyncEngine, argparse.Namespace], Awaitable[None]]


def _run(settings: Settings, job: Job, args: argparse.Namespace) -> int:
    require_data_dir(settings)

    async def run() -> None:
        engine = db.create_engine(settings.effective_database_url)
        try:
            await db.prepare_schema(engine, upgrade=settings.upgrade_on_start)
            await job(settings, engine, args)
        finally:
            await engine.dispose()

    asyncio.run(run())
    return 0


async def _risk(settings: Settings, engine: AsyncEngine, args: argparse.Namespace) -> None:
    repo_id, _, revision = str(args.spec).partition("@")
    repo = RepoRef.parse(RepoType(args.type), repo_id)
    revision = revision or "main"
    Revision.parse(revision)  # raises InvalidInput on a hostile name
    sessions, reads = db.session_maker(engine), db.read_session_maker(engine)
    repository = Repository(sessions, reads)
    async with (
        open_blob_store(settings.data_dir, settings.store) as store,  # [store]: local or S3
        upstream_facts_of(settings) as facts,
    ):
        card = await command_cards(settings, engine, repository, store, facts).card(repo, revision)
    if args.json:
        sys.stdout.write(json.dumps(card.to_json(), indent=2) + "\n")
    else:
        render_card(card, _console())


def _console() -> Console:
    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, width=None if tty else 160, no_color=not tty, highlight=False)


def _fact_lines(facts: dict[str, JsonValue]) -> str:
    lines = []
    for key, value in facts.items():
        if value is None or value == [] or value == "":
            continue
        if isinstance(value, list):
            text = ", ".join(
                json.dumps(v) if isinstance(v, dict) else str(v) for v in value[:8]
            ) + (f" (+{len(value) - 8})" if len(value) > 8 else "")
        elif isinstance(value, dict):
            text = ", ".join(f"{k}={v}" for k, v in value.items())
        else:
            text = str(value)
        lines.append(f"{key}: {text}")
    return escape("\n".join(lines))  # rich markup is ours only, never a file name's


def render_card(card: RiskCard, console: Console) -> None:
    """The card as a table: one row per dimension, its rating, why, and the facts."""
    style = _RATING_STYLE[card.overall.value]
    title = (
        f"risk card: {card.repo.repo_type.value} {escape(card.repo.repo_id)}@"
        f"{escape(card.revision)} ({card.commit[:12]}) - overall [{style}]{card.overall.value}[/]"
        + (" (offline: from recorded facts)" if card.offline else "")
    )
    table = Table(title=title, title_justify="left", show_lines=True)
    for column in ("dimension", "rating", "why", "facts"):
        table.add_column(column, overflow="fold")
    for d in card.dimensions:
        rating = f"[{_RATING_STYLE[d.rating.value]}]{d.rating.value}[/]"
        table.add_row(d.name.value, rating, escape(d.summary), _fact_lines(d.facts))
    console.print(table)
    for text in card.disagreements:
        console.print(f"the Hub's scan disagrees: {escape(text)}")
    if card.max_risk is None:
        return
    if card.held_for:
        names = ", ".join(f"{d.name.value} {d.settled_rating.value}" for d in card.held_for)
        console.print(
            f"above the policy's max_risk ({card.max_risk.value}): its files are held for "
            f"{names}; release or waive them in the review queue, or raise \\[policy] max_risk"
        )
    elif card.exceeds_policy:
        console.print(
            f"above the policy's max_risk ({card.max_risk.value}) only for files not scanned "
            "yet: each is judged by its own scan when fetched"
        )
    else:
        console.print(f"within the policy's max_risk ({card.max_risk.value})")


async def _watch_status(settings: Settings, engine: AsyncEngine, args: argparse.Namespace) -> None:
    sessions, reads = db.session_maker(engine), db.read_session_maker(engine)
    watched = await updates(
        WatchRecords(sessions, reads), Repository(sessions, reads), changed_only=args.changed
    )
    if args.json:
        sys.stdout.write(json.dumps([w.to_json() for w in watched], indent=2) + "\n")
        return
    render_watch(watched, settings, _console())


def _when(record: WatchRecord) -> str:
    return record.checked_at.strftime("%Y-%m-%d %H:%M") if record.checked_at else "never"


def _file_text(view: ChangedView) -> str:
    said = [f"ours: {view.state}"] if view.state else []
    said += [f"Hub: {view.file.hub}"] if view.file.hub else []
    text = f"{view.file.path} ({', '.join([view.file.change, *said])})"
    return text + (" DISAGREE" if view.disagreement else "")


def render_watch(watched: list[UpdateView], settings: Settings, console: Console) -> None:
    table = Table(title=f"upstream watch: {watch_state(settings)}", title_justify="left")
    for column in ("repo", "ref", "checked", "upstream head", "status", "last change",
                   "changed files", "prefetched", "problem"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for view in watched:
        w = view.record
        commits = f", {view.new_commits} commit(s)" if view.new_commits is not None else ""
        change = (
            f"{(w.previous or '')[:12]} -> {(w.upstream_head or '')[:12]} "
            f"at {w.noticed_at.strftime('%Y-%m-%d %H:%M')}{commits}"
            if w.noticed_at
            else "-"
        )
        files = ", ".join(_file_text(c) for c in view.changed[:5])
        files += f" (+{len(view.changed) - 5})" if len(view.changed) > 5 else ""
        prefetched = ", ".join(f"{n} {v}" for v, n in w.prefetched.items())
        table.add_row(
            escape(f"{w.repo.ref.repo_type.value} {w.repo.ref.repo_id}"),
            escape(w.name or "(default)"), _when(w), (w.upstream_head or "-")[:12],
            w.status.value, change, escape(files or "-"), escape(prefetched or "-"),
            escape(w.detail or ""),
        )  # fmt: skip
    console.print(table)
    console.print(f"{len(watched)} watched branches and tags")
