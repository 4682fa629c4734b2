"""Scanner benchmark: pickle walker speed and detection vs fickling, picklescan and modelscan.

Run: `python bench/scanners_bench.py [dense] [speed] [streaming] [detection]` (all by default;
needs `pip install picklescan modelscan modelaudit`; fickling is a project dependency; a tool that
is missing is reported as such, not fatal). ModelAudit (promptfoo's `modelaudit`) runs in-process
with its telemetry off (`PROMPTFOO_DISABLE_TELEMETRY=1`). Prints, in one run:

1. Walker throughput (MB/s) on state-dict pickles, against fickling (`Pickled.load` +
   `check_safety`) and picklescan (`scan_pickle_bytes`), all measured in the same run: a ~7 MB
   pickle of 3,000 tensors with their data inline, the same with numpy arrays, and the
   opcode-dense shapes (issue 13): the `data.pkl` of a torch zip of 46,000 tiny tensors (~6 MB),
   of 60,000, and the object pickle of a legacy `torch.save` of 46,000. Beside the walker
   (`scan_pickle_bytes`): the walker with its fast path off, and `scan_file` on the file a user
   has (the raw pickle, or the torch zip or legacy file holding it: zip listing and format
   detection included), its MB/s counted on the same pickle bytes. Times are CPU seconds of this
   process (the bench machine is shared), one run per tool; run it a few times and take medians.
   Whether each tool raised a false alarm on these benign files is printed beside its speed.
2. Detection on the generated corpus (`tests/scanners/corpus.py`): how many malicious samples
   each tool flags, how many benign samples it flags (false alarms), per tool. "Flagged" means
   what would make a careful user hold the file: any issue or scan error (picklescan,
   modelscan), a non-zero exit code of its CLI (ModelAudit: security issues, or an inconclusive
   scan), an outcome other than clean (ours). A crash of a tool on a sample counts as flagged.
3. Streaming pickles (`StreamScan` fed 1 MiB chunks, as the proxy feeds it): MB/s, how much was
   cleared to go out before the last chunk, how many bytes were kept for `finish` (before this
   work every pickle-family stream kept all of it in a temp file), and whether `finish` gave the
   same report as `scan_file`.

0. `dense` (issue 13's targets): `scan_file` on torch zips whose data.pkl is ~46,000 tiny tensors
   (~6 MB; the default protocol 2 and protocol 4), medians of 7 runs: MB/s on the data.pkl bytes
   against the 20 MB/s target, and the walker's ratio to fickling against the 20x target.

Nothing here decides pass or fail; numbers vary with the machine.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import pickle
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scanners import Outcome, StreamScan, scan_file
from scanners.limits import PickleLimits
from scanners.pickles import PickleWalker, scan_pickle_bytes
from tests.scanners.corpus import Sample, benign_samples, malicious_samples


def inline_state_dict_pickle(tensors: int = 3000, floats: int = 600) -> bytes:
    """~7 MB: a state dict pickled with its tensor data inline (pickle.dumps of tensors)."""
    state = {f"layers.{i}.weight": torch.zeros(floats) for i in range(tensors)}
    return pickle.dumps(state, protocol=4)


def numpy_state_dict_pickle(tensors: int = 3000, floats: int = 600) -> bytes:
    """~7 MB: a dict of numpy arrays (flax/sklearn style), data inline."""
    state = {f"layers.{i}.weight": np.zeros(floats, dtype=np.float32) for i in range(tensors)}
    return pickle.dumps(state, protocol=4)


def dense_state_dict(tensors: int, key: str = "w{}") -> dict[str, torch.Tensor]:
    return {key.format(i): torch.zeros(2, 2) for i in range(tensors)}


# the issue's shape: ~46k tiny tensors under model-like keys make a ~6 MB data.pkl
DENSE_KEY = "model.encoder.layers.{}.attention.weight"


def dense_torch_zip(path: Path, tensors: int, key: str = "w{}") -> bytes:
    """The opcode-dense worst case: a torch zip of tiny tensors; returns its data.pkl."""
    torch.save(dense_state_dict(tensors, key), path)
    with zipfile.ZipFile(path) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))


def dense_legacy(path: Path, tensors: int, key: str = "w{}") -> bytes:
    """A legacy `torch.save` of tiny tensors; returns its fourth pickle (the tensor records)."""
    torch.save(dense_state_dict(tensors, key), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    walker = PickleWalker(data, len(data), PickleLimits())
    pos: int | None = 0
    for _ in range(3):
        pos = walker.walk_one(pos or 0)
    start = pos or 0
    end = walker.walk_one(start)
    return data[start : end or len(data)]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """CPU seconds of `fn` (the bench machine is shared: wall time would measure the others)."""
    started = time.process_time()
    result = fn()
    return time.process_time() - started, result


def ours(data: bytes) -> str:
    result = scan_pickle_bytes(data, len(data), PickleLimits())
    return "false alarm" if result.findings else "clean"


def ours_loop_only(data: bytes) -> str:
    """The walker with its torch-record fast path off: every opcode through the loop."""
    walker = PickleWalker(data, len(data), PickleLimits(), fast_paths=False)
    walker.walk_all(0)
    return "false alarm" if walker.result.findings else "clean"


def ours_scan_file(path: Path) -> str:
    outcome = scan_file(path, name=path.name).outcome
    return "clean" if outcome == Outcome.CLEAN else f"false alarm ({outcome})"


def fickling_check(data: bytes) -> str:
    from fickling.analysis import Severity, check_safety
    from fickling.fickle import Pickled

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        severity = check_safety(Pickled.load(data)).severity
    return "clean" if severity == Severity.LIKELY_SAFE else f"false alarm ({severity.name})"


def picklescan_check(data: bytes) -> str:
    from picklescan.scanner import scan_pickle_bytes as picklescan_scan

    result = picklescan_scan(io.BytesIO(data), "bench")
    return "false alarm" if result.issues_count or result.scan_err else "clean"


def speed_cases(root: Path) -> dict[str, tuple[bytes, Path]]:
    """label -> (the pickle the walkers walk, the file `scan_file` scans)."""
    cases: dict[str, tuple[bytes, Path]] = {}
    for label, data in {
        "state dict, 3000 torch tensors inline": inline_state_dict_pickle(),
        "state dict, 3000 numpy arrays inline": numpy_state_dict_pickle(),
    }.items():
        path = root / f"{len(cases)}.pkl"
        path.write_bytes(data)
        cases[label] = (data, path)
    zip46k, zip60k, legacy = root / "dense46k.pt", root / "dense60k.pt", root / "legacy46k.bin"
    cases["opcode-dense data.pkl, 46000 tensors (torch zip)"] = (
        dense_torch_zip(zip46k, 46000, DENSE_KEY),
        zip46k,
    )
    cases["opcode-dense data.pkl, 60000 tensors (torch zip)"] = (
        dense_torch_zip(zip60k, 60000),
        zip60k,
    )
    cases["legacy torch.save, 46000 tensors"] = (dense_legacy(legacy, 46000, DENSE_KEY), legacy)
    return cases


def speed_table() -> None:
    print("== pickle walker throughput (MB/s of the pickle; higher is better) ==")
    tools: dict[str, Callable[[bytes], str]] = {
        "hubwarden": ours,
        "hw (loop)": ours_loop_only,
        "picklescan": picklescan_check,
        "fickling": fickling_check,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for label, (data, path) in speed_cases(Path(tmp)).items():
            megabytes = len(data) / 1e6
            speeds: dict[str, float] = {}
            print(f"-- {label}: {megabytes:.2f} MB")
            runs: dict[str, Callable[[], str]] = {
                **{tool: functools.partial(check, data) for tool, check in tools.items()},
                "scan_file": functools.partial(ours_scan_file, path),
            }
            for tool, run in runs.items():
                try:
                    seconds, verdict = timed(run)
                except ImportError as exc:
                    print(f"   {tool:<11} not installed ({exc})")
                    continue
                speeds[tool] = megabytes / seconds
                print(f"   {tool:<11} {speeds[tool]:9.2f} MB/s  {seconds:8.3f} s  {verdict}")
            for ours_tool in ("hubwarden", "scan_file"):
                ratios = [
                    f"{ours_tool} / {other} = {speeds[ours_tool] / speeds[other]:.1f}x"
                    for other in ("fickling", "picklescan")
                    if other in speeds
                ]
                print(f"   {', '.join(ratios)}")


def _median_cpu(run: Callable[[], object], runs: int) -> float:
    """Median CPU seconds of `runs` calls (other sessions share the machine: medians, not one)."""
    return statistics.median(timed(run)[0] for _ in range(runs))


def dense_cases(root: Path) -> dict[str, tuple[bytes, Path]]:
    """Issue 13's target shape: a torch zip whose data.pkl is ~46k tiny tensors (~6 MB), as
    `torch.save` writes it by default (protocol 2) and with protocol 4 (MEMOIZE, frames)."""
    issue = root / "issue46k.pt"
    torch.save({f"l{i}": torch.zeros(1) for i in range(46000)}, issue)
    with zipfile.ZipFile(issue) as archive:
        issue_pkl = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    proto4 = root / "proto4.pt"
    torch.save(dense_state_dict(46000, DENSE_KEY), proto4, pickle_protocol=4)
    with zipfile.ZipFile(proto4) as archive:
        proto4_pkl = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    dense = root / "dense46k.pt"
    return {
        "torch zip, 46000 x zeros(2,2), model-like keys": (
            dense_torch_zip(dense, 46000, DENSE_KEY),
            dense,
        ),
        'torch zip, {f"l{i}": zeros(1)} x 46000': (issue_pkl, issue),
        "torch zip, 46000 x zeros(2,2), pickle_protocol=4": (proto4_pkl, proto4),
    }


def dense_table(runs: int = 7) -> None:
    """Issue 13's speed targets on the opcode-dense state dict, as medians of `runs` runs:
    `scan_file` >= 20 MB/s (counted on the data.pkl bytes), the walker >= 20x fickling."""
    print(f"== issue 13: opcode-dense torch state dicts (median CPU time of {runs} runs) ==")
    with tempfile.TemporaryDirectory() as tmp:
        for label, (data, path) in dense_cases(Path(tmp)).items():
            _dense_row(label, data, path, runs)


def _dense_row(label: str, data: bytes, path: Path, runs: int) -> None:
    megabytes = len(data) / 1e6
    print(f"-- {label}: data.pkl {megabytes:.2f} MB, file {path.stat().st_size / 1e6:.1f} MB")
    file_s = _median_cpu(functools.partial(ours_scan_file, path), runs)
    walker_s = _median_cpu(functools.partial(ours, data), runs)
    verdict = "meets" if megabytes / file_s >= 20 else "MISSES"
    print(f"   scan_file {megabytes / file_s:8.2f} MB/s {file_s:7.3f} s  (>= 20 MB/s: {verdict})")
    print(f"   walker    {megabytes / walker_s:8.2f} MB/s {walker_s:7.3f} s")
    try:
        fickling_s = _median_cpu(functools.partial(fickling_check, data), min(runs, 3))
    except ImportError as exc:
        print(f"   fickling  not installed ({exc})")
        return
    ratio = fickling_s / walker_s
    verdict = "meets" if ratio >= 20 else "MISSES"
    print(f"   fickling  {megabytes / fickling_s:8.2f} MB/s {fickling_s:7.3f} s")
    print(
        f"   walker / fickling {ratio:.1f}x (>= 20x: {verdict}); "
        f"scan_file / fickling {fickling_s / file_s:.1f}x"
    )


TOOLS = ("hubwarden", "picklescan", "modelscan", "modelaudit")


def modelaudit_flags() -> Callable[[Path], bool] | str:
    """ModelAudit's verdict on one file, or why it cannot run here."""
    os.environ.setdefault("PROMPTFOO_DISABLE_TELEMETRY", "1")
    try:
        from modelaudit import scan_model_directory_or_file
        from modelaudit.core_results import determine_exit_code
    except ImportError as exc:
        return f"not installed ({exc}); pip install modelaudit"

    def flags(path: Path) -> bool:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            result = scan_model_directory_or_file(str(path), timeout=120)
        return bool(determine_exit_code(result) != 0)  # its CLI's verdict: 1 issues, 2 inconclusive

    return flags


def verdicts(samples: list[Sample]) -> tuple[dict[str, dict[str, bool]], dict[str, str]]:
    """tool -> sample name -> flagged (held); and tool -> why it could not run."""
    out: dict[str, dict[str, bool]] = {tool: {} for tool in TOOLS}
    unavailable: dict[str, str] = {}
    try:
        from picklescan.scanner import scan_file_path
    except ImportError as exc:
        unavailable["picklescan"] = f"not installed ({exc}); pip install picklescan"
    try:
        from modelscan.modelscan import ModelScan
    except ImportError as exc:
        unavailable["modelscan"] = f"not installed ({exc}); pip install modelscan"
    modelaudit = modelaudit_flags()
    if isinstance(modelaudit, str):
        unavailable["modelaudit"] = modelaudit
    for sample in samples:
        out["hubwarden"][sample.name] = (
            scan_file(sample.path, name=sample.name).outcome != Outcome.CLEAN
        )
        if "picklescan" not in unavailable:
            try:
                result = scan_file_path(str(sample.path))
                out["picklescan"][sample.name] = bool(result.issues_count or result.scan_err)
            except Exception:  # noqa: BLE001 - a crash of another tool counts as "flagged"
                out["picklescan"][sample.name] = True
        if "modelscan" not in unavailable:
            try:
                report = ModelScan().scan(str(sample.path))
                flagged = bool(report["issues"]) or bool(report["errors"])
                out["modelscan"][sample.name] = flagged
            except Exception:  # noqa: BLE001
                out["modelscan"][sample.name] = True
        if not isinstance(modelaudit, str):
            try:
                out["modelaudit"][sample.name] = modelaudit(sample.path)
            except Exception:  # noqa: BLE001 - a crash of another tool counts as "flagged"
                out["modelaudit"][sample.name] = True
    return out, unavailable


def detection_table() -> None:
    print("== detection on the generated corpus (tests/scanners/corpus.py) ==")
    with tempfile.TemporaryDirectory() as tmp:
        benign = benign_samples(Path(tmp) / "benign")
        malicious = malicious_samples(Path(tmp) / "malicious")
        flagged_benign, unavailable = verdicts(benign)
        flagged_malicious, _ = verdicts(malicious)
    print(f"   {len(malicious)} malicious samples, {len(benign)} benign samples")
    for tool in TOOLS:
        if tool in unavailable:
            print(f"   {tool:<11} could not run here: {unavailable[tool]}")
            continue
        caught = sum(flagged_malicious[tool].values())
        alarms = sum(flagged_benign[tool].values())
        print(
            f"   {tool:<11} detected {caught:3}/{len(malicious)}  "
            f"false alarms {alarms:2}/{len(benign)}"
        )
        missed = [n for n, hit in flagged_malicious[tool].items() if not hit]
        if missed:
            print(f"      missed: {', '.join(sorted(missed)[:40])}")
        wrong = [n for n, hit in flagged_benign[tool].items() if hit]
        if wrong:
            print(f"      false alarms: {', '.join(sorted(wrong))}")


def _streamed(path: Path, chunk: int = 1 << 20) -> tuple[float, int, int, bool]:
    """Seconds, cleared before the last chunk, bytes kept, same report as scan_file."""
    size = path.stat().st_size
    scan = StreamScan(name=path.name, size=size)
    started = time.perf_counter()
    cleared = kept = 0
    with path.open("rb") as fh:
        while data := fh.read(chunk):
            cleared = scan.cleared
            scan.feed(data)
            kept = max(kept, scan.kept_bytes)
    report = scan.finish()
    seconds = time.perf_counter() - started
    whole = scan_file(path, name=path.name)
    same = (report.file_format, report.findings) == (whole.file_format, whole.findings)
    return seconds, cleared, kept, same


def streaming_table() -> None:
    print("== streaming pickles (StreamScan, 1 MiB chunks) ==")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {
            "legacy torch, 200 tensors x 1 MB": root / "legacy.bin",
            "joblib, 100 arrays x 1 MB": root / "model.joblib",
            "raw pickle, 3000 numpy arrays inline": root / "arrays.pkl",
            "raw pickle, 2000 torch tensors inline": root / "tensors.pkl",
        }
        tensors = {f"w{i}": torch.zeros(250_000) for i in range(200)}
        torch.save(tensors, files["legacy torch, 200 tensors x 1 MB"], pickle_protocol=2,
                   _use_new_zipfile_serialization=False)  # fmt: skip
        joblib_dump({f"w{i}": np.zeros(125_000) for i in range(100)},
                    files["joblib, 100 arrays x 1 MB"])  # fmt: skip
        files["raw pickle, 3000 numpy arrays inline"].write_bytes(numpy_state_dict_pickle())
        files["raw pickle, 2000 torch tensors inline"].write_bytes(
            inline_state_dict_pickle(tensors=2000)
        )
        for label, path in files.items():
            size = path.stat().st_size
            seconds, cleared, kept, same = _streamed(path)
            print(
                f"-- {label}: {size / 1e6:.1f} MB  {size / 1e6 / seconds:8.1f} MB/s  "
                f"cleared before the last chunk {cleared / size:6.1%}  kept {kept / size:6.1%}  "
                f"{'same report' if same else 'REPORT DIFFERS'}"
            )


def joblib_dump(obj: object, path: Path) -> None:
    import joblib

    joblib.dump(obj, path)


SECTIONS: dict[str, Callable[[], None]] = {
    "dense": dense_table,
    "speed": speed_table,
    "streaming": streaming_table,
    "detection": detection_table,
}


def main() -> None:
    logging.disable(logging.CRITICAL)
    chosen = sys.argv[1:] or list(SECTIONS)
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    for name in chosen:
        SECTIONS[name]()


if __name__ == "__main__":
    main()
