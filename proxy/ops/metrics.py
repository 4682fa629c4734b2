"""Prometheus metrics of one running Hubwarden (`GET /metrics`): what it served, fetched, judged.

Every instrument lives on the `CollectorRegistry` of one `Metrics`, built by the factory, never on
prometheus_client's process-wide default registry: tests build many apps in one process, and
STYLE.md forbids module-level singletons. Label values are bounded whatever clients send: a route
is the router's resource pattern (never the raw path), a method or file format outside a short
vocabulary becomes "other", a status is a number the server chose.

Names (counters end in `_total` on the wire):
- `hubwarden_http_requests_total{route, method, status}`, `hubwarden_http_request_duration_seconds`
- `hubwarden_served_bytes_total{source}`: file bodies answered, `warm` (released blob, sendfile)
  or `cold` (streamed while the ingest runs), counted by Content-Length, not per byte
- `hubwarden_upstream_requests_total{method, status}` (status class, or `error`),
  `hubwarden_upstream_errors_total{kind}`: from the upstream session's trace hooks
- `hubwarden_ingests_in_flight`, `hubwarden_held_blobs`, `hubwarden_blobs{state}`,
  `hubwarden_blocked_repos`: read at scrape time (`proxy.ops.tallies`)
- `hubwarden_scan_duration_seconds{format}`, `hubwarden_scans_total{format, outcome}`
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import aiohttp
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from scanners.report import ScanReport

UNMATCHED_ROUTE = "unmatched"
OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SOURCES = frozenset({"warm", "cold"})
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # where prometheus_client's value files go
HELD_STATES = ("quarantined", "rejected")  # what the review queue lists (HeldFilter)
# File formats come from the scanners' detection (a short list); a label is refused beyond
# this many distinct values or outside this shape, so a bug there cannot grow the series.
MAX_FORMATS = 64
_FORMAT = re.compile(r"[a-z0-9][a-z0-9_.+-]{0,31}")
REQUEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SCAN_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def share_across_processes(directory: Path) -> None:
    """Make this process's instruments (those created from now on) write their values to files
    in `directory`, read together by every process's `/metrics` (`serve --workers N`: a scrape
    reaches one worker, its answer counts them all). prometheus_client's multiprocess mode: one
    process-wide switch, so called only in a worker, before its app is built."""
    os.environ[MULTIPROCESS_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def process_ended(directory: Path, pid: int) -> None:
    """A worker is gone: its live gauges stop counting (its counters' totals stay)."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


class Metrics:
    """The instruments; cheap to call from the warm path (a dict lookup and an add each).

    `shared_dir`: the directory given to `share_across_processes` in this process, whose files
    `render` reads together; None: this process's own values."""

    def __init__(self, shared_dir: Path | None = None) -> None:
        self.shared_dir = shared_dir
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._requests = Counter(
            "hubwarden_http_requests",
            "HTTP requests answered, by route pattern, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self._request_seconds = Histogram(
            "hubwarden_http_request_duration_seconds",
            "Time to the handler's answer (a streamed body may go on after it), by route pattern",
            ["route"],
            buckets=REQUEST_BUCKETS_S,
            registry=registry,
        )
        self._served = Counter(
            "hubwarden_served_bytes",
            "File body bytes answered: warm from a released blob, cold while ingesting",
            ["source"],
            registry=registry,
        )
        self._upstream_requests = Counter(
            "hubwarden_upstream_requests",
            "Requests made to the upstream Hub and its CDN, by method and status class",
            ["method", "status"],
            registry=registry,
        )
        self._upstream_errors = Counter(
            "hubwarden_upstream_errors",
            "Upstream requests that failed: timeout, connection, status_5xx, rate_limited, other",
            ["kind"],
            registry=registry,
        )
        self._scan_seconds = Histogram(
            "hubwarden_scan_duration_seconds",
            "Wall time of a full scan in its worker process, by detected file format",
            ["format"],
            buckets=SCAN_BUCKETS_S,
            registry=registry,
        )
        self._scans = Counter(
            "hubwarden_scans",
            "Full scans by detected file format and outcome (clean, review, malicious, error)",
            ["format", "outcome"],
            registry=registry,
        )
        self._formats: set[str] = set()
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._served_children = {source: self._served.labels(source) for source in SOURCES}
        self._gauges = _Gauges(registry)

    def request_done(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        # The labelled children are kept here: `labels()` checks and locks on every call,
        # which cost more than the rest of the warm path's bookkeeping (bounded: routes are
        # the router's, methods a short list, statuses numbers the server chose).
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            shown_method = method if method in METHODS else OTHER
            children = self._request_children[key] = (
                self._requests.labels(route, shown_method, str(status)),
                self._request_seconds.labels(route),
            )
        children[0].inc()
        children[1].observe(elapsed_s)

    def served(self, source: str, count: int) -> None:
        child = self._served_children.get(source)
        if child is not None and count > 0:
            child.inc(count)

    def scanned(self, report: ScanReport, elapsed_s: float) -> None:
        file_format = self._format_label(report.file_format)
        self._scan_seconds.labels(file_format).observe(elapsed_s)
        self._scans.labels(file_format, str(report.outcome)).inc()

    def upstream_trace(self) -> aiohttp.TraceConfig:
        """Hooks for the upstream client session: each request counted as it ends or fails."""
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(self._upstream_answered)
        trace.on_request_exception.append(self._upstream_failed)
        return trace

    def render(self, ingests_in_flight: int, tallies: Tallies | None) -> bytes:
        """The Prometheus text exposition, with the scrape-time gauges set first (`tallies`
        None: the database did not answer; the last values stay)."""
        self._gauges.update(ingests_in_flight, tallies)
        if self.shared_dir is None:
            return generate_latest(self.registry)
        every_process = CollectorRegistry()
        collector = multiprocess.MultiProcessCollector  # untyped in prometheus_client
        collector(every_process, path=str(self.shared_dir))  # type: ignore[no-untyped-call]
        return generate_latest(every_process)

    def _format_label(self, file_format: str) -> str:
        if file_format in self._formats:
            return file_format
        if len(self._formats) >= MAX_FORMATS or not _FORMAT.fullmatch(file_format):
            return OTHER
        self._formats.add(file_format)
        return file_format

    async def _upstream_answered(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        status = params.response.status
        method = params.method if params.method in METHODS else OTHER
        self._upstream_requests.labels(method, f"{status // 100}xx").inc()
        if status >= 500:
            self._upstream_errors.labels("status_5xx").inc()
        elif status == 429:
            self._upstream_errors.labels("rate_limited").inc()

    async def _upstream_failed(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        method = params.method if params.method in METHODS else OTHER
        self._upstream_requests.labels(method, "error").inc()
        self._upstream_errors.labels(_error_kind(params.exception)).inc()


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError is one too
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return "connection"
    return OTHER


@dataclass(frozen=True, slots=True)
class Tallies:
    """Counts read from the database at scrape time (`proxy.ops.tallies`); every blob state is
    present, 0 included, so that a state emptied since the last scrape reads 0."""

    blobs_by_state: Mapping[str, int]
    blocked_repos: int

    @property
    def held_blobs(self) -> int:
        """Blobs held, quarantined or rejected: what the review queue lists."""
        return sum(self.blobs_by_state.get(state, 0) for state in HELD_STATES)


class _Gauges:
    """The values set at scrape time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # across worker processes (`share_across_processes`): ingests add up over the live
        # workers; the database counts are the last ones a scrape read, whichever worker
        self.ingests = Gauge(
            "hubwarden_ingests_in_flight",
            "Ingests running in this process (all workers of `serve --workers N`)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.held = Gauge(
            "hubwarden_held_blobs",
            "Blobs held (quarantined or rejected): the review queue, whole database",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.blobs = Gauge(
            "hubwarden_blobs",
            "Blobs by state (whole database)",
            ["state"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.blocked = Gauge(
            "hubwarden_blocked_repos",
            "Repos under an active block",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.tally_failures = Counter(
            "hubwarden_metrics_database_failures",
            "Scrapes whose database counts failed or timed out (the last values were kept)",
            registry=registry,
        )

    def update(self, ingests_in_flight: int, tallies: Tallies | None) -> None:
        self.ingests.set(ingests_in_flight)
        if tallies is None:
            self.tally_failures.inc()
            return
        self.held.set(tallies.held_blobs)
        self.blocked.set(tallies.blocked_repos)
        for state, count in tallies.blobs_by_state.items():
            self.blobs.labels(state).set(count)
