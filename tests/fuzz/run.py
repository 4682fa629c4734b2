"""Run one fuzz target under atheris: `python -m tests.fuzz.run TARGET [libFuzzer flags] DIR`.

Only `scanners` is instrumented for coverage; the third-party parsers it calls are imported first,
uninstrumented, so the fuzzer's feedback is about our code and start-up stays short. libFuzzer
flags bound the run (`-runs=N`, `-max_total_time=S`), fix it (`-seed=N`), say where a crashing
input is saved (`-artifact_prefix=DIR/`) and what counts as a hang (`-timeout=S`) or as too much
memory (`-rss_limit_mb=N`). The exit status is 0 when no input crashed.

`--slowest=PATH` (before the libFuzzer flags; bench/fuzz_bench.py passes it) keeps the slowest
input so far in PATH, its time in seconds in PATH.json: libFuzzer itself only reports whole
seconds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import atheris

# Imported before instrumentation so their bytecode stays as it is (see the docstring).
import h5py  # noqa: F401
import jinja2  # noqa: F401
import numpy  # noqa: F401
import yaml  # noqa: F401

with atheris.instrument_imports(include=["scanners"]):
    from tests.fuzz import targets


def timed(one_input: Callable[[bytes], None], slowest: Path) -> Callable[[bytes], None]:
    """`one_input`, writing each input slower than all before it to `slowest`."""
    worst = [0.0]

    def run(data: bytes) -> None:
        started = time.perf_counter()
        try:
            one_input(data)
        finally:
            elapsed = time.perf_counter() - started
            if elapsed > worst[0]:
                worst[0] = elapsed
                slowest.write_bytes(data)
                slowest.with_suffix(".json").write_text(json.dumps({"seconds": elapsed}))

    return run


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in targets.TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.run {{{','.join(targets.TARGETS)}}} [flags] DIR")
    one_input = targets.TARGETS[argv[1]].one_input
    flags = argv[2:]
    if flags and flags[0].startswith("--slowest="):
        one_input = timed(one_input, Path(flags.pop(0).split("=", 1)[1]))
    targets.install_crash_recorder()
    atheris.Setup([argv[0], *flags], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
