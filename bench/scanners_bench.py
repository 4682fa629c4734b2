"""Scanner benchmark: pickle walker speed and detection vs fickling, picklescan and modelscan.

Run: `python bench/scanners_bench.py` (needs `pip install picklescan modelscan`; fickling is a
project dependency). Prints, in one run:

1. Walker throughput (MB/s) on two state-dict pickles, against fickling (`Pickled.load` +
   `check_safety`) and picklescan (`scan_pickle_bytes`): a ~7 MB pickle of 3,000 tensors with
   their data inline, and the opcode-dense worst case (`data.pkl` of 60,000 tiny tensors).
   Whether each tool raised a false alarm on these benign files is printed beside its speed.
2. Detection on the generated corpus (`tests/scanners/corpus.py`): how many malicious samples
   each tool flags, how many benign samples it flags (false alarms), per tool.

Nothing here decides pass or fail; numbers vary with the machine.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import pickle
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scanners import Outcome, scan_file
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


def dense_data_pkl(tensors: int = 60000) -> bytes:
    """The opcode-dense worst case: data.pkl of a torch zip with 60,000 tiny tensors."""
    buf = io.BytesIO()
    torch.save({f"w{i}": torch.zeros(2, 2) for i in range(tensors)}, buf)
    return zipfile.ZipFile(buf).read("archive/data.pkl")


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def ours(data: bytes) -> str:
    result = scan_pickle_bytes(data, len(data), PickleLimits())
    return "false alarm" if result.findings else "clean"


def ours_loop_only(data: bytes) -> str:
    """The walker with its torch-record fast path off: every opcode through the loop."""
    walker = PickleWalker(data, len(data), PickleLimits(), fast_paths=False)
    walker.walk_all(0)
    return "false alarm" if walker.result.findings else "clean"


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


def speed_table() -> None:
    print("== pickle walker throughput (MB/s; higher is better) ==")
    cases = {
        "state dict, 3000 torch tensors inline": inline_state_dict_pickle(),
        "state dict, 3000 numpy arrays inline": numpy_state_dict_pickle(),
        "opcode-dense data.pkl, 60000 tensors": dense_data_pkl(),
    }
    tools: dict[str, Callable[[bytes], str]] = {
        "hubwarden": ours,
        "hw (loop)": ours_loop_only,
        "picklescan": picklescan_check,
        "fickling": fickling_check,
    }
    for label, data in cases.items():
        megabytes = len(data) / 1e6
        speeds: dict[str, float] = {}
        print(f"-- {label}: {megabytes:.2f} MB")
        for tool, check in tools.items():
            seconds, verdict = timed(functools.partial(check, data))
            speeds[tool] = megabytes / seconds
            print(f"   {tool:<11} {speeds[tool]:9.2f} MB/s  {seconds:8.3f} s  {verdict}")
        print(
            f"   hubwarden / fickling = {speeds['hubwarden'] / speeds['fickling']:.1f}x, "
            f"hubwarden / picklescan = {speeds['hubwarden'] / speeds['picklescan']:.1f}x"
        )


def verdicts(samples: list[Sample]) -> dict[str, dict[str, bool]]:
    """tool -> sample name -> flagged (held)."""
    from modelscan.modelscan import ModelScan
    from picklescan.scanner import scan_file_path

    out: dict[str, dict[str, bool]] = {"hubwarden": {}, "picklescan": {}, "modelscan": {}}
    for sample in samples:
        out["hubwarden"][sample.name] = (
            scan_file(sample.path, name=sample.name).outcome != Outcome.CLEAN
        )
        try:
            result = scan_file_path(str(sample.path))
            out["picklescan"][sample.name] = bool(result.issues_count or result.scan_err)
        except Exception:  # noqa: BLE001 - a crash of another tool counts as "flagged"
            out["picklescan"][sample.name] = True
        try:
            report = ModelScan().scan(str(sample.path))
            flagged = bool(report["issues"]) or bool(report["errors"])
            out["modelscan"][sample.name] = flagged
        except Exception:  # noqa: BLE001
            out["modelscan"][sample.name] = True
    return out


def detection_table() -> None:
    print("== detection on the generated corpus (tests/scanners/corpus.py) ==")
    with tempfile.TemporaryDirectory() as tmp:
        benign = benign_samples(Path(tmp) / "benign")
        malicious = malicious_samples(Path(tmp) / "malicious")
        flagged_benign = verdicts(benign)
        flagged_malicious = verdicts(malicious)
    print(f"   {len(malicious)} malicious samples, {len(benign)} benign samples")
    for tool in ("hubwarden", "picklescan", "modelscan"):
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


def main() -> None:
    logging.disable(logging.CRITICAL)
    speed_table()
    detection_table()


if __name__ == "__main__":
    main()
