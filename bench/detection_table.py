"""Detection table (issue 13): Hubwarden, picklescan, modelscan and ModelAudit on the generated
corpus, per category, and every sample where the tools disagree.

    python -m venv /tmp/venv-picklescan && /tmp/venv-picklescan/bin/pip install picklescan
    python -m venv /tmp/venv-modelscan && /tmp/venv-modelscan/bin/pip install modelscan
    python -m venv /tmp/venv-modelaudit && /tmp/venv-modelaudit/bin/pip install modelaudit
    python bench/detection_table.py [--json out.json] [--timeout-s 120]

The other tools pin numpy/torch versions of their own, so each runs in its own virtual
environment (`--python-TOOL PATH`, default `/tmp/venv-TOOL/bin/python`, else this interpreter
if it can import the tool), driven by a small script that scans every file and prints one JSON
verdict per file. ModelAudit's telemetry is switched off (`PROMPTFOO_DISABLE_TELEMETRY`).

Categories: *malicious* (`tests/scanners/corpus.py`'s malicious samples, the non-clean samples of
`corpus_formats.py` and `corpus_advisories.py`), *benign* (their clean samples and the repo files
of `corpus_repo_files.py`), *resource* (`corpus_resource.py`). Each tool's answer per file is
`flagged` (an issue), `error` (it could not scan: Hubwarden's fail-closed `error` outcome, a scan
error, an inconclusive verdict, a crash or a timeout), `skipped` (not a format it scans) or
`clean`. A file counts as *held* when flagged or error: that is what stops a careful pipeline.
For benign files, held is a false alarm; for resource files it is a refusal. Nothing here
decides a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scanners import Outcome, scan_file  # noqa: E402 - after the path insert
from tests.scanners.corpus import benign_samples, malicious_samples  # noqa: E402
from tests.scanners.corpus_advisories import advisory_samples  # noqa: E402
from tests.scanners.corpus_formats import format_samples  # noqa: E402
from tests.scanners.corpus_repo_files import repo_file_samples  # noqa: E402
from tests.scanners.corpus_resource import resource_samples  # noqa: E402

TOOLS = ("hubwarden", "picklescan", "modelscan", "modelaudit")
CATEGORIES = ("malicious", "benign", "resource")
HELD_STATES = frozenset({"flagged", "error"})

# One verdict per line on stdout, for each path read as JSON lines on stdin. Run by the tool's
# own interpreter; a file that takes longer than the alarm is an error ("timeout").
_DRIVER = r"""
import contextlib, io, json, os, signal, sys, time
tool, timeout_s = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("PROMPTFOO_DISABLE_TELEMETRY", "1")
def on_alarm(*_):
    raise TimeoutError("timeout")
signal.signal(signal.SIGALRM, on_alarm)
if tool == "picklescan":
    from picklescan.scanner import scan_file_path
    def verdict(path):
        r = scan_file_path(path)
        if r.scan_err: return "error", "scan error"
        if r.infected_files or r.issues_count: return "flagged", f"{r.issues_count} issues"
        if not r.scanned_files: return "skipped", "not scanned"
        return "clean", ""
elif tool == "modelscan":
    from modelscan.modelscan import ModelScan
    def verdict(path):
        r = ModelScan().scan(path)
        if r.get("issues"): return "flagged", r["issues"][0].get("description", "")[:80]
        if r.get("errors"): return "error", str(r["errors"][0].get("description", ""))[:80]
        if not r.get("summary", {}).get("scanned", {}).get("total_scanned"):
            return "skipped", "not scanned"
        return "clean", ""
elif tool == "modelaudit":
    from modelaudit import scan_model_directory_or_file
    from modelaudit.core_results import determine_exit_code
    def verdict(path):
        r = scan_model_directory_or_file(path, timeout=timeout_s)
        code = determine_exit_code(r)  # its CLI's exit code: 1 issues, 2 inconclusive
        if code == 1:
            bad = ("critical", "warning")
            worst = [i.message for i in r.issues if str(i.severity).endswith(bad)]
            return "flagged", (worst or ["issues"])[0][:80]
        if code == 2: return "error", "inconclusive"
        return "clean", ""
for line in sys.stdin:
    path = json.loads(line)
    started = time.perf_counter()
    signal.alarm(timeout_s)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            state, why = verdict(path)
    except BaseException as exc:
        state, why = "error", f"{type(exc).__name__}: {exc}"[:80]
    finally:
        signal.alarm(0)
    print(json.dumps([path, state, why, time.perf_counter() - started]), flush=True)
"""


@dataclass(frozen=True, slots=True)
class Entry:
    category: str
    name: str
    path: Path


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str  # flagged, error, skipped, clean
    why: str
    seconds: float

    @property
    def held(self) -> bool:
        return self.state in HELD_STATES


def build_corpus(root: Path) -> list[Entry]:
    entries = [Entry("malicious", s.name, s.path) for s in malicious_samples(root / "pickles")]
    entries += [Entry("benign", s.name, s.path) for s in benign_samples(root / "benign")]
    for sample in [*format_samples(root / "formats"), *advisory_samples(root / "advisories")]:
        category = "benign" if sample.expect == {Outcome.CLEAN} else "malicious"
        entries.append(Entry(category, sample.name, sample.path))
    repo = repo_file_samples(root / "repo_files")
    entries += [Entry("benign", name, path) for name, path in repo.items()]
    resource = resource_samples(root / "resource")
    entries += [Entry("resource", name, path) for name, path in resource.items()]
    return entries


def hubwarden_verdicts(entries: list[Entry]) -> dict[Path, Verdict]:
    states = {
        Outcome.MALICIOUS: "flagged",
        Outcome.REVIEW: "flagged",
        Outcome.ERROR: "error",
        Outcome.CLEAN: "clean",
    }
    out: dict[Path, Verdict] = {}
    for entry in entries:
        started = time.perf_counter()
        report = scan_file(entry.path, name=entry.name, second_opinion=None)
        codes = sorted({f.code for f in report.findings if f.outcome != Outcome.CLEAN})
        why = ",".join(codes)[:80]
        out[entry.path] = Verdict(states[report.outcome], why, time.perf_counter() - started)
    return out


def tool_python(tool: str, given: str | None) -> str | None:
    """The interpreter that runs `tool`, or None when none can import it."""
    if given:
        return given
    venv = Path(f"/tmp/venv-{tool}/bin/python")
    if venv.exists():
        return str(venv)
    probe = subprocess.run([sys.executable, "-c", f"import {tool}"], capture_output=True)
    return sys.executable if probe.returncode == 0 else None


def tool_verdicts(
    tool: str, python: str, entries: list[Entry], timeout_s: int
) -> dict[Path, Verdict]:
    paths = "".join(json.dumps(str(e.path)) + "\n" for e in entries)
    env = {**os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    done = subprocess.run(
        [python, "-c", _DRIVER, tool, str(timeout_s)],
        input=paths, capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    out: dict[Path, Verdict] = {}
    for line in done.stdout.splitlines():
        if line.startswith("["):
            path, state, why, seconds = json.loads(line)
            out[Path(path)] = Verdict(state, why, seconds)
    for entry in entries:  # the driver itself died on this one (or before it)
        out.setdefault(entry.path, Verdict("error", f"driver exited {done.returncode}", 0.0))
    return out


def _version(tool: str, python: str) -> str:
    code = f"import importlib.metadata as m; print(m.version('{tool}'))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


def print_table(entries: list[Entry], verdicts: dict[str, dict[Path, Verdict]]) -> None:
    print(f"{'category':10} {'tool':11} {'held':>9} {'flagged':>7} {'error':>5} "
          f"{'skipped':>7} {'clean':>5}  {'max s':>6}")  # fmt: skip
    for category in CATEGORIES:
        members = [e for e in entries if e.category == category]
        for tool, answers in verdicts.items():
            states = [answers[e.path].state for e in members]
            held = sum(s in HELD_STATES for s in states)
            slowest = max(answers[e.path].seconds for e in members)
            counts = " ".join(
                f"{states.count(state):>{width}}"
                for state, width in (("flagged", 7), ("error", 5), ("skipped", 7), ("clean", 5))
            )
            print(f"{category:10} {tool:11} {held:>4}/{len(members):<4} {counts}  {slowest:6.1f}")
    print(
        "\nheld = flagged or error: a detection for malicious, a false alarm for benign, a "
        "refusal for resource"
    )


def print_disagreements(entries: list[Entry], verdicts: dict[str, dict[Path, Verdict]]) -> None:
    print("\nSamples where the tools disagree (H = held: flagged/error, . = clean/skipped):")
    print(f"{'category':10} {'sample':52} " + " ".join(f"{t[:10]:>10}" for t in verdicts))
    for entry in sorted(entries, key=lambda e: (e.category, e.name)):
        held = [verdicts[t][entry.path].held for t in verdicts]
        if len(set(held)) > 1:
            marks = " ".join(f"{'H' if h else '.':>10}" for h in held)
            print(f"{entry.category:10} {entry.name[:52]:52} {marks}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write every verdict here")
    parser.add_argument("--timeout-s", type=int, default=120, help="per file and tool")
    for tool in TOOLS[1:]:
        parser.add_argument(f"--python-{tool}", help=f"the interpreter that imports {tool}")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp:
        entries = build_corpus(Path(tmp))
        verdicts = {"hubwarden": hubwarden_verdicts(entries)}
        for tool in TOOLS[1:]:
            python = tool_python(tool, getattr(args, f"python_{tool}"))
            if python is None:
                print(f"{tool}: not installed (see the module docstring); left out")
                continue
            print(f"{tool} {_version(tool, python)} ({python})")
            verdicts[tool] = tool_verdicts(tool, python, entries, args.timeout_s)
    counts = {c: sum(e.category == c for e in entries) for c in CATEGORIES}
    print(f"corpus: {counts}\n")
    print_table(entries, verdicts)
    print_disagreements(entries, verdicts)
    if args.json:
        rows = [
            {"category": e.category, "sample": e.name}
            | {t: [v[e.path].state, v[e.path].why] for t, v in verdicts.items()}
            for e in entries
        ]
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
