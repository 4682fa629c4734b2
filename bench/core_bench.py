"""Benchmarks of Hubwarden's core (issue 3, item 11), against the targets of DESIGN.md "Targets".

    python bench/core_bench.py [--quick] [--json FILE]       (from the repository root)

In one run it starts the fake upstream Hub (its own process), Hubwarden (`python -m proxy serve`,
its own process) and nginx, and prints, each with the baseline measured in the same run:

1. warm GET throughput of a released 1 GiB file, Hubwarden vs nginx on the same blob file, and
   64 KiB Range requests per second, Hubwarden vs nginx;
2. a cold 1 GiB download through Hubwarden vs directly from the same upstream capped at
   200 MB/s per connection, and the time to first byte the proxy adds;
3. the server's peak RSS during a 2 GiB cold download, over its idle RSS;
4. 200 concurrent clients on one cold file: upstream body fetches, all served, total time.

See bench/README.md. This is a measurement, never a test: it decides no pass or fail of the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from _clients import ClientError, Download, RangeRate, crowd, curl_once, download, range_rate
from _files import write_safetensors
from _procs import BenchError, Hubwarden, Nginx, RssSampler, Upstream, cpu_s, memory_kib

REPO_ID = "bench/core"
MiB = 1024 * 1024
MB = 1_000_000
WARM_FILE = "cold-1.safetensors"  # released by the cold phase, then served warm
RSS_FILE = "rss.safetensors"
CROWD_FILE = "crowd.safetensors"
SMALL_FILE = "config.json"
IDLE_SETTLE_S = 1.0

# DESIGN.md "Targets"
TARGET_WARM_RATIO = 0.95
TARGET_RANGE_RATIO = 0.30
TARGET_COLD_RATIO = 1.10
TARGET_ADDED_TTFB_MS = 100.0
TARGET_RSS_LIFT_MIB = 64.0
TARGET_CROWD_FETCHES = 1
TARGET_CROWD_S = 30.0
PHASES = frozenset({"rss", "cold", "warm", "crowd"})


@dataclass(frozen=True, slots=True)
class Options:
    file_mib: int
    rss_mib: int
    crowd_mib: int
    crowd_clients: int
    upstream_mb_s: float
    cold_runs: int
    runs: int
    range_seconds: float
    range_connections: int
    nginx_workers: int
    workdir: Path | None
    json_path: Path | None
    phases: frozenset[str] = PHASES


@dataclass
class Figure:
    """One line of the report: a measured value, its baseline, and the target."""

    name: str
    value: str
    target: str
    met: bool | None
    detail: str = ""


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    raw: dict[str, object] = field(default_factory=dict)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        mark = {True: "meets", False: "MISSES", None: "info"}[figure.met]
        print(f"  -> {figure.name}: {figure.value}  [{mark} target {figure.target}]", flush=True)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mib(kib: int) -> float:
    return kib / 1024


def file_url(base: str, commit: str, name: str) -> str:
    return f"{base}/{REPO_ID}/resolve/{commit}/{name}"


def _version(argv: list[str], pick: Callable[[str], str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "absent"
    return pick(done.stdout + done.stderr)


def machine() -> dict[str, str]:
    return {
        "cpus": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "kernel": platform.release(),
        "nginx": _version(["nginx", "-v"], lambda s: s.strip().rsplit("/", 1)[-1]),
        "curl": _version(["curl", "--version"], lambda s: s.split()[1] if s.split() else "?"),
        "wrk": _version(["wrk", "--version"], lambda s: s.split()[1] if s.split() else "?"),
    }


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine spent busy, CPU seconds of this process and its reaped
    children) so far: the difference over a run is what other programs (and the hypervisor's
    steal) took. Interrupt time is left out: loopback traffic is partly accounted there."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(v) for v in fields[:8])
    busy = (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _checked(what: str, got: Download, size: int, log: Path) -> Download:
    if got.status != 200 or got.size != size:
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise BenchError(f"{what}: status {got.status}, {got.size} of {size} bytes; log:\n{tail}")
    return got


# -- the phases -------------------------------------------------------------------------------


async def idle_rss(server: Hubwarden, upstream: Upstream, report: Report) -> int:
    """Warm the server up on a tiny file (imports, database, upstream session), then read RSS."""
    url = file_url(server.url, upstream.commit, SMALL_FILE)
    _checked("warm-up GET", await download(url), 2, server.log)
    await asyncio.sleep(IDLE_SETTLE_S)
    idle_kib = memory_kib(server.pid)["VmRSS"]
    report.raw["idle_rss_kib"] = idle_kib
    say(f"idle RSS of the server (pid {server.pid}) after a warm-up: {mib(idle_kib):.1f} MiB")
    return int(idle_kib)


async def phase_rss(
    server: Hubwarden, upstream: Upstream, options: Options, idle_kib: int, report: Report
) -> None:
    size = options.rss_mib * MiB
    say(f"[3] cold download of {options.rss_mib} MiB through Hubwarden, upstream unthrottled")
    url = file_url(server.url, upstream.commit, RSS_FILE)
    async with RssSampler(server.pid) as sampler:
        got = _checked("RSS cold download", await download(url), size, server.log)
    hwm_kib = memory_kib(server.pid)["VmHWM"]
    peak_kib = max(hwm_kib, sampler.peak_kib)
    lift = mib(peak_kib - idle_kib)
    report.raw["rss"] = {
        "idle_kib": idle_kib,
        "peak_sampled_kib": sampler.peak_kib,
        "vmhwm_kib": hwm_kib,
        "samples": sampler.samples,
        "download_s": got.total_s,
    }
    report.add(
        Figure(
            f"peak RSS lift, {options.rss_mib} MiB cold download",
            f"{lift:.1f} MiB (idle {mib(idle_kib):.1f} MiB, peak {mib(peak_kib):.1f} MiB)",
            f"< {TARGET_RSS_LIFT_MIB:.0f} MiB",
            lift < TARGET_RSS_LIFT_MIB,
        )
    )
    report.add(
        Figure(
            f"cold {options.rss_mib} MiB through Hubwarden, upstream unthrottled",
            f"{got.total_s:.2f} s ({got.bytes_per_s / MB:.0f} MB/s), first byte "
            f"{got.ttfb_s * 1000:.0f} ms, 429 retries {got.retries_429}",
            "none (context)",
            None,
        )
    )


async def phase_cold(
    server: Hubwarden, upstream: Upstream, options: Options, report: Report
) -> None:
    """Pairs of (direct, through Hubwarden) downloads, each pair on a file new to both."""
    size = options.file_mib * MiB
    rate = options.upstream_mb_s * MB
    say(
        f"[2] cold {options.file_mib} MiB, {options.cold_runs} pair(s): direct vs Hubwarden, "
        f"upstream {rate / MB:.0f} MB/s per connection"
    )
    await upstream.throttle(rate, "*/cold-*.safetensors")
    directs: list[Download] = []
    proxied: list[Download] = []
    fetches = 0
    try:
        for run, name in enumerate(cold_files(options)):
            await upstream.reset()
            direct_url = file_url(upstream.hub, upstream.commit, name)
            proxy_url = file_url(server.url, upstream.commit, name)
            # Alternate the order so that neither side always runs on a warmer machine.
            for side in ("direct", "proxy") if run % 2 == 0 else ("proxy", "direct"):
                if side == "direct":
                    got = await download(direct_url, follow=True)
                    directs.append(_checked("direct download", got, size, upstream.log))
                else:
                    got = await download(proxy_url)
                    proxied.append(_checked("cold download via Hubwarden", got, size, server.log))
                say(
                    f"    {name} {side}: {got.total_s:.2f} s, first byte {got.ttfb_s * 1000:.1f} ms"
                )
            fetches += (await upstream.stats(f"*/{name}"))["body_fetches"]
    finally:
        await upstream.clear()
    best_direct = min(d.total_s for d in directs)
    best_proxy = min(d.total_s for d in proxied)
    ratio = best_proxy / best_direct
    pairs = zip(proxied, directs, strict=True)
    median_ratio = statistics.median(p.total_s / d.total_s for p, d in pairs)
    ttfb_direct = statistics.median(d.ttfb_s for d in directs) * 1000
    ttfb_proxy = statistics.median(d.ttfb_s for d in proxied) * 1000
    added_ms = ttfb_proxy - ttfb_direct
    report.raw["cold"] = {
        "direct": [_download_dict(d) for d in directs],
        "hubwarden": [_download_dict(d) for d in proxied],
        "upstream_body_fetches": fetches,
    }
    report.add(
        Figure(
            f"cold {options.file_mib} MiB time, Hubwarden / direct ({rate / MB:.0f} MB/s/conn, "
            f"best of {len(proxied)})",
            f"{best_proxy:.2f} s / {best_direct:.2f} s = {ratio:.3f}x "
            f"(median of pairs {median_ratio:.3f}x); upstream bodies by Hubwarden "
            f"{fetches - len(directs)} (parallel ranges: 4 a file by default)",
            f"<= {TARGET_COLD_RATIO:.2f}x",
            ratio <= TARGET_COLD_RATIO,
        )
    )
    report.add(
        Figure(
            "time to first byte added by the proxy (cold, medians)",
            f"{added_ms:.1f} ms ({ttfb_proxy:.1f} ms vs direct {ttfb_direct:.1f} ms, "
            "which includes its CDN redirect)",
            f"< {TARGET_ADDED_TTFB_MS:.0f} ms",
            added_ms < TARGET_ADDED_TTFB_MS,
        )
    )


def cold_files(options: Options) -> list[str]:
    """One file per cold pair; the first one is then the released file of the warm phase."""
    return [f"cold-{run + 1}.safetensors" for run in range(options.cold_runs)]


def _download_dict(got: Download) -> dict[str, float | int]:
    return {
        "status": got.status,
        "size": got.size,
        "ttfb_s": got.ttfb_s,
        "total_s": got.total_s,
        "retries_429": got.retries_429,
    }


def _rate_dict(rate: RangeRate) -> dict[str, float | int | str]:
    return {"rps": rate.requests_per_s, "tool": rate.tool, "bad": rate.bad_answers}


async def _speeds(url: str, runs: int, size: int) -> list[float]:
    speeds = []
    for _ in range(runs):
        status, got, _ttfb, total, _retry = await curl_once(url, timeout_s=120)
        if status != 200 or got != size:
            raise BenchError(f"warm GET {url}: status {status}, {got} of {size} bytes")
        speeds.append(got / total)
    return speeds


async def phase_warm(
    server: Hubwarden, upstream: Upstream, options: Options, sha256: str, root: Path,
    report: Report,
) -> None:  # fmt: skip
    size = options.file_mib * MiB
    blob = server.data_dir / "blobs" / sha256[:2] / sha256
    if not blob.is_file():
        raise BenchError(f"the released blob {blob} is missing: the cold download did not release")
    say(f"[1] warm GET of the released {options.file_mib} MiB blob: Hubwarden vs nginx")
    nginx = await Nginx.start(blob, root / "nginx", options.nginx_workers)
    try:
        proxy_url = file_url(server.url, upstream.commit, WARM_FILE)
        await upstream.reset()
        ours: list[float] = []
        theirs: list[float] = []
        await curl_once(proxy_url, timeout_s=120)  # page cache and metadata warm for both
        await curl_once(f"{nginx.url}/blob", timeout_s=120)
        for _ in range(options.runs):  # interleaved, so drift hits both alike
            ours += await _speeds(proxy_url, 1, size)
            theirs += await _speeds(f"{nginx.url}/blob", 1, size)
        upstream_after = await upstream.stats("*")
        say("    range requests (64 KiB) per second...")
        path = f"/{REPO_ID}/resolve/{upstream.commit}/{WARM_FILE}"
        our_rate = await range_rate(
            server.url, path, size, connections=options.range_connections,
            seconds=options.range_seconds, script_dir=root,
        )  # fmt: skip
        their_rate = await range_rate(
            nginx.url, "/blob", size, connections=options.range_connections,
            seconds=options.range_seconds, script_dir=root,
        )  # fmt: skip
    finally:
        nginx.stop()
    best_ratio = max(ours) / max(theirs)
    median_ratio = statistics.median(ours) / statistics.median(theirs)
    report.raw["warm"] = {
        "hubwarden_bytes_per_s": ours,
        "nginx_bytes_per_s": theirs,
        "upstream_requests_during_warm_gets": upstream_after["requests"],
        "range": {"hubwarden": _rate_dict(our_rate), "nginx": _rate_dict(their_rate)},
    }
    report.add(
        Figure(
            f"warm GET {options.file_mib} MiB, Hubwarden / nginx (curl, best of {options.runs})",
            f"{max(ours) / MB:.0f} / {max(theirs) / MB:.0f} MB/s = {best_ratio:.3f} "
            f"(medians {statistics.median(ours) / MB:.0f} / {statistics.median(theirs) / MB:.0f}"
            f" MB/s = {median_ratio:.3f}); upstream requests {upstream_after['requests']}",
            f">= {TARGET_WARM_RATIO:.2f}",
            best_ratio >= TARGET_WARM_RATIO,
        )
    )
    ratio = our_rate.requests_per_s / their_rate.requests_per_s
    bad = our_rate.bad_answers + their_rate.bad_answers
    report.add(
        Figure(
            f"64 KiB Range req/s, Hubwarden / nginx ({our_rate.tool}, "
            f"{options.range_connections} conns, {options.range_seconds:.0f} s)",
            f"{our_rate.requests_per_s:.0f} / {their_rate.requests_per_s:.0f} = {ratio:.3f}"
            + (f"; {bad} bad answers or socket errors" if bad else ""),
            f">= {TARGET_RANGE_RATIO:.2f}",
            ratio >= TARGET_RANGE_RATIO and bad == 0,
        )
    )


async def phase_crowd(
    server: Hubwarden, upstream: Upstream, options: Options, sha256: str, report: Report
) -> None:
    size = options.crowd_mib * MiB
    rate = options.upstream_mb_s * MB
    say(
        f"[4] {options.crowd_clients} concurrent cold clients on a {options.crowd_mib} MiB file "
        f"(upstream {rate / MB:.0f} MB/s/conn)"
    )
    await upstream.reset()
    await upstream.throttle(rate, f"*/{CROWD_FILE}")
    cpu_before = (cpu_s(server.pid), cpu_s(upstream.process.pid), time.process_time())
    try:
        result = await crowd(
            file_url(server.url, upstream.commit, CROWD_FILE),
            options.crowd_clients,
            hash_every=20,
            deadline_s=180,
        )
    finally:
        await upstream.clear()
    cpu = {
        "hubwarden": cpu_s(server.pid) - cpu_before[0],
        "upstream": cpu_s(upstream.process.pid) - cpu_before[1],
        "clients": time.process_time() - cpu_before[2],
    }
    fetched = await upstream.stats(f"*/{CROWD_FILE}")
    served = result.served(size)
    hashes = {c.sha256 for c in result.clients if c.sha256 is not None}
    errors = sorted({c.error for c in result.clients if c.error})
    statuses = sorted({c.status for c in result.clients})
    finished = sorted(c.finished_s for c in result.clients)
    report.raw["crowd"] = {
        "finished_s": {
            "first": finished[0],
            "median": statistics.median(finished),
            "last": finished[-1],
        },
        "upstream": fetched,
        "served": served,
        "statuses": statuses,
        "retries_429": result.retries_429,
        "total_s": result.total_s,
        "errors": errors[:10],
        "hashes_ok": hashes == {sha256},
        "cpu_s": cpu,
    }
    # A file fetched by parallel ranges (issue 9) arrives in several bodies: one fetch is the
    # file's bytes sent once, however many ranges carried them.
    whole_fetches = fetched["bytes_served"] / size
    ok = (
        fetched["bytes_served"] == TARGET_CROWD_FETCHES * size
        and served == options.crowd_clients
        and hashes == {sha256}
    )
    report.add(
        Figure(
            f"{options.crowd_clients} cold clients, one {options.crowd_mib} MiB file",
            f"upstream fetches {whole_fetches:.2f} ({fetched['body_fetches']} bodies, "
            f"{fetched['bytes_served'] / MiB:.0f} MiB sent), served {served}/"
            f"{options.crowd_clients}, sampled sha256 {'ok' if hashes == {sha256} else 'WRONG'}, "
            f"429 answers honoured {result.retries_429}"
            + (f", errors: {'; '.join(errors[:3])}" if errors else ""),
            f"exactly {TARGET_CROWD_FETCHES} fetch, all served",
            ok,
        )
    )
    report.add(
        Figure(
            f"{options.crowd_clients} cold clients, total time",
            f"{result.total_s:.2f} s (first client done at {finished[0]:.2f} s, median "
            f"{statistics.median(finished):.2f} s; CPU-s: Hubwarden {cpu['hubwarden']:.1f}, "
            f"clients {cpu['clients']:.1f}, upstream {cpu['upstream']:.1f})",
            f"<= {TARGET_CROWD_S:.0f} s",
            result.total_s <= TARGET_CROWD_S and served == options.crowd_clients,
        )
    )


# -- the run ----------------------------------------------------------------------------------


async def run(options: Options) -> Report:
    report = Report()
    report.raw["machine"] = machine()
    report.raw["options"] = {k: str(v) for k, v in dataclasses.asdict(options).items()}
    busy_before, ours_before = cpu_seconds()
    started = time.monotonic()
    load = os.getloadavg()[0]
    say(f"load average before the run: {load:.2f} (other programs distort every figure)")
    with tempfile.TemporaryDirectory(prefix="hubwarden-bench-", dir=options.workdir) as tmp:
        root = Path(tmp)
        say(f"writing test files in {root}...")
        small = root / SMALL_FILE
        small.write_bytes(b"{}")
        files = {SMALL_FILE: small}
        shas = {}
        sizes = dict.fromkeys(cold_files(options), options.file_mib)
        if "rss" in options.phases:
            sizes[RSS_FILE] = options.rss_mib
        if "crowd" in options.phases:
            sizes[CROWD_FILE] = options.crowd_mib
        for seed, (name, size_mib) in enumerate(sizes.items()):
            files[name] = root / name
            shas[name] = await asyncio.to_thread(
                write_safetensors, root / name, size_mib * MiB, seed
            )
        say("starting the fake upstream (hashing the files)...")
        upstream = await asyncio.to_thread(Upstream.start, REPO_ID, files, root / "upstream.log")
        try:
            server = await Hubwarden.start(root / "data", upstream.hub, root / "hubwarden.log")
            try:
                idle_kib = await idle_rss(server, upstream, report)
                if "rss" in options.phases:
                    await phase_rss(server, upstream, options, idle_kib, report)
                if "cold" in options.phases:
                    await phase_cold(server, upstream, options, report)
                if "warm" in options.phases:  # needs the cold phase: its first file goes warm
                    await phase_warm(server, upstream, options, shas[WARM_FILE], root, report)
                if "crowd" in options.phases:
                    await phase_crowd(server, upstream, options, shas[CROWD_FILE], report)
            finally:
                server.stop()
        finally:
            upstream.stop()
    busy_after, ours_after = cpu_seconds()
    elapsed = time.monotonic() - started
    foreign = max(0.0, (busy_after - busy_before) - (ours_after - ours_before))
    share = foreign / (elapsed * (os.cpu_count() or 1))
    report.raw["foreign_cpu"] = {"cpu_s": foreign, "wall_s": elapsed, "share": share}
    report.add(
        Figure(
            "CPU taken by other programs and kernel threads during the run",
            f"{foreign:.0f} CPU-s over {elapsed:.0f} s = {share:.0%} of the machine"
            + (" (figures are distorted: rerun on a quiet machine)" if share > 0.10 else ""),
            "none (context; keep it near 0 %)",
            None,
        )
    )
    return report


def print_report(report: Report) -> None:
    info = report.raw["machine"]
    assert isinstance(info, dict)
    print()
    print("Hubwarden core bench — " + ", ".join(f"{k} {v}" for k, v in info.items()))
    width = max(len(f.name) for f in report.figures)
    for figure in report.figures:
        mark = {True: "meets", False: "MISSES", None: "     "}[figure.met]
        print(f"{mark:6} {figure.name:<{width}}  {figure.value}")
        print(f"{'':6} {'':<{width}}  target {figure.target}")
    missed = [f.name for f in report.figures if f.met is False]
    print("all targets met" if not missed else f"{len(missed)} target(s) missed: {missed}")


def parse_options(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file-mib", type=int, default=1024, help="warm/cold file (1024)")
    parser.add_argument("--rss-mib", type=int, default=2048, help="RSS cold download (2048)")
    parser.add_argument("--crowd-mib", type=int, default=64, help="crowd file (64)")
    parser.add_argument("--crowd-clients", type=int, default=200)
    parser.add_argument("--upstream-mb-s", type=float, default=200.0, help="per connection")
    parser.add_argument("--cold-runs", type=int, default=2, help="cold pairs, 1 file each (2)")
    parser.add_argument("--runs", type=int, default=5, help="warm GETs per server (5)")
    parser.add_argument("--range-seconds", type=float, default=10.0)
    parser.add_argument("--range-connections", type=int, default=16)
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="where temp files go (default: $TMPDIR)")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write raw figures")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--phases",
        default=",".join(sorted(PHASES)),
        help="comma-separated subset of rss,cold,warm,crowd (default all; warm needs cold and "
        "nginx)",
    )
    args = parser.parse_args(argv)
    phases = frozenset(args.phases.split(","))
    if not phases or not phases <= PHASES or ("warm" in phases and "cold" not in phases):
        parser.error(f"--phases {args.phases!r}: a subset of rss,cold,warm,crowd; warm needs cold")
    if args.quick:
        args.file_mib, args.rss_mib, args.crowd_mib, args.cold_runs = 64, 128, 8, 1
        args.crowd_clients, args.runs, args.range_seconds = 50, 2, 3.0
    bounds = {
        "file_mib": (16, 16384), "rss_mib": (16, 16384), "crowd_mib": (1, 4096),
        "crowd_clients": (1, 1000), "runs": (1, 50), "cold_runs": (1, 10),
        "range_seconds": (1, 120), "range_connections": (1, 512), "nginx_workers": (1, 64),
        "upstream_mb_s": (1, 100_000),
    }  # fmt: skip
    for key, (low, high) in bounds.items():
        if not low <= getattr(args, key) <= high:
            parser.error(f"--{key.replace('_', '-')} must be between {low} and {high}")
    return Options(
        args.file_mib, args.rss_mib, args.crowd_mib, args.crowd_clients, args.upstream_mb_s,
        args.cold_runs, args.runs, args.range_seconds, args.range_connections, args.nginx_workers,
        args.workdir, args.json_path, phases,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    try:
        report = asyncio.run(run(options))
    except (BenchError, ClientError) as exc:
        print(f"core_bench: error: {exc}", file=sys.stderr)
        return 1
    report.raw["bench_s"] = time.monotonic() - started
    print_report(report)
    print(f"(bench ran {report.raw['bench_s']:.0f} s)")
    if options.json_path is not None:
        figures = [dataclasses.asdict(f) for f in report.figures]
        options.json_path.write_text(json.dumps({"figures": figures, **report.raw}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
