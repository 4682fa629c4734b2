"""The long fuzz run (issue 13): every fuzz target of `tests/fuzz` under atheris for a while.

    nice -n 10 python bench/fuzz_bench.py --minutes 12        # split evenly over the targets
    python bench/fuzz_bench.py --minutes 2 --targets pickle,gguf --workdir /tmp/fz

Each target runs in its own process (`python -m tests.fuzz.run`), its corpus kept in
`WORKDIR/corpus/TARGET` (seeded from `tests.fuzz.seeds` the first time, grown by libFuzzer, so a
second run starts where the first stopped). A crash ends the process: the bench records it and
starts the target again on the grown corpus until its time is spent. Printed per target:
executions, exec/s, crashes (deduplicated by exception and place), the slowest input and its
time, peak RSS. Crashing inputs stay in `WORKDIR/artifacts/TARGET/`; each is listed with its hex
and the scanner's traceback. Nothing here decides a test.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.seeds import all_seeds, write_seeds  # noqa: E402 - after the path insert
from tests.fuzz.targets import TARGETS  # noqa: E402

LONG_TARGETS = [name for name in TARGETS if name != "all"]  # "all" is the test suite's mix
_EXECS = re.compile(r"^#(\d+)\s", re.MULTILINE)
_DONE = re.compile(r"^Done (\d+) runs", re.MULTILINE)
_RSS = re.compile(r"rss: (\d+)Mb")
_PEAK = re.compile(r"stat::peak_rss_mb:\s*(\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_PY_TRACE = re.compile(r"=== Uncaught Python exception: ===\n(.*?)\n==\d+==", re.DOTALL)


@dataclass
class Crash:
    kind: str  # crash, timeout, oom, leak
    artifact: str
    input_hex: str
    traceback: str


@dataclass
class TargetRun:
    target: str
    seconds: float = 0.0
    executions: int = 0
    peak_rss_mb: int = 0
    restarts: int = 0
    crashes: list[Crash] = field(default_factory=list)
    slowest_s: float = 0.0
    slowest_hex: str = ""

    @property
    def exec_per_s(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0


def _crash_from(stderr: str) -> Crash | None:
    found = _ARTIFACT.search(stderr)
    if found is None:
        return None
    path = Path(found.group(1))
    trace = _PY_TRACE.search(stderr)
    tail = trace.group(1) if trace else stderr[-1500:]
    return Crash(path.name.split("-", 1)[0], str(path), path.read_bytes()[:2048].hex(), tail)


def _signature(crash: Crash) -> str:
    """Exception type and the innermost scanners frame: one bug found twice counts once."""
    frames = re.findall(r'File "[^"]*/(scanners/[^"]+)", line (\d+)', crash.traceback)
    last_line = crash.traceback.strip().splitlines()[-1:] or [""]
    return f"{crash.kind} {frames[-1] if frames else ''} {last_line[0].split(':')[0]}"


def _run_once(target: str, seconds: int, workdir: Path, seed: int) -> tuple[str, float]:
    artifacts = workdir / "artifacts" / target
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "tests.fuzz.run", target,
        f"--slowest={workdir / 'slowest' / target}",
        f"-max_total_time={seconds}", f"-seed={seed}", "-timeout=10", "-rss_limit_mb=2048",
        "-print_final_stats=1", f"-artifact_prefix={artifacts}/", str(workdir / "corpus" / target),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stderr, time.perf_counter() - started


def _account(run: TargetRun, stderr: str, elapsed: float) -> None:
    executions = [int(n) for n in _EXECS.findall(stderr) + _DONE.findall(stderr)]
    run.executions += max(executions, default=0)
    run.seconds += elapsed
    rss = [int(n) for n in _RSS.findall(stderr) + _PEAK.findall(stderr)]
    run.peak_rss_mb = max([run.peak_rss_mb, *rss])
    crash = _crash_from(stderr)
    if crash is not None and _signature(crash) not in {_signature(c) for c in run.crashes}:
        run.crashes.append(crash)


def fuzz_target(target: str, seconds: float, workdir: Path, seeds: list[bytes]) -> TargetRun:
    corpus = workdir / "corpus" / target
    if not corpus.exists():
        write_seeds(seeds, corpus)
    (workdir / "slowest").mkdir(parents=True, exist_ok=True)
    run = TargetRun(target)
    deadline = time.monotonic() + seconds
    while (left := int(deadline - time.monotonic())) >= 5:
        stderr, elapsed = _run_once(target, left, workdir, seed=run.restarts + 1)
        _account(run, stderr, elapsed)
        run.restarts += 1
    slowest = workdir / "slowest" / target
    if slowest.exists():
        run.slowest_s = json.loads(slowest.with_suffix(".json").read_text())["seconds"]
        run.slowest_hex = slowest.read_bytes()[:64].hex()
    return run


def _print(runs: list[TargetRun]) -> None:
    print(f"{'target':12} {'executions':>10} {'seconds':>8} {'exec/s':>7} {'crashes':>7} "
          f"{'slowest s':>9} {'peak RSS':>9}")  # fmt: skip
    for r in runs:
        print(f"{r.target:12} {r.executions:>10} {r.seconds:>8.0f} {r.exec_per_s:>7.0f} "
              f"{len(r.crashes):>7} {r.slowest_s:>9.3f} {r.peak_rss_mb:>6} MB")  # fmt: skip
    total = sum(r.executions for r in runs)
    print(f"{'total':12} {total:>10} {sum(r.seconds for r in runs):>8.0f}")
    for r in runs:
        for c in r.crashes:
            print(f"\n--- {r.target}: {c.kind} {c.artifact}\ninput (hex): {c.input_hex[:400]}")
            print(c.traceback[-2500:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=12.0, help="in total, split evenly")
    parser.add_argument("--targets", default=",".join(LONG_TARGETS), help="comma-separated")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hubwarden-fuzz"))
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    chosen = [t for t in args.targets.split(",") if t]
    unknown = sorted(set(chosen) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {sorted(TARGETS)}")
    seeds = all_seeds(args.workdir / "seed_files")
    per_target = args.minutes * 60 / len(chosen)
    runs = [fuzz_target(t, per_target, args.workdir, seeds[t]) for t in chosen]
    _print(runs)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
