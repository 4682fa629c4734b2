"""The application factory: the only place that builds services and wires them together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.admin.access_list import AccessList
from proxy.admin.api import admin_api
from proxy.admin.identity import Identities
from proxy.admin.pages import add_admin_pages
from proxy.admin.prefetch import Prefetcher
from proxy.admin.rescan import make_rescanner
from proxy.admin.review import Review
from proxy.admin.risk import RiskCards, recorded_signatures
from proxy.catalog import Catalog
from proxy.config import Settings
from proxy.delivery import Delivery
from proxy.forkserver import ForkServer
from proxy.hub.context import SERVICES
from proxy.hub.cursors import cursor_signer
from proxy.hub.errors import error_middleware
from proxy.hub.flights import FLIGHTS, Flights
from proxy.hub.monitoring import (
    METRICS,
    MONITORING,
    Monitoring,
    add_monitoring_routes,
    observe_requests,
    on_answer,
)
from proxy.hub.routes import add_hub_routes
from proxy.hub.server import keepalive_limit
from proxy.ingest import Ingestor, IngestSettings
from proxy.lifecycle import BlobLifecycle
from proxy.ops.health import (
    ReadinessProbe,
    database_check,
    offline_check,
    store_check,
    upstream_check,
)
from proxy.ops.metrics import Metrics
from proxy.ops.notify import Notifier
from proxy.ops.tallies import TallyReader
from proxy.ops.watch import Watch
from proxy.scanning import (
    FeedScanFactory,
    InProcessStreamScans,
    ScanLimits,
    ScannerPool,
    StreamScans,
    kill_leftover_workers,
)
from proxy.services import Services
from proxy.store import db
from proxy.store.blob_protocol import BlobStore
from proxy.store.blob_stores import open_blob_store
from proxy.store.blobs import LocalBlobStore
from proxy.store.repository import Repository
from proxy.store.review import ReviewQueries
from proxy.store.signatures import SignatureRecords
from proxy.store.waivers import Waivers
from proxy.store.watches import WatchRecords
from proxy.stream_scans import StreamLimits, StreamScanPool
from proxy.trust.blocks import Blocks
from proxy.trust.gate import Gate
from proxy.trust.lineage import Lineage
from proxy.trust.pins import Pins
from proxy.trust.policy_gate import PolicyGate
from proxy.trust.policy_source import PolicySource
from proxy.trust.risk_hold import RiskHold
from proxy.trust.signature_files import MirrorFiles
from proxy.trust.signatures import Signatures
from proxy.trust.waiver_sweep import INTERVAL_S as WAIVER_SWEEP_INTERVAL_S
from proxy.upstream import Upstream, UpstreamConfig
from proxy.upstream_facts import UpstreamFacts

logger = logging.getLogger(__name__)

ENGINE = web.AppKey("engine", AsyncEngine)
HTTP = web.AppKey("http", aiohttp.ClientSession)
NOTIFIER = web.AppKey("notifier", Notifier)
STREAM_SCANS = web.AppKey("stream_scans", StreamScanPool)
FORKS = web.AppKey("forks", ForkServer)
BLOB_STORE: web.AppKey[BlobStore] = web.AppKey("blob_store")
MAX_REQUEST_BODY_BYTES = 1024 * 1024
CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def create_app(
    settings: Settings,
    *,
    stream_scan: FeedScanFactory | None = None,
    metrics_dir: Path | None = None,
) -> web.Application:
    """Build the Hubwarden application; resources start and stop with the app's cleanup_ctx.

    `stream_scan` replaces the stream scan worker pool by scans run in this process: for
    fault-injection tests only (a hostile file could then take the server down).
    `metrics_dir`: `/metrics` counts every worker's values written there (`serve --workers`)."""
    # this app's own registry: never prometheus_client's global one
    metrics = Metrics(shared_dir=metrics_dir)
    app = web.Application(
        middlewares=[observe_requests(metrics), keepalive_limit, error_middleware],
        client_max_size=MAX_REQUEST_BODY_BYTES,
    )
    app[METRICS] = metrics
    app.on_response_prepare.append(on_answer(metrics))
    app.cleanup_ctx.append(_database(settings))
    app.cleanup_ctx.append(_http_session(settings))
    if settings.notify.webhook_urls:
        app.cleanup_ctx.append(_notifier(settings))
    app.cleanup_ctx.append(_stream_scans(settings))
    app.cleanup_ctx.append(_blob_store(settings))
    app.cleanup_ctx.append(_services(settings, stream_scan))
    app.cleanup_ctx.append(cursor_signer(settings))
    app.cleanup_ctx.append(_monitoring(settings))
    app[FLIGHTS] = Flights()  # resolve GETs in flight, shared by identical ones
    app.on_shutdown.append(_drain_ingests)
    app.add_subapp("/admin/api/", admin_api())  # before the hub's catch-all write route
    add_admin_pages(app)  # /admin/ pages, likewise before the hub routes
    add_monitoring_routes(app, settings.metrics)  # /readyz, /metrics: before the catch-alls
    add_hub_routes(app)
    return app


async def _drain_ingests(app: web.Application) -> None:
    """On shutdown, before open connections are waited for: ingests in flight get
    `ingest.shutdown_grace_s` to finish, then end cleanly (issue 10)."""
    services = app.get(SERVICES)
    if services is not None:
        await services.ingestor.drain()


def _database(settings: Settings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        engine = db.create_engine(settings.effective_database_url)
        try:
            if settings.upgrade_on_start:
                await db.upgrade_schema(engine)
            elif not await db.schema_is_current(engine):
                raise db.SchemaOutdated()
            app[ENGINE] = engine
            yield
        finally:
            await engine.dispose()

    return ctx


def _http_session(settings: Settings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=100, ttl_dns_cache=300)
        session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            trace_configs=[app[METRICS].upstream_trace()],  # upstream requests and errors
        )
        app[HTTP] = session
        try:
            yield
        finally:
            await session.close()

    return ctx


def _notifier(settings: Settings) -> CleanupCtx:
    """The webhooks (`[notify]`): their own session (no cookie jar, a few connections, never
    the upstream's) and the task that sends, stopped before the database goes."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        engine = app[ENGINE]
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=10), cookie_jar=aiohttp.DummyCookieJar()
        )
        repos = Repository(db.session_maker(engine), db.read_session_maker(engine))
        notifier = Notifier(settings.notify, session, repos)
        app[NOTIFIER] = notifier
        notifier.start()
        try:
            yield
        finally:
            await notifier.close()
            await session.close()

    return ctx


def _stream_scans(settings: Settings) -> CleanupCtx:
    """The stream scan workers (`[scan] stream_workers`), started after any a killed run left
    behind are gone, and killed after the ingests that use them have stopped."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        scan_dir = LocalBlobStore(settings.data_dir).tmp_dir
        await asyncio.to_thread(kill_leftover_workers, scan_dir)  # a killed run's workers
        scan = settings.scan
        limits = StreamLimits(
            workers=scan.stream_workers,
            jobs_per_worker=scan.stream_worker_jobs,
            max_memory_mb=scan.max_memory_mb,
            max_cpu_s=scan.max_cpu_s,
            timeout_s=scan.timeout_s,
        )
        forks = ForkServer(scan_dir)
        pool = StreamScanPool(limits, scan_dir, forks)
        try:
            await forks.start()
            await pool.start()
            app[FORKS] = forks
            app[STREAM_SCANS] = pool
            yield
        finally:
            await pool.close()
            await forks.close()

    return ctx


def _blob_store(settings: Settings) -> CleanupCtx:
    """The blob store `[store]` names (its S3 connections closed at the end), cleaned of what a
    stopped run left before anything is ingested."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_blob_store(settings.data_dir, settings.store) as store:
            await store.start()
            app[BLOB_STORE] = store
            yield

    return ctx


def _monitoring(settings: Settings) -> CleanupCtx:
    """What /metrics and /readyz read: database counts and readiness checks, each cached a few
    seconds (pollers cost one read per interval), their reads in progress stopped at the end."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        engine = app[ENGINE]
        upstream = (
            offline_check()
            if settings.offline
            else upstream_check(app[HTTP], settings.upstream, timeout_s=2.0)
        )
        checks = {
            "database": database_check(engine),
            "store": store_check(app[BLOB_STORE]),
            "upstream": upstream,
        }
        monitoring = Monitoring(TallyReader(db.read_session_maker(engine)), ReadinessProbe(checks))
        app[MONITORING] = monitoring
        try:
            yield
        finally:
            await monitoring.readiness.close()
            await monitoring.tallies.close()

    return ctx


def _upstream(settings: Settings, session: aiohttp.ClientSession) -> Upstream | None:
    if settings.offline:
        return None
    config = UpstreamConfig.from_settings(settings)
    return Upstream(config, session)


def _trust(
    settings: Settings,
    repository: Repository,
    upstream: Upstream | None,
    waivers: Waivers,
    signatures: Signatures,
) -> tuple[Gate, PolicyGate]:
    """The trust rules: blocks, pins by lineage, the policy in force (re-read on change), the
    reviewers' waivers and the model signatures."""
    policies = PolicySource(settings.policy)  # raises ConfigError on a bad policy file
    lineage = Lineage(repository, upstream, refs_ttl_s=settings.fetch.metadata_ttl_s)
    policy_gate = PolicyGate(
        repository, lineage, policies.current, settings.contact, waivers, signatures=signatures
    )
    gate = Gate(
        repository,
        Blocks(repository, settings.contact, settings.admin.held_message),
        Pins(repository, lambda: policies.current().settings.unpinned_paths),
        lineage,
        pinned_change=lambda: policies.current().settings.pinned_change,
        contact=settings.contact,
        policy=policy_gate,
    )
    return gate, policy_gate


def _services(settings: Settings, stream_scan: FeedScanFactory | None) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        engine = app[ENGINE]
        notifier = app.get(NOTIFIER)
        repository = Repository(
            db.session_maker(engine),
            db.read_session_maker(engine),
            on_audit=notifier.on_audit if notifier is not None else None,
        )
        store = app[BLOB_STORE]
        upstream = _upstream(settings, app[HTTP])
        waivers = Waivers(db.session_maker(engine), db.read_session_maker(engine))
        signatures = Signatures(  # raises ConfigError on an unusable trusted key or trust config
            SignatureRecords(db.session_maker(engine), db.read_session_maker(engine)),
            settings.signing,
            offline=settings.offline,
        )
        gate, policy_gate = _trust(settings, repository, upstream, waivers, signatures)
        lifecycle = BlobLifecycle(
            repository,
            store,
            gate.blocks,
            settings.contact,
            public_url=settings.public_url,
            notice=settings.admin.held_message,
            lease_s=settings.ingest.lease_s,
        )
        await lifecycle.forget_unfinished()
        identities = Identities(
            db.session_maker(engine), repository, read_sessions=db.read_session_maker(engine)
        )
        access_list = AccessList(
            db.session_maker(engine),
            repository,
            identities,
            read_sessions=db.read_session_maker(engine),
        )
        catalog = Catalog(
            repository,
            upstream,
            ttl_s=settings.fetch.metadata_ttl_s,
            access_ttl_s=settings.fetch.access_ttl_s,
            local_access=access_list,
            guard=gate,
        )
        scan = settings.scan
        scanner = ScannerPool(
            ScanLimits(scan.timeout_s, scan.max_memory_mb, scan.max_cpu_s, scan.workers),
            on_scanned=app[METRICS].scanned,
            forks=app[FORKS],
        )
        ingest = settings.ingest
        stream_scans: StreamScans = (
            app[STREAM_SCANS] if stream_scan is None else InProcessStreamScans(stream_scan)
        )
        ingestor = Ingestor(
            lifecycle,
            store,
            upstream,
            scanner,
            gate,
            lambda spec, report: policy_gate.settle(spec.origin, report, spec.token),
            stream_scans,
            IngestSettings(
                hold_tail_bytes=ingest.hold_tail_bytes,
                write_batch_bytes=ingest.write_batch_bytes,
                chunk_bytes=settings.fetch.chunk_bytes,
                retries=settings.fetch.retries,
                free_space_margin_bytes=ingest.free_space_margin_bytes,
                retry_backoff_s=ingest.retry_backoff_s,
                retry_backoff_max_s=ingest.retry_backoff_max_s,
                shutdown_grace_s=ingest.shutdown_grace_s,
                parallel_threshold_bytes=settings.fetch.parallel_threshold_bytes,
                parallel_connections=settings.fetch.parallel_connections,
            ),
        )
        delivery = Delivery(
            catalog, repository, store, ingestor, gate, lifecycle, ingest.retry_after_s
        )
        # The signature file is fetched like any file, by the ingestor, which needs the policy
        # gate that asks for it: connected once both exist. So are the licence files the risk
        # cards of `[policy] max_risk` read.
        mirror_files = MirrorFiles(catalog, ingestor, repository, store)
        signatures.connect(mirror_files)
        risk_cards = _risk_cards(settings, engine, repository, store, upstream, mirror_files)
        policy_gate.use_risk(RiskHold(risk_cards.hold_facts, first_commit=risk_cards.first_commit))
        review = Review(
            repository,
            ReviewQueries(db.session_maker(engine), db.read_session_maker(engine)),
            lifecycle,
            gate.blocks,
            gate.pins,
            make_rescanner(repository, store, scanner, policy_gate),
            waivers,
            signatures=signatures,
        )
        app[SERVICES] = Services(
            settings=settings,
            repository=repository,
            store=store,
            catalog=catalog,
            ingestor=ingestor,
            delivery=delivery,
            upstream=upstream,
            review=review,
            identities=identities,
            access_list=access_list,
            risk_cards=risk_cards,
            watches=WatchRecords(db.session_maker(engine), db.read_session_maker(engine)),
            signatures=signatures,
        )
        sweeper = asyncio.create_task(_sweep_waivers(review), name="waiver-sweep")
        watcher = _start_watch(settings, app[SERVICES])
        try:
            yield
        finally:
            for task in (sweeper, watcher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await ingestor.cleanup()

    return ctx


def _risk_cards(
    settings: Settings,
    engine: AsyncEngine,
    repository: Repository,
    store: BlobStore,
    upstream: Upstream | None,
    files: MirrorFiles,
) -> RiskCards:
    """The risk card service, with the few cached upstream calls it makes (none offline) and
    the mirror's fetching path (`max_risk` reads licence files not mirrored yet)."""
    policies = PolicySource(settings.policy)
    return RiskCards(
        repository,
        ReviewQueries(db.session_maker(engine), db.read_session_maker(engine)),
        store,
        WatchRecords(db.session_maker(engine), db.read_session_maker(engine)),
        facts=UpstreamFacts(upstream) if upstream is not None else None,
        policy=lambda: policies.current().settings,
        signatures=recorded_signatures(
            SignatureRecords(db.session_maker(engine), db.read_session_maker(engine))
        ),
        files=files,
    )


def _start_watch(settings: Settings, services: Services) -> asyncio.Task[None] | None:
    """The upstream watch (`[watch]`): never offline, off when `interval_s` is 0; it
    prefetches through the server's own path (`Prefetcher`)."""
    if services.upstream is None or services.watches is None or settings.watch.interval_s <= 0:
        return None
    watch = Watch(
        services.repository,
        services.catalog,
        UpstreamFacts(services.upstream),
        services.watches,
        settings.watch,
        prefetch=Prefetcher(services, None, settings.watch.prefetch_jobs).fetch_files,
    )
    return asyncio.create_task(watch.run(), name="upstream-watch")


async def _sweep_waivers(review: Review, interval_s: float = WAIVER_SWEEP_INTERVAL_S) -> None:
    """Judge again, every `interval_s`, the files whose waivers expired (a supervisor: a failed
    sweep is logged and the next one tries again)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            if held := await review.sweep_waivers():
                logger.info("%d waived files held again: their waivers ended", held)
        except Exception:
            logger.exception("waiver sweep failed")
